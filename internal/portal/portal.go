package portal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ockam-go/ockam/internal/router"
	"github.com/ockam-go/ockam/internal/routing"
)

// MaxPendingOpens bounds the outlet connects in progress on one outlet.
const MaxPendingOpens = 1024

// Config configures Portals.
type Config struct {
	Logger *slog.Logger
	// Path watches the paths flows take; nil means paths never fail on
	// their own (flows then end only by their connections or the peer).
	Path Path
	// Allowed decides whether a secure channel peer (its identifier) may
	// use outlets that name no identities of their own. Required.
	Allowed func(peer string) error
	// MaxFlowWindow caps each flow's receive window (0: DefaultMaxFlowWindow;
	// at least Window, at most MaxWindow).
	MaxFlowWindow int
	// WindowBudget is the node-wide budget for receive windows above Window
	// (0: DefaultWindowBudget; negative: none, windows stay at Window).
	WindowBudget int
	// EarlyWait is how long an inlet waits for the application's first
	// bytes to send them with the open (0: DefaultEarlyWait; negative: do
	// not wait, send only what has already arrived).
	EarlyWait time.Duration
	// ResumeGrace is how long a flow through a secure channel waits for
	// the channel to come back after its session ended, to resume where it
	// stopped (0: DefaultResumeGrace; negative: flows end with their path).
	ResumeGrace time.Duration
	// Lanes is how many lanes the node's transport bundles have
	// (router.Config.Lanes; 0: router.DefaultLanes): bulk flows move to
	// lanes 1..Lanes-1 (lanes.go).
	Lanes int
}

func (p *Portals) grace() time.Duration {
	switch g := p.cfg.ResumeGrace; {
	case g == 0:
		return DefaultResumeGrace
	case g < 0:
		return 0
	default:
		return g
	}
}

// Portals owns the inlets, outlets and flows of one node.
type Portals struct {
	n   *router.Node
	cfg Config
	log *slog.Logger

	budget budget
	paths  paths

	// Stalls counts the times a flow had data to send and no credit: it
	// waited for the peer's window (a slow reader at the other end, or a
	// window smaller than the path needs).
	Stalls atomic.Uint64

	resumes, suspends atomic.Uint64 // over all flows
	lanes             atomic.Uint32 // the round robin of lanes (nextLane)
	// LaneMoves counts the flows that moved to a lane of their own
	// (lanes.go).
	LaneMoves atomic.Uint64

	mu      sync.Mutex
	inlets  map[string]*Inlet
	outlets map[string]*Outlet
	closed  bool
	wg      sync.WaitGroup
}

// New returns the portals of node n.
func New(n *router.Node, cfg Config) (*Portals, error) {
	if cfg.Allowed == nil {
		return nil, errors.New("portal: an access policy is required")
	}
	p := &Portals{n: n, cfg: cfg, log: cfg.Logger, inlets: map[string]*Inlet{}, outlets: map[string]*Outlet{}}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	p.budget.maxFlow = cfg.MaxFlowWindow
	if p.budget.maxFlow == 0 {
		p.budget.maxFlow = DefaultMaxFlowWindow
	}
	p.budget.maxFlow = min(max(p.budget.maxFlow, Window), MaxWindow)
	p.budget.limit = cfg.WindowBudget
	if p.budget.limit == 0 {
		p.budget.limit = DefaultWindowBudget
	}
	p.budget.limit = max(p.budget.limit, 0)
	return p, nil
}

// Resumes returns how many times flows were suspended and resumed on this
// node, in all.
func (p *Portals) Resumes() (suspends, resumes uint64) {
	return p.suspends.Load(), p.resumes.Load()
}

// Dial opens a flow to the outlet at route, asking for port (0: the
// outlet's own). It returns once the outlet has connected to its target, or
// with the outlet's reason for refusing. The flow carries nothing until Run.
func (p *Portals) Dial(ctx context.Context, route routing.Route, port uint16) (*Flow, error) {
	return p.DialEarly(ctx, route, port, nil)
}

