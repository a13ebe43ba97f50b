// Package transport carries routed messages between nodes over TCP.
//
// A connection starts with one protocol-version byte in each direction, then
// carries frames: a 4-byte big-endian length and that many bytes of body. An
// empty body is a keepalive; any other body is a routing.Message in its wire
// form. See docs/PROTOCOL.md.
package transport

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ockam-go/ockam/internal/routing"
)

// ProtocolVersion is the byte each side writes when a connection opens.
// Version 3 adds the dialling side's hello after it (the connection's lane
// of a bundle, see lanes.go); version 2 added error replies (see
// routing.KindError). Other versions are refused at connect with a
// one-line reason.
const ProtocolVersion byte = 3

const (
	// MaxFrameSize bounds the body of one frame. It is checked before any
	// buffer is allocated. Portal payloads are at most 64 KiB, so this leaves
	// room for routes and channel overhead.
	MaxFrameSize = 256 << 10
	// SendQueueBytes is what a connection buffers for its writer before a
	// local sender (Send) waits: backpressure for this node's own flows.
	SendQueueBytes = 1 << 20
	// DefaultKeepalive is how often an idle connection sends a keepalive.
	DefaultKeepalive = 5 * time.Second
	// DefaultIdleTimeout closes a connection that has received nothing
	// (not even a keepalive) for this long: a half-open peer is detected in
	// at most this time, and a 10 s blackhole (with TCP's retransmission
	// backoff after it) is ridden out.
	DefaultIdleTimeout = 6 * DefaultKeepalive
	// DialTimeout bounds how long a connection attempt may take.
	DialTimeout = 10 * time.Second
	// WriteTimeout closes a connection whose socket took nothing for this
	// long: a peer that stopped reading.
	WriteTimeout = DefaultIdleTimeout
	// CloseTimeout bounds how long Close spends letting the connections'
	// queued frames reach their peers (see closeGracefully).
	CloseTimeout = time.Second

	frameHeader   = 4
	readBufMin    = 4 << 10   // a new connection's read buffer
	readBufMax    = 512 << 10 // what a busy connection's grows to
	maxBatch      = 64        // frames gathered into one writev
	maxBatchBytes = 1 << 20
	smallFrame    = 4 << 10 // frames this small skip SendQueueBytes
)

// Limits bound what peers can make a transport hold. Zero fields take the
// defaults named after them.
type Limits struct {
	// MaxConns bounds the open connections, accepted and dialled.
	MaxConns int
	// MaxConnsPerIP bounds the accepted connections from one IP address.
	MaxConnsPerIP int
	// MaxQueueBytes bounds what one connection buffers for its writer.
	// Messages passed on from other connections (TrySend) beyond it are
	// dropped, and while several connections feed it each gets an equal
	// share, so one flooding sender cannot crowd out the others; the node's
	// own senders (Send) wait below SendQueueBytes, and a connection whose
	// queue would pass MaxQueueBytes even so is closed.
	MaxQueueBytes int64
	// TotalQueueBytes bounds what all connections buffer together; passed
	// on messages beyond it are dropped.
	TotalQueueBytes int64
	// ReadBufferBytes bounds the memory all connections' read buffers hold
	// beyond their first readBufMin bytes (large and partial frames); a
	// connection that needs more than is left is closed.
	ReadBufferBytes int64
}

// Defaults of Limits.
const (
	DefaultMaxConns        = 16384
	DefaultMaxConnsPerIP   = 512
	DefaultMaxQueueBytes   = 64 << 20
	DefaultTotalQueueBytes = 1 << 30
	DefaultReadBufferBytes = 256 << 20
)

func (l Limits) withDefaults() Limits {
	if l.MaxConns <= 0 {
		l.MaxConns = DefaultMaxConns
	}
	if l.MaxConnsPerIP <= 0 {
		l.MaxConnsPerIP = DefaultMaxConnsPerIP
	}
	if l.MaxQueueBytes <= 0 {
		l.MaxQueueBytes = DefaultMaxQueueBytes
	}
	if l.TotalQueueBytes <= 0 {
		l.TotalQueueBytes = DefaultTotalQueueBytes
	}
	if l.ReadBufferBytes <= 0 {
		l.ReadBufferBytes = DefaultReadBufferBytes
	}
	return l
}

// ErrQueueFull is returned by TrySend for a message dropped because the
// connection's queue (or its sender's share of it, or all queues) is full,
// and by Send when the queue passed MaxQueueBytes and the connection was
// closed for it.
var ErrQueueFull = errors.New("transport: peer does not read fast enough")

// ErrVersion is returned when the peer speaks another protocol version.
var ErrVersion = errors.New("transport: protocol version mismatch")

// Config configures a Transport. It is not modified and may be shared.
type Config struct {
	// Logger receives connection events; nil discards them.
	Logger *slog.Logger
	// OnMessage is called on the connection's reader goroutine for every
	// message received, with the head of the connection's bundle (whose ID
	// is the bundle's address) and m.Lane set to the lane it came on. The message and its payload belong to the callee only
	// for the duration of the call. It must not block for long: it holds up
	// every message behind it on that connection.
	OnMessage func(c *Conn, m *routing.Message)
	// OnClose, if set, is called once when a connection ends.
	OnClose func(c *Conn, err error)
	// Keepalive and IdleTimeout override the defaults when non-zero.
	Keepalive   time.Duration
	IdleTimeout time.Duration
	// Limits bound connections, queues and buffers.
	Limits Limits
	// WriteTimeout overrides WriteTimeout when non-zero.
	WriteTimeout time.Duration
	// CloseTimeout overrides CloseTimeout when non-zero.
	CloseTimeout time.Duration
	// Lanes is how many TCP connections Dial opens to a peer, used as one
	// (see lanes.go); zero means DefaultLanes, 1 one connection, at most
	// MaxLanes.
	Lanes int
}

