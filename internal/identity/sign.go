package identity

import (
	"crypto/ed25519"
	"errors"
	"strings"
)

// Sign signs msg with the identity key, for the purpose named by context
// (for example "ockam-go/relay/register/v1"). Contexts keep a signature made
// for one purpose from being accepted for another; they must not contain a
// NUL byte. The signed bytes are context || 0x00 || msg.
func (s *Secret) Sign(context string, msg []byte) []byte {
	return ed25519.Sign(s.priv, signedMessage(context, msg))
}

// Verify checks a signature made by Sign with the same context.
func (i *Identity) Verify(context string, msg, sig []byte) error {
	if len(sig) != ed25519.SignatureSize || !ed25519.Verify(i.pub, signedMessage(context, msg), sig) {
		return ErrBadSignature
	}
	return nil
}

func signedMessage(context string, msg []byte) []byte {
	if strings.IndexByte(context, 0) >= 0 {
		panic(errors.New("identity: signing context contains NUL"))
	}
	b := make([]byte, 0, len(context)+1+len(msg))
	b = append(b, context...)
	b = append(b, 0)
	return append(b, msg...)
}
