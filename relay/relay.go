// Package relay is the forwarding service that lets a node behind a NAT be
// reached: the node registers a name over its outgoing connection to the
// relay, and messages sent to forward_to_NAME on the relay are forwarded to
// it over that connection.
//
// The relay only moves routed messages. It links no decryption code, so it
// cannot read what it forwards; the secure channels that cross it are end to
// end between the nodes on each side.
package relay

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/ockam-go/ockam/internal/identity"
	"github.com/ockam-go/ockam/internal/router"
	"github.com/ockam-go/ockam/internal/routing"
	"github.com/ockam-go/ockam/internal/wire"
)

// ServiceAddress is where a node's forwarding service listens.
const ServiceAddress = "forwarding_service"

// Prefix starts the address of every forwarder.
const Prefix = "forward_to_"

// MaxRequestSize bounds a request to the forwarding service (it carries the
// registrant's identity, at most identity.MaxIdentityBytes).
const MaxRequestSize = wire.MaxRelayRequest

// SignContext is the purpose under which a registrant signs
// challenge || name with its identity key.
const SignContext = "ockam-go/relay/register/v1"

// MaxRelays bounds the names one relay node holds.
const MaxRelays = 10000

var validName = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// Request is the CBOR payload sent to the forwarding service.
type Request struct {
	Op       string `cbor:"1,keyasint"` // "challenge", "register" or "ping"
	Name     string `cbor:"2,keyasint,omitempty"`
	Identity []byte `cbor:"3,keyasint,omitempty"` // exported identity (register)
	Sig      []byte `cbor:"4,keyasint,omitempty"` // Sign(SignContext, challenge || name)
}

// Response answers a Request.
type Response struct {
	Address   string `cbor:"1,keyasint,omitempty"` // forwarder address on success
	Error     string `cbor:"2,keyasint,omitempty"`
	Challenge []byte `cbor:"3,keyasint,omitempty"` // answer to "challenge"
}

// ChallengeSize is the size of a registration challenge.
const ChallengeSize = wire.ChallengeLen

var decMode, _ = cbor.DecOptions{
	MaxNestedLevels:   4,
	MaxArrayElements:  16,
	MaxMapPairs:       16,
	DupMapKey:         cbor.DupMapKeyEnforcedAPF,
	ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
}.DecMode()

// DecodeRequest parses a forwarding-service request.
func DecodeRequest(b []byte) (Request, error) {
	var r Request
	if len(b) > MaxRequestSize {
		return r, fmt.Errorf("relay: request of %d bytes is over %d", len(b), MaxRequestSize)
	}
	if err := decMode.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("relay: bad request: %w", err)
	}
	return r, nil
}

// Info describes one registered relay.
type Info struct {
	Name    string    `json:"name"`
	Address string    `json:"address"`
	Remote  string    `json:"remote"` // the registrant connection's peer address
	Owner   string    `json:"owner"`  // the registrant's identifier
	Since   time.Time `json:"since"`
}

type forwarder struct {
	info  Info
	owner identity.Identifier
	route routing.Route // route to the registrant, usually its connection
	conn  string        // connection the registration came over
}

// Config configures a Service.
type Config struct {
	Logger *slog.Logger
	// Authorize, if set, decides which identities may register names at
	// all. Whoever registers, a name is bound to the identity that holds it.
	Authorize func(identity.Identifier) error
	// MaxNamesPerIdentity bounds the names one identity may hold, so that
	// nobody can fill the table (MaxRelays) for everyone; zero means
	// DefaultNamesPerIdentity.
	MaxNamesPerIdentity int
}

// DefaultNamesPerIdentity is the default of Config.MaxNamesPerIdentity.
const DefaultNamesPerIdentity = 32

func (s *Service) maxNames() int {
	if s.cfg.MaxNamesPerIdentity > 0 {
		return s.cfg.MaxNamesPerIdentity
	}
	return DefaultNamesPerIdentity
}