// Transport owns a set of TCP connections and listeners.
type Transport struct {
	cfg          Config
	log          *slog.Logger
	keepalive    time.Duration
	idle         time.Duration
	writeTimeout time.Duration
	closeFlush   time.Duration
	lim          Limits

	queuedTotal atomic.Int64 // bytes queued on every connection
	readBufs    atomic.Int64 // read-buffer bytes beyond readBufMin, all connections
	shedLog     *rateLog     // refused connections
	closeLog    *rateLog     // connections closed for an unexpected reason

	mu        sync.Mutex
	closed    bool
	conns     map[string]*Conn              // bundle heads, by ID
	sockets   int                           // lanes open or greeting, accepted and dialled
	bundles   map[[bundleIDLen]byte]*bundle // accepted, by bundle ID
	hellos    map[net.Conn]struct{}         // accepted, before their hello
	perIP     map[netip.Addr]int            // accepted lanes (and greeting) by address
	outbound  map[string]*Conn              // by dialled address
	dialing   map[string]*dialCall
	listeners []net.Listener
	wg        sync.WaitGroup
	ctx       context.Context // cancelled by Close: ends background dials
	cancel    context.CancelFunc
}

type dialCall struct {
	done chan struct{}
	conn *Conn
	err  error
}

// New returns a Transport; cfg.OnMessage must be set.
func New(cfg Config) *Transport {
	t := &Transport{
		cfg:       cfg,
		log:       cfg.Logger,
		keepalive: cfg.Keepalive,
		idle:      cfg.IdleTimeout,
		lim:       cfg.Limits.withDefaults(),
		conns:     make(map[string]*Conn),
		bundles:   make(map[[bundleIDLen]byte]*bundle),
		hellos:    make(map[net.Conn]struct{}),
		perIP:     make(map[netip.Addr]int),
		outbound:  make(map[string]*Conn),
		dialing:   make(map[string]*dialCall),
	}
	if t.log == nil {
		t.log = slog.New(slog.DiscardHandler)
	}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	t.shedLog = newRateLog(t.log)
	t.closeLog = newRateLog(t.log)
	t.writeTimeout = cfg.WriteTimeout
	if t.writeTimeout <= 0 {
		t.writeTimeout = WriteTimeout
	}
	t.closeFlush = cfg.CloseTimeout
	if t.closeFlush <= 0 {
		t.closeFlush = CloseTimeout
	}
	if t.keepalive <= 0 {
		t.keepalive = DefaultKeepalive
	}
	if t.idle <= 0 {
		t.idle = 6 * t.keepalive
	}
	return t
}

// Listen starts accepting connections on addr ("host:port") and returns the
// address it is bound to.
func (t *Transport) Listen(addr string) (net.Addr, error) {
	ln, err := Bind(addr)
	if err != nil {
		return nil, err
	}
	return t.Serve(ln)
}

// Bind binds a TCP listener at addr without accepting on it yet, so that a
// process can hold its port (a restarting node's saved one) while it gets
// ready, and Serve it after. Connections that arrive meanwhile wait in the
// kernel's backlog.
func Bind(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("transport: cannot listen on %s: address already in use", addr)
		}
		return nil, fmt.Errorf("transport: listen: %w", err)
	}
	return ln, nil
}

// Serve accepts connections on ln (from Bind), which the transport then
// owns and closes with Close.
func (t *Transport) Serve(ln net.Listener) (net.Addr, error) {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		ln.Close()
		return nil, net.ErrClosed
	}
	t.listeners = append(t.listeners, ln)
	t.wg.Add(1)
	t.mu.Unlock()
	go t.acceptLoop(ln)
	return ln.Addr(), nil
}

func (t *Transport) acceptLoop(ln net.Listener) {
	defer t.wg.Done()
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off, don't spin.
			if delay == 0 {
				delay = 5 * time.Millisecond
			} else if delay < time.Second {
				delay *= 2
			}
			t.log.Warn("accept failed", "err", err, "retry_in", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		if err := t.admit(nc); err != nil {
			t.shedLog.Info("refused connection", "remote", nc.RemoteAddr().String(), "reason", err)
			nc.Close()
			continue
		}
		// The hello is read off the accept loop: a peer that sends
		// nothing holds up nobody else.
		go t.acceptLane(nc)
	}
}

// Dial returns the connection to addr, opening it if there is none. Concurrent
// calls for the same address share one connection attempt.
func (t *Transport) Dial(ctx context.Context, addr string) (*Conn, error) {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil, net.ErrClosed
	}
	if c := t.outbound[addr]; c != nil {
		t.mu.Unlock()
		return c, nil
	}
	if call := t.dialing[addr]; call != nil {
		t.mu.Unlock()
		select {
		case <-call.done:
			return call.conn, call.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	call := &dialCall{done: make(chan struct{})}
	t.dialing[addr] = call
	t.mu.Unlock()

	call.conn, call.err = t.dialBundle(ctx, addr)

	t.mu.Lock()
	delete(t.dialing, addr)
	t.mu.Unlock()
	close(call.done)
	return call.conn, call.err
}

// unwrapOp strips net.OpError's long prefix for one-line messages.
func unwrapOp(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		var sc *os.SyscallError
		if errors.As(op.Err, &sc) {
			return sc.Err
		}
		return op.Err
	}
	return err
}

