// Package secure runs the secure channels of package channel over
// routes: an initiator that opens a channel to a listener's route, listeners
// that accept them, and per channel an encryptor address (what local workers
// send to) and a decryptor address (what the peer sends to).
//
// A message sent to /service/<channel>/REST is encrypted whole (REST, its
// return route and its payload), carried along the route to the peer and,
// once decrypted there, delivered to REST on the peer's node with the peer's
// channel pushed on its return route and its Peer set to our identifier.
package secure

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sort"
	"sync"
	"time"

	"github.com/ockam-go/ockam/channel"
	"github.com/ockam-go/ockam/internal/identity"
	"github.com/ockam-go/ockam/internal/router"
	"github.com/ockam-go/ockam/internal/routing"
)

// DefaultListener is the address every node listens at for channels.
const DefaultListener = "api"

// Default timings; Config fields of zero take them.
const (
	// DefaultHandshakeTimeout bounds a handshake, on both sides.
	DefaultHandshakeTimeout = 10 * time.Second
	// DefaultKeepalive is how often an idle channel proves it is alive.
	DefaultKeepalive = 2 * time.Second
	// DefaultDeadAfter is how long a channel may hear nothing before it
	// is declared down: long enough to ride out a 10 s blackhole on the
	// path and TCP's retransmission backoff after it. A peer that went
	// away is noticed at once instead, by its authenticated close, by the
	// unknown-channel notice of the relay (its registration is gone) or
	// of the peer's restarted node.
	DefaultDeadAfter = 30 * time.Second
	// DefaultBackoffMin and DefaultBackoffMax bound the delay between
	// attempts to re-establish an initiator channel; it doubles after
	// each failure, with jitter.
	DefaultBackoffMin = 100 * time.Millisecond
	DefaultBackoffMax = 800 * time.Millisecond
)

// MaxPendingHandshakes bounds the responder handshakes in progress on a
// node: a flood of first messages cannot grow memory without bound. When it
// is reached, the oldest handshake in progress gives way to the new one, so
// that a flood delays a legitimate initiator by at most a retry rather than
// locking it out for HandshakeTimeout.
const MaxPendingHandshakes = 256

// MaxPendingPerSource bounds the handshakes in progress from one source (the
// route back to initiators, without their own address): one flooding peer
// takes at most this many slots.
const MaxPendingPerSource = 8

// ErrDown is returned when a message is sent to a channel that is being
// re-established.
var ErrDown = errors.New("securechannel: channel is down")

// Config configures a Manager.
type Config struct {
	Identity *identity.Secret
	// Trust is the node's trust: it decides which peers are accepted when
	// a channel or listener names no identifiers of its own. Required.
	Trust  func(identity.Identifier) error
	Logger *slog.Logger

	// Timings; zero takes the Default* values above.
	HandshakeTimeout       time.Duration
	Keepalive              time.Duration
	DeadAfter              time.Duration
	BackoffMin, BackoffMax time.Duration
}

// withDefaults returns a copy of cfg with zero timings set to defaults.
func (cfg Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.HandshakeTimeout, DefaultHandshakeTimeout)
	def(&cfg.Keepalive, DefaultKeepalive)
	def(&cfg.DeadAfter, DefaultDeadAfter)
	def(&cfg.BackoffMin, DefaultBackoffMin)
	def(&cfg.BackoffMax, DefaultBackoffMax)
	if cfg.BackoffMax < cfg.BackoffMin {
		cfg.BackoffMax = cfg.BackoffMin
	}
	return cfg
}

// Manager owns the secure channels and listeners of one node.
type Manager struct {
	n   *router.Node
	cfg Config
	log *slog.Logger

	mu        sync.Mutex
	channels  map[string]*Channel // by encryptor address
	listeners map[string]*Listener
	hs        handshakes
	fails     failures
	closed    bool
	stopWatch func()
	wg        sync.WaitGroup
}

