// Package atomicfile writes files so that readers see the old file or the
// complete new one, never a part of either, and reads files with a size
// bound checked before reading. The vault and the node state use it.
package atomicfile

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// WriteFile writes data to path atomically and durably, replacing any file
// there. See WriteWith.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	return WriteWith(path, data, perm, true, nil)
}

// Create writes data to path atomically and durably, failing (with an error
// wrapping fs.ErrExist) if path exists.
func Create(path string, data []byte, perm os.FileMode) error {
	return WriteWith(path, data, perm, false, nil)
}

// WriteWith is WriteFile (replace) or Create (!replace) with the write of
// the contents done by write when it is not nil, so that tests can make a
// write fail part way. The steps:
//
//  1. create a temporary file in the same directory (same file system),
//  2. write, set perm, fsync, close,
//  3. rename over path (replace) or hard-link to path (create-if-absent:
//     link fails with EEXIST instead of replacing, atomically),
//  4. fsync the directory so the new name is durable.
//
// On any failure the temporary file is removed and path is untouched. Errors
// name the file.
func WriteWith(path string, data []byte, perm os.FileMode, replace bool, write func(f *os.File, b []byte) (int, error)) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
			err = fmt.Errorf("writing %s: %w", path, err)
		}
	}()
	if err := f.Chmod(perm); err != nil {
		return err
	}
	if write == nil {
		write = func(f *os.File, b []byte) (int, error) { return f.Write(b) }
	}
	if _, err := write(f, data); err != nil {
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
	return SyncDir(dir)
}

// SyncDir fsyncs a directory so that renames and removals in it are durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// ReadLimited reads the regular file at path, refusing one larger than max
// bytes before reading it.
func ReadLimited(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	if fi.Size() > max {
		return nil, fmt.Errorf("%s is %d bytes, over the limit of %d", path, fi.Size(), max)
	}
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s grew over the limit of %d bytes while being read", path, max)
	}
	return b, nil
}
