package transport

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"time"
)

// Lanes: several TCP connections to one peer, used as one.
//
// On a long path one TCP connection carries at most its send buffer per
// round trip (net.core.wmem_max caps SO_SNDBUF, see sendBuffer), and one
// loss halves the window of everything it carries. So the dialling side
// opens a bundle of lanes (Config.Lanes, DefaultLanes) and says, right after
// the version byte, which bundle each belongs to (hello, below). The
// accepting side groups them. The bundle is addressed on each node by the ID
// of its head (the first lane to be attached there): it is the one *Conn the
// router sees, and Conn.Lane picks the lane a message goes on. A message's
// lane is a hint chosen by its sender (routing.Message.Lane): the secure
// channel gives each portal flow its own, so a flow's messages stay in order
// while a channel's flows spread over the lanes. What arrives on lane i is
// delivered with Lane = i, so a relay passes it on along lane i of the next
// bundle (modulo its size): order per flow holds end to end.
//
// A lane that ends ends its bundle (every lane is closed, the head's
// OnClose runs once): to the layers above, a bundle fails as one connection
// did, and the next Dial opens a new one. Every lane counts as a connection
// for MaxConns and MaxConnsPerIP.

// hello is what the dialling side writes after the version byte on each lane
// of a bundle (protocol version 3):
//
//	bundle  16 bytes, random, the same on every lane of the bundle
//	lane     1 byte, this lane's index, < lanes
//	lanes    1 byte, the bundle's size, 1..MaxLanes
type hello struct {
	bundle [bundleIDLen]byte
	lane   uint8
	lanes  uint8
}

const (
	bundleIDLen = 16
	helloLen    = bundleIDLen + 2
	// MaxLanes bounds the lanes of a bundle.
	MaxLanes = 16
	// DefaultLanes is how many lanes a transport opens to a peer it dials
	// when Config.Lanes is zero.
	DefaultLanes = 4
	// HelloTimeout bounds how long an accepted connection may take to send
	// its version byte and hello.
	HelloTimeout = DialTimeout
)

func (h hello) append(b []byte) []byte {
	b = append(b, h.bundle[:]...)
	return append(b, h.lane, h.lanes)
}

// parseHello decodes a hello of exactly helloLen bytes.
func parseHello(b []byte) (hello, error) {
	var h hello
	if len(b) != helloLen {
		return h, fmt.Errorf("transport: hello of %d bytes, want %d", len(b), helloLen)
	}
	copy(h.bundle[:], b)
	h.lane, h.lanes = b[bundleIDLen], b[bundleIDLen+1]
	if h.lanes == 0 || h.lanes > MaxLanes {
		return h, fmt.Errorf("transport: hello for a bundle of %d lanes (1..%d)", h.lanes, MaxLanes)
	}
	if h.lane >= h.lanes {
		return h, fmt.Errorf("transport: hello for lane %d of %d", h.lane, h.lanes)
	}
	return h, nil
}

// Preamble returns what a dialling node writes first on a connection of a
// bundle of one lane: the version byte and a hello with a fresh bundle ID.
// For tests and tools that speak the transport by hand.
func Preamble() []byte {
	h := hello{lanes: 1}
	rand.Read(h.bundle[:])
	return h.append([]byte{ProtocolVersion})
}

// bundle is the lanes of one peer connection.
type bundle struct {
	id     [bundleIDLen]byte
	ip     netip.Addr // of an accepted bundle: every lane comes from it
	lanes  []atomic.Pointer[Conn]
	head   *Conn // the first lane attached; under Transport.mu
	closed bool  // under Transport.mu: no lane joins any more
	// ready is closed once a dialled bundle's lane 0 is attached or
	// failed: the other lanes join after it.
	ready chan struct{}
}

// Lane returns the lane a message with lane hint i goes on: lane i modulo
// the bundle's size, or the head while that lane is not there (yet).
func (c *Conn) Lane(i uint8) *Conn {
	b := c.b
	if b == nil || len(b.lanes) == 1 {
		return c
	}
	if l := b.lanes[int(i)%len(b.lanes)].Load(); l != nil {
		return l
	}
	return c
}

// Lanes returns the lanes of c's bundle that are attached.
func (c *Conn) Lanes() []*Conn {
	if c.b == nil {
		return []*Conn{c}
	}
	out := make([]*Conn, 0, len(c.b.lanes))
	for i := range c.b.lanes {
		if l := c.b.lanes[i].Load(); l != nil {
			out = append(out, l)
		}
	}
	return out
}

// LaneIndex is c's index in its bundle.
func (c *Conn) LaneIndex() int { return int(c.lane) }

func (t *Transport) lanes() int {
	switch n := t.cfg.Lanes; {
	case n <= 0:
		return DefaultLanes
	case n > MaxLanes:
		return MaxLanes
	default:
		return n
	}
}

