package datagram

import (
	"sync"
	"time"
)

// DefaultRate is the UDP bytes per second a node carries in each direction
// when nothing else is configured: 32 MiB/s (about 270 Mbit/s). UDP has no
// congestion control, so a sender can offer more than the channel carries;
// shaping it before the channel keeps a flood from taking the CPU and the
// connection from the TCP flows of the same channel (measured in
// integration TestUDPTun/flood_vs_tcp). Raise it for heavy UDP (QUIC,
// media) with `tun create --udp-rate`.
const DefaultRate = 32 << 20

// Limiter is a token bucket of bytes: Allow(n) takes n tokens if there are
// that many. Safe for concurrent use. A nil *Limiter allows everything.
type Limiter struct {
	rate  float64 // tokens per second
	burst float64

	mu     sync.Mutex
	tokens float64
	last   time.Time
}

// NewLimiter returns a bucket of rate bytes per second holding at most
// burst bytes; burst 0 takes 50 ms of rate (senders pace by timer ticks
// and send in bursts), and at least 4 maximal datagrams. rate <= 0 returns
// nil (no limit).
func NewLimiter(rate, burst int) *Limiter {
	if rate <= 0 {
		return nil
	}
	if burst == 0 {
		burst = rate / 20
	}
	if burst < 4*MaxDatagram {
		burst = 4 * MaxDatagram
	}
	return &Limiter{rate: float64(rate), burst: float64(burst), tokens: float64(burst), last: time.Now()}
}

// Allow reports whether n bytes may pass now, and takes them if so.
func (l *Limiter) Allow(n int) bool {
	if l == nil {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	l.tokens += now.Sub(l.last).Seconds() * l.rate
	l.last = now
	if l.tokens > l.burst {
		l.tokens = l.burst
	}
	if l.tokens < float64(n) {
		return false
	}
	l.tokens -= float64(n)
	return true
}
