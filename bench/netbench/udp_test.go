package main

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// capture runs f with standard output captured.
func capture(t *testing.T, f func() error) (string, error) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stdout
	os.Stdout = w
	ferr := f()
	os.Stdout = old
	w.Close()
	b, _ := io.ReadAll(r)
	return string(b), ferr
}

// TestIperfUDP: an iperf3 -u -J result gives the rate that arrived (the
// sent rate less the lost share), the loss and the jitter.
func TestIperfUDP(t *testing.T) {
	f := filepath.Join(t.TempDir(), "u.json")
	os.WriteFile(f, []byte(`warning: x
{"end":{"sum_sent":{"bytes":1000,"bits_per_second":100000000,"packets":1000,"lost_packets":0},
"sum_received":{"bytes":1000,"bits_per_second":100000000,"packets":1000,"lost_packets":250,"jitter_ms":0.5}}}`), 0o644)
	out, err := capture(t, func() error { return iperfSummary([]string{f}) })
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"mbps":75`, `"loss_pct":25`, `"jitter_ms":0.5`, `"sent_mbps":100`} {
		if !strings.Contains(out, want) {
			t.Errorf("%s: no %s", out, want)
		}
	}
	os.WriteFile(f, []byte(`{"end":{"sum_sent":{"bytes":10,"packets":1},"sum_received":{"bytes":10,"packets":0}}}`), 0o644)
	if _, err := capture(t, func() error { return iperfSummary([]string{f}) }); err == nil {
		t.Error("a UDP result with no datagrams counted was accepted")
	}
}

// TestURR: datagram round trips against the UDP echo; a server that does
// not answer makes every datagram lost and the measure fail.
func TestURR(t *testing.T) {
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go udpEchoServe(pc)
	out, err := capture(t, func() error { return urr([]string{"-addr", pc.LocalAddr().String(), "-n", "200", "-warmup", "10"}) })
	if err != nil || !strings.Contains(out, `"n":200`) || !strings.Contains(out, `"lost":0`) {
		t.Fatalf("urr: %s %v", out, err)
	}
	mute, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer mute.Close()
	if _, err := capture(t, func() error {
		return urr([]string{"-addr", mute.LocalAddr().String(), "-n", "3", "-warmup", "0", "-wait", "20ms"})
	}); err == nil {
		t.Error("urr against a server that never answers succeeded")
	}
}
