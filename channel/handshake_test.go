package channel

import (
	"bytes"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ockam-go/ockam/internal/identity"
)

var testNow = time.Unix(1_700_000_000, 0)

func newSecret(t testing.TB) *identity.Secret {
	t.Helper()
	s, err := identity.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// pairConfigs returns configs for two identities that trust each other.
func pairConfigs(t testing.TB) (ci, cr *Config) {
	t.Helper()
	a, b := newSecret(t), newSecret(t)
	now := func() time.Time { return testNow }
	ci = &Config{Identity: a, Trust: TrustList(b.Identifier()), Now: now}
	cr = &Config{Identity: b, Trust: TrustList(a.Identifier()), Now: now}
	return ci, cr
}

// run drives both handshakes to completion and returns the first error.
func run(ini, resp *Handshake) error {
	m1, err := ini.Step(nil)
	if err != nil {
		return err
	}
	m2, err := resp.Step(m1)
	if err != nil {
		return err
	}
	m3, err := ini.Step(m2)
	if err != nil {
		return err
	}
	out, err := resp.Step(m3)
	if err != nil {
		return err
	}
	if out != nil {
		return errors.New("responder's last Step returned a message")
	}
	return nil
}

func newHandshakes(t testing.TB, ci, cr *Config) (ini, resp *Handshake) {
	t.Helper()
	ini, err := NewInitiator(ci)
	if err != nil {
		t.Fatal(err)
	}
	resp, err = NewResponder(cr)
	if err != nil {
		t.Fatal(err)
	}
	return ini, resp
}

// sessionPair returns two connected sessions: initiator and responder.
func sessionPair(t testing.TB) (si, sr *Session) {
	t.Helper()
	ci, cr := pairConfigs(t)
	ini, resp := newHandshakes(t, ci, cr)
	if err := run(ini, resp); err != nil {
		t.Fatal(err)
	}
	si, err := ini.Session()
	if err != nil {
		t.Fatal(err)
	}
	sr, err = resp.Session()
	if err != nil {
		t.Fatal(err)
	}
	return si, sr
}

func TestHandshake(t *testing.T) {
	ci, cr := pairConfigs(t)
	ciCopy, crCopy := *ci, *cr
	ini, resp := newHandshakes(t, ci, cr)
	if _, err := ini.Session(); err == nil {
		t.Error("Session before Done succeeded")
	}
	m1, err := ini.Step(nil)
	if err != nil {
		t.Fatal(err)
	}
	if TypeOf(m1) != Handshake1 || m1[1] != ProtocolVersion || len(m1) != 2+32 {
		t.Fatalf("msg1 = %x, want type 1, version %d, 32-byte e", m1, ProtocolVersion)
	}
	m2, err := resp.Step(m1)
	if err != nil {
		t.Fatal(err)
	}
	if TypeOf(m2) != Handshake2 || bytes.Contains(m2, ci.Identity.Identity().Export()) || bytes.Contains(m2, cr.Identity.Identity().Export()) {
		t.Fatal("msg2 has wrong type or carries an identity in clear")
	}
	m3, err := ini.Step(m2)
	if err != nil {
		t.Fatal(err)
	}
	if !ini.Done() || resp.Done() || TypeOf(m3) != Handshake3 {
		t.Fatal("wrong Done state after msg3")
	}
	if out, err := resp.Step(m3); err != nil || out != nil || !resp.Done() {
		t.Fatalf("responder Step(msg3) = %x, %v", out, err)
	}
	si, _ := ini.Session()
	sr, _ := resp.Session()
	if si.Peer() != cr.Identity.Identifier() || sr.Peer() != ci.Identity.Identifier() {
		t.Fatal("wrong peer identifiers")
	}
	if !si.PeerIdentity().Equal(cr.Identity.Identity()) || !si.Initiator() || sr.Initiator() {
		t.Fatal("wrong peer identity or role")
	}
	if !bytes.Equal(si.ChannelBinding(), sr.ChannelBinding()) || len(si.ChannelBinding()) != 32 {
		t.Fatal("channel bindings differ")
	}
	for _, d := range []struct{ a, b *Session }{{si, sr}, {sr, si}} {
		msg, err := d.a.Seal(nil, []byte("hello"))
		if err != nil {
			t.Fatal(err)
		}
		if pt, err := d.b.Open(nil, msg); err != nil || string(pt) != "hello" {
			t.Fatalf("Open = %q, %v", pt, err)
		}
	}
	if _, err := ini.Step(nil); err == nil {
		t.Error("Step after Done succeeded")
	}
	same := func(a, b *Config) bool {
		return a.Identity == b.Identity && a.AttestationTTL == b.AttestationTTL && a.Rand == b.Rand &&
			(a.Now == nil) == (b.Now == nil) && (a.Trust == nil) == (b.Trust == nil)
	}
	if !same(ci, &ciCopy) || !same(cr, &crCopy) {
		t.Error("Config modified")
	}
	// A Config is reusable.
	ini2, resp2 := newHandshakes(t, ci, cr)
	if err := run(ini2, resp2); err != nil {
		t.Fatal(err)
	}
}

func TestConfigValidation(t *testing.T) {
	s := newSecret(t)
	for name, c := range map[string]*Config{
		"nil":          nil,
		"no identity":  {Trust: TrustEveryone},
		"no trust":     {Identity: s},
		"negative ttl": {Identity: s, Trust: TrustEveryone, AttestationTTL: -1},
	} {
		if _, err := NewInitiator(c); err == nil || !strings.HasPrefix(err.Error(), "channel: ") {
			t.Errorf("%s: NewInitiator = %v, want channel: error", name, err)
		}
		if _, err := NewResponder(c); err == nil {
			t.Errorf("%s: NewResponder succeeded", name)
		}
	}
	if _, err := NewInitiator(&Config{Identity: s}); err == nil || !strings.Contains(err.Error(), "Trust") {
		t.Errorf("nil Trust error %v does not name Trust", err)
	}
}

func TestUntrustedRefused(t *testing.T) {
	t.Run("responder refuses initiator", func(t *testing.T) {
		ci, cr := pairConfigs(t)
		cr.Trust = TrustList(newSecret(t).Identifier())
		ini, resp := newHandshakes(t, ci, cr)
		err := run(ini, resp)
		want := "channel: peer " + ci.Identity.Identifier().String() + " is not trusted"
		if err == nil || !strings.HasPrefix(err.Error(), want) || !errors.Is(err, ErrUntrusted) {
			t.Fatalf("err = %v, want %q wrapping ErrUntrusted", err, want)
		}
		if resp.Done() {
			t.Fatal("responder done")
		}
		if _, err := resp.Session(); err == nil {
			t.Fatal("responder has a session")
		}
	})
	t.Run("initiator refuses responder", func(t *testing.T) {
		ci, cr := pairConfigs(t)
		ci.Trust = TrustList()
		ini, resp := newHandshakes(t, ci, cr)
		err := run(ini, resp)
		want := "channel: peer " + cr.Identity.Identifier().String() + " is not trusted"
		if err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Fatalf("err = %v, want %q", err, want)
		}
		if ini.Done() {
			t.Fatal("initiator done")
		}
	})
	t.Run("custom policy error", func(t *testing.T) {
		ci, cr := pairConfigs(t)
		policy := errors.New("revoked")
		cr.Trust = func(identity.Identifier) error { return policy }
		ini, resp := newHandshakes(t, ci, cr)
		if err := run(ini, resp); !errors.Is(err, policy) {
			t.Fatalf("err = %v, want policy error", err)
		}
	})
	t.Run("trust everyone", func(t *testing.T) {
		ci, cr := pairConfigs(t)
		ci.Trust, cr.Trust = TrustEveryone, TrustEveryone
		ini, resp := newHandshakes(t, ci, cr)
		if err := run(ini, resp); err != nil {
			t.Fatal(err)
		}
	})
}

