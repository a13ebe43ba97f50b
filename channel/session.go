package channel

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net"
	"sync"
	"sync/atomic"

	"github.com/ockam-go/ockam/internal/identity"
)

// RekeyInterval is the number of messages sealed under one key. Nonce n is
// sealed under the key of epoch n/RekeyInterval. The key of epoch e+1 is
// REKEY(key of epoch e) as defined by the Noise specification (section
// 11.3): the first 32 bytes of AES-256-GCM encryption of 32 zero bytes
// with nonce 2^64-1 and empty associated data. The first key of each
// direction comes from the handshake's Split.
const RekeyInterval = 1 << rekeyShift

const rekeyShift = 16

// maxEpochSkip bounds how many epochs ahead of the current one Open will
// derive keys for, so a forged nonce cannot make it derive many keys.
const maxEpochSkip = 4

// Errors returned by Open. Each means the message was dropped and counted
// in Stats; the session remains usable, so callers drop and continue.
// They are returned unwrapped so that Open never allocates.
var (
	ErrReplayed  = errors.New("channel: replayed message")
	ErrTooOld    = errors.New("channel: message too old for the replay window")
	ErrForged    = errors.New("channel: message authentication failed")
	ErrMalformed = errors.New("channel: malformed message")
)

// errPeerClosed is returned by Open for a valid Close message, and by Open
// after it. errSendClosed is returned by Seal after SealClose. Both wrap
// net.ErrClosed.
var (
	errPeerClosed = fmt.Errorf("channel: session closed by peer: %w", net.ErrClosed)
	errSendClosed = fmt.Errorf("channel: session closed: %w", net.ErrClosed)
	errExhausted  = errors.New("channel: nonces exhausted: start a new handshake")
	errTooLong    = fmt.Errorf("channel: plaintext longer than MaxPayload (%d)", MaxPayload)
)

// Stats is a snapshot of a session's message counters.
type Stats struct {
	Sealed    uint64 // messages sealed (Data and Close)
	Opened    uint64 // Data messages opened
	Replayed  uint64 // dropped: nonce already accepted
	TooOld    uint64 // dropped: nonce behind the replay window
	Forged    uint64 // dropped: authentication failed (bit flips, truncation, wrong key, forged close)
	Malformed uint64 // dropped: too short, too long, unknown type, reserved nonce
	Late      uint64 // accepted, behind a later nonce: sent or carried out of order
}

type counters struct {
	sealed, opened, replayed, tooOld, forged, malformed, late atomic.Uint64
}

// Session is the data phase of an established channel. Seal and Open may be
// called concurrently with each other and from several goroutines: all
// Seals are serialised by one lock and all Opens by another.
type Session struct {
	peer      *identity.Identity
	initiator bool
	binding   []byte
	stats     counters

	send struct {
		mu     sync.Mutex
		aead   cipher.AEAD
		key    [32]byte
		next   uint64 // next nonce to use
		closed bool
		nonce  [12]byte // scratch, so Seal does not allocate
	}

	recv struct {
		mu     sync.Mutex
		epoch  uint64
		cur    cipher.AEAD // key of epoch
		curKey [32]byte
		prev   cipher.AEAD // key of epoch-1; nil in epoch 0
		filter replayFilter
		closed bool
		nonce  [12]byte
	}
}

func newSession(sendKey, recvKey [32]byte, peer *identity.Identity, initiator bool, binding []byte) *Session {
	s := &Session{peer: peer, initiator: initiator, binding: binding}
	s.send.key = sendKey
	s.send.aead = newGCM(&sendKey)
	s.recv.curKey = recvKey
	s.recv.cur = newGCM(&recvKey)
	return s
}

