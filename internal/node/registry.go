package node

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/ockam-go/ockam/internal/api"
	"github.com/ockam-go/ockam/internal/home"
	"github.com/ockam-go/ockam/internal/routing"
)

// The resource registry: everything the node was asked to create is
// recorded here, by kind and key, with the request that recreates it
// (home.NodeConfig.Resources, written atomically on each change), and
// `ockam node start` (Config.Restore) replays it through one table. A
// control method that creates a resource calls remember once it exists;
// one that deletes it calls forget. Adding a kind of resource adds one
// entry to kinds.

// Kinds of resources, also their names in config.json.
const (
	kindTun      = "tun"
	kindListener = "listener"
	kindOutlet   = "outlet"
	kindRelay    = "relay"
	kindChannel  = "channel"
	kindInlet    = "inlet"
	kindMapping  = "mapping"
	kindSocks    = "socks"
)

// kinds lists every kind in restore order: the interface before the
// mappings that must lie in its prefix, listeners and outlets before
// anything reaches them, channels before the inlets, mappings and SOCKS
// listeners whose routes go through them.
var kinds = []struct {
	name    string
	restore func(d *Daemon, spec []byte) error
}{
	{kindTun, restoreAs(func(d *Daemon, r api.CreateTun) error { _, err := d.createTun(r); return err })},
	{kindListener, restoreAs(func(d *Daemon, r api.CreateListener) error { _, err := d.createListener(r); return err })},
	{kindOutlet, restoreAs(func(d *Daemon, r api.CreateOutlet) error { _, err := d.createOutlet(r); return err })},
	{kindRelay, restoreAs(func(d *Daemon, r api.CreateRelay) error {
		at, err := routing.ParseRoute(r.At, nil)
		if err != nil {
			return err
		}
		// Registers in the background, with backoff.
		_, err = d.startRelay(r.Name, at)
		return err
	})},
	{kindChannel, restoreAs(func(d *Daemon, c savedChannel) error {
		var routes []routing.Route
		for _, part := range strings.Split(c.To, ",") {
			route, err := routing.ParseRoute(part, nil)
			if err != nil {
				return err
			}
			routes = append(routes, route)
		}
		ids, err := parseIDs(c.Authorized)
		if err != nil {
			return err
		}
		// At its old address, established in the background, so that
		// the routes of inlets and mappings through it stay valid.
		_, err = d.sc.RestoreRoutes(c.Address, routes, ids)
		return err
	})},
	{kindInlet, restoreAs(func(d *Daemon, r api.CreateInlet) error { _, err := d.createInlet(r); return err })},
	{kindMapping, restoreAs(func(d *Daemon, r api.CreateMapping) error { _, err := d.createMapping(r); return err })},
	{kindSocks, restoreAs(func(d *Daemon, r api.CreateSocks) error { _, err := d.createSocks(r); return err })},
}

// savedChannel is how an initiator channel is recorded: its address is
// kept so that it comes back where routes expect it.
type savedChannel struct {
	Address    string   `json:"address"`
	To         string   `json:"to"`
	Authorized []string `json:"authorized,omitempty"`
}

// restoreAs decodes a recorded request strictly and recreates it.
func restoreAs[T any](f func(*Daemon, T) error) func(*Daemon, []byte) error {
	return func(d *Daemon, spec []byte) error {
		var v T
		if err := api.DecodeBytes(spec, &v); err != nil {
			return err
		}
		return f(d, v)
	}
}

func kindOrder(k string) int {
	for i, kd := range kinds {
		if kd.name == k {
			return i
		}
	}
	return len(kinds)
}

// remember records (or replaces) a resource and saves the configuration.
func (d *Daemon) remember(kind, key string, spec any) {
	b, err := json.Marshal(spec)
	if err != nil {
		d.log.Error("recording a resource", "kind", kind, "key", key, "err", err)
		return
	}
	d.saveConfig(func(rs []home.Resource) []home.Resource {
		rs = slices.DeleteFunc(rs, func(r home.Resource) bool { return r.Kind == kind && r.Key == key })
		return append(rs, home.Resource{Kind: kind, Key: key, Spec: b})
	})
}

// forget removes a resource from the configuration.
func (d *Daemon) forget(kind, key string) {
	d.forgetIf(kind, func(k string) bool { return k == key })
}

// forgetIf removes the resources of a kind whose key matches.
func (d *Daemon) forgetIf(kind string, match func(key string) bool) {
	d.saveConfig(func(rs []home.Resource) []home.Resource {
		return slices.DeleteFunc(rs, func(r home.Resource) bool { return r.Kind == kind && match(r.Key) })
	})
}

func (d *Daemon) saveConfig(f func([]home.Resource) []home.Resource) {
	d.confMu.Lock()
	defer d.confMu.Unlock()
	d.conf.Resources = f(d.conf.Resources)
	if err := d.cfg.Home.WriteConfig(d.cfg.Name, &d.conf); err != nil {
		d.log.Warn("saving node configuration", "err", err)
	}
}

// restore recreates every recorded resource, kind by kind in the order of
// kinds. One that fails is logged, reported in NodeInfo.RestoreErrors and
// kept in the configuration (a port taken by another process today may be
// free at the next start); the node starts with the rest.
func (d *Daemon) restore(c *home.NodeConfig) {
	rs := slices.Clone(c.Resources)
	slices.SortStableFunc(rs, func(a, b home.Resource) int { return kindOrder(a.Kind) - kindOrder(b.Kind) })
	var failed []string
	for _, r := range rs {
		i := kindOrder(r.Kind)
		var err error
		if i == len(kinds) {
			err = errors.New("unknown kind of resource")
		} else {
			err = kinds[i].restore(d, bytes.TrimSpace(r.Spec))
		}
		if err != nil {
			msg := fmt.Sprintf("%s %s: %v", r.Kind, r.Key, err)
			failed = append(failed, msg)
			d.log.Error("restoring a resource", "kind", r.Kind, "key", r.Key, "err", err)
		}
	}
	d.confMu.Lock()
	d.conf.Resources = rs
	d.restoreErrs = failed
	d.confMu.Unlock()
}
