package secure_test

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ockam-go/ockam/channel"
	"github.com/ockam-go/ockam/internal/identity"
	"github.com/ockam-go/ockam/internal/router"
	"github.com/ockam-go/ockam/internal/routing"
	"github.com/ockam-go/ockam/internal/secure"
)

// The tests in this file put a hostile worker on the relay node, in the path
// of a channel a -> relay -> b, and check that whatever it does to the
// ciphertext, b delivers only what a sent, unmodified and at most once, counts
// what it refuses, and keeps the channel up.

const (
	evilAddr = "evil"
	sinkAddr = "sink"
	fence    = "fence"
	// keepaliveLen is the size of an authenticated keepalive (empty onward
	// and return routes): the evil worker leaves those alone.
	keepaliveLen = channel.Overhead + 2
)

// evil is a man in the middle on the relay node: it forwards every message
// after pushing itself on the return route, so both directions of the channel
// cross it. The data messages from a (told from b's by the connection they
// arrive on) go through tamper; everything else passes untouched.
type evil struct {
	t      *testing.T
	n      *router.Node
	tamper func(r *evil, i int, ct []byte) // nil: pass everything
	total  int                             // tamper sees data messages 0..total-1

	mu     sync.Mutex
	fromA  string // connection a's messages arrive on
	count  int    // a's data messages seen
	msg3   []byte // a's third handshake message
	toB    routing.Route
	dec    string // b's decryptor
	cur    *routing.Message
	kept   [][]byte
	wg     sync.WaitGroup // delayed sends
	cancel context.CancelFunc
	ctx    context.Context
}

func newEvil(t *testing.T, tp *topology) *evil {
	t.Helper()
	e := &evil{t: t, n: tp.relayN}
	e.ctx, e.cancel = context.WithCancel(context.Background())
	if err := tp.relayN.Register(evilAddr, router.Public, e.handle); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		e.cancel()
		e.wg.Wait()
		tp.relayN.Unregister(evilAddr)
	})
	return e
}

func (e *evil) handle(m *routing.Message) error {
	if len(m.Onward) < 2 || len(m.Return) == 0 {
		return fmt.Errorf("evil: unexpected routes %s / %s", m.Onward, m.Return)
	}
	out := &routing.Message{
		Onward:  m.Onward[1:].Clone(),
		Return:  append(routing.Route{routing.LocalAddr(evilAddr)}, m.Return...),
		Payload: append([]byte(nil), m.Payload...),
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	typ := channel.TypeOf(out.Payload)
	if typ == channel.Handshake1 && e.fromA == "" {
		e.fromA = m.Return[0].Value
	}
	if m.Return[0].Value != e.fromA {
		return e.n.Send(e.ctx, out) // b -> a
	}
	switch {
	case typ == channel.Handshake3:
		e.msg3 = append([]byte(nil), out.Payload...)
	case typ == channel.Data && len(out.Payload) > keepaliveLen && e.tamper != nil:
		e.toB, e.dec = out.Onward.Clone(), out.Onward[len(out.Onward)-1].Value
		i := e.count
		e.count++
		e.cur = out
		switch {
		case i < e.total:
			e.tamper(e, i, out.Payload)
			return nil
		case i == e.total: // the fence: release what is held first
			e.release()
		}
	}
	return e.n.Send(e.ctx, out)
}

// fwd sends p to b in place of the current message. Called with e.mu held.
func (e *evil) fwd(p []byte) {
	m := &routing.Message{Onward: e.cur.Onward, Return: e.cur.Return, Payload: p}
	if err := e.n.Send(e.ctx, m); err != nil {
		e.t.Errorf("evil: forwarding: %v", err)
	}
}

// keep holds a copy of p until release.
func (e *evil) keep(p []byte) { e.kept = append(e.kept, bytes.Clone(p)) }

// release forwards what keep held, most recent first.
func (e *evil) release() {
	for i := len(e.kept) - 1; i >= 0; i-- {
		e.fwd(e.kept[i])
	}
	e.kept = e.kept[:0]
}

// later forwards p after a random delay of up to 20ms.
func (e *evil) later(p []byte) {
	m := &routing.Message{Onward: e.cur.Onward.Clone(), Return: e.cur.Return.Clone(), Payload: bytes.Clone(p)}
	e.wg.Add(1)
	time.AfterFunc(time.Duration(rand.IntN(20_000))*time.Microsecond, func() {
		defer e.wg.Done()
		e.n.Send(e.ctx, m)
	})
}

func (e *evil) thirdHandshakeMessage() []byte {
	e.mu.Lock()
	defer e.mu.Unlock()
	return bytes.Clone(e.msg3)
}

func (e *evil) decryptor() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.dec
}

