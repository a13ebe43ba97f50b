// Package router is the message router of one node: workers registered at local
// addresses, a TCP transport to other nodes, and the echo service.
//
// The router denies by default. A worker says who may reach it (Access): a
// message that arrived over a TCP connection reaches only Public workers,
// one that came out of a secure channel reaches Channel and Public workers,
// and only messages that originate on this node (or come from a channel peer
// allowed to route) reach Private workers or make the node connect to a new
// TCP address. Every refusal is counted and logged once per sender.
//
// It holds no cryptography: the relay links it, and the relay must be unable
// to read what it forwards (see cmd/ockam-relay's import test).
package router

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ockam-go/ockam/internal/routing"
	"github.com/ockam-go/ockam/internal/transport"
)

// A Handler receives the messages sent to a worker's address. It runs on the
// goroutine that delivered the message (often a connection's reader): it must
// not block for long, and it owns the message only for the duration of the
// call. Its own address is still the first hop of m.Onward. The error it
// returns is returned by the Send that delivered the message, so that a local
// sender learns at once that, say, a secure channel is down.
type Handler func(m *routing.Message) error

// Access says who may send to a worker. Each level includes the ones before.
type Access uint8

const (
	// Private workers receive only messages that originate on this node,
	// and messages out of a secure channel whose peer may route
	// (Config.AllowRouting): channel encryptors, the control plane.
	Private Access = iota + 1
	// Channel workers also receive messages out of any secure channel; the
	// channel's trust vetted the peer, and m.Peer names it (outlets,
	// flows).
	Channel
	// Public workers also receive messages from any TCP connection: what a
	// node offers to the network (echo, the secure channel listeners and
	// decryptors, the forwarding service and its forwarders, addresses that
	// wait for a reply).
	Public
)

func (a Access) String() string {
	switch a {
	case Private:
		return "private"
	case Channel:
		return "channel"
	case Public:
		return "public"
	}
	return fmt.Sprintf("access(%d)", uint8(a))
}

// Limits bound what other nodes can make this one hold; zero fields take
// their defaults (see transport.Limits).
type Limits = transport.Limits

// Defaults of Limits, for flags.
const (
	DefaultMaxConns        = transport.DefaultMaxConns
	DefaultMaxConnsPerIP   = transport.DefaultMaxConnsPerIP
	DefaultMaxQueueBytes   = transport.DefaultMaxQueueBytes
	DefaultTotalQueueBytes = transport.DefaultTotalQueueBytes
	DefaultReadBufferBytes = transport.DefaultReadBufferBytes
	// DefaultLanes and MaxLanes bound Config.Lanes.
	DefaultLanes = transport.DefaultLanes
	MaxLanes     = transport.MaxLanes
)

// Config configures a Node. It is not modified and may be shared.
type Config struct {
	Logger *slog.Logger
	// Keepalive and IdleTimeout tune the transport; zero uses its defaults.
	Keepalive   time.Duration
	IdleTimeout time.Duration
	// Limits bound connections, queues and buffers.
	Limits Limits
	// Lanes is how many TCP connections the node opens to each node it
	// dials (transport.Config.Lanes): zero means transport.DefaultLanes.
	Lanes int
	// AllowRouting reports whether the secure channel peer with the given
	// identifier may route through this node: reach its private workers and
	// make it connect to TCP addresses named in the message's route. Nil
	// means no peer may.
	AllowRouting func(peer string) bool
}

// Node routes messages between local workers and other nodes.
type Node struct {
	log          *slog.Logger
	tr           *transport.Transport
	allowRouting func(peer string) bool

	mu            sync.RWMutex
	workers       map[string]worker
	closed        bool
	undeliverable func(m *routing.Message) bool

	// Dropped counts messages that had nowhere to go (no worker, a full
	// queue towards a slow connection, an empty route).
	Dropped atomic.Uint64
	// Refused counts messages the reachability rules turned away.
	Refused atomic.Uint64
	// ErrorReplies counts the error replies this node sent (a remote
	// sender's message named a local address it could not be given to);
	// ErrorRepliesLimited those it did not send because their sender had
	// used up its share (MaxErrorReplies).
	ErrorReplies, ErrorRepliesLimited atomic.Uint64

	errLimit errLimiter

	noticeMu sync.Mutex
	noticed  map[string]struct{} // senders whose refusal or slowness was logged

	watchMu  sync.Mutex
	watchers map[*func(string)]struct{}

	dials chan struct{} // slots for dials started on behalf of a channel peer
	wg    sync.WaitGroup
}

