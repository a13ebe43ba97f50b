package identity

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func mustGenerate(t testing.TB) *Secret {
	t.Helper()
	s, err := Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestIdentifierText(t *testing.T) {
	s := mustGenerate(t)
	id := s.Identity().Identifier()
	str := id.String()
	if len(str) != 65 || str[0] != 'I' || strings.ToLower(str[1:]) != str[1:] {
		t.Fatalf("String() = %q, want I + 64 lowercase hex", str)
	}
	if got := id.Short(); got != str[:17] {
		t.Errorf("Short() = %q, want %q", got, str[:17])
	}
	got, err := ParseIdentifier(str)
	if err != nil || got != id {
		t.Fatalf("ParseIdentifier(String()) = %v, %v; want %v", got, err, id)
	}
	if id.IsZero() || !(Identifier{}).IsZero() {
		t.Error("IsZero wrong")
	}
	j, err := json.Marshal(map[string]Identifier{"id": id})
	if err != nil {
		t.Fatal(err)
	}
	var back map[string]Identifier
	if err := json.Unmarshal(j, &back); err != nil || back["id"] != id {
		t.Fatalf("JSON round trip: %v, %v", back, err)
	}
	for _, bad := range []string{"", "I", str[:64], str + "0", "i" + str[1:], strings.ToUpper(str), "I" + strings.Repeat("g", 64), "X" + str[1:]} {
		if _, err := ParseIdentifier(bad); err == nil || !strings.HasPrefix(err.Error(), "identity: ") {
			t.Errorf("ParseIdentifier(%q) err = %v, want identity: error", bad, err)
		}
	}
}

func TestIdentifierIsHashOfFirstChange(t *testing.T) {
	s := mustGenerate(t)
	var hist []signedChange
	if err := decMode.Unmarshal(s.Identity().Export(), &hist); err != nil {
		t.Fatal(err)
	}
	if want := Identifier(sha256.Sum256(hist[0].Data)); s.Identity().Identifier() != want {
		t.Fatalf("identifier %v, want sha256(first change) %v", s.Identity().Identifier(), want)
	}
}

func TestImportRoundTrip(t *testing.T) {
	s := mustGenerate(t)
	exp := s.Identity().Export()
	got, err := Import(exp)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(s.Identity()) || got.Identifier() != s.Identifier() || !got.PublicKey().Equal(s.Identity().PublicKey()) {
		t.Fatalf("imported identity differs")
	}
	exp[0] ^= 0xff // Export returns a copy.
	if !bytes.Equal(got.Export(), s.Identity().Export()) {
		t.Fatal("Export aliases internal state")
	}
}

func TestImportRejects(t *testing.T) {
	s := mustGenerate(t)
	good := s.Identity().Export()
	other := mustGenerate(t)

	var hist []signedChange
	if err := decMode.Unmarshal(good, &hist); err != nil {
		t.Fatal(err)
	}
	enc := func(v any) []byte {
		b, err := encMode.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	badSig := append([]byte(nil), hist[0].Signature...)
	badSig[0] ^= 1
	var otherHist []signedChange
	if err := decMode.Unmarshal(other.Identity().Export(), &otherHist); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, nil},
		{"oversize", make([]byte, MaxIdentityBytes+1), nil},
		{"trailing byte", append(append([]byte(nil), good...), 0), nil},
		{"truncated", good[:len(good)-1], nil},
		{"bad signature", enc([]signedChange{{Data: hist[0].Data, Signature: badSig}}), ErrBadSignature},
		{"signature of other identity", enc([]signedChange{{Data: hist[0].Data, Signature: otherHist[0].Signature}}), ErrBadSignature},
		{"two changes", enc([]signedChange{hist[0], hist[0]}), nil},
		{"no changes", enc([]signedChange{}), nil},
		{"not an array", enc(map[string]int{"a": 1}), nil},
		{"wrong version", func() []byte {
			var rec changeRecord
			if err := decMode.Unmarshal(hist[0].Data, &rec); err != nil {
				t.Fatal(err)
			}
			rec.Version = 2
			return enc([]signedChange{{Data: enc(rec), Signature: hist[0].Signature}})
		}(), nil},
		{"non-canonical length", func() []byte {
			// Re-encode the outer array header with a 1-byte length (0x98 0x01)
			// instead of the canonical 0x81.
			return append([]byte{0x98, 0x01}, good[1:]...)
		}(), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Import(tt.in)
			if err == nil {
				t.Fatal("Import succeeded, want error")
			}
			if !strings.HasPrefix(err.Error(), "identity: ") {
				t.Errorf("error %q lacks identity: prefix", err)
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("error %v, want %v", err, tt.want)
			}
		})
	}
}

