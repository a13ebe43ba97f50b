package datagram

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ockam-go/ockam/internal/router"
	"github.com/ockam-go/ockam/internal/routing"
)

// DefaultMaxAssocs bounds the associations of one outlet.
const DefaultMaxAssocs = 4096

// OutletConfig describes the UDP service of an outlet. NewOutlet does not
// modify it.
type OutletConfig struct {
	Logger  *slog.Logger
	Name    string   // for logs; default Address
	Address string   // worker address, e.g. "outlet.udp" (see ServiceSuffix)
	Host    string   // target host
	Port    uint16   // target port; 0: the datagram's own, which must be in Ports
	Ports   []uint16 // ports a datagram may ask for when Port is 0
	// Allow lists the identifiers allowed; empty asks Allowed (the node's
	// policy), which is then required.
	Allow   []string
	Allowed func(peer string) error
	// Dial, if set, opens the socket to target ("host:port") for peer
	// instead of the kernel (the outlet netstack mode: a virtual source
	// address per client). The conn must be connected: each Read one
	// datagram from the target, each Write one to it.
	Dial func(ctx context.Context, peer, target string) (net.Conn, error)

	// Limiter shapes the datagrams sent back to clients (nil: none); it
	// may be shared by all outlets of a node.
	Limiter *Limiter

	Idle      time.Duration // DefaultIdle when 0
	Queue     int           // DefaultQueue when 0
	MaxAssocs int           // DefaultMaxAssocs when 0
}

// Outlet is the UDP service of an outlet: it takes Datagram messages that
// arrive at its address through a secure channel from an allowed identity
// and sends them to the target, one socket per association.
type Outlet struct {
	n   *router.Node
	cfg OutletConfig
	log *slog.Logger

	mu     sync.Mutex
	assocs map[string]*assoc
	closed bool
	wg     sync.WaitGroup

	Stats   Stats
	lastErr atomic.Value // string
}

type assoc struct {
	o      *Outlet
	key    string
	ret    routing.Route
	peer   string
	target string
	up     chan []byte
	done   chan struct{}
	once   sync.Once
	why    atomic.Value // string: the reason told to the client
	last   atomic.Int64 // unix nanoseconds of the last datagram
}

// NewOutlet registers the UDP service at cfg.Address.
func NewOutlet(n *router.Node, cfg OutletConfig) (*Outlet, error) {
	if cfg.Address == "" || cfg.Host == "" {
		return nil, errors.New("datagram: outlet needs an address and a target host")
	}
	if cfg.Port == 0 && len(cfg.Ports) == 0 {
		return nil, errors.New("datagram: outlet needs a target port or allowed ports")
	}
	if len(cfg.Allow) == 0 && cfg.Allowed == nil {
		return nil, errors.New("datagram: outlet needs an access policy")
	}
	if cfg.Name == "" {
		cfg.Name = cfg.Address
	}
	cfg.Ports = slices.Clone(cfg.Ports)
	cfg.Allow = slices.Clone(cfg.Allow)
	o := &Outlet{n: n, cfg: cfg, log: cfg.Logger, assocs: map[string]*assoc{}}
	if o.log == nil {
		o.log = slog.New(slog.DiscardHandler)
	}
	if err := n.Register(cfg.Address, router.Channel, o.handle); err != nil {
		return nil, fmt.Errorf("datagram: outlet address: %w", err)
	}
	return o, nil
}

// Address is the service's worker address.
func (o *Outlet) Address() string { return o.cfg.Address }

// LastError is the last refusal or socket failure.
func (o *Outlet) LastError() string {
	s, _ := o.lastErr.Load().(string)
	return s
}

// Close unregisters the service, ends every association (telling the
// clients) and waits for their goroutines.
func (o *Outlet) Close() {
	o.n.Unregister(o.cfg.Address)
	o.mu.Lock()
	o.closed = true
	as := make([]*assoc, 0, len(o.assocs))
	for _, a := range o.assocs {
		as = append(as, a)
	}
	o.mu.Unlock()
	for _, a := range as {
		a.end("outlet deleted")
	}
	o.wg.Wait()
}

// handle runs on the node's receiving goroutine: it never blocks.
func (o *Outlet) handle(m *routing.Message) error {
	dm, err := Decode(m.Payload)
	if err != nil {
		o.Stats.Dropped.Add(1)
		return err
	}
	if m.Peer == "" {
		o.Stats.Dropped.Add(1)
		return errors.New("datagram: datagrams must come through a secure channel")
	}
	key := m.Peer + " " + m.Return.String()
	switch dm.Kind {
	case KindClose:
		o.mu.Lock()
		for k, a := range o.assocs {
			if len(k) > len(key) && k[:len(key)] == key && k[len(key)] == ' ' {
				a.why.Store("")
				a.end("")
			}
		}
		o.mu.Unlock()
		return nil
	case KindDatagram, KindBatch:
	default:
		o.Stats.Dropped.Add(1)
		return fmt.Errorf("datagram: unexpected %v at the outlet", dm.Kind)
	}
	key += " " + strconv.Itoa(int(dm.Port))
	o.mu.Lock()
	a := o.assocs[key]
	if a == nil {
		var reason string
		a, reason = o.newAssocLocked(key, m, dm.Port)
		if a == nil {
			o.mu.Unlock()
			o.refuse(m, reason)
			return nil
		}
	}
	o.mu.Unlock()
	a.last.Store(time.Now().UnixNano())
	queue := func(p []byte) {
		select {
		case a.up <- append([]byte(nil), p...):
		default:
			o.Stats.Dropped.Add(1)
		}
	}
	if dm.Kind == KindBatch {
		dm.Each(queue)
	} else {
		queue(dm.Payload)
	}
	return nil
}

