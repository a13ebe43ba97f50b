// Package scripts holds the demos; this test runs them as a new user would,
// so that `make demo` and the namespace demo cannot silently break.
package scripts

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func build(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "ockam")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/ockam").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

func need(t *testing.T, cmds ...string) {
	for _, c := range cmds {
		if _, err := exec.LookPath(c); err != nil {
			t.Skipf("%s is not installed", c)
		}
	}
}

// TestDemo runs scripts/demo.sh (what `make demo` runs): the seed's commands
// on loopback, without root.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real processes")
	}
	need(t, "python3", "curl")
	out, err := exec.Command("bash", "demo.sh", build(t)).CombinedOutput()
	if err != nil {
		t.Fatalf("demo.sh: %v\n%s", err, out)
	}
	for _, want := range []string{"$ ockam node create relay", "/service/outlet", "forward_to_server_sidecar", "HTTP/1.0 200 OK"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
}

// TestDemoAcrossNamespaces runs the same demo across three network
// namespaces where client and server can reach only the relay.
func TestDemoAcrossNamespaces(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real processes")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces (run make test as root)")
	}
	need(t, "ip", "python3", "curl")
	out, err := exec.Command("bash", "demo-netns.sh", build(t)).CombinedOutput()
	if err != nil {
		t.Fatalf("demo-netns.sh: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "HTTP/1.0 200 OK") || !strings.Contains(string(out), "failed, as it should") {
		t.Fatalf("demo-netns output:\n%s", out)
	}
}

// TestFaults runs scripts/faults.sh: 1 GiB through the inlet and through
// the TUN with 1% loss at the relay and with a 10 s blackhole of the relay;
// every transfer must end intact (sha256) or fail cleanly, never hang.
func TestFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real processes")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces (run make test as root)")
	}
	need(t, "ip", "nft", "python3", "curl", "bc")
	out, err := exec.Command("bash", "faults.sh", build(t)).CombinedOutput()
	t.Logf("faults.sh:\n%s", out)
	if err != nil {
		t.Fatalf("faults.sh: %v", err)
	}
	if strings.Contains(string(out), "CORRUPTED") || !strings.Contains(string(out), "PASS") {
		t.Fatal("faults.sh reported a failure")
	}
	// Nothing it started outlives it (its HTTP server once did).
	if left, _ := exec.Command("pgrep", "-f", "http.server --bind 127.0.0.1 5000 --directory /tmp/ockam-faults").Output(); len(left) > 0 {
		t.Fatalf("faults.sh left processes running: %s", left)
	}
}
