package node

import (
	"context"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/ockam-go/ockam/internal/api"
)

// DefaultTimeout bounds requests that wait on the network when the caller
// gives no timeout.
const DefaultTimeout = 10 * time.Second

// errStatus is an error with the HTTP status the control API answers.
type errStatus = api.StatusError

func badRequest(err error) error { return api.BadRequest(err) }
func notFound(err error) error   { return api.NotFound(err) }
func conflict(err error) error   { return api.Conflict(err) }

func timeout(t time.Duration) time.Duration {
	if t <= 0 || t > 5*time.Minute {
		return DefaultTimeout
	}
	return t
}

// withTimeout bounds ctx by the request's timeout (DefaultTimeout if none).
func withTimeout(ctx context.Context, t time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, timeout(t))
}

// serveAPI serves the node's methods (api.Control) on the control socket:
// HTTP is only the adapter (api.Handler).
func (d *Daemon) serveAPI() error {
	ln, err := d.socket()
	if err != nil {
		return err
	}
	mux := api.Handler(d)
	// Profiles, for `curl --unix-socket $OCKAM_HOME/run/NAME.sock
	// http://node/debug/pprof/profile?seconds=10`: the socket is the
	// node owner's only (mode 0700 directory).
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	// Execution traces (`.../debug/pprof/trace?seconds=2`, then `go tool
	// trace -pprof=sched`): where a new connection's goroutines wait.
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	// Prometheus metrics, for `ockam node metrics` or `curl --unix-socket`.
	mux.Handle("/metrics", d.metricsHandler())
	d.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	d.ln = ln
	go d.srv.Serve(ln)
	return nil
}
