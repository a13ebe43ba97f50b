package vault

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"

	"github.com/fxamacker/cbor/v2"

	"github.com/ockam-go/ockam/internal/identity"
	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/chacha20poly1305"
)

// Secret file format (canonical CBOR, RFC 8949 core deterministic):
//
//	file = [magic: "ockam-go/vault", version: 1, kdf, nonce, data]
//	kdf  = null                                   ; data is the plaintext
//	     / [time, memoryKiB, threads, salt]       ; argon2id parameters
//
// When kdf is not null, key = argon2id(passphrase, salt, time, memoryKiB,
// threads, 32) and data = XChaCha20-Poly1305(key, nonce (24 bytes),
// plaintext, ad = "ockam-go/vault/v1\x00" || NAME). Binding NAME means a
// file copied to another name fails to open rather than impersonating it.
// The plaintext is identity.Secret.ExportSecret.

const (
	fileMagic   = "ockam-go/vault"
	fileVersion = 1
	adContext   = "ockam-go/vault/v1\x00"
)

type kdfParams struct {
	_         struct{} `cbor:",toarray"`
	Time      uint32
	MemoryKiB uint32
	Threads   uint8
	Salt      []byte
}

type fileEnvelope struct {
	_       struct{} `cbor:",toarray"`
	Magic   string
	Version uint64
	KDF     *kdfParams
	Nonce   []byte
	Data    []byte
}

// defaultKDF follows the second recommended option of RFC 9106 (argon2id,
// t=3, m=64 MiB, p=4).
var defaultKDF = kdfParams{Time: 3, MemoryKiB: 64 << 10, Threads: 4}

// Bounds on parameters read from a file, so a hostile file cannot make
// opening it take unbounded time or memory.
const (
	maxKDFTime      = 16
	maxKDFMemoryKiB = 1 << 20 // 1 GiB
	maxKDFThreads   = 64
	saltLen         = 16
)

var (
	encMode = func() cbor.EncMode {
		em, err := cbor.CoreDetEncOptions().EncMode()
		if err != nil {
			panic(err)
		}
		return em
	}()
	decMode = identity.StrictDecMode
)

func additionalData(name string) []byte { return []byte(adContext + name) }

// sealFile encodes plain as the secret file for name, encrypting it when
// passphrase is non-empty. random defaults to crypto/rand.Reader.
func sealFile(name string, plain, passphrase []byte, kdf kdfParams, random io.Reader) ([]byte, error) {
	if random == nil {
		random = rand.Reader
	}
	env := fileEnvelope{Magic: fileMagic, Version: fileVersion}
	if len(passphrase) == 0 {
		env.Data = plain
		return encMode.Marshal(env)
	}
	kdf.Salt = make([]byte, saltLen)
	env.Nonce = make([]byte, chacha20poly1305.NonceSizeX)
	if _, err := io.ReadFull(random, kdf.Salt); err != nil {
		return nil, err
	}
	if _, err := io.ReadFull(random, env.Nonce); err != nil {
		return nil, err
	}
	key := deriveKey(passphrase, &kdf)
	defer clear(key)
	aead, err := chacha20poly1305.NewX(key)
	if err != nil {
		return nil, err
	}
	env.KDF = &kdf
	env.Data = aead.Seal(nil, env.Nonce, plain, additionalData(name))
	return encMode.Marshal(env)
}

func deriveKey(passphrase []byte, kdf *kdfParams) []byte {
	return argon2.IDKey(passphrase, kdf.Salt, kdf.Time, kdf.MemoryKiB, kdf.Threads, chacha20poly1305.KeySize)
}

// decodeEnvelope parses a secret file strictly, without any cryptography.
func decodeEnvelope(b []byte) (*fileEnvelope, error) {
	if len(b) > MaxFileBytes {
		return nil, fmt.Errorf("%d bytes exceeds MaxFileBytes (%d)", len(b), MaxFileBytes)
	}
	var env fileEnvelope
	if err := decMode.Unmarshal(b, &env); err != nil {
		return nil, err
	}
	if re, err := encMode.Marshal(env); err != nil || !bytes.Equal(re, b) {
		return nil, errors.New("not in canonical encoding")
	}
	if env.Magic != fileMagic {
		return nil, fmt.Errorf("not a vault file (magic %q)", truncate(env.Magic))
	}
	if env.Version != fileVersion {
		return nil, fmt.Errorf("file version %d, want %d", env.Version, fileVersion)
	}
	if k := env.KDF; k != nil {
		switch {
		case k.Time < 1 || k.Time > maxKDFTime:
			return nil, fmt.Errorf("argon2 time %d out of range", k.Time)
		case k.MemoryKiB < 8*uint32(k.Threads) || k.MemoryKiB > maxKDFMemoryKiB:
			return nil, fmt.Errorf("argon2 memory %d KiB out of range", k.MemoryKiB)
		case k.Threads < 1 || k.Threads > maxKDFThreads:
			return nil, fmt.Errorf("argon2 threads %d out of range", k.Threads)
		case len(k.Salt) != saltLen:
			return nil, fmt.Errorf("salt is %d bytes, want %d", len(k.Salt), saltLen)
		case len(env.Nonce) != chacha20poly1305.NonceSizeX:
			return nil, fmt.Errorf("nonce is %d bytes, want %d", len(env.Nonce), chacha20poly1305.NonceSizeX)
		}
	} else if len(env.Nonce) != 0 {
		return nil, errors.New("nonce present in unencrypted file")
	}
	return &env, nil
}

// openFile returns the plaintext of the secret file b stored under name.
// An unencrypted file opens with or without a passphrase; an encrypted one
// needs it (ErrPassphraseNeeded).
func openFile(name string, b, passphrase []byte) ([]byte, error) {
	env, err := decodeEnvelope(b)
	if err != nil {
		return nil, err
	}
	if env.KDF == nil {
		return env.Data, nil
	}
	if len(passphrase) == 0 {
		return nil, ErrPassphraseNeeded
	}
	key := deriveKey(passphrase, env.KDF)
	defer clear(key)
	aead, err := chacha20poly1305.NewX(key)
	if err != nil {
		return nil, err
	}
	plain, err := aead.Open(nil, env.Nonce, env.Data, additionalData(name))
	if err != nil {
		return nil, errors.New("authentication failed")
	}
	return plain, nil
}