// held counts the names owner holds; s.mu is held.
func (s *Service) held(owner identity.Identifier) int {
	n := 0
	for _, f := range s.byName {
		if f.owner == owner {
			n++
		}
	}
	return n
}

// Service is the forwarding service of a relay node.
type Service struct {
	n   *router.Node
	log *slog.Logger
	cfg Config

	mu         sync.Mutex
	byName     map[string]*forwarder
	challenges map[string][]byte // by connection
	stop       func()
	lastNotice atomic.Int64
}

// NewService registers the forwarding service on n.
func NewService(n *router.Node, cfg Config) (*Service, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Service{n: n, log: log, cfg: cfg, byName: make(map[string]*forwarder), challenges: make(map[string][]byte)}
	if err := n.Register(ServiceAddress, router.Public, s.handle); err != nil {
		return nil, err
	}
	s.stop = n.OnLinkClosed(s.connClosed)
	n.HandleUndeliverable(s.Undeliverable)
	return s, nil
}

// Close unregisters the service and its forwarders.
func (s *Service) Close() {
	s.stop()
	s.n.HandleUndeliverable(nil)
	s.n.Unregister(ServiceAddress)
	s.mu.Lock()
	for name, f := range s.byName {
		s.n.Unregister(f.info.Address)
		delete(s.byName, name)
	}
	s.mu.Unlock()
}

