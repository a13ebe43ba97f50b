package secure_test

import (
	"context"
	"encoding/binary"
	"sync"
	"testing"
	"time"

	"github.com/ockam-go/ockam/internal/identity"
	"github.com/ockam-go/ockam/internal/router"
	"github.com/ockam-go/ockam/internal/routing"
)

// TestChannelSpreadsFlowsOverLanes: a channel's senders with different lane
// hints (portal flows) go over different lanes of both legs through the
// relay; each sender's messages arrive in order, and the responder rejects
// none of those that crossed lanes out of nonce order.
func TestChannelSpreadsFlowsOverLanes(t *testing.T) {
	tp := newTopology(t, true)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ch, err := tp.a.mgr.Create(ctx, route(t, "/tcp/"+tp.relayAt+"/service/forward_to_b/service/api"), []identity.Identifier{tp.b.id.Identifier()})
	if err != nil {
		t.Fatal(err)
	}
	const senders, each = 8, 300
	type rec struct {
		from byte
		seq  uint32
	}
	got := make(chan rec, senders*each)
	if err := tp.b.n.Register("sink", router.Channel, func(m *routing.Message) error {
		got <- rec{m.Payload[0], binary.BigEndian.Uint32(m.Payload[1:])}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for k := range senders {
		wg.Go(func() {
			for s := range each {
				p := binary.BigEndian.AppendUint32([]byte{byte(k)}, uint32(s))
				p = append(p, make([]byte, 8<<10*(s%3))...)
				m := routing.Message{
					Onward:  routing.Route{routing.LocalAddr(ch.Address()), routing.LocalAddr("sink")},
					Payload: p,
					Lane:    uint8(k),
				}
				if err := tp.a.n.Send(context.Background(), &m); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	next := make([]uint32, senders)
	wait := time.After(30 * time.Second)
	for range senders * each {
		var r rec
		select {
		case r = <-got:
		case <-wait:
			t.Fatal("messages lost")
		}
		if r.seq != next[r.from] {
			t.Fatalf("sender %d: seq %d arrived, want %d", r.from, r.seq, next[r.from])
		}
		next[r.from]++
	}
	for _, c := range tp.b.mgr.Channels() {
		if st := c.Stats(); st.Rejected != 0 {
			t.Errorf("responder %s: %d messages rejected; want none", c.Address(), st.Rejected)
		}
	}
	links := tp.relayN.Links()
	if len(links) != 2 {
		t.Fatalf("relay holds %d links, want 2 (both sides' bundles)", len(links))
	}
	for _, l := range links {
		bs := l.LaneBytes()
		if len(bs) != 4 {
			t.Fatalf("link %s has %d lanes, want 4", l.ID, len(bs))
		}
		for i, b := range bs {
			if b < each*(8<<10) { // two senders of ~2.4 MB each per lane
				t.Errorf("link %s lane %d carried %d bytes: flows not spread", l.ID, i, b)
			}
		}
	}
}

// lanesUp waits until every lane of a's and b's bundles to the relay has
// joined, on both ends (they join in the background, after the first
// message; the relay attaches a lane just after the dialler saw it answer).
func (tp *topology) lanesUp(t *testing.T) {
	t.Helper()
	waitFor(t, "every lane of the bundles", func() bool {
		for _, n := range []*router.Node{tp.a.n, tp.b.n, tp.relayN} {
			for _, l := range n.Links() {
				if l.Lanes() != router.DefaultLanes {
					return false
				}
			}
		}
		return true
	})
}
