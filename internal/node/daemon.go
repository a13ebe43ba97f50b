// Package node is a full node process: the router and its TCP transport,
// the forwarding service, the node's identity, secure channels, portals and
// the control API that the ockam command drives over a Unix socket.
package node

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/ockam-go/ockam/internal/home"
	"github.com/ockam-go/ockam/internal/identity"
	"github.com/ockam-go/ockam/internal/portal"
	"github.com/ockam-go/ockam/internal/router"
	"github.com/ockam-go/ockam/internal/routing"
	"github.com/ockam-go/ockam/internal/secure"
	"github.com/ockam-go/ockam/internal/transport"
	"github.com/ockam-go/ockam/internal/vault"
	"github.com/ockam-go/ockam/relay"
)

// Config configures a node process.
type Config struct {
	Home   home.Home
	Name   string
	Listen string // TCP listener address, "127.0.0.1:0" by default
	// Identity names the vault identity to use; empty creates one named
	// after the node.
	Identity   string
	Passphrase []byte
	Logger     *slog.Logger
	// Restore brings back what the node had before it stopped: every
	// resource of its saved configuration (registry.go).
	Restore bool
	// Settings are the node's own flags (routing, limits); with Restore,
	// the saved ones are used. Saved with the configuration.
	Settings home.NodeSettings
}

// Daemon is a running node.
type Daemon struct {
	cfg     Config
	log     *slog.Logger
	node    *router.Node
	fwd     *relay.Service
	sc      *secure.Manager
	portals *portal.Portals
	tun     *tunState
	me      *identity.Secret
	trusted trustCache // what trusts found (trust.go)
	state   home.NodeState
	addr    net.Addr

	mu   sync.Mutex
	regs map[string]*relay.Registration

	confMu      sync.Mutex
	conf        home.NodeConfig
	restoreErrs []string // what Restore could not bring back

	srv *http.Server
	ln  net.Listener

	metricsSrv  *http.Server // --metrics-listen (metrics.go)
	metricsAddr net.Addr
	shutdown    chan struct{}
	once        sync.Once
}

// Start brings a node up: identity, listener, services, control socket and
// state file. Stop it with Close.
func Start(cfg Config) (_ *Daemon, err error) {
	if err := home.CheckName(cfg.Name); err != nil {
		return nil, err
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &Daemon{cfg: cfg, log: log, regs: make(map[string]*relay.Registration), shutdown: make(chan struct{})}

	if err := d.loadIdentity(); err != nil {
		return nil, err
	}
	// Channel data for an address this node does not have (a channel of
	// its previous run, a relay name whose registrant left): the
	// forwarding service tells the sender.
	saved, err := cfg.Home.ReadConfig(cfg.Name)
	if err != nil {
		return nil, err
	}
	if cfg.Restore && cfg.Settings.IsZero() {
		cfg.Settings = saved.Settings
	}
	set := cfg.Settings
	d.conf.Settings = set
	d.node = router.New(router.Config{
		Logger: log,
		Limits: router.Limits{
			MaxConns:        set.MaxConns,
			MaxConnsPerIP:   set.MaxConnsPerIP,
			MaxQueueBytes:   set.MaxQueueMiB << 20,
			ReadBufferBytes: set.ReadBufferMiB << 20,
		},
		Lanes:        set.Lanes,
		AllowRouting: func(peer string) bool { return slices.Contains(set.AllowRouting, peer) },
	})
	defer func() {
		if err != nil {
			d.Close()
		}
	}()
	if d.fwd, err = relay.NewService(d.node, relay.Config{Logger: log, Authorize: d.trusts, MaxNamesPerIdentity: set.MaxNamesPerIdentity}); err != nil {
		return nil, err
	}
	// Bind the listener first, though it serves only once everything is
	// back: a restarting node's saved port is free now, and the
	// connections that restoring opens (channels, relays) take ephemeral
	// ports, which could otherwise be that one.
	ln, err := transport.Bind(cfg.Listen)
	if err != nil {
		return nil, err
	}
	defer func() {
		if ln != nil {
			ln.Close()
		}
	}()
	if err = d.startDefaultServices(); err != nil {
		return nil, err
	}
	d.tun = newTunState()
	if err := d.startSecure(); err != nil {
		return nil, err
	}
	if cfg.Restore {
		d.restore(saved)
	}
	// Serve once every service and restored resource is in place: a peer
	// that reaches the new process finds what it had (its first handshake
	// message is not lost to a listener not yet registered).
	d.addr, err = d.node.Serve(ln)
	ln = nil
	if err != nil {
		return nil, err
	}
	d.conf.Listen, d.conf.Identity = d.addr.String(), d.cfg.Identity
	if err := cfg.Home.WriteConfig(cfg.Name, &d.conf); err != nil {
		return nil, fmt.Errorf("writing node configuration: %w", err)
	}
	d.state = home.NodeState{
		Name:       cfg.Name,
		PID:        os.Getpid(),
		TCPAddress: d.addr.String(),
		Identity:   d.cfg.Identity,
		Identifier: d.me.Identifier().String(),
		Created:    time.Now().UTC(),
	}
	if err := cfg.Home.WriteState(&d.state); err != nil {
		return nil, fmt.Errorf("writing node state: %w", err)
	}
	// The API answers last: once it does, `node create` returns and every
	// other command must find the node's state.
	if set.MetricsListen != "" {
		if err := d.serveMetrics(set.MetricsListen); err != nil {
			return nil, err
		}
	}
	if err := d.serveAPI(); err != nil {
		return nil, err
	}
	log.Info("node started", "node", cfg.Name, "tcp", d.addr.String(), "identifier", d.me.Identifier().String())
	return d, nil
}

func (d *Daemon) loadIdentity() error {
	v, err := vault.Open(d.cfg.Home.VaultDir(), d.cfg.Passphrase)
	if err != nil {
		return err
	}
	if d.cfg.Identity != "" {
		d.me, err = v.Get(d.cfg.Identity)
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("no identity named %s (see `ockam identity list`)", d.cfg.Identity)
		}
		return err
	}
	// The identity named after the node: created with the first node of
	// that name, kept by later nodes of the same name.
	d.cfg.Identity = d.cfg.Name
	d.me, err = v.Get(d.cfg.Name)
	if errors.Is(err, fs.ErrNotExist) {
		d.me, err = v.Create(d.cfg.Name)
	}
	return err
}

