package portal

import "sync"

// paths resets flows when their path fails with one goroutine per path (a
// secure channel's session), not one per flow: an idle flow costs only the
// stacks of its two directions. A path's watcher stays while the path
// lives, also when its last flow has left: connections opened one after
// the other (a client's requests, each on a new connection) would
// otherwise start a goroutine and wake it to stop for each.
type paths struct {
	mu     sync.Mutex
	m      map[<-chan struct{}]*pathFlows
	closed bool // the portals are closed: watchers stop when their flows have left
}

type pathFlows struct {
	flows map[*Flow]struct{}
	stop  chan struct{} // closed to stop the watcher before the path ends
}

// add watches end for f until remove(f, end). A flow that resumes on
// another session moves from its old end to the new one (resume.go).
func (ps *paths) add(f *Flow, end <-chan struct{}) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.m == nil {
		ps.m = map[<-chan struct{}]*pathFlows{}
	}
	pf := ps.m[end]
	if pf == nil {
		pf = &pathFlows{flows: map[*Flow]struct{}{}, stop: make(chan struct{})}
		ps.m[end] = pf
		go ps.watch(end, pf)
	}
	pf.flows[f] = struct{}{}
}

func (ps *paths) watch(end <-chan struct{}, pf *pathFlows) {
	select {
	case <-end:
	case <-pf.stop:
		return
	}
	ps.mu.Lock()
	if ps.m[end] == pf {
		delete(ps.m, end)
	}
	flows := make([]*Flow, 0, len(pf.flows))
	for f := range pf.flows {
		flows = append(flows, f)
	}
	pf.flows = nil // later removes find nothing to do
	ps.mu.Unlock()
	for _, f := range flows {
		f.pathFailed(end)
	}
}

// remove stops watching end for f.
func (ps *paths) remove(f *Flow, end <-chan struct{}) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	pf := ps.m[end]
	if pf == nil || pf.flows == nil {
		return
	}
	delete(pf.flows, f)
	if len(pf.flows) == 0 && ps.closed {
		delete(ps.m, end)
		close(pf.stop)
	}
}

// close stops the watchers of paths without flows, and those of the
// others as their last flow leaves.
func (ps *paths) close() {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	ps.closed = true
	for end, pf := range ps.m {
		if len(pf.flows) == 0 {
			delete(ps.m, end)
			close(pf.stop)
		}
	}
}
