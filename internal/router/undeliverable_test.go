package router_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/ockam-go/ockam/internal/router"
	"github.com/ockam-go/ockam/internal/routing"
)

// TestRefusedLooksMissingToRemoteSenders: a remote sender that names an
// address it may not reach (a Channel or Private worker) is treated exactly
// like one that names an address nobody holds: both go to the
// undeliverable handler (which may answer "unknown"), so what a node holds
// cannot be probed over TCP.
func TestRefusedLooksMissingToRemoteSenders(t *testing.T) {
	a, b, toB := pair(t, router.Config{})
	got(t, b, "outlet", router.Channel)
	got(t, b, "encryptor", router.Private)
	var mu sync.Mutex
	seen := map[string]int{}
	b.HandleUndeliverable(func(m *routing.Message) bool {
		mu.Lock()
		seen[m.Onward[0].Value]++
		mu.Unlock()
		return true
	})
	for _, addr := range []string{"outlet", "encryptor", "nothing"} {
		r := append(toB.Clone(), routing.LocalAddr(addr))
		if err := a.Send(context.Background(), &routing.Message{Onward: r, Payload: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	fence(t, a, toB)
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := len(seen)
		mu.Unlock()
		if n == 3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, addr := range []string{"outlet", "encryptor", "nothing"} {
		if seen[addr] != 1 {
			t.Errorf("a remote message to %s reached the undeliverable handler %d times, want 1 (as for a missing address): %v", addr, seen[addr], seen)
		}
	}
}
