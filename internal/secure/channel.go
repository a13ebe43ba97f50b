package secure

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ockam-go/ockam/channel"
	"github.com/ockam-go/ockam/internal/identity"
	"github.com/ockam-go/ockam/internal/router"
	"github.com/ockam-go/ockam/internal/routing"
	"github.com/ockam-go/ockam/internal/wire"
)

// Channel is one end of a secure channel. Local workers send to its address;
// its current link (one handshake's session) carries the messages.
type Channel struct {
	mgr  *Manager
	addr string // encryptor: /service/<addr>
	role string
	// routes are the initiator's routes to the listener (several: through
	// several relays); at is the one in use, the next after a failure.
	routes []routing.Route
	at     atomic.Int32
	trust  func(identity.Identifier) error

	cur         atomic.Pointer[link]
	established atomic.Bool

	mu       sync.Mutex
	up       chan struct{} // closed while a link is up; replaced when it goes down
	closed   bool
	lastErr  string
	epochs   uint64
	sent     atomic.Uint64
	received atomic.Uint64
	rejected atomic.Uint64
	bytesOut atomic.Uint64 // channel messages sent, as on the wire
	bytesIn  atomic.Uint64 // channel messages opened, as on the wire
	upSince  time.Time     // when the current link came up; under mu
	stop     chan struct{}
	kick     chan struct{} // cap 1: a link went down, maintain acts now
}

// link is one established session of a channel.
type link struct {
	sess     *channel.Session
	dec      string        // decryptor address
	remote   routing.Route // route to the peer's decryptor
	epoch    uint64
	done     chan struct{}
	once     sync.Once
	lastRecv atomic.Int64 // unix nanos
	lastSend atomic.Int64
	ret      routing.Route // our decryptor, the return route of what we send
	q        sendQueue
	peer     string // sess.Peer().String(), for Message.Peer

	rx struct { // decrypt's, see there
		mu  sync.Mutex
		msg routing.Message
		in  routing.Interner
	}
}

// Done is closed when the link has ended.
func (l *link) Done() <-chan struct{} { return l.done }

// Address is the channel's local address (the encryptor).
func (c *Channel) Address() string { return c.addr }

// Route is the channel's local route, /service/<address>.
func (c *Channel) Route() routing.Route { return routing.Route{routing.LocalAddr(c.addr)} }

// Role is "initiator" or "responder".
func (c *Channel) Role() string { return c.role }

// ListenerRoute is the route to the listener in use (initiator).
func (c *Channel) ListenerRoute() routing.Route {
	if len(c.routes) == 0 {
		return nil
	}
	return c.routes[int(c.at.Load())%len(c.routes)]
}

// Routes are all the initiator's routes to the listener, in order.
func (c *Channel) Routes() []routing.Route { return c.routes }

// nextRoute moves to the next route, if there is more than one, and
// reports whether it did.
func (c *Channel) nextRoute() bool {
	if len(c.routes) < 2 {
		return false
	}
	c.at.Store((c.at.Load() + 1) % int32(len(c.routes)))
	return true
}

// Peer returns the peer's identifier (zero while down before any link).
func (c *Channel) Peer() identity.Identifier {
	if l := c.cur.Load(); l != nil {
		return l.sess.Peer()
	}
	return identity.Identifier{}
}

// State describes the channel: "up", "down" or "closed".
func (c *Channel) State() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closed:
		return "closed"
	case c.cur.Load() != nil:
		return "up"
	}
	return "down"
}

// Stats are the channel's counters.
type Stats struct {
	Epoch                    uint64
	Sent, Received, Rejected uint64
	BytesOut, BytesIn        uint64    // channel messages (ciphertext) sent and opened
	UpSince                  time.Time // zero while down
	// Late counts messages of the current session that arrived behind a
	// later one (accepted, but sent or carried out of order).
	Late      uint64
	LastError string
}

// Stats returns the channel's counters.
func (c *Channel) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := Stats{Epoch: c.epochs, Sent: c.sent.Load(), Received: c.received.Load(), Rejected: c.rejected.Load(),
		BytesOut: c.bytesOut.Load(), BytesIn: c.bytesIn.Load(), LastError: c.lastErr}
	if l := c.cur.Load(); l != nil {
		st.UpSince = c.upSince
		st.Late = l.sess.Stats().Late
	}
	return st
}

// Session is the current link: flows bind to one and end when its Done
// closes. It returns nil while the channel is down.
func (c *Channel) Session() *Link {
	l := c.cur.Load()
	if l == nil {
		return nil
	}
	return &Link{l: l}
}

