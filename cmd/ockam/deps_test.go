package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestGVisorOnlyInNetstack fails if a package of the module other than
// netstack imports gVisor directly: the userspace stack is one seam (a
// tun.Device and net.Conns), as in Tailscale's wgengine/netstack.
func TestGVisorOnlyInNetstack(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}} {{join .Imports \" \"}} {{join .TestImports \" \"}} {{join .XTestImports \" \"}}", "github.com/ockam-go/ockam/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	const allowed = "github.com/ockam-go/ockam/netstack"
	var pkgs, importers int
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		pkgs++
		for _, imp := range f[1:] {
			if strings.HasPrefix(imp, "gvisor.dev/") {
				if f[0] != allowed {
					t.Errorf("%s imports %s: only %s may import gVisor", f[0], imp, allowed)
				}
				importers++
				break
			}
		}
	}
	if pkgs < 10 || importers == 0 {
		t.Fatalf("go list gave %d packages, %d importing gVisor: the check would pass on nothing", pkgs, importers)
	}
}