// sink records the payloads delivered to it, and their Peer.
type sink struct {
	mu    sync.Mutex
	got   [][]byte
	peers map[string]int
	fence bool
}

func newSink(t *testing.T, n *router.Node) *sink {
	t.Helper()
	s := &sink{peers: make(map[string]int)}
	if err := n.Register(sinkAddr, router.Channel, func(m *routing.Message) error {
		s.mu.Lock()
		defer s.mu.Unlock()
		if string(m.Payload) == fence {
			s.fence = true
			return nil
		}
		s.got = append(s.got, bytes.Clone(m.Payload))
		s.peers[m.Peer]++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *sink) snapshot() (got [][]byte, fenced bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][]byte(nil), s.got...), s.fence
}

// waitFor polls cond until it holds or 10s have passed.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	crand.Read(b)
	return b
}

func nonceOf(ct []byte) uint64 { return binary.BigEndian.Uint64(ct[1:channel.HeaderLen]) }

func forged(typ channel.MessageType, nonce uint64, n int) []byte {
	b := append([]byte{byte(typ)}, binary.BigEndian.AppendUint64(nil, nonce)...)
	return append(b, randBytes(n-channel.HeaderLen)...)
}

func flip(ct []byte, at int, bit uint) []byte {
	ct[at] ^= 1 << (bit % 8)
	return ct
}

func every(k int) func(int) bool { return func(i int) bool { return i%k == 0 } }

