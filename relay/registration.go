package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/ockam-go/ockam/internal/identity"
	"github.com/ockam-go/ockam/internal/router"
	"github.com/ockam-go/ockam/internal/routing"
)

// Default timings of a registration; RegistrationConfig fields of zero
// take them.
const (
	// DefaultPingInterval is how often a registrant checks its relay.
	DefaultPingInterval = 5 * time.Second
	// DefaultRequestTimeout bounds one register or ping request.
	DefaultRequestTimeout = 5 * time.Second
	// DefaultMaxMissedPings in a row declare the path lost: about 25 s,
	// enough to ride out a 10 s blackhole and TCP's backoff after it. A
	// relay that restarts is noticed at once anyway: its connection
	// closes.
	DefaultMaxMissedPings = 5
	// DefaultBackoffMin and DefaultBackoffMax bound the delay between
	// attempts to register again; it doubles after each failure, with
	// jitter.
	DefaultBackoffMin = 100 * time.Millisecond
	DefaultBackoffMax = 5 * time.Second
)

// RegistrationConfig configures a Registration. The package does not
// modify it; zero fields take the defaults above.
type RegistrationConfig struct {
	Logger                 *slog.Logger
	PingInterval           time.Duration
	RequestTimeout         time.Duration
	MaxMissedPings         int
	BackoffMin, BackoffMax time.Duration
}

func (c RegistrationConfig) withDefaults() RegistrationConfig {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.PingInterval, DefaultPingInterval)
	def(&c.RequestTimeout, DefaultRequestTimeout)
	def(&c.BackoffMin, DefaultBackoffMin)
	def(&c.BackoffMax, DefaultBackoffMax)
	if c.MaxMissedPings <= 0 {
		c.MaxMissedPings = DefaultMaxMissedPings
	}
	if c.BackoffMax < c.BackoffMin {
		c.BackoffMax = c.BackoffMin
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Status is a snapshot of a registration.
type Status struct {
	Name      string    `json:"name"`
	At        string    `json:"at"`                   // route of the relay node
	Address   string    `json:"address,omitempty"`    // route of the forwarder when registered
	Connected bool      `json:"connected"`            // registered and the relay answers
	Attempts  uint64    `json:"attempts"`             // registrations tried
	LastError string    `json:"last_error,omitempty"` // why the last attempt failed
	Since     time.Time `json:"since,omitzero"`       // when it last became registered
}

// Registration keeps a name registered on a relay: it registers, checks the
// relay with pings, and when the path fails registers again with
// exponential backoff and jitter.
type Registration struct {
	n    *router.Node
	log  *slog.Logger
	cfg  RegistrationConfig
	at   routing.Route
	name string
	me   *identity.Secret

	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	status Status
	ready  chan struct{} // closed on first success
}

// Register starts keeping name registered at the relay reached by at (a
// route to the relay node, e.g. its TCP address). It returns at once; use
// WaitReady to wait for the first registration. It is RegisterConfig with
// default timings.
func Register(n *router.Node, at routing.Route, name string, me *identity.Secret, log *slog.Logger) (*Registration, error) {
	return RegisterConfig(n, at, name, me, RegistrationConfig{Logger: log})
}

// RegisterConfig is Register with the timings of cfg.
func RegisterConfig(n *router.Node, at routing.Route, name string, me *identity.Secret, cfg RegistrationConfig) (*Registration, error) {
	if me == nil {
		return nil, errors.New("relay: a registrant needs an identity")
	}
	if !validName.MatchString(name) {
		return nil, fmt.Errorf("relay: invalid name %q (want 1-64 of A-Z a-z 0-9 _ . -)", name)
	}
	cfg = cfg.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	r := &Registration{
		n: n, log: cfg.Logger.With("relay", name), cfg: cfg, at: at.Clone(), name: name, me: me,
		cancel: cancel, done: make(chan struct{}), ready: make(chan struct{}),
		status: Status{Name: name, At: at.String()},
	}
	go r.run(ctx)
	return r, nil
}

// Close stops keeping the name registered and waits for the work to end.
// The relay frees the name when the connection closes or goes silent.
func (r *Registration) Close() {
	r.cancel()
	<-r.done
}

// Status returns a snapshot.
func (r *Registration) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.status
}

// WaitReady waits until the name is first registered, or returns the last
// error when ctx ends first.
func (r *Registration) WaitReady(ctx context.Context) error {
	select {
	case <-r.ready:
		return nil
	case <-ctx.Done():
		st := r.Status()
		if st.LastError != "" {
			return errors.New(st.LastError)
		}
		return fmt.Errorf("relay: %s not registered: %w", r.name, ctx.Err())
	}
}