// forgedPayload builds a handshake payload from the given identity and an
// attestation made by attester for key (the handshake's own static key if
// nil) expiring at expires.
func forgedPayload(id *identity.Identity, attester *identity.Secret, key []byte, expires time.Time) func(h *Handshake) ([]byte, error) {
	return func(h *Handshake) ([]byte, error) {
		k := key
		if k == nil {
			k = h.static.Public
		}
		att, err := attester.Attest(k, expires)
		if err != nil {
			return nil, err
		}
		return encMode.Marshal(handshakePayload{Identity: id.Export(), Attestation: att})
	}
}

func TestForgedPeerRefused(t *testing.T) {
	mallory := newSecret(t)
	otherKey := bytes.Repeat([]byte{9}, 32)
	later := testNow.Add(time.Hour)
	tests := []struct {
		name string
		// payload builds the forged payload, given the honest config.
		payload func(c *Config) func(h *Handshake) ([]byte, error)
		want    error
	}{
		{"attestation by another identity", func(c *Config) func(*Handshake) ([]byte, error) {
			return forgedPayload(c.Identity.Identity(), mallory, nil, later)
		}, identity.ErrBadSignature},
		{"attestation for a different key", func(c *Config) func(*Handshake) ([]byte, error) {
			return forgedPayload(c.Identity.Identity(), c.Identity, otherKey, later)
		}, identity.ErrKeyMismatch},
		{"expired attestation", func(c *Config) func(*Handshake) ([]byte, error) {
			return forgedPayload(c.Identity.Identity(), c.Identity, nil, testNow.Add(-time.Second))
		}, identity.ErrExpired},
		{"garbage payload", func(*Config) func(*Handshake) ([]byte, error) {
			return func(*Handshake) ([]byte, error) { return []byte("garbage"), nil }
		}, nil},
		{"trailing bytes in payload", func(c *Config) func(*Handshake) ([]byte, error) {
			f := forgedPayload(c.Identity.Identity(), c.Identity, nil, later)
			return func(h *Handshake) ([]byte, error) { b, err := f(h); return append(b, 0), err }
		}, nil},
	}
	for _, tt := range tests {
		for _, forger := range []string{"responder", "initiator"} {
			t.Run(tt.name+"/by "+forger, func(t *testing.T) {
				ci, cr := pairConfigs(t)
				ini, resp := newHandshakes(t, ci, cr)
				victim := ini
				if forger == "responder" {
					resp.testPayload = tt.payload(cr)
				} else {
					ini.testPayload = tt.payload(ci)
					victim = resp
				}
				err := run(ini, resp)
				if err == nil || !strings.HasPrefix(err.Error(), "channel: ") {
					t.Fatalf("forged handshake: err = %v", err)
				}
				if tt.want != nil && !errors.Is(err, tt.want) {
					t.Fatalf("err = %v, want %v", err, tt.want)
				}
				if victim.Done() || victim.Err() == nil {
					t.Fatal("victim did not fail")
				}
			})
		}
	}
	// The victim's clock, not the forger's, decides expiry.
	t.Run("peer clock ahead", func(t *testing.T) {
		ci, cr := pairConfigs(t)
		ci.AttestationTTL = time.Minute
		cr.Now = func() time.Time { return testNow.Add(2 * time.Minute) }
		ini, resp := newHandshakes(t, ci, cr)
		if err := run(ini, resp); !errors.Is(err, identity.ErrExpired) {
			t.Fatalf("err = %v, want ErrExpired", err)
		}
	})
}

