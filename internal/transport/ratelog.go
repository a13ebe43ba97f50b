package transport

import (
	"log/slog"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// rateLog logs at most a few lines a second, so that a flood of bad
// connections cannot grow a log without bound; the lines it holds back are
// counted and reported with the next one it lets through.
type rateLog struct {
	log *slog.Logger
	lim *rate.Limiter

	mu         sync.Mutex
	suppressed int
}

// rateLogPerSecond and rateLogBurst bound each rateLog.
const (
	rateLogPerSecond = 2
	rateLogBurst     = 10
)

func newRateLog(log *slog.Logger) *rateLog {
	return &rateLog{log: log, lim: rate.NewLimiter(rate.Every(time.Second/rateLogPerSecond), rateLogBurst)}
}

// Info logs msg at INFO if the rate allows, else counts it (and logs it at
// DEBUG).
func (r *rateLog) Info(msg string, args ...any) {
	if !r.lim.Allow() {
		r.mu.Lock()
		r.suppressed++
		r.mu.Unlock()
		r.log.Debug(msg, args...)
		return
	}
	r.mu.Lock()
	n := r.suppressed
	r.suppressed = 0
	r.mu.Unlock()
	if n > 0 {
		args = append(args, "suppressed_since_last", n)
	}
	r.log.Info(msg, args...)
}
