package vault

import (
	"os"

	"github.com/ockam-go/ockam/internal/atomicfile"
)

// testHookWrite, when set by tests, replaces the write of the temporary
// file's contents, so a failure part way through can be injected.
var testHookWrite func(f *os.File, b []byte) (int, error)

// writeFileAtomic writes a vault file with atomicfile: readers see the old
// file or the complete new one; replace false fails if the file exists.
func writeFileAtomic(path string, data []byte, perm os.FileMode, replace bool) error {
	return atomicfile.WriteWith(path, data, perm, replace, testHookWrite)
}
