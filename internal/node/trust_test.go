package node

import (
	"os"
	"testing"

	"github.com/ockam-go/ockam/internal/home"
)

// TestTrustCache: a found identifier is remembered while the nodes
// directory and trust.json are unchanged, and forgotten when either
// changes (a node created or deleted, the trust list rewritten).
func TestTrustCache(t *testing.T) {
	h := home.Home{Dir: t.TempDir()}
	if err := os.MkdirAll(h.NodeDir("a"), 0o700); err != nil {
		t.Fatal(err)
	}
	var c trustCache
	st := trustStampOf(h)
	if c.has(st, "I1") {
		t.Fatal("an empty cache has I1")
	}
	c.add(st, "I1")
	if !c.has(trustStampOf(h), "I1") {
		t.Fatal("I1 forgotten with nothing changed")
	}
	if c.has(trustStampOf(h), "I2") {
		t.Fatal("the cache has I2, never added")
	}
	for name, change := range map[string]func() error{
		"trust list written":   func() error { return home.WriteFileAtomic(h.TrustPath(), []byte(`["I1"]`), 0o600) },
		"trust list rewritten": func() error { return home.WriteFileAtomic(h.TrustPath(), []byte(`[]`), 0o600) },
		"node created":         func() error { return os.MkdirAll(h.NodeDir("b"), 0o700) },
		"node deleted":         func() error { return os.RemoveAll(h.NodeDir("a")) },
	} {
		st := trustStampOf(h)
		c.add(st, "I1")
		if !c.has(st, "I1") {
			t.Fatalf("%s: I1 not remembered before the change", name)
		}
		if err := change(); err != nil {
			t.Fatal(err)
		}
		if c.has(trustStampOf(h), "I1") {
			t.Errorf("%s: I1 still remembered", name)
		}
	}
	// What was found while the files changed is not remembered.
	old := trustStampOf(h)
	c.has(old, "")
	if err := os.MkdirAll(h.NodeDir("c"), 0o700); err != nil {
		t.Fatal(err)
	}
	c.has(trustStampOf(h), "")
	c.add(old, "I3")
	if c.has(trustStampOf(h), "I3") {
		t.Error("I3, found in files that changed since, is remembered")
	}
}