func (r *Registration) setStatus(f func(*Status)) {
	r.mu.Lock()
	f(&r.status)
	r.mu.Unlock()
}

func (r *Registration) run(ctx context.Context) {
	defer close(r.done)
	backoff := r.cfg.BackoffMin
	var readyOnce sync.Once
	for {
		conn, addr, err := r.register(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			r.setStatus(func(s *Status) { s.Connected = false; s.LastError = err.Error(); s.Attempts++ })
			wait := jitter(backoff)
			r.log.Info("relay registration failed", "err", err, "retry_in", wait.Round(time.Millisecond))
			backoff = min(2*backoff, r.cfg.BackoffMax)
			select {
			case <-time.After(wait):
				continue
			case <-ctx.Done():
				return
			}
		}
		backoff = r.cfg.BackoffMin
		r.setStatus(func(s *Status) {
			s.Connected, s.LastError, s.Address, s.Since = true, "", addr.String(), time.Now().UTC()
			s.Attempts++
		})
		readyOnce.Do(func() { close(r.ready) })
		r.log.Info("relay registered", "address", addr.String())
		reason := r.watch(ctx, conn)
		if ctx.Err() != nil {
			return
		}
		r.setStatus(func(s *Status) { s.Connected = false; s.LastError = reason.Error() })
		r.log.Warn("relay path lost", "err", reason)
		// A short jittered pause even after a healthy period, so that many
		// registrants of a restarted relay do not all come back at once.
		select {
		case <-time.After(jitter(r.cfg.BackoffMin)):
		case <-ctx.Done():
			return
		}
	}
}

func (r *Registration) request(ctx context.Context, req Request) (*routing.Message, Response, error) {
	var resp Response
	b, _ := cbor.Marshal(req)
	ctx, cancel := context.WithTimeout(ctx, r.cfg.RequestTimeout)
	defer cancel()
	m, err := r.n.Request(ctx, r.at.Join(routing.Route{routing.LocalAddr(ServiceAddress)}), b)
	if err != nil {
		return nil, resp, err
	}
	if err := decMode.Unmarshal(m.Payload, &resp); err != nil {
		return nil, resp, fmt.Errorf("relay: bad response: %w", err)
	}
	if resp.Error != "" {
		return nil, resp, errors.New(resp.Error)
	}
	return m, resp, nil
}

// register returns the connection the registration went over and the route
// of the forwarder, as seen from this node.
func (r *Registration) register(ctx context.Context) (router.Link, routing.Route, error) {
	_, ch, err := r.request(ctx, Request{Op: "challenge"})
	if err != nil {
		return router.Link{}, nil, err
	}
	if len(ch.Challenge) != ChallengeSize {
		return router.Link{}, nil, errors.New("relay: bad challenge")
	}
	sig := r.me.Sign(SignContext, append(ch.Challenge, r.name...))
	m, resp, err := r.request(ctx, Request{Op: "register", Name: r.name, Identity: r.me.Identity().Export(), Sig: sig})
	if err != nil {
		return router.Link{}, nil, err
	}
	if len(m.Return) == 0 || m.Return[0].Type != routing.Local {
		return router.Link{}, nil, errors.New("relay: reply did not come over a connection")
	}
	conn, ok := r.n.Link(m.Return[0].Value)
	if !ok {
		return router.Link{}, nil, errors.New("relay: connection closed right after registering")
	}
	return conn, r.at.Join(routing.Route{routing.LocalAddr(resp.Address)}), nil
}

// watch returns when the registration is lost: the connection closed, or
// cfg.MaxMissedPings pings in a row went unanswered.
func (r *Registration) watch(ctx context.Context, conn router.Link) error {
	t := time.NewTicker(r.cfg.PingInterval)
	defer t.Stop()
	misses := 0
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-conn.Done():
			return fmt.Errorf("relay: connection to %s closed", conn.Remote)
		case <-t.C:
			_, _, err := r.request(ctx, Request{Op: "ping"})
			if err == nil {
				misses = 0
				continue
			}
			misses++
			if misses >= r.cfg.MaxMissedPings {
				conn.Close()
				return fmt.Errorf("relay: %d pings unanswered: %w", misses, err)
			}
		}
	}
}

// jitter returns a duration uniformly in [d/2, 3d/2).
func jitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d)
}
