package daemon

import (
	"encoding/json"
	"fmt"

	"github.com/ockam-go/ockam/api"
	"github.com/ockam-go/ockam/home"
	"github.com/ockam-go/ockam/relay"
	"github.com/ockam-go/ockam/routing"
)

// record applies f to the node's saved configuration and writes it, so that
// a restarted node (`ockam node start`) comes back with what it had.
func (d *Daemon) record(f func(c *home.NodeConfig)) {
	d.confMu.Lock()
	defer d.confMu.Unlock()
	f(&d.conf)
	if err := d.cfg.Home.WriteConfig(d.cfg.Name, &d.conf); err != nil {
		d.log.Warn("saving node configuration", "err", err)
	}
}

func raw(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}

// without returns list without the entries whose key is k.
func without[T any](list []json.RawMessage, k string, key func(T) string) []json.RawMessage {
	var out []json.RawMessage
	for _, r := range list {
		var v T
		if json.Unmarshal(r, &v) == nil && key(v) == k {
			continue
		}
		out = append(out, r)
	}
	return out
}

// restore replays a saved configuration: outlets, relays, secure channels
// (at their old addresses, established in the background), inlets.
func (d *Daemon) restore(c *home.NodeConfig) error {
	for _, r := range c.Outlets {
		var req api.CreateOutlet
		if err := json.Unmarshal(r, &req); err != nil {
			return fmt.Errorf("restoring an outlet: %w", err)
		}
		if _, err := d.createOutlet(req); err != nil {
			return fmt.Errorf("restoring outlet %s: %w", req.Name, err)
		}
	}
	for _, r := range c.Relays {
		var req api.CreateRelay
		if err := json.Unmarshal(r, &req); err != nil {
			return fmt.Errorf("restoring a relay: %w", err)
		}
		at, err := routing.ParseRoute(req.At, nil)
		if err != nil {
			return fmt.Errorf("restoring relay %s: %w", req.Name, err)
		}
		reg, err := relay.Register(d.node, at, req.Name, d.me, d.log)
		if err != nil {
			return fmt.Errorf("restoring relay %s: %w", req.Name, err)
		}
		d.mu.Lock()
		d.regs[req.Name] = reg
		d.mu.Unlock()
	}
	for _, ch := range c.Channels {
		route, err := routing.ParseRoute(ch.To, nil)
		if err != nil {
			return fmt.Errorf("restoring channel %s: %w", ch.Address, err)
		}
		ids, err := parseIDs(ch.Authorized)
		if err != nil {
			return err
		}
		if _, err := d.sc.Restore(ch.Address, route, ids); err != nil {
			return fmt.Errorf("restoring channel %s: %w", ch.Address, err)
		}
	}
	for _, r := range c.Inlets {
		var req api.CreateInlet
		if err := json.Unmarshal(r, &req); err != nil {
			return fmt.Errorf("restoring an inlet: %w", err)
		}
		route, err := routing.ParseRoute(req.To, nil)
		if err != nil {
			return fmt.Errorf("restoring inlet %s: %w", req.Name, err)
		}
		if _, err := d.portals.CreateInlet(req.Name, req.From, route); err != nil {
			return fmt.Errorf("restoring inlet %s: %w", req.Name, err)
		}
	}
	d.conf = *c
	return nil
}
