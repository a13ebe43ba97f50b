package node

import (
	"os"
	"sync"
	"syscall"

	"github.com/ockam-go/ockam/internal/home"
)

// trustCache remembers the identifiers trusts found in $OCKAM_HOME, for as
// long as the files it found them in are unchanged: the nodes directory
// (a node created or deleted adds or removes an entry, which changes its
// modification time) and trust.json (rewritten by renaming a new file over
// it). An outlet asks at every flow it opens, on the reader of the
// connection the Open came on; reading every node's state file there cost
// about 100 µs of CPU per new connection and held up the messages behind
// it. A check is now two stat calls. Only found identifiers are
// remembered: a refused peer is looked up again each time.
type trustCache struct {
	mu    sync.Mutex
	stamp trustStamp
	ids   map[string]struct{}
}

type trustStamp struct{ nodes, trust fileStamp }

type fileStamp struct {
	ok   bool // the file exists
	mod  int64
	size int64
	ino  uint64
}

func stampOf(path string) fileStamp {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}
	}
	s := fileStamp{ok: true, mod: fi.ModTime().UnixNano(), size: fi.Size()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		s.ino = st.Ino
	}
	return s
}

func trustStampOf(h home.Home) trustStamp {
	return trustStamp{nodes: stampOf(h.NodesDir()), trust: stampOf(h.TrustPath())}
}

// has reports whether id was found while the files were as they are now
// (stamp, taken before reading them).
func (c *trustCache) has(stamp trustStamp, id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stamp != stamp {
		c.stamp, c.ids = stamp, nil
		return false
	}
	_, ok := c.ids[id]
	return ok
}

// add remembers id, found in the files as they were at stamp.
func (c *trustCache) add(stamp trustStamp, id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stamp != stamp {
		return // they changed meanwhile: look again next time
	}
	if c.ids == nil {
		c.ids = make(map[string]struct{})
	}
	c.ids[id] = struct{}{}
}
