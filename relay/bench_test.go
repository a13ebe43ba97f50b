package relay_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ockam-go/ockam/internal/router"
	"github.com/ockam-go/ockam/internal/routing"
	"github.com/ockam-go/ockam/relay"
)

// BenchmarkRelayForward measures one relay node forwarding 63 KiB messages
// from a sender's connection to a registrant's connection (real TCP on
// loopback, three nodes in one process).
// BenchmarkRelayForward measures the relay's forwarding of 63 KiB messages
// from one sender to one registrant, with a window of 64 messages (4 MiB)
// in flight as the portal's flows keep: the relay drops what a sender that
// ignores windows piles up for a slower reader, so a windowless flood would
// measure drops, not forwarding.
func BenchmarkRelayForward(b *testing.B) {
	const window, ackEvery = 64, 16
	rn := router.New(router.Config{})
	defer rn.Close()
	ra, err := rn.Listen("127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	svc, _ := relay.NewService(rn, relay.Config{})
	defer svc.Close()
	sink := router.New(router.Config{})
	defer sink.Close()
	var got atomic.Int64
	done := make(chan struct{}, 1)
	var want int64
	sink.Register("sink", router.Public, func(m *routing.Message) error {
		n := got.Add(1)
		if n%ackEvery == 0 {
			sink.Reply(m, "sink", nil)
		}
		if n == atomic.LoadInt64(&want) {
			done <- struct{}{}
		}
		return nil
	})
	id, _ := identityForBench()
	reg, _ := relay.Register(sink, routing.Route{routing.TCPAddr(ra.String())}, "sink", id, nil)
	defer reg.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := reg.WaitReady(ctx); err != nil {
		b.Fatal(err)
	}
	sender := router.New(router.Config{})
	defer sender.Close()
	credit := make(chan struct{}, window)
	for range window {
		credit <- struct{}{}
	}
	sender.Register("bench", router.Public, func(*routing.Message) error {
		for range ackEvery {
			credit <- struct{}{}
		}
		return nil
	})
	m := &routing.Message{
		Onward:  routing.Route{routing.TCPAddr(ra.String()), routing.LocalAddr("forward_to_sink"), routing.LocalAddr("sink")},
		Return:  routing.Route{routing.LocalAddr("bench")},
		Payload: make([]byte, 63<<10),
	}
	b.SetBytes(int64(len(m.Payload)))
	b.ReportAllocs()
	atomic.StoreInt64(&want, int64(b.N))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		select {
		case <-credit:
		case <-time.After(30 * time.Second):
			b.Fatalf("no credit after %d of %d messages (%d arrived)", i, b.N, got.Load())
		}
		if err := sender.Send(context.Background(), m); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		b.Fatalf("only %d of %d messages arrived", got.Load(), b.N)
	}
}