// Link is a handle on one session of a channel.
type Link struct{ l *link }

// Done is closed when the session ends (path lost, peer closed, rekey
// failure): whatever was bound to it must end.
func (k *Link) Done() <-chan struct{} { return k.l.done }

// Epoch numbers the sessions of a channel.
func (k *Link) Epoch() uint64 { return k.l.epoch }

// WaitUp waits until the channel has a session.
func (c *Channel) WaitUp(ctx context.Context) (*Link, error) {
	for {
		c.mu.Lock()
		up, closed, lastErr := c.up, c.closed, c.lastErr
		c.mu.Unlock()
		if closed {
			return nil, fmt.Errorf("securechannel: channel %s is closed", c.addr)
		}
		if l := c.cur.Load(); l != nil {
			return &Link{l: l}, nil
		}
		select {
		case <-up:
		case <-ctx.Done():
			if lastErr != "" {
				return nil, fmt.Errorf("%w: %s", ErrDown, lastErr)
			}
			return nil, ErrDown
		}
	}
}

func (c *Channel) setLink(l *link) {
	c.mu.Lock()
	c.epochs++
	l.epoch = c.epochs
	c.upSince = time.Now()
	c.cur.Store(l)
	c.lastErr = ""
	close(c.up)
	c.mu.Unlock()
	c.established.Store(true)
}

// linkDown ends link l (if it is still current) for reason.
func (c *Channel) linkDown(l *link, reason error) {
	c.mu.Lock()
	if c.cur.Load() != l {
		c.mu.Unlock()
		return
	}
	c.cur.Store(nil)
	c.lastErr = reason.Error()
	c.up = make(chan struct{})
	closed := c.closed
	c.mu.Unlock()
	l.close(c, false)
	if c.role == "initiator" && c.nextRoute() {
		// The route in use failed: the next handshake takes another.
		reason = fmt.Errorf("%w; next route: %s", reason, c.ListenerRoute())
	}
	if !closed {
		c.mgr.log.Warn("secure channel down", "channel", c.addr, "role", c.role, "reason", reason)
	}
	select {
	case c.kick <- struct{}{}:
	default:
	}
	if c.role == "responder" {
		// A responder cannot re-establish: the initiator does.
		c.Close()
	}
}

// close unregisters the link's decryptor and, if tell, sends the peer an
// authenticated close.
func (l *link) close(c *Channel, tell bool) {
	l.once.Do(func() {
		if tell {
			if b, err := l.sess.SealClose(nil); err == nil {
				c.mgr.n.Send(context.Background(), &routing.Message{Onward: l.remote, Return: routing.Route{routing.LocalAddr(l.dec)}, Payload: b})
			}
		}
		c.mgr.n.Unregister(l.dec)
		close(l.done)
	})
}

// Close closes the channel, telling the peer, and stops re-establishing it.
func (c *Channel) Close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	close(c.stop)
	l := c.cur.Swap(nil)
	c.mu.Unlock()
	if l != nil {
		l.close(c, true)
	}
	c.mgr.n.Unregister(c.addr)
	c.mgr.mu.Lock()
	delete(c.mgr.channels, c.addr)
	c.mgr.mu.Unlock()
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, channel.MaxMessage); return &b }}

// encrypt is the encryptor: it seals everything after its own hop and sends
// it to the peer's decryptor (send.go). It runs on the sender's goroutine.
func (c *Channel) encrypt(m *routing.Message) error {
	l := c.cur.Load()
	if l == nil {
		return ErrDown
	}
	inner := routing.Message{Kind: m.Kind, Onward: m.Onward[1:], Return: m.Return, Payload: m.Payload, Lane: m.Lane}
	return c.send(l, &inner)
}

