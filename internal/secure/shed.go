package secure

import (
	"container/list"
	"fmt"
	"sync"
	"time"
)

// handshakes tracks the responder handshakes in progress, oldest first,
// with a count per source.
type handshakes struct {
	mu     sync.Mutex
	order  list.List // of *pendingHS
	perSrc map[string]int
	shed   map[string]struct{} // sources whose shedding was logged

	evicted     int       // handshakes evicted since the last log line
	evictLogged time.Time // when that was
}

// evictLogEvery bounds the log lines about evictions under a flood.
const evictLogEvery = 10 * time.Second

type pendingHS struct {
	src     string
	elem    *list.Element
	abandon func() // set once the handshake's address exists; under mu
}

// admit reserves a slot for a handshake from src, evicting the oldest one
// when every slot is taken. At most every evictLogEvery it also says how
// many handshakes gave way since it last said so (0: nothing to log).
func (h *handshakes) admit(src string) (*pendingHS, int, error) {
	h.mu.Lock()
	if h.perSrc == nil {
		h.perSrc = make(map[string]int)
		h.shed = make(map[string]struct{})
	}
	if h.perSrc[src] >= MaxPendingPerSource {
		h.mu.Unlock()
		return nil, 0, fmt.Errorf("securechannel: %d handshakes in progress from this source", MaxPendingPerSource)
	}
	var evicted func()
	report := 0
	if h.order.Len() >= MaxPendingHandshakes {
		old := h.order.Front().Value.(*pendingHS)
		h.removeLocked(old)
		evicted = old.abandon
		h.evicted++
		if now := time.Now(); now.Sub(h.evictLogged) >= evictLogEvery {
			report, h.evicted, h.evictLogged = h.evicted, 0, now
		}
	}
	p := &pendingHS{src: src}
	p.elem = h.order.PushBack(p)
	h.perSrc[src]++
	h.mu.Unlock()
	if evicted != nil {
		evicted()
	}
	return p, report, nil
}

// setAbandon records how to give up p when it is evicted; if it already
// was, f runs now.
func (h *handshakes) setAbandon(p *pendingHS, f func()) {
	h.mu.Lock()
	evicted := p.elem == nil
	if !evicted {
		p.abandon = f
	}
	h.mu.Unlock()
	if evicted {
		f()
	}
}

// done frees p's slot; it reports whether p still held one.
func (h *handshakes) done(p *pendingHS) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if p.elem == nil {
		return false
	}
	h.removeLocked(p)
	return true
}

func (h *handshakes) removeLocked(p *pendingHS) {
	h.order.Remove(p.elem)
	p.elem = nil
	if h.perSrc[p.src]--; h.perSrc[p.src] <= 0 {
		delete(h.perSrc, p.src)
		delete(h.shed, p.src)
	}
}

// firstShed reports whether shedding from src is to be logged: once while
// the source has handshakes in progress.
func (h *handshakes) firstShed(src string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.shed == nil {
		h.shed = make(map[string]struct{})
	}
	if _, ok := h.shed[src]; ok || len(h.shed) >= MaxPendingHandshakes {
		return false
	}
	h.shed[src] = struct{}{}
	return true
}