// newAssocLocked checks access and starts an association. o.mu held.
func (o *Outlet) newAssocLocked(key string, m *routing.Message, port uint16) (*assoc, string) {
	if o.closed {
		return nil, "outlet deleted"
	}
	if len(o.cfg.Allow) > 0 {
		if !slices.Contains(o.cfg.Allow, m.Peer) {
			return nil, fmt.Sprintf("identity %s is not allowed at this outlet", m.Peer)
		}
	} else if err := o.cfg.Allowed(m.Peer); err != nil {
		return nil, fmt.Sprintf("identity %s is not allowed: %v", m.Peer, err)
	}
	switch {
	case port == 0 && o.cfg.Port == 0:
		return nil, "this outlet needs a destination port"
	case port == 0:
		port = o.cfg.Port
	case o.cfg.Port == 0 && !slices.Contains(o.cfg.Ports, port), o.cfg.Port != 0 && port != o.cfg.Port:
		return nil, fmt.Sprintf("udp port %d is not allowed at this outlet", port)
	}
	max := o.cfg.MaxAssocs
	if max <= 0 {
		max = DefaultMaxAssocs
	}
	if len(o.assocs) >= max {
		return nil, fmt.Sprintf("too many udp associations (%d)", max)
	}
	q := o.cfg.Queue
	if q <= 0 {
		q = DefaultQueue
	}
	a := &assoc{o: o, key: key, ret: m.Return.Clone(), peer: m.Peer,
		target: net.JoinHostPort(o.cfg.Host, strconv.Itoa(int(port))),
		up:     make(chan []byte, q), done: make(chan struct{})}
	a.last.Store(time.Now().UnixNano())
	o.assocs[key] = a
	o.Stats.Open.Add(1)
	o.Stats.Total.Add(1)
	o.wg.Add(1)
	go a.run()
	return a, ""
}

func (o *Outlet) refuse(m *routing.Message, reason string) {
	o.lastErr.Store(reason)
	o.Stats.Dropped.Add(1)
	o.log.Info("udp outlet refused a datagram", "outlet", o.cfg.Name, "peer", m.Peer, "err", reason)
	o.n.Send(context.Background(), &routing.Message{
		Onward: m.Return.Clone(), Return: routing.Route{routing.LocalAddr(o.cfg.Address)},
		Payload: Append(nil, Msg{Kind: KindClose, Reason: reason}),
	})
}

// end stops the association; reason, if not empty, is told to the client.
func (a *assoc) end(reason string) {
	a.once.Do(func() {
		if _, set := a.why.Load().(string); !set {
			a.why.Store(reason)
		}
		close(a.done)
	})
}

// run dials the target, then writes queued datagrams to it while a reader
// sends the target's datagrams back, until idle or ended.
func (a *assoc) run() {
	o := a.o
	defer o.wg.Done()
	defer func() {
		o.mu.Lock()
		delete(o.assocs, a.key)
		o.mu.Unlock()
		o.Stats.Open.Add(-1)
		if why, _ := a.why.Load().(string); why != "" {
			o.n.Send(context.Background(), &routing.Message{
				Onward: a.ret, Return: routing.Route{routing.LocalAddr(o.cfg.Address)},
				Payload: Append(nil, Msg{Kind: KindClose, Reason: why}),
			})
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	go func() {
		select {
		case <-a.done:
		case <-ctx.Done():
		}
		cancel()
	}()
	var c net.Conn
	var err error
	if o.cfg.Dial != nil {
		c, err = o.cfg.Dial(ctx, a.peer, a.target)
	} else {
		var d net.Dialer
		c, err = d.DialContext(ctx, "udp", a.target)
	}
	cancel()
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Err != nil {
			err = op.Err
		}
		reason := fmt.Sprintf("connecting to %s: %v", a.target, err)
		o.lastErr.Store(reason)
		a.why.Store(reason)
		a.end(reason)
		return
	}
	if u, ok := c.(*net.UDPConn); ok {
		// The replies of a busy association wait up to holdFor in the
		// socket (see holdAbove): room for 1 Gbit/s of them, where the
		// host's net.core.rmem_max allows.
		u.SetReadBuffer(socketBuffer)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer c.Close()
	wg.Add(1)
	go func() { // target -> client
		defer wg.Done()
		ret := routing.Route{routing.LocalAddr(o.cfg.Address)}
		for {
			err := pump(c, ReplyHeader, o.cfg.Limiter, func() { o.Stats.Dropped.Add(1) }, func(single bool, b []byte) {
				a.last.Store(time.Now().UnixNano())
				b[0] = byte(KindReply)
				if !single {
					b[0] = byte(KindReplies)
				}
				if err := o.n.Send(context.Background(), &routing.Message{Onward: a.ret, Return: ret, Payload: b}); err != nil {
					o.Stats.Dropped.Add(1)
					return
				}
				o.Stats.Sent.Add(1)
			})
			select {
			case <-a.done:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// ECONNREFUSED from an ICMP port unreachable, and the
			// like: UDP goes on.
			o.Stats.Dropped.Add(1)
		}
	}()
	idle := o.cfg.Idle
	if idle <= 0 {
		idle = DefaultIdle
	}
	tick := time.NewTicker(idle / 4)
	defer tick.Stop()
	for {
		select {
		case b := <-a.up:
			if _, err := c.Write(b); err != nil {
				o.Stats.Dropped.Add(1)
			} else {
				o.Stats.Recv.Add(1)
			}
		case <-tick.C:
			if time.Since(time.Unix(0, a.last.Load())) >= idle {
				a.end("idle")
				return
			}
		case <-a.done:
			return
		}
	}
}