// dialBundle opens the lanes of a new bundle to addr, all at once, and
// returns its head, lane 0, as soon as that one is connected: a Dial costs
// what it did with one connection. The other lanes join in the background
// once the peer has answered on them (its version byte: it took them, an
// accepting node over its limit closes them instead), so a lane the peer
// refused is never used; until a lane is there, its messages go on the head.
// A lane that cannot join leaves the bundle with fewer. Lane 0 failing fails
// the dial and the bundle.
func (t *Transport) dialBundle(ctx context.Context, addr string) (*Conn, error) {
	n := t.lanes()
	b := &bundle{lanes: make([]atomic.Pointer[Conn], n), ready: make(chan struct{})}
	rand.Read(b.id[:])
	for i := 1; i < n; i++ {
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			break
		}
		t.wg.Add(1)
		t.mu.Unlock()
		go func() {
			defer t.wg.Done()
			if err := t.dialLane(addr, b, i, n); err != nil && !isExpected(err) {
				t.log.Info("lane not opened", "remote", addr, "lane", i, "err", err)
			}
		}()
	}
	err := t.dialLane0(ctx, addr, b, n)
	t.mu.Lock()
	if err != nil {
		b.closed = true // the lanes in the background join nothing
	} else if !b.closed && !t.closed {
		t.outbound[addr] = b.head
	}
	head := b.head
	t.mu.Unlock()
	close(b.ready)
	if err != nil {
		return nil, err
	}
	return head, nil
}

func (t *Transport) dialLane0(ctx context.Context, addr string, b *bundle, n int) error {
	d := net.Dialer{Timeout: DialTimeout}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("transport: connect to %s: %w", addr, unwrapOp(err))
	}
	c := t.newConn(nc, addr)
	if err := t.greetDialled(c, hello{bundle: b.id, lanes: uint8(n)}, false); err != nil {
		nc.Close()
		return err
	}
	if err := t.attach(c, b, hello{bundle: b.id, lanes: uint8(n)}); err != nil {
		nc.Close()
		return err
	}
	return nil
}

// dialLane opens lane i of dialled bundle b; it runs in the background,
// bounded by DialTimeout, and the transport's Close ends it.
func (t *Transport) dialLane(addr string, b *bundle, i, n int) error {
	ctx, cancel := context.WithTimeout(t.ctx, DialTimeout)
	defer cancel()
	d := net.Dialer{}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("transport: connect to %s: %w", addr, unwrapOp(err))
	}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		nc.Close()
		return net.ErrClosed
	}
	t.hellos[nc] = struct{}{}
	t.mu.Unlock()
	defer func() {
		t.mu.Lock()
		delete(t.hellos, nc)
		t.mu.Unlock()
	}()
	c := t.newConn(nc, addr)
	h := hello{bundle: b.id, lane: uint8(i), lanes: uint8(n)}
	if err := t.greetDialled(c, h, true); err != nil {
		nc.Close()
		return err
	}
	select {
	case <-b.ready:
	case <-ctx.Done():
		nc.Close()
		return ctx.Err()
	}
	if err := t.attach(c, b, h); err != nil {
		nc.Close()
		return err
	}
	return nil
}

// greetDialled writes the version byte and hello on dialled lane c and,
// with wait, reads the peer's version byte (else c's reader does).
func (t *Transport) greetDialled(c *Conn, h hello, wait bool) error {
	c.nc.SetDeadline(time.Now().Add(DialTimeout))
	defer c.nc.SetDeadline(time.Time{})
	if _, err := c.nc.Write(h.append([]byte{ProtocolVersion})); err != nil {
		return fmt.Errorf("transport: writing protocol version: %w", err)
	}
	if !wait {
		return nil
	}
	var v [1]byte
	if _, err := io.ReadFull(c.nc, v[:]); err != nil {
		return fmt.Errorf("transport: reading protocol version: %w", helloErr(err))
	}
	if v[0] != ProtocolVersion {
		return fmt.Errorf("%w: peer speaks %d, we speak %d", ErrVersion, v[0], ProtocolVersion)
	}
	c.versionRead = true
	return nil
}

// acceptLane reads an accepted connection's version byte and hello (within
// HelloTimeout) and attaches it to its bundle. The connection was admitted
// (and counted) by the accept loop; nc is in t.hellos until this returns.
func (t *Transport) acceptLane(nc net.Conn) {
	defer t.wg.Done()
	err := t.greet(nc)
	t.mu.Lock()
	delete(t.hellos, nc)
	t.mu.Unlock()
	if err != nil {
		if !isExpected(err) {
			t.shedLog.Info("refused connection", "remote", nc.RemoteAddr().String(), "reason", err)
		}
		t.release(remoteIP(nc))
		nc.Close()
	}
}