type worker struct {
	h      Handler
	access Access
	errors bool // also receives error replies (AcceptErrors)
}

// EchoAddress is the address of the echo service every node runs.
const EchoAddress = "echo"

// MaxBackgroundDials bounds the connection attempts a node runs at once on
// behalf of channel peers allowed to route (a dial never runs on the reader
// that delivered the message).
const MaxBackgroundDials = 16

// maxNoticed bounds the set of senders already logged; it is cleared when
// full, so a sender is logged again at most once per that many others.
const maxNoticed = 4096

// New returns a node with its echo service. Call Listen to accept other nodes.
func New(cfg Config) *Node {
	n := &Node{
		log:          cfg.Logger,
		allowRouting: cfg.AllowRouting,
		workers:      make(map[string]worker),
		watchers:     make(map[*func(string)]struct{}),
		noticed:      make(map[string]struct{}),
		dials:        make(chan struct{}, MaxBackgroundDials),
	}
	if n.log == nil {
		n.log = slog.New(slog.DiscardHandler)
	}
	if n.allowRouting == nil {
		n.allowRouting = func(string) bool { return false }
	}
	n.tr = transport.New(transport.Config{
		Logger:      n.log,
		OnMessage:   n.fromConn,
		OnClose:     n.connClosed,
		Keepalive:   cfg.Keepalive,
		IdleTimeout: cfg.IdleTimeout,
		Limits:      cfg.Limits,
		Lanes:       cfg.Lanes,
	})
	n.Register(EchoAddress, Public, n.echo)
	return n
}

// Logger returns the node's logger.
func (n *Node) Logger() *slog.Logger { return n.log }

// Listen accepts connections from other nodes on addr.
func (n *Node) Listen(addr string) (net.Addr, error) { return n.tr.Listen(addr) }

// Serve accepts connections on ln, a listener from transport.Bind, which
// the node then owns.
func (n *Node) Serve(ln net.Listener) (net.Addr, error) { return n.tr.Serve(ln) }

// Close stops the transport, forgets every worker and waits for the dials it
// started.
func (n *Node) Close() error {
	n.mu.Lock()
	n.closed = true
	n.workers = map[string]worker{}
	n.mu.Unlock()
	err := n.tr.Close()
	n.wg.Wait()
	return err
}

// ErrNoWorker is returned by Send for a local address nobody holds.
var ErrNoWorker = errors.New("node: no worker")

// ErrAddressInUse is returned by Register for a taken address.
var ErrAddressInUse = errors.New("node: address already in use")

// ErrRefused is returned by Send for a message the reachability rules turn
// away. The sender is not told why: what a node exposes is not advertised.
var ErrRefused = errors.New("node: refused")

// Register makes h receive the messages sent to addr that a allows.
func (n *Node) Register(addr string, a Access, h Handler) error {
	if addr == "" || len(addr) > routing.MaxAddressLen {
		return fmt.Errorf("node: invalid address %q", addr)
	}
	if a < Private || a > Public {
		return fmt.Errorf("node: invalid access %v for %s", a, addr)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return net.ErrClosed
	}
	if _, ok := n.workers[addr]; ok {
		return fmt.Errorf("%w: %s", ErrAddressInUse, addr)
	}
	n.workers[addr] = worker{h: h, access: a}
	return nil
}

// RegisterRandom registers h at a new random address with the given prefix
// and returns the address.
func (n *Node) RegisterRandom(prefix string, a Access, h Handler) (string, error) {
	for {
		addr := prefix + RandomHex(8)
		err := n.Register(addr, a, h)
		if errors.Is(err, ErrAddressInUse) {
			continue
		}
		return addr, err
	}
}

// Unregister removes the worker at addr.
func (n *Node) Unregister(addr string) {
	n.mu.Lock()
	delete(n.workers, addr)
	n.mu.Unlock()
}

// HasWorker reports whether addr is registered.
func (n *Node) HasWorker(addr string) bool {
	n.mu.RLock()
	defer n.mu.RUnlock()
	_, ok := n.workers[addr]
	return ok
}

