package main

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/ockam-go/ockam/internal/router"
	"github.com/ockam-go/ockam/internal/routing"
)

func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Fatalf("Content-Type %q", ct)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("the Prometheus text parser rejects /metrics: %v", err)
	}
	return fams
}

func value(t *testing.T, fams map[string]*dto.MetricFamily, name, label string) float64 {
	t.Helper()
	f, ok := fams[name]
	if !ok {
		t.Fatalf("no metric %s", name)
	}
	for _, m := range f.Metric {
		match := label == ""
		for _, l := range m.Label {
			if l.GetName()+"="+l.GetValue() == label {
				match = true
			}
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		}
	}
	t.Fatalf("no sample of %s with %q", name, label)
	return 0
}

// TestRelayMetricsAndHealth runs the relay binary with --metrics-listen,
// forwards a message through it, and scrapes /metrics with Prometheus'
// text parser: the connections, the hosted name, the bytes and a refusal
// show.
func TestRelayMetricsAndHealth(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	maddr := ln.Addr().String()
	ln.Close()
	p := startRelay(t, "--metrics-listen", maddr)
	base := "http://" + maddr
	poll(t, "the metrics listener", func() bool {
		r, err := http.Get(base + "/healthz")
		if err != nil {
			return false
		}
		b, _ := io.ReadAll(r.Body)
		r.Body.Close()
		return r.StatusCode == 200 && string(b) == "ok\n"
	})
	fams := scrape(t, base+"/metrics")
	if v := value(t, fams, "ockam_relay_hosted_names", ""); v != 0 {
		t.Fatalf("hosted names before any registration: %v", v)
	}
	registrant(t, p)
	a := router.New(router.Config{})
	defer a.Close()
	echo, _ := routing.ParseRoute("/tcp/"+p.addr+"/service/forward_to_b/service/echo", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := a.Request(ctx, echo, []byte("ping")); err != nil {
		t.Fatal(err)
	}
	// A name nobody holds: the relay binary answers with an error reply
	// naming it, and counts it.
	nobody, _ := routing.ParseRoute("/tcp/"+p.addr+"/service/forward_to_nobody/service/echo", nil)
	var u *router.UnreachableError
	if _, err := a.Request(ctx, nobody, []byte("ping")); !errors.As(err, &u) || u.Hop.Value != "forward_to_nobody" {
		t.Fatalf("request to a name nobody holds: %v, want an error reply naming forward_to_nobody", err)
	}
	if v := value(t, scrape(t, base+"/metrics"), "ockam_node_error_replies_total", "result=sent"); v != 1 {
		t.Errorf("error replies sent: %v, want 1", v)
	}
	// A remote sender may not make the relay connect anywhere: refused.
	onward, _ := routing.ParseRoute("/tcp/"+p.addr+"/tcp/127.0.0.1:1/service/echo", nil)
	a.Send(ctx, &routing.Message{Onward: onward, Payload: []byte("x")})
	var refused float64
	poll(t, "the refusal to be counted", func() bool {
		fams = scrape(t, base+"/metrics")
		refused = value(t, fams, "ockam_node_messages_refused_total", "")
		return refused >= 1
	})
	if fams["ockam_node_messages_refused_total"].GetType() != dto.MetricType_COUNTER {
		t.Errorf("refused is a %v", fams["ockam_node_messages_refused_total"].GetType())
	}
	if v := value(t, fams, "ockam_relay_hosted_names", ""); v != 1 {
		t.Errorf("hosted names: %v, want 1", v)
	}
	if v := value(t, fams, "ockam_node_connections", ""); v < 2 {
		t.Errorf("connections: %v, want at least 2", v)
	}
	if v := value(t, fams, "ockam_node_connection_bytes", "direction=in"); v <= 0 {
		t.Errorf("bytes in: %v", v)
	}
	r, err := http.Get(base + "/nothing")
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != 404 {
		t.Errorf("/nothing: %s", r.Status)
	}
}

// TestRelayConfigFromEnvironment: every flag can come from OCKAM_RELAY_*
// (a systemd EnvironmentFile), a flag on the command line wins, and a bad
// value is one line and exit 2.
func TestRelayConfigFromEnvironment(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	maddr := ln.Addr().String()
	ln.Close()
	t.Setenv("OCKAM_RELAY_METRICS_LISTEN", maddr)
	t.Setenv("OCKAM_RELAY_LISTEN", "127.0.0.1:1") // overridden by startRelay's --listen
	startRelay(t)
	poll(t, "metrics from the environment", func() bool {
		r, err := http.Get("http://" + maddr + "/healthz")
		if err == nil {
			r.Body.Close()
		}
		return err == nil && r.StatusCode == 200
	})
	t.Setenv("OCKAM_RELAY_MAX_CONNS", "many")
	out, err := exec.Command(relayBinary(t)).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || strings.Count(strings.TrimSpace(string(out)), "\n") != 0 || !strings.Contains(string(out), "OCKAM_RELAY_MAX_CONNS") {
		t.Fatalf("bad environment: %v: %s", err, out)
	}
}
