// Package node is the message router of one node: workers registered at local
// addresses, a TCP transport to other nodes, and the echo service.
//
// It holds no cryptography: the relay links it, and the relay must be unable
// to read what it forwards (see cmd/ockam-relay's import test).
package node

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

	"github.com/ockam-go/ockam/routing"
	"github.com/ockam-go/ockam/transport"
)

// A Handler receives the messages sent to a worker's address. It runs on the
// goroutine that delivered the message (often a connection's reader): it must
// not block for long, and it owns the message only for the duration of the
// call. Its own address is still the first hop of m.Onward. The error it
// returns is returned by the Send that delivered the message, so that a local
// sender learns at once that, say, a secure channel is down.
type Handler func(m *routing.Message) error

// Config configures a Node.
type Config struct {
	Logger *slog.Logger
	// Keepalive and IdleTimeout tune the transport; zero uses its defaults.
	Keepalive   time.Duration
	IdleTimeout time.Duration
	// Undeliverable, if set, is called (on the connection's reader) with
	// each message from another node that named a local address nobody
	// holds: a node that knows what such messages are may answer them.
	Undeliverable func(m *routing.Message)
}

// Node routes messages between local workers and other nodes.
type Node struct {
	log           *slog.Logger
	tr            *transport.Transport
	undeliverable func(m *routing.Message)

	mu      sync.RWMutex
	workers map[string]Handler
	closed  bool

	// Dropped counts messages that had nowhere to go.
	Dropped atomic.Uint64

	watchMu  sync.Mutex
	watchers map[*func(*transport.Conn)]struct{}
}

// EchoAddress is the address of the echo service every node runs.
const EchoAddress = "echo"

// New returns a node with its echo service. Call Listen to accept other nodes.
func New(cfg Config) *Node {
	n := &Node{
		log:           cfg.Logger,
		workers:       make(map[string]Handler),
		watchers:      make(map[*func(*transport.Conn)]struct{}),
		undeliverable: cfg.Undeliverable,
	}
	if n.log == nil {
		n.log = slog.New(slog.DiscardHandler)
	}
	n.tr = transport.New(transport.Config{
		Logger:      n.log,
		OnMessage:   n.fromConn,
		OnClose:     n.connClosed,
		Keepalive:   cfg.Keepalive,
		IdleTimeout: cfg.IdleTimeout,
	})
	n.Register(EchoAddress, n.echo)
	return n
}

// Logger returns the node's logger.
func (n *Node) Logger() *slog.Logger { return n.log }

// Listen accepts connections from other nodes on addr.
func (n *Node) Listen(addr string) (net.Addr, error) { return n.tr.Listen(addr) }

// Transport returns the node's TCP transport.
func (n *Node) Transport() *transport.Transport { return n.tr }

// Close stops the transport and forgets every worker.
func (n *Node) Close() error {
	n.mu.Lock()
	n.closed = true
	n.workers = map[string]Handler{}
	n.mu.Unlock()
	return n.tr.Close()
}

// ErrNoWorker is returned by Send for a local address nobody holds.
var ErrNoWorker = errors.New("node: no worker")

// ErrAddressInUse is returned by Register for a taken address.
var ErrAddressInUse = errors.New("node: address already in use")

// Register makes h receive the messages sent to addr.
func (n *Node) Register(addr string, h Handler) error {
	if addr == "" || len(addr) > routing.MaxAddressLen {
		return fmt.Errorf("node: invalid address %q", addr)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return net.ErrClosed
	}
	if _, ok := n.workers[addr]; ok {
		return fmt.Errorf("%w: %s", ErrAddressInUse, addr)
	}
	n.workers[addr] = h
	return nil
}

// RegisterRandom registers h at a new random address with the given prefix
// and returns the address.
func (n *Node) RegisterRandom(prefix string, h Handler) (string, error) {
	for {
		addr := prefix + RandomHex(8)
		err := n.Register(addr, h)
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

// RandomHex returns 2*nbytes random hex characters.
func RandomHex(nbytes int) string {
	b := make([]byte, nbytes)
	rand.Read(b)
	return hex.EncodeToString(b)
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
		h := n.workers[next.Value]
		n.mu.RUnlock()
		if h != nil {
			return h(m)
		}
		if c := n.tr.Conn(next.Value); c != nil {
			return n.sendConn(c, m)
		}
		n.Dropped.Add(1)
		return fmt.Errorf("%w at %s", ErrNoWorker, next)
	case routing.TCP:
		c, err := n.tr.Dial(ctx, next.Value)
		if err != nil {
			return err
		}
		return n.sendConn(c, m)
	}
	n.Dropped.Add(1)
	return fmt.Errorf("node: cannot route to %s", next)
}

// sendConn pops the connection's hop and writes the rest to the peer.
func (n *Node) sendConn(c *transport.Conn, m *routing.Message) error {
	onward := m.Onward
	m.Onward = onward[1:]
	err := c.Send(m)
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
	if err := n.Send(context.Background(), m); err != nil {
		// Only when this message's own first hop is unknown: a worker that
		// failed to deliver something further (a late credit for a finished
		// flow) says nothing about the address the peer used.
		if n.undeliverable != nil && errors.Is(err, ErrNoWorker) && len(m.Onward) > 0 && m.Onward[0].Type == routing.Local &&
			!n.HasWorker(m.Onward[0].Value) && n.tr.Conn(m.Onward[0].Value) == nil {
			n.undeliverable(m)
		}
		n.log.Debug("dropped message from peer", "conn", c.ID(), "err", err)
	}
}

// WatchConns calls f (on the transport's goroutine) for each connection that
// closes, until the returned stop function is called.
func (n *Node) WatchConns(f func(c *transport.Conn)) (stop func()) {
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
	n.watchMu.Lock()
	fs := make([]func(*transport.Conn), 0, len(n.watchers))
	for p := range n.watchers {
		fs = append(fs, *p)
	}
	n.watchMu.Unlock()
	for _, f := range fs {
		f(c)
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

// Request sends payload to route from a temporary address and waits for the
// first message that comes back to it. The returned message is the caller's.
func (n *Node) Request(ctx context.Context, route routing.Route, payload []byte) (*routing.Message, error) {
	ch := make(chan *routing.Message, 1)
	addr, err := n.RegisterRandom("req_", func(m *routing.Message) error {
		c := &routing.Message{Onward: m.Onward.Clone(), Return: m.Return.Clone(), Payload: append([]byte(nil), m.Payload...), Peer: m.Peer}
		select {
		case ch <- c:
		default:
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	defer n.Unregister(addr)
	m := &routing.Message{Onward: route, Return: routing.Route{routing.LocalAddr(addr)}, Payload: payload}
	if err := n.Send(ctx, m); err != nil {
		return nil, err
	}
	select {
	case r := <-ch:
		return r, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("node: no reply from %s: %w", route, ctx.Err())
	}
}
