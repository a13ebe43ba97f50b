package cli_test

import (
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"
)

// TestStatusAndMetricsOfTraffic: after a flow that the far application
// does not read, a channel to a missing listener and a message to a
// missing service, `ockam status` shows the channel's peer, route, up
// since and bytes, and the nodes' /metrics count the window stalls, the
// handshake failure (by reason) and the error replies.
func TestStatusAndMetricsOfTraffic(t *testing.T) {
	e := newEnv(t)
	e.must("node", "create", "relay")
	e.must("node", "create", "server")
	e.must("node", "create")
	release := make(chan struct{})
	target := tcpServer(t, func(c net.Conn) {
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetReadBuffer(16 << 10) // fills sooner
		}
		<-release // holds the connection open, never reading
	})
	t.Cleanup(func() { close(release) }) // before tcpServer's cleanup waits for it
	e.must("tcp-outlet", "create", "--at", "/node/server", "--to", target)
	e.must("relay", "create", "server", "--at", "/node/relay", "--to", "/node/server")
	ch := e.must("secure-channel", "create", "--to", "/node/relay/service/forward_to_server/service/api")
	inlet := freePort(t)
	e.must("tcp-inlet", "create", "--from", inlet, "--to", ch+"/service/outlet")

	c, err := net.Dial("tcp", inlet)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go func() {
		buf := make([]byte, 64<<10)
		c.SetWriteDeadline(time.Now().Add(90 * time.Second))
		for {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	}()
	var stalls float64
	for deadline := time.Now().Add(60 * time.Second); stalls < 1; {
		if time.Now().After(deadline) {
			t.Fatal("no window stall counted for a flow whose reader never reads")
		}
		time.Sleep(250 * time.Millisecond)
		stalls, _ = sampleValue(parseMetrics(t, e.must("node", "metrics")), "ockam_portal_window_stalls_total")
	}

	var st []struct {
		Name     string `json:"name"`
		Channels []struct {
			Peer     string    `json:"peer"`
			To       string    `json:"to"`
			UpSince  time.Time `json:"up_since"`
			BytesOut uint64    `json:"bytes_out"`
			BytesIn  uint64    `json:"bytes_in"`
		} `json:"channels"`
	}
	if err := json.Unmarshal([]byte(e.must("status", "--output", "json")), &st); err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, n := range st {
		if n.Name != "default" {
			continue
		}
		for _, c := range n.Channels {
			found = true
			if c.Peer != e.show("server").Identifier || !strings.Contains(c.To, "forward_to_server") ||
				time.Since(c.UpSince) > time.Minute || c.BytesOut < 256<<10 || c.BytesIn == 0 {
				t.Errorf("channel in status: %+v", c)
			}
		}
	}
	if !found {
		t.Fatalf("no channel in status: %+v", st)
	}
	if human := e.must("status"); !strings.Contains(human, " since ") || !strings.Contains(human, "iB out") {
		t.Errorf("status shows no up-since or bytes for the channel:\n%s", human)
	}

	oneLine(t, e.run("secure-channel", "create", "--to", "/node/server/service/nope"), "has no /service/nope")
	oneLine(t, e.run("message", "send", "x", "--to", "/node/relay/service/forward_to_nobody"), "forward_to_nobody")
	fams := parseMetrics(t, e.must("node", "metrics"))
	if v, _ := sampleValue(fams, "ockam_secure_channel_handshake_failures_total", "reason", "unreachable"); v < 1 {
		t.Errorf("handshake failures (unreachable) = %v, want at least 1", v)
	}
	if v, _ := sampleValue(fams, "ockam_secure_channel_bytes", "direction", "out"); v < 256<<10 {
		t.Errorf("channel bytes out = %v, want at least 256 KiB", v)
	}
	if v, _ := sampleValue(parseMetrics(t, e.must("node", "metrics", "server")), "ockam_node_error_replies_total", "result", "sent"); v < 1 {
		t.Errorf("server error replies = %v, want at least 1", v)
	}
	if v, _ := sampleValue(parseMetrics(t, e.must("node", "metrics", "relay")), "ockam_node_error_replies_total", "result", "sent"); v < 1 {
		t.Errorf("relay error replies = %v, want at least 1", v)
	}
}