// DialEarly is Dial with the stream's first bytes (at most MaxEarly) sent
// with the open: the outlet writes them to its connection as soon as it has
// one, so a request gets its answer one round trip after the open, not two.
// The caller keeps early; it must not send those bytes again.
func (p *Portals) DialEarly(ctx context.Context, route routing.Route, port uint16, early []byte) (*Flow, error) {
	return p.dialEarly(ctx, route, port, early, nil)
}

// dialEarly is DialEarly for a flow that will Run over local: the peer's
// first data, which often comes right behind Opened (the answer to the
// early bytes), is written to local by the connection reader that
// delivers it, before the flow's goroutines have started.
func (p *Portals) dialEarly(ctx context.Context, route routing.Route, port uint16, early []byte, local net.Conn) (*Flow, error) {
	if len(early) > MaxEarly {
		return nil, fmt.Errorf("portal: %d early bytes, at most %d", len(early), MaxEarly)
	}
	ctx, cancel := context.WithTimeout(ctx, OpenTimeout)
	defer cancel()
	var pathEnd <-chan struct{}
	if p.cfg.Path != nil {
		var err error
		if pathEnd, err = p.cfg.Path.Watch(ctx, route); err != nil {
			return nil, err
		}
	}
	f, err := newFlow(p)
	if err != nil {
		return nil, err
	}
	f.pathEnd = pathEnd
	f.resumable = pathEnd != nil && f.grace > 0
	f.placeLane()
	f.opener = true
	f.openRoute = route.Clone()
	f.tx, f.ubase, f.peerRecv = uint64(len(early)), uint64(len(early)), uint64(len(early))
	f.Target = route.String()
	f.early = len(early)
	f.BytesOut.Add(uint64(len(early)))
	if sc, ok := local.(syscall.Conn); ok {
		f.mu.Lock()
		f.raw, _ = sc.SyscallConn()
		f.mu.Unlock()
	}
	open := Append(make([]byte, 0, OpenHeader+len(early)), Msg{Kind: KindOpen, Window: Window, Port: port, Data: early})
	if err := p.n.Send(ctx, &routing.Message{Onward: route, Return: routing.Route{routing.LocalAddr(f.addr)}, Payload: open, Lane: uint8(f.lane.Load())}); err != nil {
		p.n.Unregister(f.addr)
		return nil, fmt.Errorf("portal: opening a flow to %s: %w", route, err)
	}
	select {
	case m := <-f.opened:
		if m.Kind == KindRefused {
			p.n.Unregister(f.addr)
			return nil, fmt.Errorf("portal: outlet refused: %s", m.Reason)
		}
		return f, nil
	case <-pathEnd:
		p.n.Unregister(f.addr)
		return nil, errors.New("portal: the path to the outlet failed while opening")
	case <-ctx.Done():
		p.n.Unregister(f.addr)
		return nil, fmt.Errorf("portal: no answer from the outlet at %s", route)
	}
}

// Run carries the flow over c (which it then owns). Done closes when the
// flow is over.
func (f *Flow) Run(c net.Conn) error {
	cc, ok := c.(conn)
	if !ok {
		c.Close()
		f.reset(errors.New("portal: connection cannot half-close"), true)
		f.finish()
		return errors.New("portal: connection cannot half-close")
	}
	f.run(cc)
	return nil
}

// Queued returns the bytes received from the peer that wait for the local
// connection (all of them, before Run).
func (f *Flow) Queued() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.queued
}

// Abort ends a flow that will not Run, telling the outlet.
func (f *Flow) Abort(reason string) {
	f.reset(errors.New(reason), true)
	f.finish()
}

