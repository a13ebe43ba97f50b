package secure_test

import (
	"context"
	"testing"
	"time"

	"github.com/ockam-go/ockam/internal/identity"
	"github.com/ockam-go/ockam/internal/router"
	"github.com/ockam-go/ockam/internal/routing"
)

// BenchmarkChannelMessages sends 64-byte messages from a through the relay
// to b's echo over one secure channel, and counts the replies: rr is one
// message in flight (the latency of a request/response), window32 keeps 32
// in flight (what many small flows of one channel do). It reports messages
// per second; a regression in the per-message cost of any hop (router,
// transport, relay, seal/open) shows here.
func BenchmarkChannelMessages(b *testing.B) {
	for _, tc := range []struct {
		name     string
		inFlight int
	}{{"rr", 1}, {"window32", 32}} {
		b.Run(tc.name, func(b *testing.B) {
			tp := newTopology(b, true)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			ch, err := tp.a.mgr.Create(ctx, route(b, "/tcp/"+tp.relayAt+"/service/forward_to_b/service/api"), []identity.Identifier{tp.b.id.Identifier()})
			if err != nil {
				b.Fatal(err)
			}
			replies := make(chan struct{}, tc.inFlight)
			if err := tp.a.n.Register("bench", router.Channel, func(*routing.Message) error {
				replies <- struct{}{}
				return nil
			}); err != nil {
				b.Fatal(err)
			}
			defer tp.a.n.Unregister("bench")
			msg := routing.Message{
				Onward:  routing.Route{routing.LocalAddr(ch.Address()), routing.LocalAddr(router.EchoAddress)},
				Return:  routing.Route{routing.LocalAddr("bench")},
				Payload: make([]byte, 64),
			}
			send := func() {
				m := msg
				if err := tp.a.n.Send(context.Background(), &m); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for range min(tc.inFlight, b.N) {
				send()
			}
			for i := range b.N {
				select {
				case <-replies:
				case <-time.After(10 * time.Second):
					b.Fatalf("reply %d of %d lost", i, b.N)
				}
				if i+tc.inFlight < b.N {
					send()
				}
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
		})
	}
}
