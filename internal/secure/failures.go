package secure

import (
	"errors"
	"sync/atomic"

	"github.com/ockam-go/ockam/channel"
)

// Reasons a handshake failed, as HandshakeFailures counts them.
const (
	FailTimeout     = "timeout"     // no answer in time (either side)
	FailUnreachable = "unreachable" // the route has no listener: error reply, unknown notice, or not sendable
	FailRefused     = "refused"     // the listener refused this node's identity
	FailUntrusted   = "untrusted"   // this node did not trust the peer's identity
	FailMalformed   = "malformed"   // a handshake message that did not verify or parse
	FailShed        = "shed"        // a listener at its limit of handshakes in progress
)

var failReasons = [...]string{FailTimeout, FailUnreachable, FailRefused, FailUntrusted, FailMalformed, FailShed}

// failures counts failed handshakes by reason (the index in failReasons).
type failures [len(failReasons)]atomic.Uint64

// failReason classifies a handshake step's error.
func failReason(err error) string {
	if u := (*channel.UntrustedError)(nil); errors.As(err, &u) {
		return FailUntrusted
	}
	return FailMalformed
}

func (m *Manager) failed(reason string) {
	for i, r := range failReasons {
		if r == reason {
			m.fails[i].Add(1)
			return
		}
	}
}

// HandshakeFailures returns how many handshakes failed, by reason (every
// reason is present).
func (m *Manager) HandshakeFailures() map[string]uint64 {
	out := make(map[string]uint64, len(failReasons))
	for i, r := range failReasons {
		out[r] = m.fails[i].Load()
	}
	return out
}
