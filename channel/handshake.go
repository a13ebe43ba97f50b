package channel

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/flynn/noise"
	"github.com/fxamacker/cbor/v2"

	"github.com/ockam-go/ockam/internal/identity"
)

var cipherSuite = noise.NewCipherSuite(noise.DH25519, noise.CipherAESGCM, noise.HashSHA256)

// hsState is the position of a Handshake in the XX exchange.
type hsState uint8

const (
	stInitiatorWrite1 hsState = iota // initiator: Step(nil) -> msg1
	stInitiatorRead2                 // initiator: Step(msg2) -> msg3, done
	stResponderRead1                 // responder: Step(msg1) -> msg2
	stResponderRead3                 // responder: Step(msg3) -> nil, done
	stDone
	stFailed
)

// Handshake is the state machine of one XX handshake. It is not safe for
// concurrent use: one goroutine drives it with Step until Done or an error.
// Any error is sticky: every later Step returns it again.
type Handshake struct {
	cfg       config
	initiator bool
	state     hsState
	err       error
	hs        *noise.HandshakeState
	static    noise.DHKey
	session   *Session

	// testPayload, when set by tests, replaces payload to let them send
	// forged identities and attestations.
	testPayload func(h *Handshake) ([]byte, error)
}

// NewInitiator returns the handshake of the end that sends the first
// message. Its first Step takes nil and returns Handshake1.
func NewInitiator(cfg *Config) (*Handshake, error) { return newHandshake(cfg, true, ProtocolVersion) }

// NewResponder returns the handshake of the end that receives Handshake1.
func NewResponder(cfg *Config) (*Handshake, error) { return newHandshake(cfg, false, ProtocolVersion) }

func newHandshake(c *Config, initiator bool, version byte) (*Handshake, error) {
	cfg, err := c.validate()
	if err != nil {
		return nil, err
	}
	h := &Handshake{cfg: cfg, initiator: initiator, state: stResponderRead1}
	if initiator {
		h.state = stInitiatorWrite1
		// The responder builds its Noise state once it has read the version.
		if err := h.startNoise(version); err != nil {
			return nil, err
		}
	}
	return h, nil
}

// startNoise generates the channel's fresh static key and the Noise state.
func (h *Handshake) startNoise(version byte) error {
	static, err := cipherSuite.GenerateKeypair(h.cfg.rand)
	if err != nil {
		return fmt.Errorf("channel: generate static key: %w", err)
	}
	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite:   cipherSuite,
		Random:        h.cfg.rand,
		Pattern:       noise.HandshakeXX,
		Initiator:     h.initiator,
		Prologue:      prologue(version),
		StaticKeypair: static,
	})
	if err != nil {
		return fmt.Errorf("channel: start noise: %w", err)
	}
	h.static, h.hs = static, hs
	return nil
}

// Done reports whether the handshake completed successfully.
func (h *Handshake) Done() bool { return h.state == stDone }

// Err returns the error that failed the handshake, or nil.
func (h *Handshake) Err() error { return h.err }

// Session returns the data-phase session once Done.
func (h *Handshake) Session() (*Session, error) {
	switch h.state {
	case stDone:
		return h.session, nil
	case stFailed:
		return nil, h.err
	}
	return nil, errors.New("channel: handshake not complete")
}

// Step consumes the peer's last handshake message (nil for the initiator's
// first call) and returns the next message to send, or nil when there is
// none. in is not retained; the returned slice is owned by the caller.
func (h *Handshake) Step(in []byte) ([]byte, error) {
	switch h.state {
	case stFailed:
		return nil, h.err
	case stDone:
		return nil, errors.New("channel: handshake already complete")
	}
	out, err := h.step(in)
	if err != nil {
		h.fail(err)
		return nil, err
	}
	return out, nil
}

func (h *Handshake) fail(err error) {
	h.state, h.err = stFailed, err
	h.hs = nil
	clear(h.static.Private)
}

func (h *Handshake) step(in []byte) ([]byte, error) {
	if h.state == stInitiatorWrite1 {
		if len(in) != 0 {
			return nil, errors.New("channel: initiator's first Step takes no input")
		}
		return h.writeMsg1()
	}
	if len(in) > MaxHandshakeMessage {
		return nil, fmt.Errorf("channel: handshake message of %d bytes exceeds MaxHandshakeMessage (%d)", len(in), MaxHandshakeMessage)
	}
	want := map[hsState]MessageType{stInitiatorRead2: Handshake2, stResponderRead1: Handshake1, stResponderRead3: Handshake3}[h.state]
	if got := TypeOf(in); got != want {
		return nil, fmt.Errorf("channel: got %v message, want %v", got, want)
	}
	in = in[1:]
	switch h.state {
	case stResponderRead1:
		return h.readMsg1(in)
	case stInitiatorRead2:
		return h.readMsg2(in)
	default:
		return nil, h.readMsg3(in)
	}
}

func (h *Handshake) writeMsg1() ([]byte, error) {
	out, _, _, err := h.hs.WriteMessage([]byte{byte(Handshake1), ProtocolVersion}, nil)
	if err != nil {
		return nil, fmt.Errorf("channel: write handshake1: %w", err)
	}
	h.state = stInitiatorRead2
	return out, nil
}

