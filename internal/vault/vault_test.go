package vault

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ockam-go/ockam/internal/identity"
)

// testKDF keeps argon2id cheap in tests (production uses defaultKDF).
var testKDF = kdfParams{Time: 1, MemoryKiB: 64, Threads: 1}

func openTest(t *testing.T, dir string, pass string) *Vault {
	t.Helper()
	v, err := Open(dir, []byte(pass))
	if err != nil {
		t.Fatal(err)
	}
	v.kdf = testKDF
	return v
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRoundTrip(t *testing.T) {
	for _, pass := range []string{"", "correct horse"} {
		t.Run("passphrase="+pass, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "vault")
			v := openTest(t, dir, pass)
			s, err := v.Create("alice")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := v.Create("bob"); err != nil {
				t.Fatal(err)
			}
			got, err := v.Get("alice")
			if err != nil {
				t.Fatal(err)
			}
			if !got.Identity().Equal(s.Identity()) {
				t.Fatal("Get returned a different identity")
			}
			names, err := v.List()
			if err != nil || !slices.Equal(names, []string{"alice", "bob"}) {
				t.Fatalf("List = %v, %v; want [alice bob]", names, err)
			}
			// Public identities are readable without the passphrase.
			pub := openTest(t, dir, "")
			id, err := pub.PublicIdentity("alice")
			if err != nil || !id.Equal(s.Identity()) {
				t.Fatalf("PublicIdentity = %v, %v", id, err)
			}
			ids, err := pub.PublicIdentities()
			if err != nil || len(ids) != 2 {
				t.Fatalf("PublicIdentities = %v, %v", ids, err)
			}
			for p, want := range map[string]fs.FileMode{"alice.secret": 0o600, "alice.identity": 0o644} {
				fi, err := os.Stat(filepath.Join(dir, p))
				if err != nil || fi.Mode().Perm() != want {
					t.Errorf("%s mode = %v, %v; want %v", p, fi.Mode().Perm(), err, want)
				}
			}
			raw := readFile(t, filepath.Join(dir, "alice.secret"))
			seed := s.ExportSecret()
			if pass != "" && bytes.Contains(raw, seed[len(seed)-32:]) {
				t.Error("encrypted file contains the private key seed")
			}
			if _, err := v.Create("alice"); !errors.Is(err, fs.ErrExist) {
				t.Errorf("Create(existing) = %v, want fs.ErrExist", err)
			}
			if !bytes.Equal(readFile(t, filepath.Join(dir, "alice.secret")), raw) {
				t.Error("Create(existing) modified the file")
			}
			if err := v.Delete("alice"); err != nil {
				t.Fatal(err)
			}
			if _, err := v.Get("alice"); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("Get(deleted) = %v, want fs.ErrNotExist", err)
			}
			if _, err := v.PublicIdentity("alice"); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("PublicIdentity(deleted) = %v, want fs.ErrNotExist", err)
			}
			if err := v.Delete("alice"); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("Delete(deleted) = %v, want fs.ErrNotExist", err)
			}
		})
	}
}

func TestWrongPassphraseOrCorrupt(t *testing.T) {
	dir := t.TempDir()
	v := openTest(t, dir, "right")
	if _, err := v.Create("alice"); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "alice.secret")
	orig := readFile(t, p)

	_, err := openTest(t, dir, "wrong").Get("alice")
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "vault: wrong passphrase or corrupt file "+p) {
		t.Errorf("Get with wrong passphrase = %v, want ErrCorrupt naming the file", err)
	}
	_, err = openTest(t, dir, "").Get("alice")
	if !errors.Is(err, ErrPassphraseNeeded) || !strings.Contains(err.Error(), PassphraseEnv) {
		t.Errorf("Get without passphrase = %v, want ErrPassphraseNeeded naming %s", err, PassphraseEnv)
	}
	if !bytes.Equal(readFile(t, p), orig) {
		t.Fatal("failed reads modified the file")
	}

	// A file copied to another name does not open under that name.
	if err := os.WriteFile(filepath.Join(dir, "mallory.secret"), orig, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Get("mallory"); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Get(renamed file) = %v, want ErrCorrupt", err)
	}

	for name, data := range map[string][]byte{
		"garbage":   []byte("not a vault file"),
		"bitflip":   func() []byte { b := slices.Clone(orig); b[len(b)-1] ^= 1; return b }(),
		"truncated": orig[:len(orig)-5],
		"empty":     {},
	} {
		t.Run(name, func(t *testing.T) {
			if err := os.WriteFile(p, data, 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := v.Get("alice"); !errors.Is(err, ErrCorrupt) {
				t.Errorf("Get = %v, want ErrCorrupt", err)
			}
			if !bytes.Equal(readFile(t, p), data) {
				t.Error("corrupt file was modified")
			}
		})
	}
}