// decrypt is the decryptor of link l: it opens a message from the peer (in
// place, in the transport's buffer) and routes what it carried.
func (c *Channel) decrypt(l *link, m *routing.Message) error {
	msg := m.Payload
	if len(msg) == wire.UnknownLen && wire.Type(msg[0]) == wire.Unknown {
		if c.role == "initiator" {
			c.linkDown(l, errors.New("the peer does not know this channel (its node restarted)"))
		}
		return nil
	}
	if len(msg) > 0 && channel.MessageType(msg[0]) != channel.Data && channel.MessageType(msg[0]) != channel.Close {
		c.rejected.Add(1)
		return fmt.Errorf("securechannel: unexpected %v message on an established channel", channel.MessageType(msg[0]))
	}
	if len(msg) < channel.Overhead {
		// Checked here, not only by Open: slicing the in-place destination
		// below needs HeaderLen bytes of capacity, which only some senders'
		// buffers happen to have.
		c.rejected.Add(1)
		return fmt.Errorf("securechannel: %d-byte message is shorter than a channel message", len(msg))
	}
	pt, err := l.sess.Open(msg[channel.HeaderLen:channel.HeaderLen], msg)
	if err != nil {
		if errors.Is(err, net.ErrClosed) {
			// The peer closed this session: it is stopping, or it
			// dropped its end. The initiator owns the channel and
			// re-establishes it (with backoff) until it is itself
			// closed, so a peer node that stops and starts again
			// (`ockam node stop; ockam node start`) heals, as a crash
			// does; a responder ends (linkDown).
			c.linkDown(l, errors.New("closed by peer"))
			return nil
		}
		c.rejected.Add(1)
		c.mu.Lock()
		c.lastErr = err.Error()
		c.mu.Unlock()
		return err
	}
	l.lastRecv.Store(time.Now().UnixNano())
	// The decoded message and its routes are reused from one message to
	// the next (a handler owns a message only for the duration of the
	// call), and address strings come from the link's interner; a second
	// reader decrypting for the link at the same time decodes afresh.
	inner := &routing.Message{}
	var in *routing.Interner
	if l.rx.mu.TryLock() {
		defer l.rx.mu.Unlock()
		inner, in = &l.rx.msg, &l.rx.in
	}
	if err := routing.DecodeMessageInterned(inner, pt, in); err != nil {
		c.rejected.Add(1)
		return err
	}
	if len(inner.Onward) == 0 {
		return nil // keepalive
	}
	c.received.Add(1)
	c.bytesIn.Add(uint64(len(msg)))
	if len(inner.Return) >= routing.MaxRouteLen {
		return errors.New("securechannel: return route too long")
	}
	inner.Return = append(inner.Return, routing.Address{})
	copy(inner.Return[1:], inner.Return)
	inner.Return[0] = routing.LocalAddr(c.addr)
	inner.Peer = l.peer
	return c.mgr.n.Send(context.Background(), inner)
}