func newGCM(key *[32]byte) cipher.AEAD {
	block, err := aes.NewCipher(key[:])
	if err != nil {
		panic(err) // cannot happen: the key is 32 bytes
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	return gcm
}

// rekey returns the Noise REKEY of k (see RekeyInterval).
func rekey(k *[32]byte) [32]byte {
	var nonce [12]byte
	binary.BigEndian.PutUint64(nonce[4:], math.MaxUint64)
	var zeros [32]byte
	out := newGCM(k).Seal(nil, nonce[:], zeros[:], nil)
	var next [32]byte
	copy(next[:], out)
	clear(out)
	return next
}

// Peer returns the authenticated peer's identifier.
func (s *Session) Peer() identity.Identifier { return s.peer.Identifier() }

// PeerIdentity returns the authenticated peer's identity.
func (s *Session) PeerIdentity() *identity.Identity { return s.peer }

// Initiator reports whether this end initiated the handshake.
func (s *Session) Initiator() bool { return s.initiator }

// ChannelBinding returns the Noise handshake hash, a value unique to this
// session that both ends share. The caller must not modify it.
func (s *Session) ChannelBinding() []byte { return s.binding }

// Stats returns a snapshot of the session's counters.
func (s *Session) Stats() Stats {
	return Stats{
		Sealed:    s.stats.sealed.Load(),
		Opened:    s.stats.opened.Load(),
		Replayed:  s.stats.replayed.Load(),
		TooOld:    s.stats.tooOld.Load(),
		Forged:    s.stats.forged.Load(),
		Malformed: s.stats.malformed.Load(),
		Late:      s.stats.late.Load(),
	}
}

// Seal encrypts plaintext into a Data message and appends it to dst,
// returning the extended slice. It does not allocate when dst has capacity
// for len(plaintext)+Overhead more bytes. plaintext is not retained and may
// alias dst's spare capacity only exactly where the ciphertext goes: to
// encrypt in place, put the plaintext at buf[HeaderLen:] and call
// Seal(buf[:0], buf[HeaderLen:HeaderLen+n]).
func (s *Session) Seal(dst, plaintext []byte) ([]byte, error) {
	if len(plaintext) > MaxPayload {
		return dst, errTooLong
	}
	return s.seal(dst, Data, plaintext)
}

// SealClose appends an authenticated Close message to dst and closes the
// sending half: later Seals return an error wrapping net.ErrClosed. The
// peer's Open returns an error wrapping net.ErrClosed when it receives it. A
// relay cannot forge a Close: it is sealed with the session key and
// replay-protected like Data.
func (s *Session) SealClose(dst []byte) ([]byte, error) {
	return s.seal(dst, Close, nil)
}

func (s *Session) seal(dst []byte, typ MessageType, plaintext []byte) ([]byte, error) {
	s.send.mu.Lock()
	defer s.send.mu.Unlock()
	if s.send.closed {
		return dst, errSendClosed
	}
	n := s.send.next
	if n == math.MaxUint64 { // reserved by Noise for REKEY
		return dst, errExhausted
	}
	if n != 0 && n%RekeyInterval == 0 {
		s.send.key = rekey(&s.send.key)
		s.send.aead = newGCM(&s.send.key)
	}
	s.send.next = n + 1
	if typ == Close {
		s.send.closed = true
	}
	ret, out := sliceForAppend(dst, HeaderLen+len(plaintext)+TagLen)
	out[0] = byte(typ)
	binary.BigEndian.PutUint64(out[1:HeaderLen], n)
	binary.BigEndian.PutUint64(s.send.nonce[4:], n)
	s.send.aead.Seal(out[HeaderLen:HeaderLen], s.send.nonce[:], plaintext, out[:HeaderLen])
	s.stats.sealed.Add(1)
	return ret, nil
}

// Open authenticates and decrypts msg, appends the plaintext to dst and
// returns the extended slice. It does not allocate when dst has capacity
// for len(msg)-Overhead more bytes. msg is not retained. To decrypt in
// place, call Open(msg[HeaderLen:HeaderLen], msg).
//
// Messages may arrive out of order within ReplayWindow. A message that is
// replayed, too old, forged or malformed is dropped, counted in Stats, and
// reported with ErrReplayed, ErrTooOld, ErrForged or ErrMalformed; the
// session stays usable. A valid Close message returns an error wrapping
// net.ErrClosed, as does every Open after it.
func (s *Session) Open(dst, msg []byte) ([]byte, error) {
	if len(msg) < Overhead || len(msg) > MaxMessage {
		s.stats.malformed.Add(1)
		return dst, ErrMalformed
	}
	typ := MessageType(msg[0])
	if typ != Data && !(typ == Close && len(msg) == Overhead) {
		s.stats.malformed.Add(1)
		return dst, ErrMalformed
	}
	n := binary.BigEndian.Uint64(msg[1:HeaderLen])
	if n == math.MaxUint64 {
		s.stats.malformed.Add(1)
		return dst, ErrMalformed
	}

	s.recv.mu.Lock()
	defer s.recv.mu.Unlock()
	if s.recv.closed {
		return dst, errPeerClosed
	}
	if err := s.recv.filter.check(n); err != nil {
		if err == ErrReplayed {
			s.stats.replayed.Add(1)
		} else {
			s.stats.tooOld.Add(1)
		}
		return dst, err
	}

	epoch := n >> rekeyShift
	var aead, newPrev cipher.AEAD
	var newKey [32]byte
	switch {
	case epoch == s.recv.epoch:
		aead = s.recv.cur
	case epoch+1 == s.recv.epoch:
		aead = s.recv.prev
	case epoch > s.recv.epoch && epoch-s.recv.epoch <= maxEpochSkip:
		// Derive forward; commit only once the message authenticates.
		newKey = s.recv.curKey
		newPrev = s.recv.cur
		for e := s.recv.epoch; e < epoch; e++ {
			if e > s.recv.epoch {
				newPrev = newGCM(&newKey)
			}
			newKey = rekey(&newKey)
		}
		aead = newGCM(&newKey)
	default:
		// Behind the previous epoch is behind the window, so the filter
		// refused it above; this is a nonce too far ahead.
		s.stats.forged.Add(1)
		return dst, ErrForged
	}
	if aead == nil {
		s.stats.forged.Add(1)
		return dst, ErrForged
	}

	binary.BigEndian.PutUint64(s.recv.nonce[4:], n)
	out, err := aead.Open(dst, s.recv.nonce[:], msg[HeaderLen:], msg[:HeaderLen])
	if err != nil {
		s.stats.forged.Add(1)
		return dst, ErrForged
	}
	if n < s.recv.filter.last {
		s.stats.late.Add(1)
	}
	s.recv.filter.accept(n)
	if epoch > s.recv.epoch {
		s.recv.epoch, s.recv.cur, s.recv.curKey, s.recv.prev = epoch, aead, newKey, newPrev
	}
	if typ == Close {
		s.recv.closed = true
		return dst, errPeerClosed
	}
	s.stats.opened.Add(1)
	return out, nil
}

// sliceForAppend extends in by n bytes, reusing its capacity when it can,
// and returns the whole slice and the n-byte tail (as in crypto/cipher).
func sliceForAppend(in []byte, n int) (head, tail []byte) {
	if total := len(in) + n; cap(in) >= total {
		head = in[:total]
	} else {
		head = make([]byte, total)
		copy(head, in)
	}
	tail = head[len(in):]
	return
}
