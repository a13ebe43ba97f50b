package secure_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ockam-go/ockam/internal/identity"
	"github.com/ockam-go/ockam/internal/router"
	"github.com/ockam-go/ockam/internal/routing"
)

// BenchmarkChannelMessages sends 64-byte messages from a through the relay
// to b's echo over one secure channel, and counts the replies: rr is one
// message in flight (the latency of a request/response), window32 keeps 32
// in flight from one goroutine, and flows32 has 32 goroutines each with one
// message in flight (many request/response flows of one channel, each on
// its own goroutine, as the portal's flows are: what send coalescing is
// for). It reports messages per second; a regression in the per-message
// cost of any hop (router, transport, relay, seal/open) shows here.
func BenchmarkChannelMessages(b *testing.B) {
	for _, tc := range []struct {
		name     string
		inFlight int
		senders  int
	}{{"rr", 1, 1}, {"window32", 32, 1}, {"flows32", 1, 32}} {
		b.Run(tc.name, func(b *testing.B) {
			tp := newTopology(b, true)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			ch, err := tp.a.mgr.Create(ctx, route(b, "/tcp/"+tp.relayAt+"/service/forward_to_b/service/api"), []identity.Identifier{tp.b.id.Identifier()})
			if err != nil {
				b.Fatal(err)
			}
			// Sender k's replies come back to bench<k>.
			replies := make([]chan struct{}, tc.senders)
			for k := range replies {
				replies[k] = make(chan struct{}, tc.inFlight)
				addr := fmt.Sprintf("bench%d", k)
				if err := tp.a.n.Register(addr, router.Channel, func(*routing.Message) error {
					replies[k] <- struct{}{}
					return nil
				}); err != nil {
					b.Fatal(err)
				}
				defer tp.a.n.Unregister(addr)
			}
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			errs := make(chan error, tc.senders)
			for k := range tc.senders {
				n := b.N / tc.senders
				if k < b.N%tc.senders {
					n++
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					msg := routing.Message{
						Onward:  routing.Route{routing.LocalAddr(ch.Address()), routing.LocalAddr(router.EchoAddress)},
						Return:  routing.Route{routing.LocalAddr(fmt.Sprintf("bench%d", k))},
						Payload: make([]byte, 64),
					}
					send := func() error {
						m := msg
						return tp.a.n.Send(context.Background(), &m)
					}
					for range min(tc.inFlight, n) {
						if err := send(); err != nil {
							errs <- err
							return
						}
					}
					for i := range n {
						select {
						case <-replies[k]:
						case <-time.After(10 * time.Second):
							errs <- fmt.Errorf("sender %d: reply %d of %d lost", k, i, n)
							return
						}
						if i+tc.inFlight < n {
							if err := send(); err != nil {
								errs <- err
								return
							}
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
		})
	}
}
