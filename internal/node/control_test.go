package node_test

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/ockam-go/ockam/internal/api"
)

// The node runtime as Go methods and the same node over its socket give
// the same answers and the same errors: HTTP is only an adapter.
func TestDirectAndClientAgree(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	cl := w.start("n", "127.0.0.1:0", false)
	var direct api.Control = w.nodes["n"]
	c := ctx(t)
	type result struct {
		out  any
		code int
		err  string
	}
	run := func(n api.Control) []result {
		var rs []result
		add := func(out any, err error) {
			r := result{out: out}
			if err != nil {
				r.err = err.Error()
				var se *api.StatusError
				if errors.As(err, &se) {
					r.code = se.Code
				}
			}
			rs = append(rs, r)
		}
		add(n.Listeners(c))
		add(n.Inlet(c, "nope"))
		add(n.Outlets(c))
		add(n.CreateOutlet(c, api.CreateOutlet{From: "bad/name", To: "x:1"}))
		add(n.Channel(c, "/service/nope"))
		add(n.Tun(c))
		add(n.SocksListeners(c))
		add(nil, n.DeleteMapping(c, "nothing.ockam"))
		add(nil, n.DeleteRelay(c, "nope"))
		add(n.Send(c, api.SendMessage{To: "/service/echo", Payload: "hi"}))
		return rs
	}
	got, want := run(cl), run(direct)
	for i := range want {
		// JSON round trip: compare the printed values.
		if fmt.Sprintf("%+v", got[i]) != fmt.Sprintf("%+v", want[i]) {
			t.Errorf("call %d: over the socket %+v, direct %+v", i, got[i], want[i])
		}
	}
}

// Mappings need no root: the table exists without an interface. Addresses
// are allocated in order, names default to the route's last hop and are
// numbered when taken, reserved addresses are refused, and delete finds a
// mapping by address or by name.
func TestMappings(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	n := w.start("n", "127.0.0.1:0", false)
	c := ctx(t)
	m1, err := n.CreateMapping(c, api.CreateMapping{To: "/service/web"})
	if err != nil {
		t.Fatal(err)
	}
	m2, err := n.CreateMapping(c, api.CreateMapping{To: "/service/x/service/web"})
	if err != nil {
		t.Fatal(err)
	}
	if m1.Name != "web.ockam" || m2.Name != "web-2.ockam" {
		t.Errorf("names %q, %q; want web.ockam, web-2.ockam", m1.Name, m2.Name)
	}
	if m1.IP == m2.IP || m1.IP6 == "" {
		t.Errorf("addresses %s, %s (IPv6 %q)", m1.IP, m2.IP, m1.IP6)
	}
	for _, tc := range []struct {
		req  api.CreateMapping
		code int
	}{
		{api.CreateMapping{To: "/service/a", IP: "100.64.0.0"}, 400},      // network address
		{api.CreateMapping{To: "/service/a", IP: "100.100.100.100"}, 400}, // DNS address
		{api.CreateMapping{To: "/service/a", IP: "10.0.0.1"}, 400},        // outside the prefix
		{api.CreateMapping{To: "/service/a", IP: m1.IP}, 409},             // taken
		{api.CreateMapping{To: "/service/a", Name: "web.ockam"}, 409},     // name taken
		{api.CreateMapping{To: "/service/a", Name: "bad_name!"}, 400},
		{api.CreateMapping{To: ""}, 400},
	} {
		_, err := n.CreateMapping(c, tc.req)
		var se *api.StatusError
		if !errors.As(err, &se) || se.Code != tc.code {
			t.Errorf("CreateMapping(%+v) = %v, want status %d", tc.req, err, tc.code)
		}
	}
	if err := n.DeleteMapping(c, "web"); err != nil { // by name, suffix implied
		t.Fatal(err)
	}
	if err := n.DeleteMapping(c, m2.IP); err != nil { // by address
		t.Fatal(err)
	}
	info, err := n.Tun(c)
	if err != nil || len(info.Mappings) != 0 || info.Name != "" {
		t.Fatalf("after deleting both: %+v, %v", info, err)
	}
	conf, _ := w.h.ReadConfig("n")
	if len(conf.Resources) != 0 {
		t.Errorf("deleted mappings still recorded: %+v", conf.Resources)
	}
}

// Creating the interface without CAP_NET_ADMIN is one clear error, and
// nothing is recorded.
func TestTunNeedsRoot(t *testing.T) {
	t.Parallel()
	if hasNetAdmin() {
		t.Skip("running with CAP_NET_ADMIN: integration/restart_test.go covers the interface")
	}
	w := newWorld(t)
	n := w.start("n", "127.0.0.1:0", false)
	_, err := n.CreateTun(ctx(t), api.CreateTun{Name: "ctlx0"})
	if err == nil || !strings.Contains(err.Error(), "CAP_NET_ADMIN") {
		t.Fatalf("err = %v", err)
	}
	conf, _ := w.h.ReadConfig("n")
	if len(conf.Resources) != 0 {
		t.Errorf("a failed interface was recorded: %+v", conf.Resources)
	}
}

func hasNetAdmin() bool {
	// Effective capabilities include CAP_NET_ADMIN (bit 12) for root.
	var caps uint64
	b, err := readFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(b, "\n") {
		if v, ok := strings.CutPrefix(l, "CapEff:"); ok {
			fmt.Sscanf(strings.TrimSpace(v), "%x", &caps)
		}
	}
	return caps&(1<<12) != 0
}

func readFile(p string) (string, error) {
	b, err := os.ReadFile(p)
	return string(b), err
}