// Inlet accepts TCP connections and carries each as a flow to an outlet.
type Inlet struct {
	p     *Portals
	name  string
	ln    net.Listener
	route routing.Route
	raw   string

	mu      sync.Mutex
	flows   map[*Flow]struct{}
	total   atomic.Uint64
	lastErr atomic.Value  // string
	closing chan struct{} // closed when the inlet is being deleted
	done    chan struct{} // closed when its flows have ended
	// ctx is cancelled with closing: opens in progress end without a
	// goroutine per connection watching closing.
	ctx  context.Context
	stop context.CancelFunc
}

// InletInfo, OutletInfo and FlowInfo describe portals for the control API.
type FlowInfo struct {
	ID       string
	Client   string
	Target   string
	BytesIn  uint64
	BytesOut uint64
	Opened   time.Time
	Window   int // receive window now
	Queued   int // bytes received, waiting for the local socket
	Resumes  uint64
	Held     int    // bytes sent and kept until the peer has them
	Foreign  uint64 // messages from other identities, dropped
}

// CreateInlet listens on addr and carries each connection to route.
func (p *Portals) CreateInlet(name, addr string, route routing.Route) (*Inlet, error) {
	if len(route) == 0 {
		return nil, errors.New("portal: inlet needs a route to an outlet")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, net.ErrClosed
	}
	if name == "" {
		name = addr
	}
	if _, ok := p.inlets[name]; ok {
		return nil, fmt.Errorf("portal: an inlet named %s exists", name)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Err != nil {
			err = op.Err
		}
		return nil, fmt.Errorf("portal: inlet cannot listen on %s: %v", addr, err)
	}
	in := &Inlet{p: p, name: name, ln: ln, route: route.Clone(), raw: route.String(), flows: map[*Flow]struct{}{}, closing: make(chan struct{}), done: make(chan struct{})}
	in.ctx, in.stop = context.WithCancel(context.Background())
	p.inlets[name] = in
	p.wg.Add(1)
	go in.serve()
	return in, nil
}

func (in *Inlet) serve() {
	defer in.p.wg.Done()
	defer close(in.done)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := in.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			in.lastErr.Store(err.Error())
			time.Sleep(50 * time.Millisecond) // e.g. out of file descriptors
			continue
		}
		in.total.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			in.carry(c)
		}()
	}
}

func (in *Inlet) carry(c net.Conn) {
	early, err := in.p.readEarly(c)
	if err != nil {
		in.lastErr.Store(err.Error())
		in.p.log.Info("inlet connection failed before its flow opened", "inlet", in.name, "err", err)
		abort(c)
		return
	}
	f, err := in.p.dialEarly(in.ctx, in.route, 0, early, c)
	if err != nil {
		in.lastErr.Store(err.Error())
		in.p.log.Info("inlet could not open a flow", "inlet", in.name, "err", err)
		abort(c)
		return
	}
	f.Client = c.RemoteAddr().String()
	in.mu.Lock()
	in.flows[f] = struct{}{}
	in.mu.Unlock()
	f.Run(c)
	select {
	case <-f.Done():
	case <-in.closing:
		f.reset(errors.New("portal: inlet deleted"), true)
		<-f.Done()
	}
	in.mu.Lock()
	delete(in.flows, f)
	in.mu.Unlock()
}

// ReadEarly returns the application's first bytes on c, waiting up to
// EarlyWait for them (none if it sent nothing by then, or closed), for
// DialEarly. The caller owns the returned slice.
func (p *Portals) ReadEarly(c net.Conn) ([]byte, error) { return p.readEarly(c) }

