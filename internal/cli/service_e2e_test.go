package cli_test

import (
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestForegroundNodeAsAService runs a node the way deploy/systemd's unit
// does (node create NAME --foreground --restore FLAGS), stops it with
// SIGTERM as systemd would, and starts it again: what it was asked to
// create comes back, and the flags of the new ExecStart apply.
func TestForegroundNodeAsAService(t *testing.T) {
	e := newEnv(t)
	maddr := freePort(t)
	start := func(extra ...string) *exec.Cmd {
		c := exec.Command(ockamBin, append([]string{"node", "create", "svc", "--foreground", "--restore"}, extra...)...)
		c.Env = append(os.Environ(), "OCKAM_HOME="+e.home)
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Process.Kill(); c.Wait() })
		eventually(t, 20*time.Second, "the foreground node answers", func() error {
			if r := e.run("node", "show", "svc"); r.code != 0 || !strings.Contains(r.stdout, "running") {
				return errString(r.stderr + r.stdout)
			}
			return nil
		})
		return c
	}
	c := start()
	target := tcpServer(t, func(c net.Conn) {})
	e.must("tcp-outlet", "create", "--at", "svc", "--alias", "db", "--to", target)
	c.Process.Signal(syscall.SIGTERM)
	if err := c.Wait(); err != nil {
		t.Fatalf("the node did not exit 0 on SIGTERM: %v", err)
	}
	start("--metrics-listen", maddr)
	if out := e.must("tcp-outlet", "show", "db", "--at", "svc"); !strings.Contains(out, target) {
		t.Fatalf("outlet not restored:\n%s", out)
	}
	r, err := http.Get("http://" + maddr + "/healthz")
	if err != nil {
		t.Fatalf("--metrics-listen given at restart not applied: %v", err)
	}
	r.Body.Close()
}