func TestBadHandshakeMessages(t *testing.T) {
	// Produce genuine messages to mutate.
	ci, cr := pairConfigs(t)
	ini, resp := newHandshakes(t, ci, cr)
	m1, _ := ini.Step(nil)
	m2, _ := resp.Step(m1)
	m3, _ := ini.Step(m2)

	flip := func(b []byte, i int) []byte { c := bytes.Clone(b); c[i] ^= 0x01; return c }
	random := func(n int) []byte { b := make([]byte, n); rand.Read(b); return b }
	lowOrder := append([]byte{byte(Handshake1), ProtocolVersion}, make([]byte, 32)...) // all-zero e

	type stage int
	const (
		atMsg1 stage = iota // responder reads msg1
		atMsg2              // initiator reads msg2
		atMsg3              // responder reads msg3
	)
	tests := []struct {
		name  string
		stage stage
		in    []byte
	}{
		{"msg1 empty", atMsg1, nil},
		{"msg1 type only", atMsg1, m1[:1]},
		{"msg1 truncated", atMsg1, m1[:len(m1)-1]},
		{"msg1 trailing payload", atMsg1, append(bytes.Clone(m1), 0)},
		{"msg1 wrong type", atMsg1, append([]byte{byte(Handshake2)}, m1[1:]...)},
		{"msg1 wrong version", atMsg1, flip(m1, 1)},
		{"msg1 low-order key", atMsg1, lowOrder},
		{"msg1 oversize", atMsg1, append(bytes.Clone(m1), make([]byte, MaxHandshakeMessage)...)},
		{"msg1 garbage", atMsg1, random(200)},
		{"msg2 empty", atMsg2, nil},
		{"msg2 truncated e", atMsg2, m2[:20]},
		{"msg2 truncated s", atMsg2, m2[:1+32+20]},
		{"msg2 truncated payload", atMsg2, m2[:len(m2)-1]},
		{"msg2 flip e", atMsg2, flip(m2, 1)},
		{"msg2 flip s", atMsg2, flip(m2, 40)},
		{"msg2 flip payload", atMsg2, flip(m2, len(m2)-20)},
		{"msg2 flip tag", atMsg2, flip(m2, len(m2)-1)},
		{"msg2 wrong type", atMsg2, append([]byte{byte(Handshake3)}, m2[1:]...)},
		{"msg2 oversize", atMsg2, make([]byte, MaxHandshakeMessage+1)},
		{"msg2 garbage", atMsg2, append([]byte{byte(Handshake2)}, random(300)...)},
		{"msg3 empty", atMsg3, nil},
		{"msg3 truncated", atMsg3, m3[:len(m3)-1]},
		{"msg3 truncated s", atMsg3, m3[:30]},
		{"msg3 flip s", atMsg3, flip(m3, 5)},
		{"msg3 flip payload", atMsg3, flip(m3, len(m3)-30)},
		{"msg3 wrong type", atMsg3, append([]byte{byte(Data)}, m3[1:]...)},
		{"msg3 garbage", atMsg3, append([]byte{byte(Handshake3)}, random(300)...)},
		{"msg3 replayed msg1", atMsg3, m1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ci, cr := pairConfigs(t)
			ini, resp := newHandshakes(t, ci, cr)
			g1, err := ini.Step(nil)
			if err != nil {
				t.Fatal(err)
			}
			victim, good := resp, g1
			if tt.stage >= atMsg2 {
				g2, err := resp.Step(g1)
				if err != nil {
					t.Fatal(err)
				}
				victim, good = ini, g2
				if tt.stage == atMsg3 {
					g3, err := ini.Step(g2)
					if err != nil {
						t.Fatal(err)
					}
					victim, good = resp, g3
				}
			}
			out, err := victim.Step(tt.in)
			if err == nil || out != nil {
				t.Fatalf("Step(bad) = %x, %v; want error", out, err)
			}
			if !strings.HasPrefix(err.Error(), "channel: ") {
				t.Errorf("error %q lacks channel: prefix", err)
			}
			// Sticky: the genuine message is refused with the same error.
			if _, err2 := victim.Step(good); err2 != err {
				t.Fatalf("Step after failure = %v, want sticky %v", err2, err)
			}
			if victim.Done() || victim.Err() != err {
				t.Fatal("failed handshake reports Done or lost its error")
			}
			if _, err := victim.Session(); err != victim.Err() {
				t.Fatalf("Session after failure = %v", err)
			}
		})
	}
	t.Run("initiator first step with input", func(t *testing.T) {
		ini, _ := newHandshakes(t, ci, cr)
		if _, err := ini.Step([]byte{1}); err == nil {
			t.Fatal("accepted input on first step")
		}
	})
}