func (p *Portals) readEarly(c net.Conn) ([]byte, error) {
	bp := chunkPool.Get().(*[]byte)
	defer chunkPool.Put(bp)
	buf := (*bp)[:MaxEarly]
	// Most clients write right after connecting: take what is there
	// already without arming a read deadline (a timer) for it.
	if sc, ok := c.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			if n, eof := readNow(raw, buf); n > 0 || eof {
				// EOF stays for the flow to read again and send as Fin.
				return bytes.Clone(buf[:n]), nil
			}
		}
	}
	wait := p.cfg.EarlyWait
	if wait == 0 {
		wait = DefaultEarlyWait
	}
	deadline := time.Now().Add(max(wait, 0))
	if wait < 0 {
		deadline = time.Now() // only what is there already
	}
	c.SetReadDeadline(deadline)
	n, err := c.Read(buf)
	c.SetReadDeadline(time.Time{})
	var ne net.Error // gVisor's gonet times out with its own error, not os.ErrDeadlineExceeded
	timeout := errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
	if err != nil && n == 0 && !timeout && !errors.Is(err, io.EOF) {
		return nil, err
	}
	// EOF stays for the flow to read again and send as Fin.
	return bytes.Clone(buf[:n]), nil
}

// readNow reads what raw has at once into buf, never waiting: the bytes
// read, and whether the peer closed (0 and false: nothing yet, or an error
// the next read meets again).
func readNow(raw syscall.RawConn, buf []byte) (n int, eof bool) {
	raw.Read(func(fd uintptr) bool {
		for {
			m, err := syscall.Read(int(fd), buf)
			switch {
			case err == syscall.EINTR:
				continue
			case err == nil && m == 0:
				eof = true
			case err == nil:
				n = m
			}
			return true
		}
	})
	return n, eof
}

// Addr returns the inlet's listening address.
func (in *Inlet) Addr() net.Addr { return in.ln.Addr() }

// Name returns the inlet's name.
func (in *Inlet) Name() string { return in.name }

// Route returns the route to the outlet.
func (in *Inlet) Route() string { return in.raw }

// Total returns the number of connections accepted.
func (in *Inlet) Total() uint64 { return in.total.Load() }

// LastError returns the last failure to open a flow.
func (in *Inlet) LastError() string {
	s, _ := in.lastErr.Load().(string)
	return s
}

// Flows describes the open flows.
func (in *Inlet) Flows() []FlowInfo {
	in.mu.Lock()
	defer in.mu.Unlock()
	return flowInfos(in.flows)
}