// AcceptErrors makes the worker at addr receive also the error replies
// sent to it (m.Kind == routing.KindError, the body an Unreachable):
// workers that wait for answers (Request) and those that pass messages on
// (a channel's encryptor). Error replies to other workers are dropped, so
// no handler ever mistakes one for its own protocol.
func (n *Node) AcceptErrors(addr string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	w, ok := n.workers[addr]
	if !ok {
		return fmt.Errorf("%w at %s", ErrNoWorker, routing.LocalAddr(addr))
	}
	w.errors = true
	n.workers[addr] = w
	return nil
}

// HandleUndeliverable makes f receive (on the connection's reader) each
// message from another node that named a local address nobody holds (or
// one it may not reach, which must look the same): a service that knows
// what such messages are may answer them, and returns true if it did; the
// node then sends no error reply of its own. Nil stops it.
func (n *Node) HandleUndeliverable(f func(m *routing.Message) bool) {
	n.mu.Lock()
	n.undeliverable = f
	n.mu.Unlock()
}

// RandomHex returns 2*nbytes random hex characters.
func RandomHex(nbytes int) string {
	b := make([]byte, nbytes)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// reaches reports whether m may be delivered to a worker with access a.
func (n *Node) reaches(m *routing.Message, a Access) bool {
	switch {
	case m.Via != "":
		return a >= Public
	case m.Peer != "":
		return a >= Channel || n.allowRouting(m.Peer)
	}
	return true
}

// Send routes m by its first onward hop: a local worker, a connection of the
// transport, or a TCP address (connecting on demand). The caller keeps
// ownership of m once Send returns, unless m is delivered to a local worker,
// in which case that worker has it for the duration of its call.
func (n *Node) Send(ctx context.Context, m *routing.Message) error {
	if len(m.Onward) == 0 {
		n.Dropped.Add(1)
		return errors.New("node: message has an empty onward route")
	}
	next := m.Onward[0]
	switch next.Type {
	case routing.Local:
		n.mu.RLock()
		w, ok := n.workers[next.Value]
		n.mu.RUnlock()
		if ok {
			if !n.reaches(m, w.access) {
				err := n.refuse(m, next, "worker is "+w.access.String())
				// Answered exactly as a missing address: what a node
				// holds but does not offer is not advertised.
				n.unreachable(m, next)
				return err
			}
			if m.Kind == routing.KindError && !w.errors {
				n.Dropped.Add(1)
				return fmt.Errorf("node: %s takes no error replies", next)
			}
			return w.h(m)
		}
		// A connection's address is a return path: whoever learnt it from
		// a message may answer along it (the IDs are random).
		if c := n.tr.Conn(next.Value); c != nil {
			return n.sendConn(c, m)
		}
		n.Dropped.Add(1)
		n.unreachable(m, next)
		return fmt.Errorf("%w at %s", ErrNoWorker, next)
	case routing.TCP:
		if m.Via != "" || (m.Peer != "" && !n.allowRouting(m.Peer)) {
			return n.refuse(m, next, "remote senders may not open connections")
		}
		if c := n.tr.Outbound(next.Value); c != nil {
			return n.sendConn(c, m)
		}
		if m.Kind == routing.KindError {
			// An error reply goes back along connections that exist;
			// it never makes this node connect anywhere.
			n.Dropped.Add(1)
			return fmt.Errorf("node: no connection to %s for an error reply", next)
		}
		if m.Peer != "" {
			// Delivered by a channel's decryptor on a connection's
			// reader: the dial must not hold that reader up.
			return n.dialThenSend(next.Value, m)
		}
		c, err := n.tr.Dial(ctx, next.Value)
		if err != nil {
			return err
		}
		return n.sendConn(c, m)
	}
	n.Dropped.Add(1)
	return fmt.Errorf("node: cannot route to %s", next)
}

// SendAll sends messages that share their first hop, ms[0].Onward[0], in
// order. When that hop is a TCP connection, they are queued together and
// written with one syscall (transport.Conn.SendBatch, which waits for room
// only with wait); otherwise each is sent as Send would. The caller keeps ms;
// the messages are encoded (or handled) before SendAll returns.
func (n *Node) SendAll(ctx context.Context, ms []routing.Message, wait bool) error {
	if len(ms) == 0 {
		return nil
	}
	var c *transport.Conn
	if len(ms[0].Onward) > 0 && ms[0].Via == "" && ms[0].Peer == "" {
		next := ms[0].Onward[0]
		switch next.Type {
		case routing.Local:
			n.mu.RLock()
			_, worker := n.workers[next.Value]
			n.mu.RUnlock()
			if !worker {
				c = n.tr.Conn(next.Value)
			}
		case routing.TCP:
			c = n.tr.Outbound(next.Value)
		}
	}
	for i := range ms {
		if c == nil || len(ms[i].Onward) == 0 || ms[i].Onward[0] != ms[0].Onward[0] || ms[i].Via != "" || ms[i].Peer != "" {
			c = nil
			break
		}
	}
	if c == nil {
		for i := range ms {
			if err := n.Send(ctx, &ms[i]); err != nil {
				return err
			}
		}
		return nil
	}
	saved := make([]routing.Route, len(ms))
	for i := range ms {
		saved[i] = ms[i].Onward
		ms[i].Onward = ms[i].Onward[1:]
	}
	err := sendLanes(c, ms, wait)
	for i := range ms {
		ms[i].Onward = saved[i]
	}
	return err
}

// sendLanes sends ms on the lanes of c's bundle their Lane hints name: one
// batch per lane, each in the order of ms.
func sendLanes(c *transport.Conn, ms []routing.Message, wait bool) error {
	first := c.Lane(ms[0].Lane)
	same := true
	for i := range ms[1:] {
		if c.Lane(ms[i+1].Lane) != first {
			same = false
			break
		}
	}
	if same {
		return first.SendBatch(ms, wait)
	}
	var err error
	sub := make([]routing.Message, 0, len(ms))
	done := make([]bool, len(ms))
	for i := range ms {
		if done[i] {
			continue
		}
		lane := c.Lane(ms[i].Lane)
		sub = sub[:0]
		for j := i; j < len(ms); j++ {
			if !done[j] && c.Lane(ms[j].Lane) == lane {
				sub = append(sub, ms[j])
				done[j] = true
			}
		}
		if e := lane.SendBatch(sub, wait); e != nil && err == nil {
			err = e
		}
	}
	clear(sub)
	return err
}

// dialThenSend connects to addr in the background and sends a copy of m
// once connected. At most MaxBackgroundDials run at once; beyond that the
// message is dropped.
func (n *Node) dialThenSend(addr string, m *routing.Message) error {
	select {
	case n.dials <- struct{}{}:
	default:
		n.Dropped.Add(1)
		return fmt.Errorf("node: %d connection attempts in progress, dropping message for %s", MaxBackgroundDials, addr)
	}
	cp := &routing.Message{Onward: m.Onward.Clone(), Return: m.Return.Clone(), Payload: append([]byte(nil), m.Payload...), Peer: m.Peer}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		defer func() { <-n.dials }()
		ctx, cancel := context.WithTimeout(context.Background(), transport.DialTimeout)
		defer cancel()
		c, err := n.tr.Dial(ctx, addr)
		if err != nil {
			n.log.Debug("background dial failed", "addr", addr, "err", err)
			return
		}
		n.sendConn(c, cp)
	}()
	return nil
}

