// Package systemd holds the service units of docs/DEPLOY.md; its test
// checks them with systemd-analyze against the binaries built from here.
package systemd

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestUnitsVerify(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed")
	}
	dir := t.TempDir()
	for _, b := range []string{"ockam", "ockam-relay"} {
		out, err := exec.Command("go", "build", "-o", filepath.Join(dir, b), "../../cmd/"+b).CombinedOutput()
		if err != nil {
			t.Fatalf("building %s: %v\n%s", b, err, out)
		}
	}
	units := map[string]string{"ockam-relay.service": "ockam-relay.service", "ockam-node@.service": "ockam-node@c16test.service"}
	var args []string
	for src, dst := range units {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		s := strings.ReplaceAll(string(b), "/usr/local/bin/", dir+"/")
		p := filepath.Join(dir, dst)
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, p)
	}
	out, err := exec.Command(sa, append([]string{"verify", "--man=no"}, args...)...).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	// The flags the units use exist.
	for _, c := range [][]string{
		{filepath.Join(dir, "ockam"), "node", "create", "--help"},
		{filepath.Join(dir, "ockam-relay"), "--help"},
	} {
		out, _ := exec.Command(c[0], c[1:]...).CombinedOutput()
		for _, f := range []string{"--foreground", "--restore", "--metrics-listen", "--state-dir", "-metrics-listen"} {
			if strings.Contains(c[0], "relay") != (f == "--state-dir" || f == "-metrics-listen") {
				continue
			}
			if !strings.Contains(string(out), strings.TrimLeft(f, "-")) {
				t.Errorf("%s lacks %s:\n%s", filepath.Base(c[0]), f, out)
			}
		}
	}
}