func flowInfos(m map[*Flow]struct{}) []FlowInfo {
	out := make([]FlowInfo, 0, len(m))
	for f := range m {
		f.mu.Lock()
		win, queued, held := f.win, f.queued, int(f.tx-f.peerRecv)
		f.mu.Unlock()
		out = append(out, FlowInfo{ID: f.addr, Client: f.Client, Target: f.Target, BytesIn: f.BytesIn.Load(), BytesOut: f.BytesOut.Load(), Opened: f.Opened, Window: win, Queued: queued, Resumes: f.Resumes.Load(), Held: held, Foreign: f.Foreign.Load()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Opened.Before(out[j].Opened) })
	return out
}

// close stops accepting and resets every flow, then waits for them.
func (in *Inlet) close() {
	close(in.closing)
	in.stop()
	in.ln.Close()
	<-in.done
}

// DeleteInlet stops an inlet and ends its flows.
func (p *Portals) DeleteInlet(name string) error {
	p.mu.Lock()
	in := p.inlets[name]
	delete(p.inlets, name)
	p.mu.Unlock()
	if in == nil {
		return fmt.Errorf("portal: no inlet named %s", name)
	}
	in.close()
	return nil
}

// Inlets returns the inlets, by name.
func (p *Portals) Inlets() []*Inlet {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*Inlet, 0, len(p.inlets))
	for _, in := range p.inlets {
		out = append(out, in)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// Inlet returns the inlet with the given name, or nil.
func (p *Portals) Inlet(name string) *Inlet {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.inlets[name]
}

// Outlet opens a TCP connection to its target for each flow that arrives at
// its address through a secure channel from an allowed identity.
type Outlet struct {
	p     *Portals
	name  string
	addr  string
	host  string
	port  uint16   // 0: the flow chooses among ports
	ports []uint16 // allowed ports when port is 0
	allow []string // identifiers; empty: the node's policy
	dial  func(ctx context.Context, peer, target string) (net.Conn, error)

	mu      sync.Mutex
	flows   map[*Flow]struct{}
	byAddr  map[string]*Flow
	pending atomic.Int32
	total   atomic.Uint64
	lastErr atomic.Value
	done    chan struct{}
	ctx     context.Context // cancelled with done: ends the opens in progress
	stop    context.CancelFunc
	wg      sync.WaitGroup
}

// OutletConfig describes an outlet.
type OutletConfig struct {
	Name    string
	Address string   // local address, e.g. "outlet"
	Target  string   // "host:port", or "host" with Ports
	Ports   []uint16 // ports a flow may ask for when Target has no port
	Allow   []string // identifiers allowed; empty: the node's policy
	// Dial, if set, opens the connection to target ("host:port") for a
	// flow from peer (an identifier) instead of the kernel: the outlet
	// netstack mode dials from a virtual source address per client.
	Dial func(ctx context.Context, peer, target string) (net.Conn, error)
}

// CreateOutlet registers an outlet.
func (p *Portals) CreateOutlet(cfg OutletConfig) (*Outlet, error) {
	o := &Outlet{p: p, name: cfg.Name, addr: cfg.Address, ports: cfg.Ports, allow: cfg.Allow, dial: cfg.Dial, flows: map[*Flow]struct{}{}, byAddr: map[string]*Flow{}, done: make(chan struct{})}
	o.ctx, o.stop = context.WithCancel(context.Background())
	if o.addr == "" {
		return nil, errors.New("portal: outlet needs an address (--from /service/NAME)")
	}
	if o.name == "" {
		o.name = o.addr
	}
	host, port, err := net.SplitHostPort(cfg.Target)
	if err != nil {
		host = cfg.Target
		if len(cfg.Ports) == 0 {
			return nil, fmt.Errorf("portal: outlet target %q: want HOST:PORT, or HOST with allowed ports", cfg.Target)
		}
	} else {
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("portal: outlet target %q: bad port", cfg.Target)
		}
		o.port = uint16(n)
	}
	if host == "" {
		return nil, fmt.Errorf("portal: outlet target %q has no host", cfg.Target)
	}
	if _, err := netip.ParseAddr(host); err != nil && !validHostname(host) {
		return nil, fmt.Errorf("portal: outlet target %q: bad host", cfg.Target)
	}
	o.host = host
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, net.ErrClosed
	}
	if _, ok := p.outlets[o.name]; ok {
		return nil, fmt.Errorf("portal: an outlet named %s exists", o.name)
	}
	if err := p.n.Register(o.addr, router.Channel, o.open); err != nil {
		return nil, fmt.Errorf("portal: outlet address: %w", err)
	}
	p.outlets[o.name] = o
	return o, nil
}

