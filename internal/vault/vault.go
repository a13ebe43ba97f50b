// Package vault stores identity secrets as files in a directory (the node
// runtime uses $OCKAM_HOME/vault), optionally encrypted at rest with a
// passphrase.
//
// Layout, one pair of files per name:
//
//	NAME.secret    0600  the secret (private key), see file.go for the format
//	NAME.identity  0644  the public identity (identity.Identity.Export bytes)
//
// Public identity files are readable without the passphrase, so a node can
// list the identities created under the same home and trust them.
//
// Every file is written atomically: a temporary file in the same directory,
// fsync, rename (or hard link for create-if-absent), fsync of the directory.
// A failed write leaves the previous file intact and no temporary file.
// Files that fail to decode or decrypt are reported, never overwritten.
package vault

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/ockam-go/ockam/internal/atomicfile"
	"github.com/ockam-go/ockam/internal/identity"
)

// MaxFileBytes bounds every file the vault reads; larger files are refused
// before they are read.
const MaxFileBytes = 64 << 10

// PassphraseEnv is the environment variable the node runtime reads the
// vault passphrase from. The vault itself never reads the environment; the
// name appears in errors so that users know what to set.
const PassphraseEnv = "OCKAM_VAULT_PASSPHRASE"

const (
	secretExt   = ".secret"
	identityExt = ".identity"
	tempPrefix  = ".tmp-"
)

// Errors callers may branch on. Missing names wrap fs.ErrNotExist and
// existing names on Create wrap fs.ErrExist.
var (
	// ErrCorrupt: the file could not be decrypted or decoded. With a
	// passphrase this usually means the passphrase is wrong. The file is
	// left untouched; do not retry without a different passphrase.
	ErrCorrupt = errors.New("vault: wrong passphrase or corrupt file")
	// ErrPassphraseNeeded: the secret is encrypted and the vault was opened
	// without a passphrase. Reopen with one (OCKAM_VAULT_PASSPHRASE).
	ErrPassphraseNeeded = errors.New("vault: secret is encrypted: a passphrase is needed (set " + PassphraseEnv + ")")
)

// Vault is a directory of named identity secrets. Its methods are safe for
// concurrent use; concurrent writers of one name are serialised by the file
// system (the last rename wins; Create never replaces).
type Vault struct {
	dir        string
	passphrase []byte
	kdf        kdfParams // parameters for newly written encrypted files
}

// Open opens (creating it with mode 0700 if needed) the vault in dir. With a
// non-empty passphrase, new secrets are encrypted at rest with a key derived
// from it (argon2id) and encrypted secrets can be read; with an empty one,
// secrets are written in clear (file mode 0600 is the only protection) and
// encrypted secrets cannot be read. The passphrase is copied.
func Open(dir string, passphrase []byte) (*Vault, error) {
	if dir == "" {
		return nil, errors.New("vault: open: empty directory name")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("vault: open: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("vault: open: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("vault: open: %s is not a directory", dir)
	}
	return &Vault{dir: dir, passphrase: slices.Clone(passphrase), kdf: defaultKDF}, nil
}

// Dir returns the vault's directory.
func (v *Vault) Dir() string { return v.dir }

// Encrypted reports whether new secrets are encrypted at rest.
func (v *Vault) Encrypted() bool { return len(v.passphrase) > 0 }

// ValidName reports whether name is a valid secret name:
// 1 to 64 characters from [A-Za-z0-9_.-], not starting with a dot (which
// also excludes "." and "..").
func ValidName(name string) bool {
	if len(name) == 0 || len(name) > 64 || name[0] == '.' {
		return false
	}
	for _, c := range []byte(name) {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_', c == '.', c == '-':
		default:
			return false
		}
	}
	return true
}

