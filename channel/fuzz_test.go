package channel

import (
	"bytes"
	"testing"
	"time"

	"github.com/ockam-go/ockam/internal/identity"
)

// fuzzSecrets are generated once: identity generation is not what is fuzzed.
var fuzzA, fuzzB *identity.Secret

func fuzzConfigs(f *testing.F) (ci, cr *Config) {
	if fuzzA == nil {
		fuzzA, fuzzB = newSecret(f), newSecret(f)
	}
	now := func() time.Time { return testNow }
	return &Config{Identity: fuzzA, Trust: TrustEveryone, Now: now},
		&Config{Identity: fuzzB, Trust: TrustEveryone, Now: now}
}

// genuine returns the messages of one genuine handshake.
func genuine(f *testing.F, ci, cr *Config) (m1, m2, m3 []byte) {
	ini, resp := newHandshakes(f, ci, cr)
	m1, _ = ini.Step(nil)
	m2, _ = resp.Step(m1)
	m3, _ = ini.Step(m2)
	return
}

// FuzzResponder feeds arbitrary Handshake1 and Handshake3 messages to a
// responder.
func FuzzResponder(f *testing.F) {
	ci, cr := fuzzConfigs(f)
	m1, _, m3 := genuine(f, ci, cr)
	f.Add(m1, m3)
	f.Add([]byte{1, 1}, []byte{3})
	f.Fuzz(func(t *testing.T, in1, in3 []byte) {
		resp, err := NewResponder(cr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := resp.Step(in1); err != nil {
			if _, err2 := resp.Step(in1); err2 != err {
				t.Fatal("failure not sticky")
			}
			return
		}
		// The genuine msg3 belongs to a different ephemeral: it must fail,
		// like any other msg3 an attacker can make without the keys.
		if _, err := resp.Step(in3); err == nil {
			t.Fatal("responder accepted a msg3 not made for its msg2")
		}
	})
}

// FuzzInitiator feeds arbitrary Handshake2 messages to an initiator.
func FuzzInitiator(f *testing.F) {
	ci, cr := fuzzConfigs(f)
	_, m2, _ := genuine(f, ci, cr)
	f.Add(m2)
	f.Add([]byte{2})
	f.Fuzz(func(t *testing.T, in2 []byte) {
		ini, err := NewInitiator(ci)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ini.Step(nil); err != nil {
			t.Fatal(err)
		}
		if _, err := ini.Step(in2); err == nil {
			t.Fatal("initiator accepted a msg2 not made for its msg1")
		}
	})
}

// FuzzDecodePayload checks the handshake payload decoder.
func FuzzDecodePayload(f *testing.F) {
	s := newSecret(f)
	att, _ := s.Attest(make([]byte, 32), testNow)
	good, _ := encMode.Marshal(handshakePayload{Identity: s.Identity().Export(), Attestation: att})
	f.Add(good)
	f.Add([]byte{0x82, 0x40, 0x40})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := decodePayload(b)
		if err != nil {
			return
		}
		re, err := encMode.Marshal(p)
		if err != nil || !bytes.Equal(re, b) {
			t.Fatal("accepted payload does not round-trip")
		}
	})
}

// FuzzOpen feeds arbitrary messages to Open. Nothing the fuzzer makes can
// authenticate, so every input must be refused and counted exactly once.
func FuzzOpen(f *testing.F) {
	var k1, k2 [32]byte
	k2[0] = 1
	sender := newSession(k1, k2, nil, true, nil)
	msg, _ := sender.Seal(nil, []byte("hello"))
	closeMsg, _ := sender.SealClose(nil)
	f.Add(msg)
	f.Add(closeMsg)
	f.Add([]byte{4, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		// The receiver's key differs from the sender's seeds, so seeds and
		// mutations alike must be refused.
		r := newSession(k2, k2, nil, false, nil)
		out, err := r.Open(nil, in)
		if err == nil || len(out) != 0 {
			t.Fatalf("Open accepted %x", in)
		}
		st := r.Stats()
		if st.Forged+st.Malformed+st.Replayed+st.TooOld != 1 || st.Opened != 0 {
			t.Fatalf("refusal counted wrongly: %+v (%v)", st, err)
		}
	})
}
