package identity

import (
	"crypto/ed25519"
	"crypto/subtle"
	"errors"
	"fmt"
	"time"
)

// MaxAttestationBytes bounds an encoded attestation. VerifyAttestation
// rejects longer input before decoding it.
const MaxAttestationBytes = 512

// StaticKeySize is the size of an attested X25519 public key.
const StaticKeySize = 32

// attestationVersion is the version of the attestation body encoding.
const attestationVersion = 1

// attestSigContext prefixes every signed attestation body.
const attestSigContext = "ockam-go/identity/attestation/v1\x00"

// Errors returned (wrapped, with details) by VerifyAttestation. Each means
// the peer must not be accepted; callers branch on them only to report.
var (
	ErrTooLarge           = errors.New("identity: attestation too large")
	ErrMalformed          = errors.New("identity: malformed attestation")
	ErrBadSignature       = errors.New("identity: bad signature")
	ErrIdentifierMismatch = errors.New("identity: attestation is for a different identity")
	ErrExpired            = errors.New("identity: attestation expired")
	ErrKeyMismatch        = errors.New("identity: attested key differs from the Noise static key")
)

// attestationBody is [version, identifier (32), x25519 static key (32),
// expires (unix seconds)].
type attestationBody struct {
	_          struct{} `cbor:",toarray"`
	Version    uint64
	Identifier []byte
	Static     []byte
	Expires    int64
}

// signedAttestation is [body bytes, ed25519 signature (64)].
type signedAttestation struct {
	_         struct{} `cbor:",toarray"`
	Data      []byte
	Signature []byte
}

// Attest signs a statement that the X25519 public key static belongs to s
// until expires. The returned slice is owned by the caller.
func (s *Secret) Attest(static []byte, expires time.Time) ([]byte, error) {
	if len(static) != StaticKeySize {
		return nil, fmt.Errorf("identity: attest: static key is %d bytes, want %d", len(static), StaticKeySize)
	}
	data, err := encMode.Marshal(attestationBody{
		Version:    attestationVersion,
		Identifier: s.identity.id[:],
		Static:     static,
		Expires:    expires.Unix(),
	})
	if err != nil {
		return nil, fmt.Errorf("identity: attest: %w", err)
	}
	sig := ed25519.Sign(s.priv, attestMessage(data))
	b, err := encMode.Marshal(signedAttestation{Data: data, Signature: sig})
	if err != nil {
		return nil, fmt.Errorf("identity: attest: %w", err)
	}
	return b, nil
}

func attestMessage(data []byte) []byte {
	return append([]byte(attestSigContext), data...)
}

// VerifyAttestation checks that att is an attestation by id, signed with
// id's key, for exactly the X25519 key static, and not expired at now. The
// error wraps one of ErrTooLarge, ErrMalformed, ErrBadSignature,
// ErrIdentifierMismatch, ErrExpired or ErrKeyMismatch.
func VerifyAttestation(id *Identity, att []byte, static []byte, now time.Time) error {
	if len(att) > MaxAttestationBytes {
		return fmt.Errorf("%w: %d bytes exceeds MaxAttestationBytes (%d)", ErrTooLarge, len(att), MaxAttestationBytes)
	}
	var sa signedAttestation
	if err := decodeStrict(att, &sa); err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if len(sa.Signature) != ed25519.SignatureSize {
		return fmt.Errorf("%w: signature is %d bytes", ErrMalformed, len(sa.Signature))
	}
	// Verify the signature before looking at what the body claims.
	if !ed25519.Verify(id.pub, attestMessage(sa.Data), sa.Signature) {
		return fmt.Errorf("%w: attestation not signed by the key of %s", ErrBadSignature, id.id.Short())
	}
	var body attestationBody
	if err := decodeStrict(sa.Data, &body); err != nil {
		return fmt.Errorf("%w: body: %w", ErrMalformed, err)
	}
	if body.Version != attestationVersion {
		return fmt.Errorf("%w: version %d, want %d", ErrMalformed, body.Version, attestationVersion)
	}
	if len(body.Identifier) != len(Identifier{}) || len(body.Static) != StaticKeySize {
		return fmt.Errorf("%w: bad field length", ErrMalformed)
	}
	if Identifier(body.Identifier) != id.id {
		return fmt.Errorf("%w: attests %s, identity is %s", ErrIdentifierMismatch, Identifier(body.Identifier), id.id)
	}
	if expires := time.Unix(body.Expires, 0); !now.Before(expires) {
		return fmt.Errorf("%w at %s (now %s)", ErrExpired, expires.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if subtle.ConstantTimeCompare(body.Static, static) != 1 {
		return ErrKeyMismatch
	}
	return nil
}
