package router_test

import (
	"context"
	"encoding/binary"
	"testing"
	"time"

	"github.com/ockam-go/ockam/internal/router"
	"github.com/ockam-go/ockam/internal/routing"
)

// TestRelayKeepsLanes: a message that crosses a relaying node (a worker
// that replaces its hop, as a relay's forwarder does) leaves on the lane of
// the next bundle it arrived on, so what one sender put on one lane arrives
// on one lane, in order. The sender's batches (SendAll) are split per lane.
func TestRelayKeepsLanes(t *testing.T) {
	const lanes, hints, per = 4, 8, 200
	relay := router.New(router.Config{})
	t.Cleanup(func() { relay.Close() })
	addr, err := relay.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	toRelay := routing.TCPAddr(addr.String())
	client := router.New(router.Config{Lanes: lanes})
	t.Cleanup(func() { client.Close() })
	server := router.New(router.Config{Lanes: lanes})
	t.Cleanup(func() { server.Close() })

	// The server dials the relay and tells it which connection is its.
	reg := got(t, relay, "register", router.Public)
	if err := server.Send(context.Background(), &routing.Message{Onward: routing.Route{toRelay, routing.LocalAddr("register")}}); err != nil {
		t.Fatal(err)
	}
	var toServer routing.Address
	select {
	case m := <-reg:
		toServer = m.Return[0]
	case <-time.After(5 * time.Second):
		t.Fatal("no registration")
	}
	if err := relay.Register("fwd", router.Public, func(m *routing.Message) error {
		saved := m.Onward[0]
		m.Onward[0] = toServer
		err := relay.Send(context.Background(), m)
		m.Onward[0] = saved
		return err
	}); err != nil {
		t.Fatal(err)
	}
	type rec struct {
		lane, hint uint8
		seq        uint32
	}
	recs := make(chan rec, hints*per)
	if err := server.Register("sink", router.Public, func(m *routing.Message) error {
		recs <- rec{m.Lane, m.Payload[0], binary.BigEndian.Uint32(m.Payload[1:])}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// The client's bundle and the server's are complete at the relay.
	fenceMsg := &routing.Message{Onward: routing.Route{toRelay, routing.LocalAddr("echo")}}
	if err := client.Send(context.Background(), fenceMsg); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		ls := relay.Links()
		if len(ls) == 2 && ls[0].Lanes() == lanes && ls[1].Lanes() == lanes {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("relay links never reached %d lanes each", lanes)
		}
		time.Sleep(2 * time.Millisecond)
	}

	route := routing.Route{toRelay, routing.LocalAddr("fwd"), routing.LocalAddr("sink")}
	seq := make([]uint32, hints)
	for range per / 4 {
		var ms []routing.Message
		for i := range 4 * hints {
			h := uint8(i % hints)
			p := binary.BigEndian.AppendUint32([]byte{h}, seq[h])
			seq[h]++
			ms = append(ms, routing.Message{Onward: route, Payload: p, Lane: h})
		}
		if err := client.SendAll(context.Background(), ms, true); err != nil {
			t.Fatal(err)
		}
	}
	next := make([]uint32, hints)
	for range hints * per {
		var r rec
		select {
		case r = <-recs:
		case <-time.After(10 * time.Second):
			t.Fatal("messages lost")
		}
		if r.lane != r.hint%lanes {
			t.Fatalf("hint %d reached the server on lane %d, want %d", r.hint, r.lane, r.hint%lanes)
		}
		if r.seq != next[r.hint] {
			t.Fatalf("hint %d: seq %d, want %d", r.hint, r.seq, next[r.hint])
		}
		next[r.hint]++
	}
}