func validHostname(h string) bool {
	if len(h) > 253 {
		return false
	}
	for _, c := range h {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// Name, Address and Target describe the outlet.
func (o *Outlet) Name() string    { return o.name }
func (o *Outlet) Address() string { return o.addr }
func (o *Outlet) Target() string {
	if o.port != 0 {
		return net.JoinHostPort(o.host, strconv.Itoa(int(o.port)))
	}
	return o.host
}
func (o *Outlet) Allow() []string { return o.allow }
func (o *Outlet) Total() uint64   { return o.total.Load() }
func (o *Outlet) LastError() string {
	s, _ := o.lastErr.Load().(string)
	return s
}

// Flows describes the open flows.
func (o *Outlet) Flows() []FlowInfo {
	o.mu.Lock()
	defer o.mu.Unlock()
	return flowInfos(o.flows)
}

func (o *Outlet) refuse(m *routing.Message, reason string) error {
	o.lastErr.Store(reason)
	o.p.log.Info("outlet refused a flow", "outlet", o.name, "reason", reason)
	o.p.n.Send(context.Background(), &routing.Message{
		Onward: m.Return.Clone(), Return: routing.Route{routing.LocalAddr(o.addr)},
		Payload: Append(nil, Msg{Kind: KindRefused, Reason: reason}),
	})
	return errors.New(reason)
}

// open handles an Open at the outlet's address: access control, then the
// connect on a goroutine of its own (this handler must not block).
func (o *Outlet) open(m *routing.Message) error {
	if len(m.Payload) == 0 {
		// A route check (tcp-inlet create): answered as a refusal, and
		// not recorded as a refused flow.
		o.p.n.Send(context.Background(), &routing.Message{
			Onward: m.Return.Clone(), Return: routing.Route{routing.LocalAddr(o.addr)},
			Payload: Append(nil, Msg{Kind: KindRefused, Reason: "expected an open message"}),
		})
		return nil
	}
	pm, err := Decode(m.Payload)
	if err == nil && pm.Kind == KindResume {
		return o.resume(m, pm)
	}
	if err != nil || pm.Kind != KindOpen {
		return o.refuse(m, "expected an open message")
	}
	if m.Peer == "" {
		return o.refuse(m, "flows must come through a secure channel")
	}
	if len(o.allow) > 0 {
		if !slices.Contains(o.allow, m.Peer) {
			return o.refuse(m, fmt.Sprintf("identity %s is not allowed at this outlet", m.Peer))
		}
	} else if err := o.p.cfg.Allowed(m.Peer); err != nil {
		return o.refuse(m, fmt.Sprintf("identity %s is not allowed: %v", m.Peer, err))
	}
	port := o.port
	switch {
	case pm.Port == 0 && o.port == 0:
		return o.refuse(m, "this outlet needs a destination port")
	case pm.Port != 0 && o.port == 0:
		if !slices.Contains(o.ports, pm.Port) {
			return o.refuse(m, fmt.Sprintf("port %d is not allowed at this outlet", pm.Port))
		}
		port = pm.Port
	case pm.Port != 0 && pm.Port != o.port:
		return o.refuse(m, fmt.Sprintf("port %d is not allowed at this outlet", pm.Port))
	}
	if o.pending.Add(1) > MaxPendingOpens {
		o.pending.Add(-1)
		return o.refuse(m, "too many flows opening")
	}
	select {
	case <-o.done:
		o.pending.Add(-1)
		return o.refuse(m, "outlet deleted")
	default:
	}
	ret := m.Return.Clone()
	peer := m.Peer
	window := pm.Window
	early := slices.Clone(pm.Data)
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		o.connect(ret, peer, window, port, early)
	}()
	return nil
}

func (o *Outlet) connect(ret routing.Route, peer string, window uint32, port uint16, early []byte) {
	target := net.JoinHostPort(o.host, strconv.Itoa(int(port)))
	ctx, cancel := context.WithTimeout(o.ctx, OpenTimeout)
	defer cancel()
	var pathEnd <-chan struct{}
	if o.p.cfg.Path != nil {
		var err error
		if pathEnd, err = o.p.cfg.Path.Watch(ctx, ret); err != nil {
			o.pending.Add(-1)
			return
		}
	}
	var c net.Conn
	var err error
	if o.dial != nil {
		c, err = o.dial(ctx, peer, target)
	} else {
		var d net.Dialer
		c, err = d.DialContext(ctx, "tcp", target)
	}
	// The open is over: MaxPendingOpens bounds connects in progress, not
	// the flows that live on; and the goroutine that cancels it when the
	// outlet is deleted can go.
	o.pending.Add(-1)
	cancel()
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Err != nil {
			err = op.Err
		}
		o.refuse(&routing.Message{Return: ret}, fmt.Sprintf("connecting to %s: %v", target, err))
		return
	}
	if len(early) > 0 {
		// The stream's first bytes, before anything else; a fresh socket
		// takes MaxEarly without blocking for long.
		c.SetWriteDeadline(time.Now().Add(OpenTimeout))
		_, err := c.Write(early)
		c.SetWriteDeadline(time.Time{})
		if err != nil {
			c.Close()
			o.refuse(&routing.Message{Return: ret}, fmt.Sprintf("writing to %s: %v", target, err))
			return
		}
	}
	f, err := newFlow(o.p)
	if err != nil {
		c.Close()
		return
	}
	f.rx, f.consumed = uint64(len(early)), uint64(len(early))
	f.BytesIn.Add(uint64(len(early)))
	f.remote = ret
	f.credit = int(window)
	f.peerWindow = int(window)
	f.pathEnd = pathEnd
	f.resumable = pathEnd != nil && f.grace > 0
	f.placeLane()
	f.Client = peer
	f.peer, f.hasPeer = peer, true
	f.Target = target
	if err := f.send(Append(nil, Msg{Kind: KindOpened, Window: Window})); err != nil {
		o.p.n.Unregister(f.addr)
		c.Close()
		return
	}
	o.total.Add(1)
	// No goroutine waits for the flow: it leaves the outlet's table as it
	// finishes, and DeleteOutlet resets those still there.
	o.wg.Add(1)
	f.onFinish = func() {
		o.mu.Lock()
		delete(o.flows, f)
		delete(o.byAddr, f.addr)
		o.mu.Unlock()
		o.wg.Done()
	}
	o.mu.Lock()
	o.flows[f] = struct{}{}
	o.byAddr[f.addr] = f
	o.mu.Unlock()
	f.Run(c)
	select {
	case <-o.done: // deleted before DeleteOutlet could see the flow
		f.reset(errOutletDeleted, true)
	default:
	}
}