// admit applies the connection limits to an accepted connection and counts
// it (release gives it back if its hello fails). Every lane counts.
func (t *Transport) admit(nc net.Conn) error {
	ip := remoteIP(nc)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return net.ErrClosed
	}
	if t.sockets >= t.lim.MaxConns {
		return fmt.Errorf("%d connections open, the limit", t.sockets)
	}
	if ip.IsValid() && t.perIP[ip] >= t.lim.MaxConnsPerIP {
		return fmt.Errorf("%d connections from %s, the limit per address", t.perIP[ip], ip)
	}
	t.sockets++
	if ip.IsValid() {
		t.perIP[ip]++
	}
	t.hellos[nc] = struct{}{}
	t.wg.Add(1)
	return nil
}

func remoteIP(nc net.Conn) netip.Addr {
	if a, ok := nc.RemoteAddr().(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	}
	return netip.Addr{}
}

func (t *Transport) newConn(nc net.Conn, dialled string) *Conn {
	if tc, ok := nc.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
		if n := sendBuffer(); n > 0 {
			tc.SetWriteBuffer(n)
		}
	}
	c := &Conn{
		t:      t,
		nc:     nc,
		id:     newID(),
		remote: nc.RemoteAddr().String(),
		dialed: dialled,
		wake:   make(chan struct{}, 1),
		space:  make(chan struct{}),
		done:   make(chan struct{}),
	}
	c.log = t.log.With("conn", c.id, "remote", c.remote)
	if sc, ok := nc.(syscall.Conn); ok {
		c.raw, _ = sc.SyscallConn()
	}
	c.lastWrite.Store(time.Now().UnixNano())
	return c
}

// Conn returns the connection with the given ID, or nil.
func (t *Transport) Conn(id string) *Conn {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.conns[id]
}

// Outbound returns the open connection dialled to addr, or nil.
func (t *Transport) Outbound(addr string) *Conn {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.outbound[addr]
}

// Conns returns the open connections.
func (t *Transport) Conns() []*Conn {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]*Conn, 0, len(t.conns))
	for _, c := range t.conns {
		out = append(out, c)
	}
	return out
}

func (t *Transport) remove(c *Conn) {
	t.mu.Lock()
	t.sockets--
	if t.conns[c.id] == c {
		delete(t.conns, c.id)
	}
	if c.dialed != "" && t.outbound[c.dialed] == c {
		delete(t.outbound, c.dialed)
	}
	if c.ip.IsValid() {
		if t.perIP[c.ip]--; t.perIP[c.ip] <= 0 {
			delete(t.perIP, c.ip)
		}
	}
	t.mu.Unlock()
}

// Close closes every listener and connection and waits for their goroutines.
func (t *Transport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		t.wg.Wait()
		return nil
	}
	t.closed = true
	t.cancel()
	lns := t.listeners
	conns := make([]*Conn, 0, len(t.conns))
	for _, c := range t.conns {
		conns = append(conns, c)
	}
	for nc := range t.hellos {
		nc.Close()
	}
	t.mu.Unlock()
	for _, ln := range lns {
		ln.Close()
	}
	t.closeGracefully(conns, time.Now().Add(t.closeFlush))
	t.wg.Wait()
	return nil
}

// closeGracefully ends conns so that what the node's senders queued before
// Close reaches the peers: a stopping node's last messages (its flows'
// resets, its channels' closes) would otherwise die in the queues, and the
// peers would wait for a resume that never comes. By deadline, in three
// steps across every lane at once: the writers empty the queues; each
// socket is half-closed, so the peer reads the rest and then EOF; and the
// readers keep reading until the peer closes in turn. Closing a socket that
// still holds unread bytes sends a reset, which can discard what its send
// buffer still holds: hence the wait. Whatever is not done by deadline is
// cut.
func (t *Transport) closeGracefully(conns []*Conn, deadline time.Time) {
	var lanes []*Conn
	for _, c := range conns {
		lanes = append(lanes, c.lanes()...)
	}
	for _, l := range lanes {
		l.waitDrained(deadline)
	}
	for _, l := range lanes {
		// Under qmu, so that a sender writing directly has pushed the
		// rest of its frame; from here on the lane takes nothing new.
		l.qmu.Lock()
		l.closing.Store(true)
		l.qmu.Unlock()
	}
	for _, l := range lanes {
		l.waitDrained(deadline)
		if cw, ok := l.nc.(interface{ CloseWrite() error }); ok && l.queued.Load() == 0 {
			cw.CloseWrite()
		}
	}
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for _, l := range lanes {
		select {
		case <-l.done:
		case <-timer.C:
			timer.Reset(0) // expired: the others are cut at once
		}
	}
	for _, c := range conns {
		c.closeWith(net.ErrClosed)
	}
}

// lanes returns the lanes of c's bundle that are attached, c alone if it has
// none.
func (c *Conn) lanes() []*Conn {
	if c.b == nil {
		return []*Conn{c}
	}
	var out []*Conn
	for i := range c.b.lanes {
		if l := c.b.lanes[i].Load(); l != nil {
			out = append(out, l)
		}
	}
	if len(out) == 0 {
		out = append(out, c)
	}
	return out
}

// waitDrained waits until the writer has written everything queued, the
// connection has ended, or deadline.
func (c *Conn) waitDrained(deadline time.Time) {
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	c.waitSpace(func() bool { return c.queued.Load() == 0 }, timer.C)
}