func (t *Transport) greet(nc net.Conn) error {
	// Ours first, so a peer of another version hears which we speak.
	nc.SetWriteDeadline(time.Now().Add(HelloTimeout))
	if _, err := nc.Write([]byte{ProtocolVersion}); err != nil {
		return fmt.Errorf("transport: writing protocol version: %w", err)
	}
	nc.SetWriteDeadline(time.Time{})
	nc.SetReadDeadline(time.Now().Add(min(HelloTimeout, t.idle)))
	var buf [1 + helloLen]byte
	if _, err := io.ReadFull(nc, buf[:1]); err != nil {
		return fmt.Errorf("transport: reading protocol version: %w", helloErr(err))
	}
	if buf[0] != ProtocolVersion {
		return fmt.Errorf("%w: peer speaks %d, we speak %d", ErrVersion, buf[0], ProtocolVersion)
	}
	if _, err := io.ReadFull(nc, buf[1:]); err != nil {
		return fmt.Errorf("transport: reading hello: %w", helloErr(err))
	}
	h, err := parseHello(buf[1:])
	if err != nil {
		return err
	}
	c := t.newConn(nc, "")
	c.ip = remoteIP(nc)
	c.versionRead = true
	return t.attach(c, nil, h)
}

func helloErr(err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("nothing within %v", HelloTimeout)
	}
	return err
}

// attach adds lane c to its bundle (b for a dialled lane; for an accepted
// one, the bundle its hello names, made if there is none) and starts its
// goroutines. A lane joins only a bundle of the same size, from the same IP
// address, whose slot for it is free. An accepted lane was counted by admit;
// a dialled one is counted here.
func (t *Transport) attach(c *Conn, b *bundle, h hello) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return net.ErrClosed
	}
	if b == nil {
		b = t.bundles[h.bundle]
		switch {
		case b == nil:
			b = &bundle{id: h.bundle, ip: c.ip, lanes: make([]atomic.Pointer[Conn], h.lanes)}
			t.bundles[h.bundle] = b
		case b.ip != c.ip:
			return fmt.Errorf("transport: lane %d of a bundle from another address", h.lane)
		case len(b.lanes) != int(h.lanes):
			return fmt.Errorf("transport: lane %d of %d for a bundle of %d", h.lane, h.lanes, len(b.lanes))
		}
	} else {
		if h.lane != 0 && b.head == nil {
			return fmt.Errorf("transport: lane %d of a bundle without its lane 0", h.lane)
		}
		if t.sockets >= t.lim.MaxConns {
			return fmt.Errorf("transport: %d connections open, the limit", t.sockets)
		}
		t.sockets++
	}
	if b.closed {
		if c.dialed != "" {
			t.sockets--
		}
		return fmt.Errorf("transport: lane %d of a bundle that ended", h.lane)
	}
	if b.lanes[h.lane].Load() != nil {
		if c.dialed != "" {
			t.sockets--
		}
		return fmt.Errorf("transport: lane %d of a bundle twice", h.lane)
	}
	c.b, c.lane = b, h.lane
	if b.head == nil {
		b.head = c
		t.conns[c.id] = c
	}
	c.head = b.head
	b.lanes[h.lane].Store(c)
	t.wg.Add(2)
	go c.readLoop()
	go c.writeLoop()
	c.log.Debug("connection open", "dialled", c.dialed != "", "lane", h.lane, "lanes", h.lanes)
	return nil
}

// release gives back what admit counted for a connection from ip.
func (t *Transport) release(ip netip.Addr) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.sockets--
	if ip.IsValid() {
		if t.perIP[ip]--; t.perIP[ip] <= 0 {
			delete(t.perIP, ip)
		}
	}
}

// lingerEOF is called by c's reader when the peer ended the lane in order
// (EOF at a frame boundary). A peer that stops half-closes every lane once
// it has written what it queued (Transport.Close), and the lanes' EOFs
// arrive in any order: closing the bundle at the first would discard what
// the other lanes still carry. So c's reader waits, without reading, until
// the last lane's EOF closes the bundle or CloseTimeout passes. It reports
// whether it waited; false means c is the last lane (or alone), which the
// caller closes, and the bundle with it.
func (c *Conn) lingerEOF() bool {
	b := c.b
	if b == nil {
		return false
	}
	c.t.mu.Lock()
	c.readEOF = true
	open := 0
	for i := range b.lanes {
		if l := b.lanes[i].Load(); l != nil && !l.readEOF {
			open++
		}
	}
	c.t.mu.Unlock()
	if open == 0 {
		return false
	}
	t := time.NewTimer(c.t.closeFlush)
	defer t.Stop()
	select {
	case <-c.done:
	case <-t.C:
		c.closeWith(io.EOF)
	}
	return true
}

// closeBundle closes every lane of c's bundle with err.
func (c *Conn) closeBundle(err error) {
	b := c.b
	if b == nil {
		return
	}
	c.t.mu.Lock()
	if b.closed {
		c.t.mu.Unlock()
		return
	}
	b.closed = true
	if c.t.bundles[b.id] == b {
		delete(c.t.bundles, b.id)
	}
	c.t.mu.Unlock()
	for i := range b.lanes {
		if l := b.lanes[i].Load(); l != nil && l != c {
			l.closeWith(fmt.Errorf("transport: lane %d of the bundle ended: %w", c.lane, err))
		}
	}
}