// resume passes a Resume to the flow it names; one for a flow the outlet
// does not have (its node restarted, the flow ended) is answered with a
// Reset, so that the opener ends at once rather than after its grace.
func (o *Outlet) resume(m *routing.Message, pm Msg) error {
	if m.Peer == "" {
		return errors.New("portal: resume outside a secure channel")
	}
	o.mu.Lock()
	f := o.byAddr[pm.Flow]
	o.mu.Unlock()
	if f == nil {
		o.p.n.Send(context.Background(), &routing.Message{
			Onward: m.Return.Clone(), Return: routing.Route{routing.LocalAddr(o.addr)},
			Payload: Append(nil, Msg{Kind: KindReset, Reason: "no such flow at the outlet"}),
		})
		return fmt.Errorf("portal: resume of unknown flow %s", pm.Flow)
	}
	return f.handle(m)
}

var errOutletDeleted = errors.New("portal: outlet deleted")

// DeleteOutlet removes an outlet and ends its flows.
func (p *Portals) DeleteOutlet(name string) error {
	p.mu.Lock()
	o := p.outlets[name]
	delete(p.outlets, name)
	p.mu.Unlock()
	if o == nil {
		return fmt.Errorf("portal: no outlet named %s", name)
	}
	p.n.Unregister(o.addr)
	close(o.done)
	o.stop()
	o.mu.Lock()
	flows := make([]*Flow, 0, len(o.flows))
	for f := range o.flows {
		flows = append(flows, f)
	}
	o.mu.Unlock()
	for _, f := range flows {
		f.reset(errOutletDeleted, true)
	}
	o.wg.Wait()
	return nil
}

// Outlets returns the outlets, by name.
func (p *Portals) Outlets() []*Outlet {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*Outlet, 0, len(p.outlets))
	for _, o := range p.outlets {
		out = append(out, o)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// Outlet returns the outlet with the given name, or nil.
func (p *Portals) Outlet(name string) *Outlet {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.outlets[name]
}

// Close deletes every inlet and outlet and waits for their flows.
func (p *Portals) Close() {
	p.mu.Lock()
	p.closed = true
	var ins, outs []string
	for n := range p.inlets {
		ins = append(ins, n)
	}
	for n := range p.outlets {
		outs = append(outs, n)
	}
	p.mu.Unlock()
	for _, n := range ins {
		p.DeleteInlet(n)
	}
	for _, n := range outs {
		p.DeleteOutlet(n)
	}
	p.wg.Wait()
	p.paths.close()
}