// Node returns the router.
func (d *Daemon) Node() *router.Node { return d.node }

// Addr returns the TCP listener's address.
func (d *Daemon) Addr() net.Addr { return d.addr }

// Identifier returns the node's identifier.
func (d *Daemon) Identifier() identity.Identifier { return d.me.Identifier() }

// Done is closed when a shutdown was requested through the control API.
func (d *Daemon) Done() <-chan struct{} { return d.shutdown }

// Close stops everything the node runs, in order: the control socket, the
// portals, the relays it registered, the secure channels, the router.
func (d *Daemon) Close() error {
	d.once.Do(func() {
		if d.srv != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			d.srv.Shutdown(ctx)
			cancel()
			os.Remove(d.cfg.Home.SocketPath(d.cfg.Name))
		}
		d.stopMetrics()
		d.stopTun()
		d.stopPortals()
		d.mu.Lock()
		regs := d.regs
		d.regs = nil
		d.mu.Unlock()
		for _, r := range regs {
			r.Close()
		}
		d.stopSecure()
		if d.fwd != nil {
			d.fwd.Close()
		}
		if d.node != nil {
			d.node.Close()
		}
		d.log.Info("node stopped", "node", d.cfg.Name)
	})
	return nil
}

func (d *Daemon) services() []string {
	var s []string
	for _, a := range []string{router.EchoAddress, UppercaseAddress, HopAddress, relay.ServiceAddress} {
		if d.node.HasWorker(a) {
			s = append(s, "/service/"+a)
		}
	}
	s = append(s, d.secureServices()...)
	s = append(s, d.portalServices()...)
	s = append(s, d.tunServices()...)
	sort.Strings(s)
	return s
}

func (d *Daemon) resolve(s string) (routing.Route, error) {
	return routing.ParseRoute(s, d.cfg.Home.Resolver())
}

// socket listens on the node's control socket, replacing a stale one.
func (d *Daemon) socket() (net.Listener, error) {
	p := d.cfg.Home.SocketPath(d.cfg.Name)
	if len(p) > 107 {
		return nil, fmt.Errorf("control socket path %s is longer than the 107 bytes a Unix socket allows: use a shorter OCKAM_HOME", p)
	}
	if err := home.PrivateDir(filepath.Dir(p)); err != nil {
		return nil, err
	}
	if c, err := net.Dial("unix", p); err == nil {
		c.Close()
		return nil, fmt.Errorf("node %s is already running (its socket %s answers)", d.cfg.Name, p)
	}
	os.Remove(p)
	return net.Listen("unix", p)
}