// Conn is one TCP connection to another node. It is addressed on its node by
// its ID, a local address that routes messages onto the connection.
type Conn struct {
	t      *Transport
	nc     net.Conn
	id     string
	remote string
	ip     netip.Addr // of an accepted connection, for the per-address limit
	dialed string
	log    *slog.Logger

	b           *bundle // the bundle c is a lane of
	head        *Conn   // the bundle's head: its ID is the bundle's address
	lane        uint8   // c's index in b
	versionRead bool    // an accepted lane: greet read the version and hello

	wmu       sync.Mutex       // held while writing to the socket
	qmu       sync.Mutex       // orders queueing against direct writes (see Send); guards queue, bySrc
	queue     []qframe         // frames for the writer, in order
	held      int64            // bytes the writer took from queue and is writing; under qmu
	bySrc     map[string]int64 // bytes queued by each connection passing messages on
	wake      chan struct{}
	lastWrite atomic.Int64 // unix nanos, for keepalives
	queued    atomic.Int64 // bytes in queue or being written by the writer
	raw       syscall.RawConn
	spaceMu   sync.Mutex
	space     chan struct{} // closed (and replaced) when the writer has drained some
	waiters   atomic.Int32  // senders waiting for space
	done      chan struct{}
	closeOnce sync.Once
	err       error // set before done is closed

	BytesIn, BytesOut atomic.Uint64
	// Dropped counts messages not sent because the queue was over its
	// limit.
	Dropped atomic.Uint64

	// Owned by the connection's reader goroutine: whether more complete
	// frames wait in the read buffer behind the one being handled, and the
	// connections it passed messages on to without writing them yet (see
	// TrySend and uncork).
	more   bool
	corked []*Conn

	readEOF bool // the peer ended this lane in order; under Transport.mu
	// closing is set by Transport.Close before it half-closes the lane:
	// new frames are refused (net.ErrClosed), and the lane's end is
	// expected whatever its error.
	closing atomic.Bool
}

// maxCorked bounds the destinations a reader holds frames for before it
// writes them; past it, messages are written as they come.
const maxCorked = 16

// qframe is one frame for the writer and the connection it was passed on
// from ("" for the node's own senders).
type qframe struct {
	bp  *[]byte
	src string
}

// ID is the connection's local address on its node.
func (c *Conn) ID() string { return c.id }

// Remote is the peer's "host:port".
func (c *Conn) Remote() string { return c.remote }

// Queued returns the bytes waiting for the connection's writer.
func (c *Conn) Queued() int64 { return c.queued.Load() }

// Done is closed when the connection has ended.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err returns why the connection ended, once Done is closed.
func (c *Conn) Err() error {
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}

// Close ends the connection.
func (c *Conn) Close() error {
	c.closeWith(net.ErrClosed)
	return nil
}

func (c *Conn) closeWith(err error) {
	c.closeOnce.Do(func() {
		c.err = err
		close(c.done)
		c.nc.Close()
		c.closeBundle(err)
		c.t.remove(c)
		if isExpected(err) || c.closing.Load() {
			c.log.Debug("connection closed", "reason", err)
		} else {
			c.t.closeLog.Info("connection closed", "conn", c.id, "remote", c.remote, "reason", err)
		}
		if c.t.cfg.OnClose != nil && c.head == c {
			c.t.cfg.OnClose(c, err)
		}
	})
}

func isExpected(err error) bool {
	return err == nil || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, context.Canceled)
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 80<<10); return &b }}

// Send queues m on the connection. It waits while more than SendQueueBytes
// are queued (small frames excepted) and fails with net.ErrClosed once the
// connection has ended. m is encoded before Send returns: the caller keeps
// ownership of m and its payload. Send is for this node's own senders; a
// connection's reader passing a message on to another connection uses
// TrySend.
func (c *Conn) Send(m *routing.Message) error { return c.send(m, "", false, nil) }

// TrySend is Send without the wait, for a message passed on from the reader
// of connection src, which must never wait for this one; it must be called
// on src's reader goroutine (while src's message is being handled). A
// message that does not fit (see Limits.MaxQueueBytes) is dropped with
// ErrQueueFull.
//
// While src's read buffer holds more frames, what TrySend queues is not
// written at once: src's reader writes every destination's frames with one
// writev each when its buffer is drained, so a relay forwarding a burst of
// small messages costs a syscall per burst, not per message, and no
// latency (the reader would otherwise block on a read next).
//
// src is the lane whose reader delivered the message (it owns the
// corking); its bundle as a whole is the source for the shares of this
// connection's queue, so a sender's lanes do not multiply its share.
func (c *Conn) TrySend(m *routing.Message, src *Conn) error {
	srcID := src.id
	if src.head != nil {
		srcID = src.head.id
	}
	return c.send(m, srcID, src.more && len(src.corked) < maxCorked, src)
}

