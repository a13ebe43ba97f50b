package identity

import (
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"
)

// MaxIdentityBytes bounds an exported identity (its change history). Import
// rejects longer input before decoding it.
const MaxIdentityBytes = 4096

// ChangeVersion is the version of the change record format written by this
// package and the only one it accepts.
const ChangeVersion = 1

// changeSigContext prefixes every signed change record, so a change
// signature can never be confused with another signature by the same key.
const changeSigContext = "ockam-go/identity/change/v1\x00"

// changeRecord is one change of an identity's key. Encoded as a CBOR array
// [version, ed25519 public key (32 bytes), created (unix seconds)].
type changeRecord struct {
	_         struct{} `cbor:",toarray"`
	Version   uint64
	PublicKey []byte
	Created   int64
}

// signedChange is [change record bytes, ed25519 signature (64 bytes)].
type signedChange struct {
	_         struct{} `cbor:",toarray"`
	Data      []byte
	Signature []byte
}

// Identity is the public part of an identity: its change history. It is
// immutable and safe for concurrent use.
type Identity struct {
	id      Identifier
	pub     ed25519.PublicKey
	created time.Time
	raw     []byte // canonical export encoding
}

// Identifier returns the identity's identifier.
func (i *Identity) Identifier() Identifier { return i.id }

// PublicKey returns the identity's current Ed25519 public key. The caller
// must not modify it.
func (i *Identity) PublicKey() ed25519.PublicKey { return i.pub }

// Created returns the creation time recorded in the first change.
func (i *Identity) Created() time.Time { return i.created }

// Export returns the CBOR encoding of the change history, signatures
// included. The returned slice is a fresh copy owned by the caller.
func (i *Identity) Export() []byte { return append([]byte(nil), i.raw...) }

// Equal reports whether i and o have the same change history.
func (i *Identity) Equal(o *Identity) bool {
	if i == nil || o == nil {
		return i == o
	}
	return i.id == o.id && string(i.raw) == string(o.raw)
}

// String returns the identifier's text form.
func (i *Identity) String() string { return i.id.String() }

var errHistory = errors.New("identity: invalid change history")

// Import decodes and verifies an exported identity. The input must be at
// most MaxIdentityBytes long, canonically encoded, without trailing bytes,
// and every change must carry a valid self-signature. b is not retained.
func Import(b []byte) (*Identity, error) {
	if len(b) > MaxIdentityBytes {
		return nil, fmt.Errorf("identity: import: %d bytes exceeds MaxIdentityBytes (%d)", len(b), MaxIdentityBytes)
	}
	var history []signedChange
	if err := decodeStrict(b, &history); err != nil {
		return nil, fmt.Errorf("%w: %w", errHistory, err)
	}
	// Key rotation is not implemented yet: a history has exactly one change.
	if len(history) != 1 {
		return nil, fmt.Errorf("%w: %d changes, want 1", errHistory, len(history))
	}
	sc := history[0]
	var rec changeRecord
	if err := decodeStrict(sc.Data, &rec); err != nil {
		return nil, fmt.Errorf("%w: change record: %w", errHistory, err)
	}
	if rec.Version != ChangeVersion {
		return nil, fmt.Errorf("%w: change version %d, want %d", errHistory, rec.Version, ChangeVersion)
	}
	if len(rec.PublicKey) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: public key is %d bytes, want %d", errHistory, len(rec.PublicKey), ed25519.PublicKeySize)
	}
	if len(sc.Signature) != ed25519.SignatureSize {
		return nil, fmt.Errorf("%w: signature is %d bytes, want %d", errHistory, len(sc.Signature), ed25519.SignatureSize)
	}
	pub := ed25519.PublicKey(rec.PublicKey)
	if !ed25519.Verify(pub, changeMessage(sc.Data), sc.Signature) {
		return nil, fmt.Errorf("%w: change history of %s is not self-signed", ErrBadSignature, Identifier(sha256.Sum256(sc.Data)))
	}
	return &Identity{
		id:      sha256.Sum256(sc.Data),
		pub:     pub,
		created: time.Unix(rec.Created, 0).UTC(),
		raw:     append([]byte(nil), b...),
	}, nil
}

func changeMessage(data []byte) []byte {
	return append([]byte(changeSigContext), data...)
}

// newIdentity builds and self-signs the first change for priv.
func newIdentity(priv ed25519.PrivateKey, created time.Time) (*Identity, error) {
	pub := priv.Public().(ed25519.PublicKey)
	data, err := encMode.Marshal(changeRecord{Version: ChangeVersion, PublicKey: pub, Created: created.Unix()})
	if err != nil {
		return nil, fmt.Errorf("identity: encode change: %w", err)
	}
	sig := ed25519.Sign(priv, changeMessage(data))
	raw, err := encMode.Marshal([]signedChange{{Data: data, Signature: sig}})
	if err != nil {
		return nil, fmt.Errorf("identity: encode history: %w", err)
	}
	return &Identity{
		id:      sha256.Sum256(data),
		pub:     pub,
		created: time.Unix(created.Unix(), 0).UTC(),
		raw:     raw,
	}, nil
}