func TestHostileRelay(t *testing.T) {
	t.Parallel()
	const n = 64
	tests := []struct {
		name   string
		n      int // messages a sends; 0 means n
		tamper func(e *evil, i int, ct []byte)
		// lost are the messages that must not arrive; nil means none.
		lost func(i int) bool
		// rejected is how many messages b must refuse, exactly.
		rejected int
	}{
		{
			name: "bit flip/ciphertext",
			tamper: func(e *evil, i int, ct []byte) {
				if i%4 == 0 {
					ct = flip(ct, channel.HeaderLen+i%(len(ct)-channel.Overhead), uint(i))
				}
				e.fwd(ct)
			},
			lost: every(4), rejected: n / 4,
		},
		{
			name: "bit flip/type",
			tamper: func(e *evil, i int, ct []byte) {
				if i%4 == 0 {
					ct = flip(ct, 0, uint(i/4))
				}
				e.fwd(ct)
			},
			lost: every(4), rejected: n / 4,
		},
		{
			name: "bit flip/nonce",
			tamper: func(e *evil, i int, ct []byte) {
				if i%4 == 0 {
					ct = flip(ct, 1+i/4%8, uint(i/32))
				}
				e.fwd(ct)
			},
			lost: every(4), rejected: n / 4,
		},
		{
			name: "bit flip/tag",
			tamper: func(e *evil, i int, ct []byte) {
				if i%4 == 0 {
					ct = flip(ct, len(ct)-channel.TagLen+i/4%channel.TagLen, uint(i))
				}
				e.fwd(ct)
			},
			lost: every(4), rejected: n / 4,
		},
		{
			name:     "replay/at once",
			tamper:   func(e *evil, i int, ct []byte) { e.fwd(ct); e.fwd(ct) },
			rejected: n,
		},
		{
			name:     "replay/at the end",
			tamper:   func(e *evil, i int, ct []byte) { e.fwd(ct); e.keep(ct) },
			rejected: n,
		},
		{
			name: "reorder within window/swap pairs",
			tamper: func(e *evil, i int, ct []byte) {
				if i%2 == 0 {
					e.keep(ct)
					return
				}
				e.fwd(ct)
				e.release()
			},
		},
		{
			name: "reorder within window/reverse blocks",
			tamper: func(e *evil, i int, ct []byte) {
				e.keep(ct)
				if i%16 == 15 {
					e.release()
				}
			},
		},
		{
			// The first message arrives after ReplayWindow-1 later
			// ones: the oldest the window still accepts.
			name: "reorder within window/oldest accepted",
			n:    channel.ReplayWindow,
			tamper: func(e *evil, i int, ct []byte) {
				if i == 0 {
					e.keep(ct)
					return
				}
				e.fwd(ct)
			},
		},
		{
			name: "reorder beyond window",
			n:    channel.ReplayWindow + 1,
			tamper: func(e *evil, i int, ct []byte) {
				if i == 0 {
					e.keep(ct)
					return
				}
				e.fwd(ct)
			},
			lost:     func(i int) bool { return i == 0 },
			rejected: 1,
		},
		{
			name: "drop/some",
			tamper: func(e *evil, i int, ct []byte) {
				if i%4 != 0 {
					e.fwd(ct)
				}
			},
			lost: every(4),
		},
		{
			name: "drop/burst",
			tamper: func(e *evil, i int, ct []byte) {
				if i < 10 || i >= 40 {
					e.fwd(ct)
				}
			},
			lost: func(i int) bool { return i >= 10 && i < 40 },
		},
		{
			name: "truncate/last byte",
			tamper: func(e *evil, i int, ct []byte) {
				if i%4 == 0 {
					ct = ct[:len(ct)-1]
				}
				e.fwd(ct)
			},
			lost: every(4), rejected: n / 4,
		},
		{
			name: "truncate/to overhead",
			tamper: func(e *evil, i int, ct []byte) {
				if i%4 == 0 {
					ct = ct[:channel.Overhead]
				}
				e.fwd(ct)
			},
			lost: every(4), rejected: n / 4,
		},
		{
			name: "truncate/to header",
			tamper: func(e *evil, i int, ct []byte) {
				if i%4 == 0 {
					ct = ct[:channel.HeaderLen]
				}
				e.fwd(ct)
			},
			lost: every(4), rejected: n / 4,
		},
		{
			name: "truncate/to type byte",
			tamper: func(e *evil, i int, ct []byte) {
				if i%4 == 0 {
					ct = ct[:1]
				}
				e.fwd(ct)
			},
			lost: every(4), rejected: n / 4,
		},
		{
			name: "truncate/to nothing",
			tamper: func(e *evil, i int, ct []byte) {
				if i%4 == 0 {
					ct = ct[:0]
				}
				e.fwd(ct)
			},
			lost: every(4), rejected: n / 4,
		},
		{
			name: "truncate/first byte",
			tamper: func(e *evil, i int, ct []byte) {
				if i%4 == 0 {
					ct = ct[1:]
				}
				e.fwd(ct)
			},
			lost: every(4), rejected: n / 4,
		},
		{
			name: "inject/random bytes",
			tamper: func(e *evil, i int, ct []byte) {
				e.fwd(randBytes(rand.IntN(2 * len(ct))))
				e.fwd(ct)
			},
			rejected: n,
		},
		{
			// Forged data messages with the real message's nonce (sent
			// before it), the next nonce, nonces some epochs ahead (keys
			// are derived, then the forgery fails), far ahead, and the
			// reserved one.
			name: "inject/forged data",
			tamper: func(e *evil, i int, ct []byte) {
				nonce := nonceOf(ct)
				nonces := []uint64{nonce, nonce + 1, nonce + 3*channel.RekeyInterval, nonce + 100*channel.RekeyInterval, math.MaxUint64}
				e.fwd(forged(channel.Data, nonces[i%len(nonces)], len(ct)))
				e.fwd(ct)
			},
			rejected: n,
		},
		{
			name: "inject/forged close",
			tamper: func(e *evil, i int, ct []byte) {
				switch i % 3 {
				case 0: // a random close at the next nonce
					e.fwd(forged(channel.Close, nonceOf(ct), channel.Overhead))
				case 1: // the real message, retyped as a close
					e.fwd(append([]byte{byte(channel.Close)}, ct[1:channel.Overhead]...))
				case 2: // a close with a nonce already used
					e.fwd(forged(channel.Close, nonceOf(ct)-1, channel.Overhead))
				}
				e.fwd(ct)
			},
			rejected: n,
		},
		{
			name: "inject/handshake replay",
			tamper: func(e *evil, i int, ct []byte) {
				e.fwd(e.msg3)
				e.fwd(ct)
			},
			rejected: n,
		},
		{
			name:   "delay",
			tamper: func(e *evil, i int, ct []byte) { e.later(ct) },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			count := tt.n
			if count == 0 {
				count = n
			}
			lost := tt.lost
			if lost == nil {
				lost = func(int) bool { return false }
			}
			tp := newTopology(t, true)
			e := newEvil(t, tp)
			e.tamper, e.total = tt.tamper, count
			sk := newSink(t, tp.b.n)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			ch, err := tp.a.mgr.Create(ctx, route(t, "/tcp/"+tp.relayAt+"/service/"+evilAddr+"/service/forward_to_b/service/api"), nil)
			if err != nil {
				t.Fatal(err)
			}
			bch := tp.b.mgr.Channels()
			if len(bch) != 1 {
				t.Fatalf("b has %d channels, want 1", len(bch))
			}
			before := bch[0].Stats()

			sent := make(map[string]int, count)
			want := 0
			to := append(ch.Route(), routing.LocalAddr(sinkAddr))
			for i := range count {
				p := fmt.Appendf(nil, "message %05d from a, padded to be longer than a keepalive", i)
				sent[string(p)] = i
				if !lost(i) {
					want++
				}
				if err := tp.a.n.Send(ctx, &routing.Message{Onward: to, Payload: p}); err != nil {
					t.Fatalf("send %d: %v", i, err)
				}
			}
			if err := tp.a.n.Send(ctx, &routing.Message{Onward: to, Payload: []byte(fence)}); err != nil {
				t.Fatal(err)
			}
			// The fence passes untouched after whatever the relay held:
			// once it is in, b has seen everything.
			waitFor(t, "the fence and every message that must arrive", func() bool {
				got, fenced := sk.snapshot()
				return fenced && len(got) >= want
			})

			got, _ := sk.snapshot()
			seen := make(map[int]bool)
			for _, p := range got {
				i, ok := sent[string(p)]
				switch {
				case !ok:
					t.Errorf("sink got %q, which a never sent", p)
				case seen[i]:
					t.Errorf("sink got message %d twice", i)
				case lost(i):
					t.Errorf("sink got message %d, which the relay never delivered", i)
				}
				seen[i] = true
			}
			if len(got) != want {
				t.Errorf("sink got %d messages, want %d", len(got), want)
			}
			sk.mu.Lock()
			if p := sk.peers[tp.a.id.Identifier().String()]; p != len(got) {
				t.Errorf("%d of %d messages came with a's identifier as Peer", p, len(got))
			}
			sk.mu.Unlock()

			after := bch[0].Stats()
			if d := after.Rejected - before.Rejected; d != uint64(tt.rejected) {
				t.Errorf("b rejected %d messages, want %d (last error %q)", d, tt.rejected, after.LastError)
			}
			// The channel is still the same one, up on both sides: no
			// tampering closed or re-established it.
			if now := tp.b.mgr.Channels(); len(now) != 1 || now[0] != bch[0] || now[0].State() != "up" {
				t.Fatalf("b's channels after the attack: %d, want the same one, up", len(now))
			}
			if ch.State() != "up" || ch.Stats().Epoch != 1 || after.Epoch != 1 {
				t.Fatalf("a's channel %s, epoch %d, b's epoch %d: want up, 1, 1", ch.State(), ch.Stats().Epoch, after.Epoch)
			}
			reply, err := tp.a.n.Request(ctx, append(ch.Route(), routing.LocalAddr(router.EchoAddress)), []byte("still there? (longer than a keepalive)"))
			if err != nil {
				t.Fatalf("echo after the attack: %v", err)
			}
			if string(reply.Payload) != "still there? (longer than a keepalive)" {
				t.Fatalf("echo = %q", reply.Payload)
			}
		})
	}
}