func TestSecretRoundTrip(t *testing.T) {
	s := mustGenerate(t)
	b := s.ExportSecret()
	got, err := ImportSecret(b)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Identity().Equal(s.Identity()) || !got.priv.Equal(s.priv) {
		t.Fatal("secret round trip differs")
	}
	// A secret whose key does not match its identity is refused.
	other := mustGenerate(t)
	mixed, err := encMode.Marshal(exportedSecret{Version: secretVersion, Identity: s.identity.raw, Seed: other.priv.Seed()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ImportSecret(mixed); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("ImportSecret(mismatched) = %v, want mismatch error", err)
	}
	if _, err := ImportSecret(append(b, 0)); err == nil {
		t.Fatal("ImportSecret accepted trailing byte")
	}
}

func TestSecretNeverPrinted(t *testing.T) {
	s := mustGenerate(t)
	seed := s.priv.Seed()
	secrets := []string{
		fmt.Sprintf("%x", []byte(s.priv)), fmt.Sprintf("%x", seed),
		fmt.Sprintf("%v", []byte(s.priv)), fmt.Sprintf("%d", seed),
	}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x", "%X", "%q", "%d", "%T %v"} {
		for _, v := range []any{s, *s, []*Secret{s}, struct{ S Secret }{*s}, struct{ S *Secret }{s}} {
			out := fmt.Sprintf(verb, v)
			for _, sec := range secrets {
				if strings.Contains(out, sec) {
					t.Fatalf("Sprintf(%q) leaks the private key: %s", verb, out)
				}
			}
		}
	}
	if got := s.String(); !strings.Contains(got, "redacted") || !strings.Contains(got, s.Identifier().String()) {
		t.Errorf("String() = %q, want identifier and redaction marker", got)
	}
}

func TestAttestation(t *testing.T) {
	s := mustGenerate(t)
	other := mustGenerate(t)
	static := bytes.Repeat([]byte{7}, 32)
	static2 := bytes.Repeat([]byte{8}, 32)
	now := time.Unix(1_700_000_000, 0)
	att, err := s.Attest(static, now.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyAttestation(s.Identity(), att, static, now); err != nil {
		t.Fatalf("valid attestation refused: %v", err)
	}
	flipped := append([]byte(nil), att...)
	flipped[len(flipped)-1] ^= 1

	// An attestation signed by s but claiming to be for other's identifier.
	forgedBody, _ := encMode.Marshal(attestationBody{Version: attestationVersion, Identifier: other.Identifier().Bytes(), Static: static, Expires: now.Add(time.Minute).Unix()})
	forged, _ := encMode.Marshal(signedAttestation{Data: forgedBody, Signature: ed25519.Sign(s.priv, attestMessage(forgedBody))})

	tests := []struct {
		name   string
		id     *Identity
		att    []byte
		static []byte
		now    time.Time
		want   error
	}{
		{"expired", s.Identity(), att, static, now.Add(time.Minute), ErrExpired},
		{"different key", s.Identity(), att, static2, now, ErrKeyMismatch},
		{"other identity", other.Identity(), att, static, now, ErrBadSignature},
		{"bit flip", s.Identity(), flipped, static, now, ErrBadSignature},
		{"too large", s.Identity(), make([]byte, MaxAttestationBytes+1), static, now, ErrTooLarge},
		{"garbage", s.Identity(), []byte{0x82, 0x40}, static, now, ErrMalformed},
		{"trailing", s.Identity(), append(append([]byte(nil), att...), 0), static, now, ErrMalformed},
		{"identifier mismatch", s.Identity(), forged, static, now, ErrIdentifierMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := VerifyAttestation(tt.id, tt.att, tt.static, tt.now)
			if !errors.Is(err, tt.want) {
				t.Fatalf("VerifyAttestation = %v, want %v", err, tt.want)
			}
		})
	}
	if _, err := s.Attest(static[:31], now); err == nil {
		t.Error("Attest accepted a 31-byte key")
	}
}

func FuzzImport(f *testing.F) {
	s := mustGenerate(f)
	f.Add(s.Identity().Export())
	f.Add([]byte{})
	f.Add([]byte{0x81, 0x82, 0x40, 0x40})
	f.Fuzz(func(t *testing.T, b []byte) {
		id, err := Import(b)
		if err != nil {
			return
		}
		// Whatever is accepted round-trips exactly.
		if !bytes.Equal(id.Export(), b) {
			t.Fatalf("accepted input does not round-trip")
		}
	})
}

func FuzzImportSecret(f *testing.F) {
	s := mustGenerate(f)
	f.Add(s.ExportSecret())
	f.Add([]byte{0x83, 0x01, 0x40, 0x40})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = ImportSecret(b)
	})
}

func FuzzVerifyAttestation(f *testing.F) {
	s := mustGenerate(f)
	static := bytes.Repeat([]byte{7}, 32)
	now := time.Unix(1_700_000_000, 0)
	att, err := s.Attest(static, now.Add(time.Hour))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(att, static)
	f.Add([]byte{0x82, 0x40, 0x40}, static)
	id := s.Identity()
	f.Fuzz(func(t *testing.T, att, static []byte) {
		if err := VerifyAttestation(id, att, static, now); err == nil {
			// Only a genuine attestation by s may verify.
			var sa signedAttestation
			if decMode.Unmarshal(att, &sa) != nil || !ed25519.Verify(id.pub, attestMessage(sa.Data), sa.Signature) {
				t.Fatal("forged attestation verified")
			}
		}
	})
}