func (c *Conn) send(m *routing.Message, srcID string, cork bool, src *Conn) error {
	wait := src == nil
	n := routing.EncodedLen(m)
	if n > MaxFrameSize {
		return fmt.Errorf("transport: message of %d bytes is over the %d-byte frame limit", n, MaxFrameSize)
	}
	bp := bufPool.Get().(*[]byte)
	b := append((*bp)[:0], 0, 0, 0, 0)
	b, err := routing.AppendMessage(b, m)
	if err != nil {
		*bp = b
		bufPool.Put(bp)
		return err
	}
	binary.BigEndian.PutUint32(b, uint32(len(b)-frameHeader))
	*bp = b
	size := int64(len(b))
	// Fast path: nothing queued and nobody writing, so writing on this
	// goroutine keeps the order and saves a goroutine handoff per message
	// (the latency of a request/response). The write never blocks: what
	// the socket does not take at once is queued for the writer.
	//
	// Order: qmu serialises "queued += n; push" of the queueing path with
	// this path's "check queued == 0; write; push the rest", so the rest of
	// a frame cut short is always the next thing the writer sees. Both
	// locks are only tried here: the writer needs wmu, and a queueing
	// sender holds qmu.
	if !cork && c.queued.Load() == 0 && c.wmu.TryLock() {
		if c.qmu.TryLock() {
			if c.queued.Load() == 0 {
				n, err := c.writeDirect(b)
				if err == nil && n < len(b) {
					rest := bufPool.Get().(*[]byte)
					*rest = append((*rest)[:0], b[n:]...)
					c.push(rest, srcID)
				}
				c.qmu.Unlock()
				c.wmu.Unlock()
				bufPool.Put(bp)
				return err
			}
			c.qmu.Unlock()
		}
		c.wmu.Unlock()
	}
	// Small frames (replies, credits, keepalives of channels) are never
	// held back by SendQueueBytes: a connection's reader may send them,
	// and must not wait on its own connection's writer.
	if wait && size > smallFrame && !c.room(size) {
		if err := c.waitSpace(func() bool { return c.room(size) }, nil); err != nil {
			bufPool.Put(bp)
			return net.ErrClosed
		}
	}
	lim := &c.t.lim
	if wait {
		if q := c.queued.Load(); q+size > lim.MaxQueueBytes {
			bufPool.Put(bp)
			c.Dropped.Add(1)
			err := fmt.Errorf("%w: %d bytes queued, the limit is %d", ErrQueueFull, q, lim.MaxQueueBytes)
			c.closeWith(err)
			return err
		}
	}
	c.qmu.Lock()
	defer c.qmu.Unlock()
	select {
	case <-c.done:
		bufPool.Put(bp)
		return net.ErrClosed
	default:
	}
	if c.closing.Load() {
		bufPool.Put(bp)
		return net.ErrClosed
	}
	if !wait && !c.fits(srcID, size) {
		bufPool.Put(bp)
		c.Dropped.Add(1)
		return ErrQueueFull
	}
	// src's reader writes what it queued (uncork) once its buffer is
	// drained, which is right after this message when no more frames wait:
	// then waking the writer too would cost a goroutine hand-off (a futex
	// wake on another thread) for nothing.
	if cork || src != nil && !src.more {
		c.pushQuiet(bp, srcID)
		if !slices.Contains(src.corked, c) {
			src.corked = append(src.corked, c)
		}
		return nil
	}
	c.push(bp, srcID)
	return nil
}

// SendBatch queues ms on the connection, in order, and writes them with one
// non-blocking writev on the caller's goroutine when the writer is idle
// (what the socket does not take is left to the writer): a batch of small
// messages costs one syscall. With wait, it first waits while more than
// SendQueueBytes are queued, as Send does for a large frame; without it, it
// never waits (for a caller that must not, a connection's reader), and the
// batch may pass SendQueueBytes. The messages are encoded before SendBatch
// returns: the caller keeps them. Like Send, it is for this node's own
// senders.
func (c *Conn) SendBatch(ms []routing.Message, wait bool) error {
	var total int64
	for i := range ms {
		if n := routing.EncodedLen(&ms[i]); n > MaxFrameSize {
			return fmt.Errorf("transport: message of %d bytes is over the %d-byte frame limit", n, MaxFrameSize)
		}
	}
	bps := make([]*[]byte, 0, len(ms))
	release := func() {
		for _, bp := range bps {
			bufPool.Put(bp)
		}
	}
	for i := range ms {
		bp := bufPool.Get().(*[]byte)
		b := append((*bp)[:0], 0, 0, 0, 0)
		b, err := routing.AppendMessage(b, &ms[i])
		*bp = b
		bps = append(bps, bp)
		if err != nil {
			release()
			return err
		}
		binary.BigEndian.PutUint32(b, uint32(len(b)-frameHeader))
		total += int64(len(b))
	}
	if wait && total > smallFrame {
		if err := c.waitRoom(total); err != nil {
			release()
			return err
		}
	}
	c.qmu.Lock()
	select {
	case <-c.done:
		c.qmu.Unlock()
		release()
		return net.ErrClosed
	default:
	}
	for _, bp := range bps {
		c.pushQuiet(bp, "")
	}
	c.qmu.Unlock()
	c.flush()
	return nil
}

// waitRoom waits until size more bytes fit under SendQueueBytes (or nothing
// is queued); it fails once the connection has ended.
func (c *Conn) waitRoom(size int64) error {
	if c.room(size) {
		return nil
	}
	return c.waitSpace(func() bool { return c.room(size) }, nil)
}

// room reports whether size more bytes fit under SendQueueBytes, or nothing
// is queued.
func (c *Conn) room(size int64) bool {
	q := c.queued.Load()
	return q == 0 || q+size <= SendQueueBytes
}

// errExpired is waitSpace's error when expire fired first.
var errExpired = errors.New("transport: wait expired")

// waitSpace waits until ok holds, checking it each time the writer drains
// some of the queue. It counts itself a waiter before it takes the channel
// and looks again, so a drain after the look closes the channel it holds
// (see notifySpace). It fails with net.ErrClosed once the connection has
// ended, and with errExpired when expire (nil: never) fires first.
func (c *Conn) waitSpace(ok func() bool, expire <-chan time.Time) error {
	for !ok() {
		c.waiters.Add(1)
		c.spaceMu.Lock()
		ch := c.space
		c.spaceMu.Unlock()
		if ok() {
			c.waiters.Add(-1)
			return nil
		}
		select {
		case <-ch:
			c.waiters.Add(-1)
		case <-c.done:
			c.waiters.Add(-1)
			return net.ErrClosed
		case <-expire:
			c.waiters.Add(-1)
			return errExpired
		}
	}
	return nil
}