// TestDecryptorShortPayload sends messages shorter than a channel header to
// b's decryptor from b's own node, where the payload has no spare capacity
// (over TCP it always has some, which hid the out-of-range slice).
func TestDecryptorShortPayload(t *testing.T) {
	t.Parallel()
	tp := newTopology(t, true)
	e := newEvil(t, tp)
	e.tamper, e.total = func(e *evil, i int, ct []byte) { e.fwd(ct) }, 1
	newSink(t, tp.b.n)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ch, err := tp.a.mgr.Create(ctx, route(t, "/tcp/"+tp.relayAt+"/service/"+evilAddr+"/service/forward_to_b/service/api"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := tp.a.n.Send(ctx, &routing.Message{Onward: append(ch.Route(), routing.LocalAddr(sinkAddr)), Payload: []byte(fence)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b's decryptor address", func() bool { return e.decryptor() != "" })
	bch := tp.b.mgr.Channels()[0]
	payloads := [][]byte{nil, {}, {byte(channel.Data)}, {byte(channel.Close)}, forged(channel.Data, 7, channel.HeaderLen), forged(channel.Data, 7, channel.Overhead-1)}
	for _, p := range payloads {
		p = p[:len(p):len(p)]
		if err := tp.b.n.Send(ctx, &routing.Message{Onward: routing.Route{routing.LocalAddr(e.decryptor())}, Payload: p}); err == nil {
			t.Errorf("%d-byte message accepted", len(p))
		}
	}
	if got := bch.Stats().Rejected; got != uint64(len(payloads)) {
		t.Errorf("rejected = %d, want %d", got, len(payloads))
	}
	if _, err := tp.a.n.Request(ctx, append(ch.Route(), routing.LocalAddr(router.EchoAddress)), []byte("still there? (longer than a keepalive)")); err != nil {
		t.Fatalf("echo after short messages: %v", err)
	}
}

// collector records the messages a test worker receives.
type collector struct {
	mu  sync.Mutex
	got []*routing.Message
}

func newCollector(t *testing.T, n *router.Node, addr string) *collector {
	t.Helper()
	c := &collector{}
	if err := n.Register(addr, router.Public, func(m *routing.Message) error {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.got = append(c.got, &routing.Message{Onward: m.Onward.Clone(), Return: m.Return.Clone(), Payload: bytes.Clone(m.Payload)})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *collector) messages() []*routing.Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*routing.Message(nil), c.got...)
}

func firstMessage(t *testing.T) []byte {
	t.Helper()
	id, err := identity.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	hs, err := channel.NewInitiator(&channel.Config{Identity: id, Trust: channel.TrustEveryone})
	if err != nil {
		t.Fatal(err)
	}
	msg1, err := hs.Step(nil)
	if err != nil {
		t.Fatal(err)
	}
	return msg1
}

// TestListenerRefusesGarbageHandshakes sends, through the relay, more bad
// first messages than there are handshake slots: the listener must answer
// none, keep no state and start no goroutine, and still accept a real
// channel afterwards (a leaked slot per message would have filled them all).
func TestListenerRefusesGarbageHandshakes(t *testing.T) {
	// Not parallel: its subtests check for leaked goroutines, which
	// would see the other tests' goroutines.
	msg1 := firstMessage(t)
	tests := []struct {
		name string
		msg  []byte
	}{
		{"empty", nil},
		{"type only", msg1[:1]},
		{"type and version", msg1[:2]},
		{"truncated handshake1", msg1[:len(msg1)-1]},
		{"handshake1 with a trailing byte", append(bytes.Clone(msg1), 0)},
		{"unknown version", append([]byte{byte(channel.Handshake1), channel.ProtocolVersion + 1}, msg1[2:]...)},
		{"oversized handshake1", append([]byte{byte(channel.Handshake1), channel.ProtocolVersion}, make([]byte, channel.MaxHandshakeMessage)...)},
		{"handshake2", append([]byte{byte(channel.Handshake2)}, randBytes(200)...)},
		{"handshake3", append([]byte{byte(channel.Handshake3)}, randBytes(200)...)},
		{"data", forged(channel.Data, 0, 100)},
		{"close", forged(channel.Close, 0, channel.Overhead)},
		{"refusal", []byte("\x10you are refused")},
		{"random", append([]byte{0xff}, randBytes(1000)...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tp := newTopology(t, true)
			replies := newCollector(t, tp.a.n, "replies")
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			viaRelay := "/tcp/" + tp.relayAt + "/service/forward_to_b/service/"
			echo := func() {
				t.Helper()
				if _, err := tp.a.n.Request(ctx, route(t, viaRelay+router.EchoAddress), []byte("fence")); err != nil {
					t.Fatal(err)
				}
			}
			echo() // every connection is up before the goroutines are counted
			tp.lanesUp(t)
			baseline := goleak.IgnoreCurrent()

			api := route(t, viaRelay+secure.DefaultListener)
			for range secure.MaxPendingHandshakes + 1 {
				m := &routing.Message{Onward: api, Return: routing.Route{routing.LocalAddr("replies")}, Payload: tt.msg}
				if err := tp.a.n.Send(ctx, m); err != nil {
					t.Fatal(err)
				}
			}
			echo() // b has handled every bad message, and sent any answer, before this
			if got := replies.messages(); len(got) != 0 {
				t.Fatalf("listener answered %d bad messages, first %x", len(got), got[0].Payload)
			}
			if n := len(tp.b.mgr.Channels()); n != 0 {
				t.Fatalf("b has %d channels", n)
			}
			goleak.VerifyNone(t, baseline)

			ch, err := tp.a.mgr.Create(ctx, api, nil)
			if err != nil {
				t.Fatalf("real channel after bad messages: %v", err)
			}
			ch.Close()
		})
	}
}

// TestHandshakeWithoutThirdMessageExpires plays an initiator that stops
// after the second message, more often than one source may: the listener
// answers MaxPendingPerSource of them and sheds the rest; after
// HandshakeTimeout every responder decryptor and slot is freed, and the
// source is answered again.
func TestHandshakeWithoutThirdMessageExpires(t *testing.T) {
	const timeout = 2 * time.Second
	tp := newTopology(t, true, func(c *secure.Config) { c.HandshakeTimeout = timeout })
	replies := newCollector(t, tp.a.n, "replies")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	viaRelay := "/tcp/" + tp.relayAt + "/service/forward_to_b/service/"
	api := route(t, viaRelay+secure.DefaultListener)
	fenceB := func() {
		t.Helper()
		if _, err := tp.a.n.Request(ctx, route(t, viaRelay+router.EchoAddress), []byte(fence)); err != nil {
			t.Fatal(err)
		}
	}
	fenceB() // the connections are up
	msg1 := firstMessage(t)
	send := func(n int) {
		t.Helper()
		for i := range n {
			// A padded return route does not make another source.
			ret := routing.Route{routing.LocalAddr("replies"), routing.LocalAddr(fmt.Sprintf("pad%d", i))}
			if err := tp.a.n.Send(ctx, &routing.Message{Onward: api, Return: ret, Payload: msg1}); err != nil {
				t.Fatal(err)
			}
		}
	}
	start := time.Now()
	send(2 * secure.MaxPendingPerSource)
	fenceB()
	if d := time.Since(start); d >= timeout {
		t.Fatalf("sending took %v, longer than HandshakeTimeout (%v): the first expired before the check", d, timeout)
	}
	msgs := replies.messages()
	if len(msgs) != secure.MaxPendingPerSource {
		t.Fatalf("listener answered %d first messages from one source, want %d", len(msgs), secure.MaxPendingPerSource)
	}
	var decs []string
	for _, m := range msgs {
		dec := m.Return[len(m.Return)-1].Value
		if !tp.b.n.HasWorker(dec) {
			t.Fatalf("no responder decryptor at %s", dec)
		}
		decs = append(decs, dec)
	}
	for _, dec := range decs {
		waitFor(t, "every responder to give up", func() bool { return !tp.b.n.HasWorker(dec) })
	}
	if d := time.Since(start); d < timeout {
		t.Fatalf("responders gave up after %v, before HandshakeTimeout (%v)", d, timeout)
	}
	send(1)
	waitFor(t, "the source to be answered again", func() bool { return len(replies.messages()) == secure.MaxPendingPerSource+1 })
}

// TestHandshakeFloodLeavesRoom floods a listener, through the relay, with
// first messages from more sources than it has slots and never completes
// them; a real initiator still gets its channel at once, because the oldest
// pending handshakes give way to new ones.
func TestHandshakeFloodLeavesRoom(t *testing.T) {
	tp := newTopology(t, true)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	viaRelay := "/tcp/" + tp.relayAt + "/service/forward_to_b/service/"
	api := route(t, viaRelay+secure.DefaultListener)
	msg1 := firstMessage(t)
	sources := secure.MaxPendingHandshakes/secure.MaxPendingPerSource + 8
	var answered atomic.Int64
	for i := range sources {
		fl := router.New(router.Config{})
		t.Cleanup(func() { fl.Close() })
		fl.Register("replies", router.Public, func(*routing.Message) error { answered.Add(1); return nil })
		for range secure.MaxPendingPerSource {
			if err := fl.Send(ctx, &routing.Message{Onward: api, Return: routing.Route{routing.LocalAddr("replies")}, Payload: msg1}); err != nil {
				t.Fatalf("flooder %d: %v", i, err)
			}
		}
	}
	want := int64(sources * secure.MaxPendingPerSource)
	waitFor(t, "every flooded first message answered", func() bool { return answered.Load() == want })
	start := time.Now()
	if _, err := tp.a.mgr.Create(ctx, api, []identity.Identifier{tp.b.id.Identifier()}); err != nil {
		t.Fatalf("channel under a handshake flood: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("channel setup under a handshake flood took %v, want under 1s", d)
	}
}
