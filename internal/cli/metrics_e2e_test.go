package cli_test

import (
	"net"
	"net/http"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

func parseMetrics(t *testing.T, text string) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(text + "\n"))
	if err != nil {
		t.Fatalf("the Prometheus text parser rejects the metrics: %v", err)
	}
	return fams
}

func sampleValue(fams map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	f, ok := fams[name]
	if !ok {
		return 0, false
	}
	for _, m := range f.Metric {
		have := map[string]string{}
		for _, l := range m.Label {
			have[l.GetName()] = l.GetValue()
		}
		match := true
		for i := 0; i+1 < len(labels); i += 2 {
			if have[labels[i]] != labels[i+1] {
				match = false
			}
		}
		if !match {
			continue
		}
		if m.Counter != nil {
			return m.Counter.GetValue(), true
		}
		if m.Gauge != nil {
			return m.Gauge.GetValue(), true
		}
	}
	return 0, false
}

// TestNodeMetrics scrapes a node through its control socket (`ockam node
// metrics`) and through --metrics-listen, after a secure channel, a relay
// registration and a portal flow.
func TestNodeMetrics(t *testing.T) {
	e := newEnv(t)
	maddr := freePort(t)
	e.must("node", "create", "relay")
	e.must("node", "create", "server", "--metrics-listen", maddr, "--window-budget-mib", "48", "--max-flow-window-mib", "24")
	target := tcpServer(t, func(c net.Conn) {})
	e.must("tcp-outlet", "create", "--at", "/node/server", "--to", target)
	e.must("relay", "create", "server", "--at", "/node/relay", "--to", "/node/server")
	e.must("node", "create", "client")
	ch := e.must("secure-channel", "create", "--from", "/node/client", "--to", "/node/relay/service/forward_to_server/service/api")
	e.must("message", "send", "hi", "--from", "/node/client", "--to", ch+"/service/echo")

	fams := parseMetrics(t, e.must("node", "metrics", "server"))
	for _, c := range []struct {
		name   string
		labels []string
		min    float64
	}{
		{"ockam_node_connections", nil, 1},
		{"ockam_relay_registrations", []string{"state", "up"}, 1},
		{"ockam_secure_channels", []string{"role", "responder"}, 1},
		{"ockam_secure_channel_messages", []string{"direction", "received"}, 1},
		{"ockam_portals", []string{"kind", "outlet"}, 1},
		{"ockam_node_info", []string{"node", "server"}, 1},
		{"go_goroutines", nil, 1},
	} {
		v, ok := sampleValue(fams, c.name, c.labels...)
		if !ok || v < c.min {
			t.Errorf("%s%v = %v (present %v), want at least %v", c.name, c.labels, v, ok, c.min)
		}
	}
	if v, _ := sampleValue(fams, "ockam_portal_window_budget_bytes", "state", "limit"); v != 48<<20 {
		t.Errorf("window budget %v, want the 48 MiB of --window-budget-mib", v)
	}
	if fams["ockam_node_messages_refused_total"].GetType() != dto.MetricType_COUNTER {
		t.Errorf("refused is not a counter")
	}
	relayFams := parseMetrics(t, e.must("node", "metrics", "relay"))
	if v, _ := sampleValue(relayFams, "ockam_relay_hosted_names"); v != 1 {
		t.Errorf("relay node hosts %v names, want 1", v)
	}

	resp, err := http.Get("http://" + maddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	tcpFams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := sampleValue(tcpFams, "ockam_node_info", "node", "server"); !ok {
		t.Error("--metrics-listen serves no ockam_node_info")
	}
	// The listener comes back with node start.
	e.must("node", "stop", "server")
	e.must("node", "start", "server")
	r2, err := http.Get("http://" + maddr + "/healthz")
	if err != nil {
		t.Fatalf("after node start: %v", err)
	}
	r2.Body.Close()
	if v, _ := sampleValue(parseMetrics(t, e.must("node", "metrics", "server")), "ockam_portal_window_budget_bytes", "state", "limit"); v != 48<<20 {
		t.Errorf("after node start, window budget %v, want the saved 48 MiB", v)
	}
}
