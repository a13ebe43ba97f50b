// Package channel implements the core of the secure channel: a
// Noise_XX_25519_AESGCM_SHA256 handshake that authenticates both ends by
// their identities (package identity), and the data phase that seals and
// opens messages with replay protection and periodic rekeying.
//
// It is a pure library: it does no I/O, starts no goroutines and keeps no
// timers. The caller carries the messages it produces over any transport
// (routes through a relay) and feeds the messages it receives back in. The
// wire format is docs/PROTOCOL.md section 4.2; its type bytes and sizes are
// declared in package wire.
//
// Use:
//
//	hs, err := channel.NewInitiator(cfg)   // or NewResponder
//	for !hs.Done() {
//		out, err := hs.Step(in)            // in is nil for the initiator's first call
//		... send out if non-nil, receive the next in ...
//	}
//	s, err := hs.Session()
//	msg, err := s.Seal(buf[:0], plaintext)
//	pt, err := s.Open(dst[:0], msg)
package channel

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/ockam-go/ockam/internal/identity"
)

// DefaultAttestationTTL is used when Config.AttestationTTL is zero. A
// channel's static key is fresh per handshake, so the attestation only needs
// to outlive the handshake; the margin covers clock skew between nodes.
const DefaultAttestationTTL = time.Hour

// Config configures a handshake. The package never modifies a Config, and
// one Config may be shared by any number of handshakes.
type Config struct {
	// Identity authenticates this end. Required.
	Identity *identity.Secret

	// Trust decides whether the authenticated peer identity may use the
	// channel; a non-nil error refuses it. Required: there is no implicit
	// trust-everyone default. See TrustList and TrustEveryone.
	Trust func(peer identity.Identifier) error

	// AttestationTTL is how long the attestation of this end's Noise static
	// key is valid. Zero means DefaultAttestationTTL.
	AttestationTTL time.Duration

	// Now returns the current time. Nil means time.Now.
	Now func() time.Time

	// Rand is the source of key material. Nil means crypto/rand.Reader.
	Rand io.Reader
}

// ErrUntrusted is returned by the policy built by TrustList for an
// identifier not in the list.
var ErrUntrusted = errors.New("not in the trust list")

// TrustList returns a trust policy that accepts exactly the given
// identifiers. The list is copied.
func TrustList(ids ...identity.Identifier) func(identity.Identifier) error {
	set := make(map[identity.Identifier]struct{}, len(ids))
	for _, id := range ids {
		set[id] = struct{}{}
	}
	return func(peer identity.Identifier) error {
		if _, ok := set[peer]; !ok {
			return ErrUntrusted
		}
		return nil
	}
}

// TrustEveryone is a trust policy that accepts any peer that proves it holds
// an identity. Using it is an explicit decision to authenticate peers
// without authorising them.
func TrustEveryone(identity.Identifier) error { return nil }

// config is the validated, defaulted copy of a Config a handshake keeps.
type config struct {
	identity *identity.Secret
	trust    func(identity.Identifier) error
	ttl      time.Duration
	now      func() time.Time
	rand     io.Reader
}

func (c *Config) validate() (config, error) {
	if c == nil {
		return config{}, errors.New("channel: nil Config")
	}
	if c.Identity == nil {
		return config{}, errors.New("channel: Config.Identity is nil")
	}
	if c.Trust == nil {
		return config{}, errors.New("channel: Config.Trust is nil: set a trust policy (TrustList, or TrustEveryone to accept any authenticated peer)")
	}
	if c.AttestationTTL < 0 {
		return config{}, fmt.Errorf("channel: negative Config.AttestationTTL %v", c.AttestationTTL)
	}
	cfg := config{identity: c.Identity, trust: c.Trust, ttl: c.AttestationTTL, now: c.Now, rand: c.Rand}
	if cfg.ttl == 0 {
		cfg.ttl = DefaultAttestationTTL
	}
	if cfg.now == nil {
		cfg.now = time.Now
	}
	if cfg.rand == nil {
		cfg.rand = rand.Reader
	}
	return cfg, nil
}
