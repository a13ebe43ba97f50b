// Package identity implements long-term identities: an Ed25519 key pair whose
// public part is published as a signed change history, an [Identifier]
// derived from the first change, and attestations that bind short-lived
// X25519 keys (such as a secure channel's Noise static key) to an identity.
//
// The package does no I/O. Storage of secrets belongs to package vault.
package identity

import (
	"encoding/hex"
	"errors"
	"fmt"
)

// Identifier names an identity: the SHA-256 of the bytes of its first change
// record. It is stable across key rotations (later changes keep it).
type Identifier [32]byte

// identifierPrefix starts the text form of every Identifier.
const identifierPrefix = "I"

// identifierTextLen is the length of the text form: prefix + 64 hex digits.
const identifierTextLen = len(identifierPrefix) + 2*len(Identifier{})

// String returns "I" followed by 64 lowercase hex digits (65 characters).
func (id Identifier) String() string {
	var buf [identifierTextLen]byte
	buf[0] = identifierPrefix[0]
	hex.Encode(buf[1:], id[:])
	return string(buf[:])
}

// Short returns "I" followed by the first 16 hex digits, for logs and
// messages addressed to humans. It is not unique enough for access control.
func (id Identifier) Short() string {
	return id.String()[:1+16]
}

// IsZero reports whether id is the zero Identifier (no identity).
func (id Identifier) IsZero() bool { return id == Identifier{} }

// MarshalText implements encoding.TextMarshaler with the String form.
func (id Identifier) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler, accepting what
// ParseIdentifier accepts.
func (id *Identifier) UnmarshalText(b []byte) error {
	v, err := ParseIdentifier(string(b))
	if err != nil {
		return err
	}
	*id = v
	return nil
}

var errIdentifierSyntax = errors.New(`want "I" and 64 lowercase hex digits`)

// ParseIdentifier parses the String form of an Identifier. Only the canonical
// form (prefix "I", 64 lowercase hex digits) is accepted, so that an
// identifier has exactly one spelling in configuration and trust lists.
func ParseIdentifier(s string) (Identifier, error) {
	var id Identifier
	if len(s) != identifierTextLen || s[0] != identifierPrefix[0] {
		return id, fmt.Errorf("identity: parse identifier %q: %w", truncate(s), errIdentifierSyntax)
	}
	for _, c := range []byte(s[1:]) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return id, fmt.Errorf("identity: parse identifier %q: %w", truncate(s), errIdentifierSyntax)
		}
	}
	if _, err := hex.Decode(id[:], []byte(s[1:])); err != nil {
		return Identifier{}, fmt.Errorf("identity: parse identifier %q: %w", truncate(s), err)
	}
	return id, nil
}

// truncate bounds attacker-controlled text quoted in error messages.
func truncate(s string) string {
	const max = 80
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}

// Bytes returns a copy of the identifier's 32 bytes.
func (id Identifier) Bytes() []byte { return append([]byte(nil), id[:]...) }
