package datagram

import (
	"sync"
	"time"
)

// DefaultRate is the UDP bytes per second a node carries in each direction
// when nothing else is configured: 100 Mbit/s, room for DNS, logs, metrics,
// calls and video. UDP has no congestion control, so a sender can offer
// more than the channel carries; shaping it before the channel keeps a
// flood from taking the CPU and the connection from the TCP flows of the
// same channel. What is carried costs CPU too: with the kernel policer
// shedding the rest, a 1 Gbit/s flood left a parallel TCP transfer 75-80%
// of its speed at 100 Mbit/s carried, and 45-75% at 270 Mbit/s, the
// earlier default, on the 2-core test machine (integration
// TestUDPTun/flood_vs_tcp). Raise it for heavy UDP (QUIC downloads, media
// servers) with `tun create --udp-rate`.
const DefaultRate = 100e6 / 8

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