// List returns the registered relays, by name.
func (s *Service) List() []Info {
	s.mu.Lock()
	out := make([]Info, 0, len(s.byName))
	for _, f := range s.byName {
		out = append(out, f.info)
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (s *Service) handle(m *routing.Message) error {
	req, err := DecodeRequest(m.Payload)
	var resp Response
	switch {
	case err != nil:
		resp.Error = err.Error()
	case req.Op == "ping":
	case req.Op == "challenge":
		resp.Challenge, err = s.challenge(m.Return)
		if err != nil {
			resp.Error = err.Error()
		}
	case req.Op == "register":
		resp.Address, err = s.register(req, m.Return)
		if err != nil {
			resp.Error = err.Error()
		}
	default:
		resp.Error = fmt.Sprintf("relay: unknown operation %q", req.Op)
	}
	b, _ := cbor.Marshal(resp)
	return s.n.Reply(m, ServiceAddress, b)
}

// challenge gives the connection a fresh nonce that its next registration
// must sign, so that a registration cannot be replayed on another one.
func (s *Service) challenge(ret routing.Route) ([]byte, error) {
	conn, err := s.connOf(ret)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, ChallengeSize)
	rand.Read(nonce)
	s.mu.Lock()
	s.challenges[conn.ID] = nonce
	s.mu.Unlock()
	return nonce, nil
}

func (s *Service) connOf(ret routing.Route) (router.Link, error) {
	if len(ret) < 2 || ret[0].Type != routing.Local {
		return router.Link{}, errors.New("relay: registration must arrive over a connection")
	}
	c, ok := s.n.Link(ret[0].Value)
	if !ok {
		return router.Link{}, errors.New("relay: registration must arrive over a connection")
	}
	return c, nil
}

// register binds a name to the registrant. The rules against squatting: a
// name is held by the identity that registered it, over that connection,
// until the connection closes; another identity asking for it meanwhile is
// refused; the same identity may register it again (a restarted node
// replacing its own stale connection).
func (s *Service) register(req Request, ret routing.Route) (string, error) {
	name := req.Name
	if !validName.MatchString(name) {
		return "", fmt.Errorf("relay: invalid name %q (want 1-64 of A-Z a-z 0-9 _ . -)", name)
	}
	c, err := s.connOf(ret)
	if err != nil {
		return "", err
	}
	conn := c.ID
	id, err := identity.Import(req.Identity)
	if err != nil {
		return "", fmt.Errorf("relay: registration identity: %w", err)
	}
	s.mu.Lock()
	nonce := s.challenges[conn]
	delete(s.challenges, conn)
	s.mu.Unlock()
	if nonce == nil {
		return "", errors.New("relay: register without a challenge")
	}
	if err := id.Verify(SignContext, append(nonce, name...), req.Sig); err != nil {
		return "", errors.New("relay: registration signature does not verify")
	}
	owner := id.Identifier()
	if s.cfg.Authorize != nil {
		if err := s.cfg.Authorize(owner); err != nil {
			return "", fmt.Errorf("relay: identity %s may not register names here: %v", owner, err)
		}
	}
	// The registrant's route is its return route without its own last hop
	// (the worker that asked): messages go to its node, whose router then
	// reads the rest of their onward route.
	route := ret[:len(ret)-1].Clone()
	addr := Prefix + name

	s.mu.Lock()
	defer s.mu.Unlock()
	if f := s.byName[name]; f != nil {
		if f.owner != owner {
			return "", fmt.Errorf("relay: name %q is held by identity %s", name, f.owner)
		}
		f.route, f.conn = route, conn
		f.info.Remote = c.Remote
		return addr, nil
	}
	if len(s.byName) >= MaxRelays {
		return "", fmt.Errorf("relay: this relay holds %d names, its limit", MaxRelays)
	}
	if held := s.held(owner); held >= s.maxNames() {
		s.log.Info("relay name refused", "name", name, "owner", owner.Short(), "reason", "names per identity")
		return "", fmt.Errorf("relay: identity %s holds %d names here, the limit per identity", owner.Short(), held)
	}
	f := &forwarder{
		info:  Info{Name: name, Address: addr, Remote: c.Remote, Owner: owner.String(), Since: time.Now().UTC()},
		owner: owner,
		route: route,
		conn:  conn,
	}
	if err := s.n.Register(addr, router.Public, s.forward(f)); err != nil {
		return "", err
	}
	s.byName[name] = f
	s.log.Info("relay registered", "name", name, "remote", c.Remote, "owner", owner.Short())
	return addr, nil
}

// forward returns the handler of a forwarder: it replaces its own hop with
// the route to the registrant. The return route is left as it is, so replies
// go straight back to the sender, not through the forwarder.
func (s *Service) forward(f *forwarder) router.Handler {
	return func(m *routing.Message) error {
		s.mu.Lock()
		route := f.route
		s.mu.Unlock()
		onward := m.Onward
		var err error
		if len(route) == 1 {
			saved := onward[0]
			onward[0] = route[0]
			err = s.n.Send(context.Background(), m)
			onward[0] = saved
		} else {
			m.Onward = route.Join(onward[1:])
			err = s.n.Send(context.Background(), m)
			m.Onward = onward
		}
		return err
	}
}

func (s *Service) connClosed(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.challenges, id)
	for name, f := range s.byName {
		if f.conn == id {
			s.n.Unregister(f.info.Address)
			delete(s.byName, name)
			s.log.Info("relay freed", "name", name, "reason", "registrant connection closed")
		}
	}
}

// Undeliverable is the router's undeliverable handler on every node (the
// forwarding service runs on all of them): channel data that reached this
// node for an address nobody holds (a forwarder whose registrant has gone,
// or a channel of this node's previous run) gets the unknown-channel notice,
// so the sender's channel re-establishes at once, and it reports true so
// that the router sends no error reply as well. Everything else (a first
// handshake message for a listener that is not there, a message for a
// missing service) gets the router's error reply, which names the hop.
// Rate-limited to 20 a second; the notice is unauthenticated and can only
// make a channel fail, which anyone on the path can do by dropping
// messages.
func (s *Service) Undeliverable(m *routing.Message) bool {
	if len(m.Payload) < wire.Overhead || len(m.Return) == 0 || wire.Type(m.Payload[0]) != wire.Data {
		return false
	}
	now := time.Now().UnixNano()
	last := s.lastNotice.Load()
	if now-last < int64(time.Second)/20 || !s.lastNotice.CompareAndSwap(last, now) {
		return false
	}
	s.n.Send(context.Background(), &routing.Message{Onward: m.Return.Clone(), Payload: []byte{byte(wire.Unknown)}, Via: m.Via})
	return true
}