// fits reports whether a frame of size bytes passed on from src fits the
// queue: within src's equal share of MaxQueueBytes among the connections
// feeding this one, and under MaxQueueBytes and TotalQueueBytes once frames
// of sources holding more than src would have made room (the newest
// first, from the source holding most). So a flooder that filled the queue alone gives way to the next
// sender instead of locking it out. c.qmu is held.
func (c *Conn) fits(src string, size int64) bool {
	lim := &c.t.lim
	n := int64(len(c.bySrc))
	if _, ok := c.bySrc[src]; !ok {
		n++
	}
	share := lim.MaxQueueBytes / n
	if c.bySrc[src]+size > share {
		return false
	}
	for c.queued.Load()+size > lim.MaxQueueBytes || c.t.queuedTotal.Load()+size > lim.TotalQueueBytes {
		if !c.evictOver(c.bySrc[src]+size, src) {
			return false
		}
	}
	return true
}

// evictOver drops the newest queued frame of the source holding most, if
// it holds more than mine (what the source asking for room would hold). The head of the queue is never dropped: it may
// be the rest of a frame already partly written. c.qmu is held.
func (c *Conn) evictOver(mine int64, except string) bool {
	var worst string
	var most int64
	for s, b := range c.bySrc {
		if s != except && b > most {
			worst, most = s, b
		}
	}
	if worst == "" || most <= mine {
		return false
	}
	for i := len(c.queue) - 1; i >= 1; i-- {
		if f := c.queue[i]; f.src == worst {
			size := int64(len(*f.bp))
			copy(c.queue[i:], c.queue[i+1:])
			c.queue[len(c.queue)-1] = qframe{}
			c.queue = c.queue[:len(c.queue)-1]
			if c.bySrc[worst] -= size; c.bySrc[worst] <= 0 {
				delete(c.bySrc, worst)
			}
			c.queued.Add(-size)
			c.t.queuedTotal.Add(-size)
			bufPool.Put(f.bp)
			c.Dropped.Add(1)
			return true
		}
	}
	return false
}

// push appends a frame for the writer and wakes it; c.qmu is held.
func (c *Conn) push(bp *[]byte, src string) {
	if c.pushQuiet(bp, src) {
		c.kick()
	}
}

// kick wakes the writer.
func (c *Conn) kick() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// pushQuiet appends a frame without waking the writer; c.qmu is held. It
// reports whether the frame was queued (not if the connection is closed).
func (c *Conn) pushQuiet(bp *[]byte, src string) bool {
	select {
	case <-c.done:
		bufPool.Put(bp)
		return false
	default:
	}
	if c.closing.Load() {
		bufPool.Put(bp)
		return false
	}
	size := int64(len(*bp))
	c.queued.Add(size)
	c.t.queuedTotal.Add(size)
	c.queue = append(c.queue, qframe{bp, src})
	if src != "" {
		if c.bySrc == nil {
			c.bySrc = make(map[string]int64)
		}
		c.bySrc[src] += size
	}
	return true
}

// uncork writes what the reader queued on other connections while more
// frames were buffered; it runs on the reader goroutine once its buffer is
// drained (and when it ends).
func (c *Conn) uncork() {
	for i, d := range c.corked {
		d.flush()
		c.corked[i] = nil
	}
	c.corked = c.corked[:0]
}

// flush writes the queued frames on the caller's goroutine with one
// non-blocking writev, when the writer is not busy, and leaves what the
// socket did not take (and anything else) to the writer.
func (c *Conn) flush() {
	if c.raw == nil || !c.wmu.TryLock() {
		c.kick()
		return
	}
	defer c.wmu.Unlock()
	c.qmu.Lock()
	defer c.qmu.Unlock()
	if c.held > 0 || len(c.queue) == 0 {
		// The writer holds earlier frames: they must go first.
		c.kick()
		return
	}
	select {
	case <-c.done:
		return
	default:
	}
	k := min(len(c.queue), maxBatch)
	iov := make([][]byte, k)
	for i := range k {
		iov[i] = *c.queue[i].bp
	}
	var n int
	var werr error
	err := c.raw.Write(func(fd uintptr) bool {
		for {
			n, werr = unix.Writev(int(fd), iov)
			if werr == unix.EINTR {
				continue
			}
			if werr == unix.EAGAIN {
				n, werr = 0, nil
			}
			return true // one attempt: never wait for writability here
		}
	})
	if werr == nil {
		werr = err
	}
	n = max(n, 0)
	c.lastWrite.Store(time.Now().UnixNano())
	c.BytesOut.Add(uint64(n))
	// Drop what was written: whole frames, then the head of a cut one.
	done := 0
	for done < len(c.queue) && n > 0 {
		f := &c.queue[done]
		l := len(*f.bp)
		if n < l {
			rest := bufPool.Get().(*[]byte)
			*rest = append((*rest)[:0], (*f.bp)[n:]...)
			bufPool.Put(f.bp)
			f.bp = rest
			c.dequeued(f.src, int64(n))
			break
		}
		c.dequeued(f.src, int64(l))
		bufPool.Put(f.bp)
		n -= l
		done++
	}
	rest := copy(c.queue, c.queue[done:])
	clear(c.queue[rest:])
	c.queue = c.queue[:rest]
	if done > 0 {
		c.notifySpace()
	}
	if werr != nil {
		go c.closeWith(werr) // not under qmu: closing drains the queue
		return
	}
	if len(c.queue) > 0 {
		c.kick()
	}
}

// dequeued accounts for n bytes of a frame from src leaving the queue;
// c.qmu is held.
func (c *Conn) dequeued(src string, n int64) {
	c.queued.Add(-n)
	c.t.queuedTotal.Add(-n)
	if src != "" {
		if c.bySrc[src] -= n; c.bySrc[src] <= 0 {
			delete(c.bySrc, src)
		}
	}
}