// handshake runs the initiator's side of one handshake through c.route,
// waiting at most timeout for each answer.
func (c *Channel) handshake(ctx context.Context, timeout time.Duration) (*link, error) {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < timeout {
		// The caller's deadline comes first: say that one in errors.
		timeout = max(time.Until(dl).Round(100*time.Millisecond), 0)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	route := c.ListenerRoute()
	hs, err := channel.NewInitiator(&channel.Config{Identity: c.mgr.cfg.Identity, Trust: c.trust})
	if err != nil {
		return nil, err
	}
	msg1, err := hs.Step(nil)
	if err != nil {
		return nil, err
	}
	l := &link{done: make(chan struct{})}
	got := make(chan *routing.Message, 1)
	unknown := make(chan struct{}, 1)
	missing := make(chan routing.Address, 1)
	confirmed := make(chan error, 1)
	var established, confirmedOnce atomic.Bool
	l.dec, err = c.mgr.n.RegisterRandom("", router.Public, func(m *routing.Message) error {
		if m.Kind == routing.KindError {
			// A node on the route has no such hop: the handshake
			// fails now, and a link's path is gone (like Unknown).
			u, err := routing.DecodeUnreachable(m.Payload)
			if err != nil {
				return err
			}
			if !established.Load() {
				select {
				case missing <- u.Hop:
				default:
				}
			} else if c.role == "initiator" {
				c.linkDown(l, fmt.Errorf("a node on the route to the peer has no %s", u.Hop))
			}
			return nil
		}
		if established.Load() {
			if !confirmedOnce.Load() && len(m.Payload) > 0 && wire.Type(m.Payload[0]) == wire.Refusal {
				confirmed <- refusalError(m.Payload)
				confirmedOnce.Store(true)
				return nil
			}
			err := c.decrypt(l, m)
			if err == nil && confirmedOnce.CompareAndSwap(false, true) {
				confirmed <- nil
			}
			return err
		}
		if len(m.Payload) == wire.UnknownLen && wire.Type(m.Payload[0]) == wire.Unknown {
			// The listener's address is not held (its node is stopping
			// or starting, or a relay name has no registrant): fail now.
			select {
			case unknown <- struct{}{}:
			default:
			}
			return nil
		}
		cp := &routing.Message{Return: m.Return.Clone(), Payload: append([]byte(nil), m.Payload...)}
		select {
		case got <- cp:
		default:
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	c.mgr.n.AcceptErrors(l.dec)
	fail := func(reason string, err error) (*link, error) {
		c.mgr.n.Unregister(l.dec)
		c.mgr.failed(reason)
		return nil, err
	}
	if err := c.mgr.n.Send(ctx, &routing.Message{Onward: route, Return: routing.Route{routing.LocalAddr(l.dec)}, Payload: msg1}); err != nil {
		return fail(FailUnreachable, fmt.Errorf("securechannel: sending to %s: %w", route, err))
	}
	var msg2 *routing.Message
	select {
	case msg2 = <-got:
	case <-unknown:
		return fail(FailUnreachable, fmt.Errorf("securechannel: nothing listens at %s (yet)", route))
	case hop := <-missing:
		return fail(FailUnreachable, fmt.Errorf("securechannel: nothing listens at %s: a node on it has no %s", route, hop))
	case <-ctx.Done():
		return fail(FailTimeout, fmt.Errorf("securechannel: no answer from %s within %v", route, timeout))
	}
	msg3, err := hs.Step(msg2.Payload)
	if err != nil {
		return fail(failReason(err), err)
	}
	l.sess, err = hs.Session()
	if err != nil {
		return fail(FailMalformed, err)
	}
	l.remote = msg2.Return
	l.ret = routing.Route{routing.LocalAddr(l.dec)}
	l.peer = l.sess.Peer().String()
	now := time.Now().UnixNano()
	l.lastRecv.Store(now)
	l.lastSend.Store(now)
	established.Store(true)
	if err := c.mgr.n.Send(ctx, &routing.Message{Onward: l.remote, Return: routing.Route{routing.LocalAddr(l.dec)}, Payload: msg3}); err != nil {
		return fail(FailUnreachable, err)
	}
	// The responder answers the third message with an authenticated
	// keepalive when it accepts us, or a refusal naming why.
	select {
	case err := <-confirmed:
		if err != nil {
			return fail(FailRefused, err)
		}
	case <-ctx.Done():
		return fail(FailTimeout, fmt.Errorf("securechannel: %s did not confirm the channel within %v", route, timeout))
	}
	return l, nil
}

// A refusal is the one unauthenticated message a responder sends after a
// failed third handshake message: wire.Refusal || reason (UTF-8, at most
// wire.MaxRefusal bytes). It can only make a channel fail, which anyone on
// the path can do by dropping messages anyway.
func refusalError(b []byte) error {
	reason := b[1:]
	if len(reason) > wire.MaxRefusal {
		reason = reason[:wire.MaxRefusal]
	}
	return fmt.Errorf("securechannel: refused by the listener: %s", strings.ToValidUTF8(string(reason), "?"))
}

// refusal is what a listener tells a peer it refuses: why, without what
// only the listener's operator should read (its trust configuration).
func refusal(err error) []byte {
	s := "handshake failed"
	if u := (*channel.UntrustedError)(nil); errors.As(err, &u) {
		s = "identity " + u.Peer.String() + " is not trusted by this listener"
	}
	if len(s) > wire.MaxRefusal {
		s = s[:wire.MaxRefusal]
	}
	return append([]byte{byte(wire.Refusal)}, s...)
}

// completeResponder handles the third handshake message at a responder's
// decryptor, and after it every data message.
func (c *Channel) completeResponder(r *responder, m *routing.Message) error {
	if l := c.cur.Load(); l != nil {
		return c.decrypt(l, m)
	}
	if c.established.Load() {
		return ErrDown
	}
	if _, err := r.hs.Step(m.Payload); err != nil {
		c.mgr.n.Unregister(r.dec)
		r.timer.Stop()
		c.mgr.failed(failReason(err))
		c.mgr.log.Info("secure channel refused", "err", err)
		c.mgr.n.Send(context.Background(), &routing.Message{Onward: r.remote, Return: routing.Route{routing.LocalAddr(r.dec)}, Payload: refusal(err)})
		return err
	}
	sess, err := r.hs.Session()
	if err != nil {
		return err
	}
	r.timer.Stop()
	l := &link{sess: sess, dec: r.dec, remote: r.remote, ret: routing.Route{routing.LocalAddr(r.dec)}, peer: sess.Peer().String(), done: make(chan struct{})}
	now := time.Now().UnixNano()
	l.lastRecv.Store(now)
	l.lastSend.Store(now)
	addr, err := c.mgr.n.RegisterRandom("", router.Private, c.encrypt)
	if err != nil {
		return err
	}
	c.mgr.n.AcceptErrors(addr)
	c.addr = addr
	c.mgr.mu.Lock()
	if c.mgr.closed {
		c.mgr.mu.Unlock()
		c.mgr.n.Unregister(addr)
		c.mgr.n.Unregister(r.dec)
		return net.ErrClosed
	}
	c.mgr.channels[addr] = c
	c.mgr.wg.Add(1)
	c.mgr.mu.Unlock()
	c.setLink(l)
	c.keepalive(l) // confirms the channel to the initiator
	go c.maintain()
	c.mgr.log.Info("secure channel accepted", "channel", addr, "peer", sess.Peer().Short())
	return nil
}

// maintain keeps the channel alive: keepalives when idle, a link declared
// down when the peer is silent, and for an initiator, re-establishment with
// exponential backoff and jitter.
//
// A re-establishing handshake first waits only a second for each answer
// (firstAttempt), doubling up to HandshakeTimeout each time an attempt goes
// unanswered: a first message lost by a peer node that is stopping or not
// yet listening costs a second, not HandshakeTimeout, and a slow path still
// gets the full timeout after a few tries. Attempts refused at once (no TCP
// listener) do not grow it.
func (c *Channel) maintain() {
	defer c.mgr.wg.Done()
	t := time.NewTicker(c.mgr.cfg.Keepalive / 2)
	defer t.Stop()
	backoff := c.mgr.cfg.BackoffMin
	shortest := min(firstAttempt, c.mgr.cfg.HandshakeTimeout)
	attempt := shortest
	var downSince time.Time      // first failed attempt of this outage
	tried := 0                   // failed attempts since the last success
	first := c.cur.Load() == nil // restored: try at once
	for {
		if !first {
			select {
			case <-c.stop:
				return
			case <-t.C:
			case <-c.kick:
			}
		}
		first = false
		l := c.cur.Load()
		if l != nil {
			now := time.Now().UnixNano()
			if time.Duration(now-l.lastRecv.Load()) > c.mgr.cfg.DeadAfter {
				c.linkDown(l, fmt.Errorf("peer silent for %v", c.mgr.cfg.DeadAfter))
				continue
			}
			if time.Duration(now-l.lastSend.Load()) >= c.mgr.cfg.Keepalive {
				c.keepalive(l)
			}
			continue
		}
		if c.role != "initiator" {
			return
		}
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			select {
			case <-c.stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		began := time.Now()
		nl, err := c.handshake(ctx, attempt)
		cancel()
		if err != nil && c.nextRoute() {
			// Several routes: try the next one at once, and back off only
			// once each has failed in turn.
			tried++
			if tried%len(c.routes) != 0 {
				c.mu.Lock()
				c.lastErr = err.Error()
				c.mu.Unlock()
				select {
				case <-c.stop:
					return
				case <-time.After(jitter(c.mgr.cfg.BackoffMin)):
				}
				continue
			}
		}
		if err != nil {
			if time.Since(began) >= attempt {
				attempt = min(2*attempt, c.mgr.cfg.HandshakeTimeout)
			}
			c.mu.Lock()
			c.lastErr = err.Error()
			c.mu.Unlock()
			if downSince.IsZero() {
				downSince = time.Now()
			}
			// A peer back within a minute is found within BackoffMax;
			// one gone for longer is tried less often (slowBackoff
			// times BackoffMax), so a dead or refusing peer costs
			// little.
			ceiling := c.mgr.cfg.BackoffMax
			if time.Since(downSince) > slowAfter {
				ceiling *= slowBackoff
			}
			wait := jitter(backoff)
			backoff = min(2*backoff, ceiling)
			select {
			case <-c.stop:
				return
			case <-time.After(wait):
			}
			continue
		}
		backoff, attempt, downSince, tried = c.mgr.cfg.BackoffMin, shortest, time.Time{}, 0
		c.mu.Lock()
		closed := c.closed
		c.mu.Unlock()
		if closed {
			nl.close(c, true)
			return
		}
		c.setLink(nl)
		c.mgr.log.Info("secure channel re-established", "channel", c.addr, "peer", nl.sess.Peer().Short())
	}
}

// firstAttempt bounds the wait for each answer of the first handshake that
// re-establishes a channel.
const firstAttempt = time.Second

// After slowAfter of failed attempts, the backoff ceiling is slowBackoff
// times BackoffMax (about 6 s by default).
const (
	slowAfter   = time.Minute
	slowBackoff = 8
)

func (c *Channel) keepalive(l *link) {
	c.send(l, nil)
}