// refuse counts a message the reachability rules turn away and logs its
// sender the first time.
func (n *Node) refuse(m *routing.Message, hop routing.Address, why string) error {
	n.Refused.Add(1)
	sender, key := n.sender(m)
	if n.firstNotice("refuse/" + key) {
		n.log.Warn("refused message", "from", sender, "to", hop.String(), "reason", why)
	}
	return fmt.Errorf("%w: %s", ErrRefused, hop)
}

func (n *Node) sender(m *routing.Message) (desc, key string) {
	switch {
	case m.Via != "":
		if c := n.tr.Conn(m.Via); c != nil {
			return "connection " + m.Via + " from " + c.Remote(), m.Via
		}
		return "connection " + m.Via, m.Via
	case m.Peer != "":
		return "channel peer " + m.Peer, m.Peer
	}
	return "this node", "local"
}

// firstNotice reports whether key is logged for the first time.
func (n *Node) firstNotice(key string) bool {
	n.noticeMu.Lock()
	defer n.noticeMu.Unlock()
	if _, ok := n.noticed[key]; ok {
		return false
	}
	if len(n.noticed) >= maxNoticed {
		clear(n.noticed)
	}
	n.noticed[key] = struct{}{}
	return true
}

// sendConn pops the connection's hop and writes the rest to the peer. A
// message being passed from one connection to another never waits for room
// in the second one's queue: it is dropped (and counted) instead, so a peer
// that does not read stalls nobody but itself, and a sender that floods a
// peer takes only its share of that peer's queue. Honest streams never get
// there: their flow windows bound what is in flight.
func (n *Node) sendConn(c *transport.Conn, m *routing.Message) error {
	onward := m.Onward
	m.Onward = onward[1:]
	var err error
	lane := c.Lane(m.Lane)
	if m.Via != "" && m.Via != c.ID() {
		src := n.tr.Conn(m.Via)
		if src == nil {
			m.Onward = onward
			return net.ErrClosed // the sender's connection is gone
		}
		// The lane whose reader delivered m: it owns the corking.
		err = lane.TrySend(m, src.Lane(m.Lane))
		if errors.Is(err, transport.ErrQueueFull) {
			n.Dropped.Add(1)
			if n.firstNotice("slow/" + c.ID()) {
				from, _ := n.sender(m)
				n.log.Warn("dropping messages for a connection that does not read fast enough", "conn", c.ID(), "remote", c.Remote(), "queued_bytes", c.Queued(), "from", from)
			}
		}
	} else {
		err = lane.Send(m)
	}
	m.Onward = onward
	return err
}

