package relay_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ockam-go/ockam/internal/identity"
	"github.com/ockam-go/ockam/internal/router"
	"github.com/ockam-go/ockam/internal/routing"
	"github.com/ockam-go/ockam/relay"
)

// TestNamesPerIdentity: one identity cannot fill the relay's name table;
// past its limit it gets a clear refusal, and another identity still
// registers.
func TestNamesPerIdentity(t *testing.T) {
	rn := router.New(router.Config{})
	defer rn.Close()
	svc, err := relay.NewService(rn, relay.Config{MaxNamesPerIdentity: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	addr, err := rn.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	at := routing.Route{routing.TCPAddr(addr.String())}
	register := func(id *identity.Secret, name string, wait time.Duration) error {
		b := router.New(router.Config{})
		t.Cleanup(func() { b.Close() })
		reg, err := relay.Register(b, at, name, id, nil)
		if err != nil {
			return err
		}
		t.Cleanup(reg.Close)
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		return reg.WaitReady(ctx)
	}
	greedy, _ := identity.Generate(nil)
	for i := range 3 {
		if err := register(greedy, fmt.Sprintf("n%d", i), 5*time.Second); err != nil {
			t.Fatalf("name %d of 3: %v", i, err)
		}
	}
	err = register(greedy, "n3", time.Second)
	if err == nil || !strings.Contains(err.Error(), "the limit per identity") {
		t.Fatalf("a fourth name for one identity: %v, want the per-identity limit", err)
	}
	other, _ := identity.Generate(nil)
	if err := register(other, "mine", 5*time.Second); err != nil {
		t.Fatalf("another identity after the first hit its limit: %v", err)
	}
}
