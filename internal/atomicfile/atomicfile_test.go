package atomicfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteCreateRead(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	if err := Create(p, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Create(p, []byte("two"), 0o600); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("Create over an existing file: %v, want ErrExist", err)
	}
	if err := WriteFile(p, []byte("three"), 0o640); err != nil {
		t.Fatal(err)
	}
	b, err := ReadLimited(p, 5)
	if err != nil || string(b) != "three" {
		t.Fatalf("ReadLimited = %q, %v", b, err)
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o640 {
		t.Fatalf("mode %v", st.Mode())
	}
	if _, err := ReadLimited(p, 4); err == nil || !strings.Contains(err.Error(), "over the limit") {
		t.Fatalf("oversize read: %v", err)
	}
	if _, err := ReadLimited(dir, 100); err == nil {
		t.Fatal("read a directory")
	}
}

func TestFailedWriteLeavesOldFileAndNoTemp(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	WriteFile(p, []byte("old"), 0o600)
	boom := errors.New("injected")
	err := WriteWith(p, []byte("new contents"), 0o600, true, func(f *os.File, b []byte) (int, error) {
		n, _ := f.Write(b[:3])
		return n, boom
	})
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), p) {
		t.Fatalf("err = %v, want the injected error naming the file", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "old" {
		t.Fatalf("old file now %q", b)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("directory holds %d entries, want only the file", len(ents))
	}
}