// notifySpace wakes every sender waiting for room in the queue.
func (c *Conn) notifySpace() {
	if c.waiters.Load() == 0 {
		return
	}
	c.spaceMu.Lock()
	close(c.space)
	c.space = make(chan struct{})
	c.spaceMu.Unlock()
}

// writeDirect writes what the socket takes of frame at once, without
// blocking, on the caller's goroutine; c.wmu is held.
func (c *Conn) writeDirect(frame []byte) (int, error) {
	select {
	case <-c.done:
		return 0, net.ErrClosed
	default:
	}
	if c.closing.Load() {
		return 0, net.ErrClosed
	}
	if c.raw == nil {
		return 0, nil // no raw access: let the writer do it
	}
	var n int
	var werr error
	err := c.raw.Write(func(fd uintptr) bool {
		for n < len(frame) {
			m, err := syscall.Write(int(fd), frame[n:])
			if err == syscall.EINTR {
				continue
			}
			if err == syscall.EAGAIN {
				break
			}
			if err != nil {
				werr = err
				break
			}
			n += m
		}
		return true // one attempt: never wait for writability here
	})
	if werr == nil {
		werr = err
	}
	c.lastWrite.Store(time.Now().UnixNano())
	c.BytesOut.Add(uint64(n))
	if werr != nil {
		c.closeWith(werr)
		return n, net.ErrClosed
	}
	return n, nil
}

// take moves up to maxBatch frames (maxBatchBytes) from the queue to pend.
func (c *Conn) take(pend []*[]byte) ([]*[]byte, int) {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	size, i := 0, 0
	for ; i < len(c.queue) && i < maxBatch && size < maxBatchBytes; i++ {
		f := c.queue[i]
		pend = append(pend, f.bp)
		size += len(*f.bp)
		if f.src != "" {
			if c.bySrc[f.src] -= int64(len(*f.bp)); c.bySrc[f.src] <= 0 {
				delete(c.bySrc, f.src)
			}
		}
	}
	rest := copy(c.queue, c.queue[i:])
	clear(c.queue[rest:])
	c.queue = c.queue[:rest]
	if rest == 0 && cap(c.queue) > 4*maxBatch {
		c.queue = nil // a burst's backing array goes back to the heap
	}
	if rest > 0 {
		c.kick()
	}
	c.held += int64(size)
	return pend, size
}

// writeLoop writes queued frames, gathering whatever is queued into one
// writev so that a busy connection costs one syscall per batch and no copy.
// A write that makes no progress for WriteTimeout ends the connection.
func (c *Conn) writeLoop() {
	defer c.t.wg.Done()
	ka := time.NewTimer(c.t.keepalive)
	defer ka.Stop()
	var zero [frameHeader]byte
	pend := make([]*[]byte, 0, maxBatch)
	bufs := make(net.Buffers, 0, maxBatch)
	for {
		select {
		case <-c.wake:
			var size int
			pend, size = c.take(pend[:0])
			if len(pend) == 0 {
				continue
			}
			bufs = bufs[:0]
			for _, bp := range pend {
				bufs = append(bufs, *bp)
			}
			c.wmu.Lock()
			c.nc.SetWriteDeadline(time.Now().Add(c.t.writeTimeout))
			_, err := bufs.WriteTo(c.nc)
			// Cleared at once: the direct writes of senders (raw writes
			// that never wait) would otherwise fail on it later.
			c.nc.SetWriteDeadline(time.Time{})
			c.BytesOut.Add(uint64(size))
			c.queued.Add(-int64(size))
			c.t.queuedTotal.Add(-int64(size))
			c.lastWrite.Store(time.Now().UnixNano())
			c.qmu.Lock()
			c.held -= int64(size)
			c.qmu.Unlock()
			c.wmu.Unlock()
			c.notifySpace()
			for i, bp := range pend {
				if cap(*bp) <= 128<<10 {
					bufPool.Put(bp)
				}
				pend[i] = nil
			}
			if err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					err = fmt.Errorf("transport: peer took nothing for %v (not reading)", c.t.writeTimeout)
				}
				c.closeWith(err)
				c.drain()
				return
			}
			ka.Reset(c.t.keepalive)
		case <-ka.C:
			// Senders may have written directly meanwhile.
			if idle := time.Duration(time.Now().UnixNano() - c.lastWrite.Load()); idle < c.t.keepalive {
				ka.Reset(c.t.keepalive - idle)
				continue
			}
			c.wmu.Lock()
			c.nc.SetWriteDeadline(time.Now().Add(c.t.writeTimeout))
			_, err := c.nc.Write(zero[:])
			c.nc.SetWriteDeadline(time.Time{})
			c.lastWrite.Store(time.Now().UnixNano())
			c.wmu.Unlock()
			if err != nil {
				c.closeWith(err)
				c.drain()
				return
			}
			ka.Reset(c.t.keepalive)
		case <-c.done:
			c.drain()
			return
		}
	}
}

// drain returns what is queued to the pool once the connection has ended
// (senders check c.done under qmu, so nothing is pushed after).
func (c *Conn) drain() {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	var size int64
	for _, f := range c.queue {
		size += int64(len(*f.bp))
		bufPool.Put(f.bp)
	}
	c.queue, c.bySrc = nil, nil
	c.queued.Add(-size)
	c.t.queuedTotal.Add(-size)
}