// fromConn is called by the transport for each message received: the
// connection pushes itself on the return route so replies come back on it.
func (n *Node) fromConn(c *transport.Conn, m *routing.Message) {
	if len(m.Return) >= routing.MaxRouteLen {
		n.Dropped.Add(1)
		return
	}
	m.Return = append(m.Return, routing.Address{})
	copy(m.Return[1:], m.Return)
	m.Return[0] = routing.LocalAddr(c.ID())
	m.Via = c.ID()
	if err := n.Send(context.Background(), m); err != nil {
		n.log.Debug("dropped message from peer", "conn", c.ID(), "err", err)
	}
}

// unreachable answers a remote sender whose message named a local address
// this node cannot give it to (nobody holds it, or the sender may not reach
// it: both are answered alike, so the two cannot be told apart). It sends
// an error reply naming hop back along the message's return route, unless
// the undeliverable handler answered, the message is itself an error reply
// (no loops), or the sender has used up its share of error replies.
// Messages that originate on this node get no reply: their Send returns
// the error.
func (n *Node) unreachable(m *routing.Message, hop routing.Address) {
	if m.Kind == routing.KindError || (m.Via == "" && m.Peer == "") || len(m.Return) == 0 {
		return
	}
	if m.Via != "" {
		n.mu.RLock()
		f := n.undeliverable
		n.mu.RUnlock()
		if f != nil && f(m) {
			return
		}
	}
	_, key := n.sender(m)
	if !n.errLimit.allow(key, time.Now()) {
		n.ErrorRepliesLimited.Add(1)
		return
	}
	n.ErrorReplies.Add(1)
	r := &routing.Message{
		Kind:    routing.KindError,
		Onward:  m.Return.Clone(),
		Payload: routing.AppendUnreachable(nil, hop),
		// Back over the connection it came on: as a passed-on message,
		// it reaches public workers and connections only, and never
		// waits for another connection's queue.
		Via: m.Via,
	}
	if err := n.Send(context.Background(), r); err != nil {
		n.log.Debug("error reply not delivered", "hop", hop.String(), "err", err)
	}
}

// Link is what workers may know of a connection to another node.
type Link struct {
	ID     string // its local address
	Remote string // the peer's host:port
	c      *transport.Conn
}

// Done is closed when the connection has ended.
func (l Link) Done() <-chan struct{} { return l.c.Done() }

// Lanes is how many TCP connections (lanes) the link has now.
func (l Link) Lanes() int { return len(l.c.Lanes()) }

// LaneBytes returns what each lane of the link has read and written.
func (l Link) LaneBytes() []uint64 {
	ls := l.c.Lanes()
	out := make([]uint64, len(ls))
	for i, c := range ls {
		out[i] = c.BytesIn.Load() + c.BytesOut.Load()
	}
	return out
}

// Close ends the connection.
func (l Link) Close() { l.c.Close() }

// Link returns the connection whose local address is id.
func (n *Node) Link(id string) (Link, bool) {
	c := n.tr.Conn(id)
	if c == nil {
		return Link{}, false
	}
	return Link{ID: c.ID(), Remote: c.Remote(), c: c}, true
}