func TestOversizeFileRefused(t *testing.T) {
	dir := t.TempDir()
	v := openTest(t, dir, "")
	if err := os.WriteFile(filepath.Join(dir, "big.secret"), make([]byte, MaxFileBytes+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Get("big"); err == nil || !strings.Contains(err.Error(), "over the limit") {
		t.Errorf("Get(oversize) = %v, want size error", err)
	}
}

func TestInvalidNames(t *testing.T) {
	v := openTest(t, t.TempDir(), "")
	for _, name := range []string{"", ".", "..", "../x", "a/b", `a\b`, ".hidden", "a b", "é", strings.Repeat("a", 65), "x\x00"} {
		if _, err := v.Create(name); err == nil || !strings.Contains(err.Error(), "invalid name") {
			t.Errorf("Create(%q) = %v, want invalid name", name, err)
		}
		if _, err := v.Get(name); err == nil {
			t.Errorf("Get(%q) succeeded", name)
		}
		if _, err := v.PublicIdentity(name); err == nil {
			t.Errorf("PublicIdentity(%q) succeeded", name)
		}
		if err := v.Delete(name); err == nil {
			t.Errorf("Delete(%q) succeeded", name)
		}
	}
	if !ValidName(strings.Repeat("a", 64)) || !ValidName("A-z_0.9") {
		t.Error("ValidName rejects valid names")
	}
}

func TestFailedWriteKeepsPreviousFile(t *testing.T) {
	dir := t.TempDir()
	v := openTest(t, dir, "pw")
	first, err := v.Create("alice")
	if err != nil {
		t.Fatal(err)
	}
	before := readFile(t, filepath.Join(dir, "alice.secret"))

	second, err := identity.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	injected := errors.New("injected: disk full")
	testHookWrite = func(f *os.File, b []byte) (int, error) {
		n, _ := f.Write(b[:len(b)/2])
		return n, injected
	}
	t.Cleanup(func() { testHookWrite = nil })
	if err := v.Put("alice", second); !errors.Is(err, injected) {
		t.Fatalf("Put with failing write = %v, want injected error", err)
	}
	testHookWrite = nil

	if after := readFile(t, filepath.Join(dir, "alice.secret")); !bytes.Equal(after, before) {
		t.Fatal("failed write changed the previous file")
	}
	got, err := v.Get("alice")
	if err != nil || !got.Identity().Equal(first.Identity()) {
		t.Fatalf("Get after failed write = %v, %v; want the first secret", got, err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if want := []string{"alice.identity", "alice.secret"}; !slices.Equal(names, want) {
		t.Fatalf("directory holds %v, want %v (no temporary files)", names, want)
	}

	// A failing Create leaves nothing behind either.
	testHookWrite = func(*os.File, []byte) (int, error) { return 0, injected }
	if _, err := v.Create("bob"); !errors.Is(err, injected) {
		t.Fatalf("Create with failing write = %v", err)
	}
	testHookWrite = nil
	if names, _ := v.List(); !slices.Equal(names, []string{"alice"}) {
		t.Fatalf("List after failed Create = %v", names)
	}

	// And a successful Put replaces atomically.
	if err := v.Put("alice", second); err != nil {
		t.Fatal(err)
	}
	if got, err := v.Get("alice"); err != nil || !got.Identity().Equal(second.Identity()) {
		t.Fatalf("Get after Put = %v, %v", got, err)
	}
}

func FuzzDecodeFile(f *testing.F) {
	s, err := identity.Generate(nil)
	if err != nil {
		f.Fatal(err)
	}
	plain, err := sealFile("alice", s.ExportSecret(), nil, testKDF, nil)
	if err != nil {
		f.Fatal(err)
	}
	enc, err := sealFile("alice", s.ExportSecret(), []byte("pw"), testKDF, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(plain)
	f.Add(enc)
	f.Add([]byte{0x85})
	f.Fuzz(func(t *testing.T, b []byte) {
		env, err := decodeEnvelope(b)
		if err != nil {
			return
		}
		// Keep argon2 cheap: only try to decrypt with small parameters.
		if env.KDF != nil && (env.KDF.MemoryKiB > 1024 || env.KDF.Time > 2) {
			return
		}
		pt, err := openFile("alice", b, []byte("pw"))
		if err != nil {
			return
		}
		_, _ = identity.ImportSecret(pt)
	})
}

func TestDefaultKDF(t *testing.T) {
	if testing.Short() {
		t.Skip("argon2id with 64 MiB")
	}
	v, err := Open(t.TempDir(), []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := v.Create("alice")
	if err != nil {
		t.Fatal(err)
	}
	got, err := v.Get("alice")
	if err != nil || !got.Identity().Equal(s.Identity()) {
		t.Fatalf("Get = %v, %v", got, err)
	}
}
