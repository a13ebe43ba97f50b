package vault

import (
	"os"
	"path/filepath"
)

// testHookWrite, when set by tests, replaces the write of the temporary
// file's contents, so a failure part way through can be injected.
var testHookWrite func(f *os.File, b []byte) (int, error)

// writeFileAtomic writes data to path so that readers see either the old
// file or the complete new one, never a mix, and so that the new file is
// durable when it returns nil:
//
//  1. create a temporary file in the same directory (same file system),
//  2. write, set perm, fsync, close,
//  3. rename over path (replace) or hard-link to path (create-if-absent:
//     link fails with EEXIST instead of replacing, atomically),
//  4. fsync the directory so the new name is durable.
//
// On any failure the temporary file is removed and path is untouched.
func writeFileAtomic(path string, data []byte, perm os.FileMode, replace bool) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+tempPrefix+"*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(perm); err != nil {
		return err
	}
	write := f.Write
	if testHookWrite != nil {
		write = func(b []byte) (int, error) { return testHookWrite(f, b) }
	}
	if _, err := write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if replace {
		if err := os.Rename(tmp, path); err != nil {
			return err
		}
	} else {
		if err := os.Link(tmp, path); err != nil {
			return err
		}
		if err := os.Remove(tmp); err != nil {
			return err
		}
	}
	return syncDir(dir)
}

// syncDir fsyncs a directory so that renames and removals in it are durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
