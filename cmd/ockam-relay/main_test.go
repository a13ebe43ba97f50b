package main

import (
	"bufio"
	"os/exec"
	"strings"
	"testing"
)

// TestRelayLinksNoDecryption fails if the relay binary can link code that
// decrypts channel traffic, or gVisor: "the relay sees only ciphertext" holds
// at the import level. (crypto/rand links the standard library's internal
// AES DRBG, which is not a way to open anything; the public cipher packages
// and every package of ours that decrypts are forbidden. The relay does link
// package identity, to verify the Ed25519 signatures that bind relay names to
// identities: verification opens nothing.)
func TestRelayLinksNoDecryption(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	forbidden := []string{
		"github.com/ockam-go/ockam/channel",
		"github.com/ockam-go/ockam/internal/secure",
		"github.com/ockam-go/ockam/internal/vault",
		"github.com/ockam-go/ockam/internal/portal",
		"github.com/ockam-go/ockam/internal/node",
		"github.com/ockam-go/ockam/netstack",
		"github.com/flynn/noise",
		"golang.org/x/crypto/",
		"gvisor.dev/",
		"crypto/aes",
		"crypto/ecdh",
		"crypto/hkdf",
	}
	var deps int
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		dep := sc.Text()
		deps++
		for _, f := range forbidden {
			if dep == f || (strings.HasSuffix(f, "/") && strings.HasPrefix(dep, f)) {
				t.Errorf("the relay links %s", dep)
			}
		}
	}
	if deps < 10 || !strings.Contains(string(out), "github.com/ockam-go/ockam/relay") {
		t.Fatalf("go list -deps gave %d packages; the check would pass on nothing", deps)
	}
}