// NewManager returns a manager for the channels of n.
func NewManager(n *router.Node, cfg Config) (*Manager, error) {
	if cfg.Identity == nil || cfg.Trust == nil {
		return nil, errors.New("securechannel: an identity and a trust policy are required")
	}
	m := &Manager{n: n, cfg: cfg.withDefaults(), log: cfg.Logger, channels: make(map[string]*Channel), listeners: make(map[string]*Listener)}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	m.stopWatch = n.OnLinkClosed(m.connClosed)
	return m, nil
}

// Close closes every channel (telling peers) and listener.
func (m *Manager) Close() {
	m.mu.Lock()
	m.closed = true
	chs := make([]*Channel, 0, len(m.channels))
	for _, c := range m.channels {
		chs = append(chs, c)
	}
	ls := make([]*Listener, 0, len(m.listeners))
	for _, l := range m.listeners {
		ls = append(ls, l)
	}
	m.mu.Unlock()
	for _, l := range ls {
		m.DeleteListener(l.addr)
	}
	for _, c := range chs {
		c.Close()
	}
	m.stopWatch()
	m.wg.Wait()
}

// Channel returns the channel whose encryptor is at addr, or nil.
func (m *Manager) Channel(addr string) *Channel {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.channels[addr]
}

// Channels returns the channels, sorted by address.
func (m *Manager) Channels() []*Channel {
	m.mu.Lock()
	out := make([]*Channel, 0, len(m.channels))
	for _, c := range m.channels {
		out = append(out, c)
	}
	m.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].addr < out[j].addr })
	return out
}

func (m *Manager) connClosed(id string) {
	for _, ch := range m.Channels() {
		if l := ch.cur.Load(); l != nil && len(l.remote) > 0 && l.remote[0].Type == routing.Local && l.remote[0].Value == id {
			ch.linkDown(l, errors.New("its connection closed"))
		}
	}
}

func trustFor(ids []identity.Identifier, fallback func(identity.Identifier) error) func(identity.Identifier) error {
	if len(ids) == 0 {
		return fallback
	}
	return channel.TrustList(ids...)
}

// Create opens a channel to the listener at route and waits for the
// handshake. With authorized identifiers, only those peers are accepted;
// otherwise the node's trust decides. The channel re-establishes itself
// through the same route when its path fails, until it is closed.
func (m *Manager) Create(ctx context.Context, route routing.Route, authorized []identity.Identifier) (*Channel, error) {
	return m.CreateRoutes(ctx, []routing.Route{route}, authorized)
}

func cloneRoutes(routes []routing.Route) []routing.Route {
	out := make([]routing.Route, len(routes))
	for i, r := range routes {
		out[i] = r.Clone()
	}
	return out
}

// CreateRoutes is Create with several routes to the same listener (through
// several relays): the handshake takes the first that answers, and when the
// route in use fails the channel re-establishes itself through the next.
func (m *Manager) CreateRoutes(ctx context.Context, routes []routing.Route, authorized []identity.Identifier) (*Channel, error) {
	if len(routes) == 0 {
		return nil, errors.New("securechannel: no route to the listener")
	}
	c := m.newInitiator("", routes, authorized)
	var err error
	c.addr, err = m.n.RegisterRandom("", router.Private, c.encrypt)
	if err != nil {
		return nil, err
	}
	m.n.AcceptErrors(c.addr) // error replies go through to the peer
	var l *link
	var errs []error
	for range c.routes {
		if l, err = c.handshake(ctx, m.cfg.HandshakeTimeout); err == nil {
			break
		}
		errs = append(errs, err)
		if ctx.Err() != nil || !c.nextRoute() {
			break
		}
	}
	if l == nil {
		m.n.Unregister(c.addr)
		return nil, errors.Join(errs...)
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		m.n.Unregister(c.addr)
		l.close(c, false)
		return nil, net.ErrClosed
	}
	m.channels[c.addr] = c
	m.wg.Add(1)
	m.mu.Unlock()
	c.setLink(l)
	go c.maintain()
	m.log.Info("secure channel created", "channel", c.addr, "peer", l.sess.Peer().Short(), "route", c.ListenerRoute().String())
	return c, nil
}

