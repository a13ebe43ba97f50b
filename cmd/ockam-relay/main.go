// Command ockam-relay is the relay service for a public host: a node that
// accepts connections from sidecars, lets them register names, and forwards
// routed messages to them. It links no decryption code (main_test.go proves
// it): what it forwards is end-to-end encrypted between the sidecars.
//
//	ockam-relay --listen 0.0.0.0:4000 --state-dir /var/lib/ockam-relay
//
// Sidecars then run, for example:
//
//	ockam relay create server_sidecar --at /ip4/RELAY_IP/tcp/4000 --to /node/server_sidecar
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/ockam-go/ockam/internal/identity"
	"github.com/ockam-go/ockam/internal/router"
	"github.com/ockam-go/ockam/internal/sched"
	"github.com/ockam-go/ockam/relay"
)

func main() {
	// The relay idles between most messages: keep the runtime's sysmon out
	// of deep sleep (see internal/sched).
	if err := sched.Reexec(); err != nil {
		fmt.Fprintf(os.Stderr, "ockam-relay: running without the scheduler setting (%v)\n", err)
	}
	listen := flag.String("listen", "0.0.0.0:4000", "TCP address to accept sidecars on")
	stateDir := flag.String("state-dir", "", "directory for the relay's state file (relay.json: pid, address, names)")
	logLevel := flag.String("log-level", "info", "debug, info, warn or error")
	metricsListen := flag.String("metrics-listen", "", "serve Prometheus /metrics and /healthz on this TCP address (e.g. 127.0.0.1:9464; default: none)")
	logFormat := flag.String("log-format", "", "json or text (default: text on a terminal, json otherwise)")
	var authorized idList
	flag.Var(&authorized, "authorized", "identifier allowed to register names (repeatable; default: any identity, each name bound to the identity that holds it)")
	var lim limits
	flag.IntVar(&lim.node.MaxConns, "max-conns", router.DefaultMaxConns, "connections the relay holds at once")
	flag.IntVar(&lim.node.MaxConnsPerIP, "max-conns-per-ip", router.DefaultMaxConnsPerIP, "connections accepted from one IP address")
	flag.Int64Var(&lim.queueMiB, "max-queue-mib", router.DefaultMaxQueueBytes>>20, "MiB queued towards one connection; what other connections pass on beyond it is dropped")
	flag.Int64Var(&lim.totalQueueMiB, "total-queue-mib", router.DefaultTotalQueueBytes>>20, "MiB queued towards all connections; what is passed on beyond it is dropped")
	flag.Int64Var(&lim.readBufMiB, "read-buffer-mib", router.DefaultReadBufferBytes>>20, "MiB of read buffers (large and partial frames) for all connections")
	flag.IntVar(&lim.names, "max-names-per-identity", relay.DefaultNamesPerIdentity, "relay names one identity may hold")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: ockam-relay [--listen HOST:PORT] [--state-dir DIR] [--log-level LEVEL]\n")
		flag.PrintDefaults()
	}
	if err := flagsFromEnv(flag.CommandLine); err != nil {
		fmt.Fprintf(os.Stderr, "ockam-relay: %v\n", err)
		os.Exit(2)
	}
	flag.Parse()
	if err := lim.check(); err != nil {
		fmt.Fprintf(os.Stderr, "ockam-relay: %v\n", err)
		os.Exit(2)
	}
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "ockam-relay: unexpected argument %q\n", flag.Arg(0))
		os.Exit(2)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(os.Stderr, "ockam-relay: --log-level %q: want debug, info, warn or error\n", *logLevel)
		os.Exit(2)
	}
	log, err := logger(*logFormat, level)
	if err != nil {
		fmt.Fprintf(os.Stderr, "ockam-relay: %v\n", err)
		os.Exit(2)
	}
	if err := run(*listen, *stateDir, *metricsListen, authorized.policy(), lim, log); err != nil {
		fmt.Fprintf(os.Stderr, "ockam-relay: %v\n", err)
		os.Exit(1)
	}
}

// idList collects --authorized identifiers.
type idList []identity.Identifier

func (l *idList) String() string { return fmt.Sprint(*l) }
func (l *idList) Set(s string) error {
	id, err := identity.ParseIdentifier(s)
	if err != nil {
		return err
	}
	*l = append(*l, id)
	return nil
}

func (l idList) policy() func(identity.Identifier) error {
	if len(l) == 0 {
		return nil
	}
	return func(id identity.Identifier) error {
		if slices.Contains(l, id) {
			return nil
		}
		return errors.New("not in --authorized")
	}
}

// limits are the relay's resource limits, from flags.
type limits struct {
	node                                router.Limits
	queueMiB, totalQueueMiB, readBufMiB int64
	names                               int
}

func (l *limits) check() error {
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"--max-conns", int64(l.node.MaxConns)}, {"--max-conns-per-ip", int64(l.node.MaxConnsPerIP)},
		{"--max-queue-mib", l.queueMiB}, {"--total-queue-mib", l.totalQueueMiB},
		{"--read-buffer-mib", l.readBufMiB}, {"--max-names-per-identity", int64(l.names)},
	} {
		if f.v <= 0 {
			return fmt.Errorf("%s must be positive, not %d", f.name, f.v)
		}
	}
	l.node.MaxQueueBytes = l.queueMiB << 20
	l.node.TotalQueueBytes = l.totalQueueMiB << 20
	l.node.ReadBufferBytes = l.readBufMiB << 20
	return nil
}

func run(listen, stateDir, metricsListen string, authorize func(identity.Identifier) error, lim limits, log *slog.Logger) error {
	n := router.New(router.Config{Logger: log, Limits: lim.node})
	defer n.Close()
	addr, err := n.Listen(listen)
	if err != nil {
		return err
	}
	svc, err := relay.NewService(n, relay.Config{Logger: log, Authorize: authorize, MaxNamesPerIdentity: lim.names})
	if err != nil {
		return err
	}
	defer svc.Close()
	if metricsListen != "" {
		ms, err := serveMetrics(metricsListen, n, svc, log)
		if err != nil {
			return err
		}
		defer ms.Close()
	}
	log.Info("relay listening", "tcp", addr.String())

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		if stateDir != "" {
			if err := writeState(stateDir, addr.String(), svc.List()); err != nil {
				log.Warn("writing state", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			log.Info("relay shutting down")
			return nil
		case <-tick.C:
		}
	}
}

func writeState(dir, addr string, relays []relay.Info) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	b, _ := json.MarshalIndent(struct {
		PID     int          `json:"pid"`
		Address string       `json:"tcp_address"`
		Relays  []relay.Info `json:"relays"`
	}{os.Getpid(), addr, relays}, "", "  ")
	tmp := filepath.Join(dir, ".relay.json.tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, "relay.json"))
}
