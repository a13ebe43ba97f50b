package identity

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"time"
)

// Secret is an identity together with its Ed25519 private key. It is
// immutable and safe for concurrent use. Its String, GoString and Format
// methods never print the private key.
type Secret struct {
	identity *Identity
	priv     ed25519.PrivateKey
}

// Generate creates a new identity with a fresh Ed25519 key read from random
// (crypto/rand.Reader if nil).
func Generate(random io.Reader) (*Secret, error) {
	if random == nil {
		random = rand.Reader
	}
	_, priv, err := ed25519.GenerateKey(random)
	if err != nil {
		return nil, fmt.Errorf("identity: generate key: %w", err)
	}
	id, err := newIdentity(priv, time.Now())
	if err != nil {
		return nil, err
	}
	return &Secret{identity: id, priv: priv}, nil
}

// Identity returns the public part.
func (s *Secret) Identity() *Identity { return s.identity }

// Identifier is shorthand for s.Identity().Identifier().
func (s *Secret) Identifier() Identifier { return s.identity.id }

// redacted is what every print verb shows for a Secret.
func (s Secret) redacted() string {
	if s.identity == nil {
		return "identity.Secret{<nil>}"
	}
	return "identity.Secret{" + s.identity.id.String() + ", private key redacted}"
}

// String returns the identifier and a redaction marker, never key material.
func (s Secret) String() string { return s.redacted() }

// GoString is like String, so %#v does not print the key either.
func (s Secret) GoString() string { return s.redacted() }

// Format implements fmt.Formatter so that every verb (%x, %v, %+v, %s, ...)
// prints the redacted form.
func (s Secret) Format(f fmt.State, _ rune) { io.WriteString(f, s.redacted()) }

// MaxSecretBytes bounds an exported secret.
const MaxSecretBytes = MaxIdentityBytes + 128

// secretVersion is the version of the exported secret encoding.
const secretVersion = 1

// exportedSecret is [version, identity export, ed25519 seed (32 bytes)].
type exportedSecret struct {
	_        struct{} `cbor:",toarray"`
	Version  uint64
	Identity []byte
	Seed     []byte
}

// ExportSecret returns the secret's serialized form INCLUDING THE PRIVATE
// KEY, for storage by a vault. The caller owns the returned slice and should
// clear it after use.
func (s *Secret) ExportSecret() []byte {
	b, err := encMode.Marshal(exportedSecret{Version: secretVersion, Identity: s.identity.raw, Seed: s.priv.Seed()})
	if err != nil {
		panic("identity: encode secret: " + err.Error()) // cannot happen for these types
	}
	return b
}

var errSecret = errors.New("identity: invalid secret")

// ImportSecret decodes what ExportSecret produced and checks that the
// private key matches the identity. b is not retained.
func ImportSecret(b []byte) (*Secret, error) {
	if len(b) > MaxSecretBytes {
		return nil, fmt.Errorf("%w: %d bytes exceeds MaxSecretBytes (%d)", errSecret, len(b), MaxSecretBytes)
	}
	var es exportedSecret
	if err := decodeStrict(b, &es); err != nil {
		return nil, fmt.Errorf("%w: %w", errSecret, err)
	}
	if es.Version != secretVersion {
		return nil, fmt.Errorf("%w: version %d, want %d", errSecret, es.Version, secretVersion)
	}
	if len(es.Seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("%w: seed is %d bytes, want %d", errSecret, len(es.Seed), ed25519.SeedSize)
	}
	id, err := Import(es.Identity)
	if err != nil {
		return nil, err
	}
	priv := ed25519.NewKeyFromSeed(es.Seed)
	clear(es.Seed)
	if subtle.ConstantTimeCompare(priv.Public().(ed25519.PublicKey), id.pub) != 1 {
		return nil, fmt.Errorf("%w: private key does not match identity %s", errSecret, id.id.Short())
	}
	return &Secret{identity: id, priv: priv}, nil
}
