package router

import (
	"sync"
	"time"
)

// Error replies are bounded so that nobody can make a node answer as fast
// as they can send: each sender (a connection, a channel peer) gets at most
// MaxErrorReplies a second, and the node at most MaxErrorRepliesTotal. An
// error reply is never larger than what it answers plus a few bytes.
const (
	MaxErrorReplies      = 20
	MaxErrorRepliesTotal = 1000
)

// errLimiter counts error replies per sender in one-second windows. Its
// map never holds more than MaxErrorRepliesTotal senders: a sender is
// entered only when a reply is allowed.
type errLimiter struct {
	mu     sync.Mutex
	window int64 // unix second of the counts
	counts map[string]int
	total  int
}

func (l *errLimiter) allow(key string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if sec := now.Unix(); sec != l.window || l.counts == nil {
		l.window = sec
		l.counts = make(map[string]int)
		l.total = 0
	}
	if l.total >= MaxErrorRepliesTotal || l.counts[key] >= MaxErrorReplies {
		return false
	}
	l.counts[key]++
	l.total++
	return true
}