// Links returns the open connections.
func (n *Node) Links() []Link {
	cs := n.tr.Conns()
	out := make([]Link, len(cs))
	for i, c := range cs {
		out[i] = Link{ID: c.ID(), Remote: c.Remote(), c: c}
	}
	return out
}

// LinkStats is a snapshot of the node's connections.
type LinkStats struct {
	Conns             int
	BytesIn, BytesOut uint64
	Dropped           uint64 // messages dropped for slow connections
}

// LinkStats sums the counters of the open connections.
func (n *Node) LinkStats() LinkStats {
	var s LinkStats
	for _, c := range n.tr.Conns() {
		s.Conns++
		for _, l := range c.Lanes() {
			s.BytesIn += l.BytesIn.Load()
			s.BytesOut += l.BytesOut.Load()
			s.Dropped += l.Dropped.Load()
		}
	}
	return s
}

// OnLinkClosed calls f (on the transport's goroutine) with the local
// address of each connection that closes, until the returned stop function
// is called.
func (n *Node) OnLinkClosed(f func(id string)) (stop func()) {
	p := &f
	n.watchMu.Lock()
	n.watchers[p] = struct{}{}
	n.watchMu.Unlock()
	return func() {
		n.watchMu.Lock()
		delete(n.watchers, p)
		n.watchMu.Unlock()
	}
}

func (n *Node) connClosed(c *transport.Conn, err error) {
	n.noticeMu.Lock()
	delete(n.noticed, "refuse/"+c.ID())
	delete(n.noticed, "slow/"+c.ID())
	n.noticeMu.Unlock()
	n.watchMu.Lock()
	fs := make([]func(string), 0, len(n.watchers))
	for p := range n.watchers {
		fs = append(fs, *p)
	}
	n.watchMu.Unlock()
	for _, f := range fs {
		f(c.ID())
	}
}

// Reply sends payload back along m's return route, from the worker at from.
func (n *Node) Reply(m *routing.Message, from string, payload []byte) error {
	r := &routing.Message{
		Onward:  m.Return.Clone(),
		Return:  routing.Route{routing.LocalAddr(from)},
		Payload: payload,
	}
	return n.Send(context.Background(), r)
}

func (n *Node) echo(m *routing.Message) error {
	return n.Reply(m, EchoAddress, m.Payload)
}

// UnreachableError is returned by Request when a node on the route sent an
// error reply: Hop is not there, or the sender may not reach it (nodes
// answer both alike). Error replies are not authenticated: anyone on the
// path can send one, as anyone on it can drop the message.
type UnreachableError struct {
	Hop routing.Address
}

func (e *UnreachableError) Error() string {
	return "node: a node on the route has no " + e.Hop.String() + " (or does not let this sender reach it)"
}

// Request sends payload to route from a temporary address and waits for the
// first message that comes back to it. The returned message is the caller's.
// An error reply from a node on the route ends the wait with an
// *UnreachableError.
func (n *Node) Request(ctx context.Context, route routing.Route, payload []byte) (*routing.Message, error) {
	type result struct {
		m   *routing.Message
		err error
	}
	ch := make(chan result, 1)
	// Public: the reply may come back over a connection. The address is
	// random and lives only until the reply.
	addr, err := n.RegisterRandom("req_", Public, func(m *routing.Message) error {
		var r result
		if m.Kind == routing.KindError {
			u, err := routing.DecodeUnreachable(m.Payload)
			if err != nil {
				return err
			}
			r.err = &UnreachableError{Hop: u.Hop}
		} else {
			r.m = &routing.Message{Onward: m.Onward.Clone(), Return: m.Return.Clone(), Payload: append([]byte(nil), m.Payload...), Peer: m.Peer}
		}
		select {
		case ch <- r:
		default:
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	defer n.Unregister(addr)
	if err := n.AcceptErrors(addr); err != nil {
		return nil, err
	}
	m := &routing.Message{Onward: route, Return: routing.Route{routing.LocalAddr(addr)}, Payload: payload}
	if err := n.Send(ctx, m); err != nil {
		return nil, err
	}
	select {
	case r := <-ch:
		return r.m, r.err
	case <-ctx.Done():
		return nil, fmt.Errorf("node: no reply from %s: %w", route, ctx.Err())
	}
}