func (h *Handshake) readMsg1(in []byte) ([]byte, error) {
	if len(in) != 1+keyLen {
		return nil, fmt.Errorf("channel: handshake1 is %d bytes, want %d", len(in)+1, 2+keyLen)
	}
	if in[0] != ProtocolVersion {
		return nil, fmt.Errorf("channel: unsupported protocol version %d (want %d)", in[0], ProtocolVersion)
	}
	if err := h.startNoise(in[0]); err != nil {
		return nil, err
	}
	if _, _, _, err := h.hs.ReadMessage(nil, in[1:]); err != nil {
		return nil, fmt.Errorf("channel: read handshake1: %w", err)
	}
	payload, err := h.payload()
	if err != nil {
		return nil, err
	}
	out, _, _, err := h.hs.WriteMessage([]byte{byte(Handshake2)}, payload)
	if err != nil {
		return nil, fmt.Errorf("channel: write handshake2: %w", err)
	}
	h.state = stResponderRead3
	return out, nil
}

func (h *Handshake) readMsg2(in []byte) ([]byte, error) {
	payload, _, _, err := h.hs.ReadMessage(nil, in)
	if err != nil {
		return nil, fmt.Errorf("channel: read handshake2: %w", err)
	}
	peer, err := h.verifyPeer(payload)
	if err != nil {
		return nil, err
	}
	own, err := h.payload()
	if err != nil {
		return nil, err
	}
	out, cs1, cs2, err := h.hs.WriteMessage([]byte{byte(Handshake3)}, own)
	if err != nil {
		return nil, fmt.Errorf("channel: write handshake3: %w", err)
	}
	h.finish(peer, cs1, cs2)
	return out, nil
}

func (h *Handshake) readMsg3(in []byte) error {
	payload, cs1, cs2, err := h.hs.ReadMessage(nil, in)
	if err != nil {
		return fmt.Errorf("channel: read handshake3: %w", err)
	}
	peer, err := h.verifyPeer(payload)
	if err != nil {
		return err
	}
	h.finish(peer, cs1, cs2)
	return nil
}

// finish builds the session from the split: cs1 carries initiator to
// responder traffic, cs2 the other direction.
func (h *Handshake) finish(peer *identity.Identity, cs1, cs2 *noise.CipherState) {
	send, recv := cs1.UnsafeKey(), cs2.UnsafeKey()
	if !h.initiator {
		send, recv = recv, send
	}
	h.session = newSession(send, recv, peer, h.initiator, h.hs.ChannelBinding())
	clear(send[:])
	clear(recv[:])
	h.state = stDone
	h.hs = nil
	clear(h.static.Private)
}

// handshakePayload is the CBOR array [identity export, attestation].
type handshakePayload struct {
	_           struct{} `cbor:",toarray"`
	Identity    []byte
	Attestation []byte
}

// payload returns this end's handshake payload: its identity and an
// attestation of the Noise static key.
func (h *Handshake) payload() ([]byte, error) {
	if h.testPayload != nil {
		return h.testPayload(h)
	}
	att, err := h.cfg.identity.Attest(h.static.Public, h.cfg.now().Add(h.cfg.ttl))
	if err != nil {
		return nil, fmt.Errorf("channel: %w", err)
	}
	b, err := encMode.Marshal(handshakePayload{Identity: h.cfg.identity.Identity().Export(), Attestation: att})
	if err != nil {
		return nil, fmt.Errorf("channel: encode handshake payload: %w", err)
	}
	return b, nil
}

var encMode = func() cbor.EncMode {
	em, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	return em
}()

var decMode = identity.StrictDecMode

// decodePayload parses a handshake payload strictly (canonical, no
// trailing bytes).
func decodePayload(b []byte) (*handshakePayload, error) {
	if len(b) > maxHandshakePayload {
		return nil, fmt.Errorf("channel: handshake payload of %d bytes exceeds %d", len(b), maxHandshakePayload)
	}
	var p handshakePayload
	if err := decMode.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("channel: malformed handshake payload: %w", err)
	}
	if re, err := encMode.Marshal(p); err != nil || !bytes.Equal(re, b) {
		return nil, errors.New("channel: malformed handshake payload: not canonical")
	}
	return &p, nil
}

// verifyPeer authenticates the peer: its identity is well formed and
// self-signed, it attests the Noise static key this handshake saw, the
// attestation is current, and only then is the trust policy asked.
func (h *Handshake) verifyPeer(payload []byte) (*identity.Identity, error) {
	p, err := decodePayload(payload)
	if err != nil {
		return nil, err
	}
	id, err := identity.Import(p.Identity)
	if err != nil {
		return nil, fmt.Errorf("channel: peer identity: %w", err)
	}
	if err := identity.VerifyAttestation(id, p.Attestation, h.hs.PeerStatic(), h.cfg.now()); err != nil {
		return nil, fmt.Errorf("channel: peer %s: %w", id.Identifier(), err)
	}
	if err := h.cfg.trust(id.Identifier()); err != nil {
		return nil, &UntrustedError{Peer: id.Identifier(), Err: err}
	}
	return id, nil
}

// UntrustedError is returned by a handshake whose peer authenticated but is
// not trusted. Err is the trust policy's reason, for the local log only: it
// may name local configuration that the peer has no business reading.
type UntrustedError struct {
	Peer identity.Identifier
	Err  error
}

func (e *UntrustedError) Error() string {
	return fmt.Sprintf("channel: peer %s is not trusted: %v", e.Peer, e.Err)
}

func (e *UntrustedError) Unwrap() error { return e.Err }
