package main

import (
	"math"
	"strings"
	"testing"
)

func TestCPUPerMReq(t *testing.T) {
	s := sample{
		Measure: "wrk",
		Data:    map[string]any{"rps": 20000.0, "requests": 200000.0},
		Before:  map[string]usage{"client": {CPUs: 1}, "relay": {CPUs: 2}, "server": {CPUs: 3}},
		After:   map[string]usage{"client": {CPUs: 3}, "relay": {CPUs: 3}, "server": {CPUs: 5}},
	}
	for _, tc := range []struct {
		role string
		want float64
	}{{"", 25}, {"client", 10}, {"relay", 5}, {"server", 10}} {
		got, ok := cpuPerMReq(tc.role)(s)
		if !ok || math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("cpuPerMReq(%q) = %v, %v; want %v", tc.role, got, ok, tc.want)
		}
	}
	for name, bad := range map[string]sample{
		"other measure": {Measure: "iperf1", Data: s.Data, Before: s.Before, After: s.After},
		"failed":        {Measure: "wrk", Data: s.Data, Before: s.Before, After: s.After, Error: "wrk: x"},
		"no requests":   {Measure: "wrk", Data: map[string]any{"rps": 1.0}, Before: s.Before, After: s.After},
		"no usage":      {Measure: "wrk", Data: s.Data},
	} {
		if _, ok := cpuPerMReq("")(bad); ok {
			t.Errorf("%s: cpuPerMReq gave a figure", name)
		}
	}
}

// TestChainRow: the socat ×3 floor gets its own row and its ratio to ssh.
func TestChainRow(t *testing.T) {
	med := map[string]map[string]float64{
		"ssh":   {"rr50": 400},
		"chain": {"rr50": 280},
	}
	md := markdown(map[string]string{"rounds": "2"}, nil, nil, med, nil, nil, "x.svg")
	for _, want := range []string{
		"| socat ×3 (client, relay, server: our topology, no crypto) | – | – | 280 |",
		"| socat ×3 (client, relay, server: our topology, no crypto) | – | – | 0.70× |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report has no line starting %q:\n%s", want, md)
		}
	}
}