// newInitiator is an initiator's channel at addr ("" for one to be
// registered), before any handshake.
func (m *Manager) newInitiator(addr string, routes []routing.Route, authorized []identity.Identifier) *Channel {
	return &Channel{
		mgr:    m,
		addr:   addr,
		role:   "initiator",
		routes: cloneRoutes(routes),
		trust:  trustFor(authorized, m.cfg.Trust),
		stop:   make(chan struct{}),
		kick:   make(chan struct{}, 1),
		up:     make(chan struct{}),
	}
}

// Restore brings back, at its old address, a channel that a node had
// before it restarted: the channel starts down and establishes itself in
// the background (with backoff), so that routes through /service/<addr>
// saved elsewhere (inlets) work again once the peer answers.
func (m *Manager) Restore(addr string, route routing.Route, authorized []identity.Identifier) (*Channel, error) {
	return m.RestoreRoutes(addr, []routing.Route{route}, authorized)
}

// RestoreRoutes is Restore with several routes (CreateRoutes).
func (m *Manager) RestoreRoutes(addr string, routes []routing.Route, authorized []identity.Identifier) (*Channel, error) {
	if len(routes) == 0 {
		return nil, errors.New("securechannel: no route to the listener")
	}
	c := m.newInitiator(addr, routes, authorized)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, net.ErrClosed
	}
	if err := m.n.Register(addr, router.Private, c.encrypt); err != nil {
		return nil, err
	}
	m.n.AcceptErrors(addr)
	c.lastErr = "not yet established"
	m.channels[addr] = c
	m.wg.Add(1)
	go c.maintain()
	return c, nil
}

// Listener accepts channels at an address.
type Listener struct {
	addr  string
	ids   []identity.Identifier
	all   bool
	trust func(identity.Identifier) error
}

// Address returns the listener's local address.
func (l *Listener) Address() string { return l.addr }

// Authorized returns the identifiers the listener accepts; empty means the
// node's trust.
func (l *Listener) Authorized() []identity.Identifier { return l.ids }

// TrustEveryone reports whether the listener accepts any identity.
func (l *Listener) TrustEveryone() bool { return l.all }

// Listen starts a listener at addr. trustEveryone must be asked for
// explicitly; it is never a default.
func (m *Manager) Listen(addr string, authorized []identity.Identifier, trustEveryone bool) (*Listener, error) {
	l := &Listener{addr: addr, ids: authorized, all: trustEveryone, trust: trustFor(authorized, m.cfg.Trust)}
	if trustEveryone {
		l.trust = channel.TrustEveryone
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, net.ErrClosed
	}
	if _, ok := m.listeners[addr]; ok {
		return nil, fmt.Errorf("securechannel: a listener exists at %s", addr)
	}
	if err := m.n.Register(addr, router.Public, func(msg *routing.Message) error { return m.accept(l, msg) }); err != nil {
		return nil, err
	}
	m.listeners[addr] = l
	return l, nil
}

// Listeners returns the listeners, sorted by address.
func (m *Manager) Listeners() []*Listener {
	m.mu.Lock()
	out := make([]*Listener, 0, len(m.listeners))
	for _, l := range m.listeners {
		out = append(out, l)
	}
	m.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].addr < out[j].addr })
	return out
}

// DeleteListener stops the listener at addr. Channels it accepted live on.
func (m *Manager) DeleteListener(addr string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.listeners[addr]; !ok {
		return fmt.Errorf("securechannel: no listener at %s", addr)
	}
	delete(m.listeners, addr)
	m.n.Unregister(addr)
	return nil
}