func (c *Conn) readLoop() {
	defer c.t.wg.Done()
	fr := frameReader{r: c.nc, budget: &c.t.readBufs, limit: c.t.lim.ReadBufferBytes}
	defer fr.release()
	c.nc.SetReadDeadline(time.Now().Add(c.t.idle))
	if !c.versionRead {
		var v [1]byte
		if _, err := io.ReadFull(c.nc, v[:]); err != nil {
			c.closeWith(fmt.Errorf("transport: reading protocol version: %w", readErr(err)))
			return
		}
		if v[0] != ProtocolVersion {
			c.closeWith(fmt.Errorf("%w: peer speaks %d, we speak %d", ErrVersion, v[0], ProtocolVersion))
			return
		}
	}
	var (
		m        routing.Message
		deadline = time.Now()
	)
	defer c.uncork()
	for {
		// Moving the deadline costs a timer update: do it only when a
		// quarter of the idle timeout has passed since the last move.
		if now := time.Now(); now.Sub(deadline) > c.t.idle/4 {
			c.nc.SetReadDeadline(now.Add(c.t.idle))
			deadline = now
		}
		body, err := fr.next()
		if err != nil {
			if errors.Is(err, io.EOF) && c.lingerEOF() {
				return
			}
			c.closeWith(err)
			return
		}
		if len(body) == 0 {
			continue // keepalive
		}
		c.BytesIn.Add(uint64(len(body)) + frameHeader)
		if err := routing.DecodeMessage(&m, body); err != nil {
			c.closeWith(fmt.Errorf("transport: bad frame: %w", err))
			return
		}
		c.more = fr.buffered()
		m.Lane = c.lane
		c.t.cfg.OnMessage(c.head, &m)
		if !c.more {
			c.uncork()
		}
	}
}

// frameReader splits a stream into frames without copying them: it reads as
// much as the socket has into one buffer and hands out frame bodies that
// alias it, valid until the next call. The buffer starts small, so an idle
// connection costs little, grows (to readBufMax, or a frame's size) while
// reads fill it, and shrinks back when the connection goes quiet. What it
// holds beyond readBufMin is reserved from budget, shared by every
// connection of the transport, up to limit.
type frameReader struct {
	r          io.Reader
	buf        []byte
	start, end int
	lastRead   int
	budget     *atomic.Int64
	limit      int64
}

// errBudget is returned when the read buffers of every connection together
// hold as much as the transport allows.
var errBudget = errors.New("transport: read-buffer memory of all connections exhausted")

// resize replaces the buffer by one of size n holding the unread bytes.
func (f *frameReader) resize(n int) error {
	if f.budget != nil {
		delta := int64(max(n, readBufMin) - max(len(f.buf), readBufMin))
		if delta > 0 && f.budget.Add(delta) > f.limit {
			f.budget.Add(-delta)
			return errBudget
		}
		if delta < 0 {
			f.budget.Add(delta)
		}
	}
	nb := make([]byte, n)
	copy(nb, f.buf[f.start:f.end])
	f.buf = nb
	f.end -= f.start
	f.start = 0
	return nil
}

// release gives the buffer's reservation back.
func (f *frameReader) release() {
	if f.budget != nil && len(f.buf) > readBufMin {
		f.budget.Add(-int64(len(f.buf) - readBufMin))
	}
	f.buf = nil
}

// buffered reports whether a whole frame waits in the buffer.
func (f *frameReader) buffered() bool {
	avail := f.end - f.start
	return avail >= frameHeader && avail >= frameHeader+int(binary.BigEndian.Uint32(f.buf[f.start:]))
}

func (f *frameReader) next() ([]byte, error) {
	for {
		avail := f.end - f.start
		need := frameHeader
		if avail >= frameHeader {
			n := binary.BigEndian.Uint32(f.buf[f.start:])
			if n > MaxFrameSize {
				return nil, fmt.Errorf("transport: frame of %d bytes is over the %d-byte limit", n, MaxFrameSize)
			}
			need += int(n)
			if avail >= need {
				body := f.buf[f.start+frameHeader : f.start+need : f.start+need]
				f.start += need
				return body, nil
			}
		}
		if f.start == f.end {
			f.start, f.end = 0, 0
			// Quiet (the last read was small): give a big buffer back.
			if len(f.buf) > readBufMin && f.lastRead < readBufMin {
				if err := f.resize(readBufMin); err != nil {
					return nil, err
				}
			}
		}
		// Make room for the rest of this frame, then read.
		if len(f.buf)-f.start < need {
			if need > len(f.buf) {
				if err := f.resize(max(need, min(2*len(f.buf), readBufMax), readBufMin)); err != nil {
					return nil, err
				}
			} else {
				copy(f.buf, f.buf[f.start:f.end])
				f.end -= f.start
				f.start = 0
			}
		}
		room := len(f.buf) - f.end
		nr, err := f.r.Read(f.buf[f.end:])
		f.end += nr
		f.lastRead = nr
		if nr == room && len(f.buf) < readBufMax && f.start == 0 {
			// A full read: the peer is sending fast; read more per call.
			// Without budget left, keep reading with what we have.
			f.resize(min(2*len(f.buf), readBufMax))
		}
		if err != nil && nr == 0 {
			if f.end-f.start == 0 && errors.Is(err, io.EOF) {
				return nil, readErr(err)
			}
			if errors.Is(err, io.EOF) {
				return nil, fmt.Errorf("transport: truncated frame: %w", io.ErrUnexpectedEOF)
			}
			return nil, readErr(err)
		}
	}
}

func readErr(err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return errors.New("transport: peer silent for too long (keepalive timeout)")
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

func newID() string {
	var b [8]byte
	rand.Read(b[:])
	return "tcp_" + hex.EncodeToString(b[:])
}