func checkName(op, name string) error {
	if !ValidName(name) {
		return fmt.Errorf("vault: %s: invalid name %q: want 1-64 of [A-Za-z0-9_.-], not starting with '.'", op, truncate(name))
	}
	return nil
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

func (v *Vault) path(name, ext string) string { return filepath.Join(v.dir, name+ext) }

// Create generates a new identity, stores it under name and returns it. It
// fails with an error wrapping fs.ErrExist if name is taken.
func (v *Vault) Create(name string) (*identity.Secret, error) {
	if err := checkName("create", name); err != nil {
		return nil, err
	}
	s, err := identity.Generate(nil)
	if err != nil {
		return nil, fmt.Errorf("vault: create %s: %w", name, err)
	}
	if err := v.put(name, s, false); err != nil {
		return nil, err
	}
	return s, nil
}

// Put stores s under name, atomically replacing any previous secret of that
// name.
func (v *Vault) Put(name string, s *identity.Secret) error {
	if err := checkName("put", name); err != nil {
		return err
	}
	return v.put(name, s, true)
}

func (v *Vault) put(name string, s *identity.Secret, replace bool) error {
	plain := s.ExportSecret()
	defer clear(plain)
	data, err := sealFile(name, plain, v.passphrase, v.kdf, nil)
	if err != nil {
		return fmt.Errorf("vault: store %s: %w", name, err)
	}
	if err := writeFileAtomic(v.path(name, secretExt), data, 0o600, replace); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("vault: create %s: %w", name, fs.ErrExist)
		}
		return fmt.Errorf("vault: store %s: %w", name, err)
	}
	if err := writeFileAtomic(v.path(name, identityExt), s.Identity().Export(), 0o644, true); err != nil {
		if !replace {
			// Do not leave a secret without its public file behind.
			_ = os.Remove(v.path(name, secretExt))
		}
		return fmt.Errorf("vault: store public identity %s: %w", name, err)
	}
	return nil
}

// Get reads and decrypts the secret stored under name. An unencrypted file
// is read whether or not the vault has a passphrase. Errors wrap
// fs.ErrNotExist, ErrPassphraseNeeded or ErrCorrupt; the file is never
// modified.
func (v *Vault) Get(name string) (*identity.Secret, error) {
	if err := checkName("get", name); err != nil {
		return nil, err
	}
	p := v.path(name, secretExt)
	data, err := atomicfile.ReadLimited(p, MaxFileBytes)
	if err != nil {
		return nil, fmt.Errorf("vault: get %s: %w", name, err)
	}
	plain, err := openFile(name, data, v.passphrase)
	if err != nil {
		if errors.Is(err, ErrPassphraseNeeded) {
			return nil, fmt.Errorf("vault: secret %q is encrypted: a passphrase is needed (set %s): %w", name, PassphraseEnv, ErrPassphraseNeeded)
		}
		return nil, fmt.Errorf("%w %s: %w", ErrCorrupt, p, err)
	}
	defer clear(plain)
	s, err := identity.ImportSecret(plain)
	if err != nil {
		return nil, fmt.Errorf("%w %s: %w", ErrCorrupt, p, err)
	}
	return s, nil
}

// PublicIdentity reads the public identity stored under name. It needs no
// passphrase.
func (v *Vault) PublicIdentity(name string) (*identity.Identity, error) {
	if err := checkName("public identity", name); err != nil {
		return nil, err
	}
	p := v.path(name, identityExt)
	data, err := atomicfile.ReadLimited(p, identity.MaxIdentityBytes)
	if err != nil {
		return nil, fmt.Errorf("vault: public identity %s: %w", name, err)
	}
	id, err := identity.Import(data)
	if err != nil {
		return nil, fmt.Errorf("vault: corrupt file %s: %w", p, err)
	}
	return id, nil
}

// PublicIdentities returns the public identities of all names in the vault,
// in List order. It needs no passphrase. Use it to trust every identity
// created under the same home.
func (v *Vault) PublicIdentities() ([]*identity.Identity, error) {
	names, err := v.List()
	if err != nil {
		return nil, err
	}
	ids := make([]*identity.Identity, 0, len(names))
	for _, n := range names {
		id, err := v.PublicIdentity(n)
		if err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// List returns the names of the stored secrets, sorted.
func (v *Vault) List() ([]string, error) {
	ents, err := os.ReadDir(v.dir)
	if err != nil {
		return nil, fmt.Errorf("vault: list: %w", err)
	}
	var names []string
	for _, e := range ents {
		n, ok := strings.CutSuffix(e.Name(), secretExt)
		if ok && e.Type().IsRegular() && ValidName(n) {
			names = append(names, n)
		}
	}
	return names, nil // os.ReadDir sorts by file name
}

// Delete removes the secret and public identity stored under name. It
// fails with an error wrapping fs.ErrNotExist if there is no such secret.
func (v *Vault) Delete(name string) error {
	if err := checkName("delete", name); err != nil {
		return err
	}
	if err := os.Remove(v.path(name, secretExt)); err != nil {
		return fmt.Errorf("vault: delete %s: %w", name, err)
	}
	if err := os.Remove(v.path(name, identityExt)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("vault: delete %s: %w", name, err)
	}
	if err := atomicfile.SyncDir(v.dir); err != nil {
		return fmt.Errorf("vault: delete %s: %w", name, err)
	}
	return nil
}
