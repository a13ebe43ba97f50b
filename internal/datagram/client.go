package datagram

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ockam-go/ockam/internal/router"
	"github.com/ockam-go/ockam/internal/routing"
)

const (
	// DefaultIdle ends an association after this long with no datagram
	// either way (Linux conntrack keeps an unreplied UDP entry 30 s, a
	// replied one 120 s; DNS, syslog and statsd live well within it).
	DefaultIdle = 60 * time.Second
	// DefaultQueue is the datagrams an association queues towards its
	// local socket (client) or its target (outlet) before dropping.
	DefaultQueue = 512
	// ServiceSuffix is appended to an outlet's address to name its UDP
	// service: the outlet /service/db takes UDP at /service/db.udp.
	ServiceSuffix = ".udp"
)

// ErrIdle is returned by Serve when the association was idle for the
// configured time.
var ErrIdle = errors.New("datagram: association idle")

// Config configures the client side of associations. The zero value takes
// the defaults; Serve does not modify it.
type Config struct {
	Logger *slog.Logger
	Idle   time.Duration // DefaultIdle when 0
	Queue  int           // DefaultQueue when 0
	// Limiter shapes the datagrams sent to the outlet (nil: none); it may
	// be shared by many associations.
	Limiter *Limiter
}

func (c *Config) idle() time.Duration {
	if c.Idle > 0 {
		return c.Idle
	}
	return DefaultIdle
}

func (c *Config) queue() int {
	if c.Queue > 0 {
		return c.Queue
	}
	return DefaultQueue
}

// Stats count datagrams of one or many associations. The zero value is
// ready; all fields are updated atomically.
type Stats struct {
	Open    atomic.Int64  // associations running
	Total   atomic.Uint64 // associations started
	Sent    atomic.Uint64 // datagrams sent towards the other side
	Recv    atomic.Uint64 // datagrams received and delivered
	Dropped atomic.Uint64 // datagrams dropped: queue full, too big, send failed
}

// ServiceRoute returns the route to the UDP service of the outlet at
// route (its last hop with ServiceSuffix).
func ServiceRoute(route routing.Route) (routing.Route, error) {
	if len(route) == 0 || route[len(route)-1].Type != routing.Local {
		return nil, fmt.Errorf("datagram: route %s does not end at an outlet address", route)
	}
	r := route.Clone()
	last := &r[len(r)-1]
	if len(last.Value)+len(ServiceSuffix) > routing.MaxAddressLen {
		return nil, fmt.Errorf("datagram: outlet address %q too long", last.Value)
	}
	last.Value += ServiceSuffix
	return r, nil
}

// Serve carries the datagrams of one association between local, a
// connected datagram conn (each Read returns one datagram, each Write
// sends one), and the UDP service at route (see ServiceRoute), asking for
// port. It returns when local fails, the outlet closes the association
// (the error holds its reason), ctx ends, or no datagram crossed for the
// idle time (ErrIdle); local is closed then, and the outlet told.
//
// Datagrams from local are sent on Serve's reader goroutine: when the
// channel's connection is full that goroutine waits and local's own
// bounded buffer drops. Datagrams from the outlet are queued (Config.Queue)
// for local and dropped when the queue is full.
func Serve(ctx context.Context, n *router.Node, route routing.Route, port uint16, local net.Conn, cfg Config, st *Stats) error {
	if st == nil {
		st = new(Stats)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	down := make(chan []byte, cfg.queue())
	var last atomic.Int64 // unix nanoseconds of the last datagram either way
	last.Store(time.Now().UnixNano())

	// deliver queues an exact copy: a full queue of small datagrams
	// holds little memory.
	deliver := func(p []byte) {
		select {
		case down <- append([]byte(nil), p...):
		default:
			st.Dropped.Add(1)
		}
	}
	addr, err := n.RegisterRandom("udp_", router.Channel, func(m *routing.Message) error {
		dm, err := Decode(m.Payload)
		if err != nil {
			st.Dropped.Add(1)
			return err
		}
		switch dm.Kind {
		case KindReply:
			deliver(dm.Payload)
		case KindReplies:
			dm.Each(deliver)
		case KindClose:
			cancel(&closedError{dm.Reason})
		default:
			st.Dropped.Add(1)
		}
		return nil
	})
	if err != nil {
		local.Close()
		return err
	}
	st.Open.Add(1)
	st.Total.Add(1)
	defer st.Open.Add(-1)

	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // local -> outlet
		defer wg.Done()
		ret := routing.Route{routing.LocalAddr(addr)}
		err := pump(local, DatagramHeader, cfg.Limiter, func() { st.Dropped.Add(1) }, func(single bool, b []byte) {
			last.Store(time.Now().UnixNano())
			if single {
				PutDatagramHeader(b, port)
			} else {
				PutDatagramHeader(b, port)
				b[0] = byte(KindBatch)
			}
			if err := n.Send(ctx, &routing.Message{Onward: route, Return: ret, Payload: b}); err != nil {
				st.Dropped.Add(1)
				return
			}
			st.Sent.Add(1)
		})
		cancel(err)
	}()

	idle := cfg.idle()
	tick := time.NewTicker(idle / 4)
	defer tick.Stop()
	var reason error
loop:
	for {
		select {
		case b := <-down:
			last.Store(time.Now().UnixNano())
			if _, err := local.Write(b); err != nil {
				st.Dropped.Add(1)
			} else {
				st.Recv.Add(1)
			}
		case <-tick.C:
			if time.Since(time.Unix(0, last.Load())) >= idle {
				reason = ErrIdle
				break loop
			}
		case <-ctx.Done():
			reason = context.Cause(ctx)
			break loop
		}
	}
	n.Unregister(addr)
	local.Close()
	cancel(reason)
	wg.Wait()
	var closed *closedError
	if !errors.As(reason, &closed) {
		// Tell the outlet, best effort, so it frees the association now.
		why := "client closed"
		if errors.Is(reason, ErrIdle) {
			why = "idle"
		}
		sctx, scancel := context.WithTimeout(context.Background(), time.Second)
		n.Send(sctx, &routing.Message{Onward: route, Return: routing.Route{routing.LocalAddr(addr)}, Payload: Append(nil, Msg{Kind: KindClose, Reason: why})})
		scancel()
	}
	if reason != nil && !errors.Is(reason, ErrIdle) {
		log.Debug("udp association ended", "err", reason)
	}
	return reason
}

type closedError struct{ reason string }

func (e *closedError) Error() string {
	return "datagram: the outlet closed the association: " + e.reason
}