// accept handles a first handshake message at a listener: it starts a
// responder whose decryptor address receives the rest of the handshake.
func (m *Manager) accept(l *Listener, msg *routing.Message) error {
	if len(msg.Payload) == 0 || channel.MessageType(msg.Payload[0]) != channel.Handshake1 {
		return errors.New("securechannel: listener expects a first handshake message")
	}
	src := handshakeSource(msg.Return)
	p, evicted, err := m.hs.admit(src)
	if evicted > 0 {
		m.log.Info("shedding secure channel handshakes", "listener", l.addr, "reason", fmt.Sprintf("%d in progress, the limit: %d oldest gave way to newer ones", MaxPendingHandshakes, evicted))
	}
	if err != nil {
		m.failed(FailShed)
		if m.hs.firstShed(src) {
			m.log.Info("shedding secure channel handshakes", "listener", l.addr, "source", src, "reason", err)
		}
		return err
	}
	hs, err := channel.NewResponder(&channel.Config{Identity: m.cfg.Identity, Trust: l.trust})
	if err != nil {
		m.hs.done(p)
		return err
	}
	out, err := hs.Step(msg.Payload)
	if err != nil {
		m.hs.done(p)
		m.failed(failReason(err))
		m.log.Info("secure channel refused", "listener", l.addr, "err", err)
		return err
	}
	c := &Channel{mgr: m, role: "responder", trust: l.trust, stop: make(chan struct{}), kick: make(chan struct{}, 1), up: make(chan struct{})}
	r := &responder{hs: hs, remote: msg.Return.Clone()}
	dec, err := m.n.RegisterRandom("", router.Public, func(msg3 *routing.Message) error {
		m.hs.done(p)
		return c.completeResponder(r, msg3)
	})
	if err != nil {
		m.hs.done(p)
		return err
	}
	r.dec = dec
	// Whatever ends the handshake first (its third message, its timeout, or
	// eviction by newer handshakes under a flood) frees its slot; an
	// unfinished one loses its decryptor address.
	abandon := func() {
		if !c.established.Load() {
			m.n.Unregister(dec)
		}
	}
	m.hs.setAbandon(p, abandon)
	r.timer = time.AfterFunc(m.cfg.HandshakeTimeout, func() {
		if m.hs.done(p) {
			abandon()
			m.failed(FailTimeout)
			m.log.Info("secure channel handshake timed out", "listener", l.addr)
		}
	})
	reply := &routing.Message{Onward: r.remote, Return: routing.Route{routing.LocalAddr(dec)}, Payload: out}
	return m.n.Send(context.Background(), reply)
}

// handshakeSource names where a first handshake message came from, by the
// hops of its return route that the initiator cannot choose: the connection
// it arrived on and, through a relay, the relay's connection to the
// initiator (both pushed by routers). The hops after them are the sender's
// own, so a flooder cannot pose as many sources by padding its route.
func handshakeSource(ret routing.Route) string {
	n := min(2, max(len(ret)-1, 0))
	return ret[:n].String()
}

type responder struct {
	hs     *channel.Handshake
	remote routing.Route
	dec    string
	timer  *time.Timer
}

// jitter returns a duration uniformly in [d/2, 3d/2).
func jitter(d time.Duration) time.Duration { return d/2 + rand.N(d) }

// Watch implements portal.Path: when route starts at one of this node's
// channels, it waits (up to ctx) for the channel to be up and returns a
// channel closed when that session ends. Other routes never fail on their
// own and get a nil channel.
func (m *Manager) Watch(ctx context.Context, route routing.Route) (<-chan struct{}, error) {
	if len(route) == 0 || route[0].Type != routing.Local {
		return nil, nil
	}
	c := m.Channel(route[0].Value)
	if c == nil {
		return nil, nil
	}
	l, err := c.WaitUp(ctx)
	if err != nil {
		return nil, err
	}
	return l.Done(), nil
}
