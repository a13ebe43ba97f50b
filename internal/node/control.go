package node

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/ockam-go/ockam/internal/api"
	"github.com/ockam-go/ockam/internal/router"
	"github.com/ockam-go/ockam/internal/routing"
	"github.com/ockam-go/ockam/relay"
)

// The node runtime as plain methods: Daemon implements api.Control, which
// the control socket serves (api.Handler) and the command calls
// (api.Client). This file: the node itself, messages and relays; the other
// resources are in secure.go, portals.go and control_tun.go.

var _ api.Control = (*Daemon)(nil)

// Info describes the running node.
func (d *Daemon) Info(context.Context) (api.NodeInfo, error) {
	d.confMu.Lock()
	failed := append([]string(nil), d.restoreErrs...)
	d.confMu.Unlock()
	return api.NodeInfo{
		Name:          d.cfg.Name,
		PID:           d.state.PID,
		TCPAddress:    d.addr.String(),
		Route:         routing.Route{routing.TCPAddr(d.addr.String())}.String(),
		Identity:      d.cfg.Identity,
		Identifier:    d.me.Identifier().String(),
		Services:      d.services(),
		Status:        "running",
		RestoreErrors: failed,
	}, nil
}

// Shutdown asks the process to stop (Done closes); the caller closes.
func (d *Daemon) Shutdown(context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	select {
	case <-d.shutdown:
	default:
		close(d.shutdown)
	}
	return nil
}

// Send sends a message and waits for the reply.
func (d *Daemon) Send(ctx context.Context, req api.SendMessage) (api.MessageReply, error) {
	ctx, cancel := withTimeout(ctx, req.Timeout)
	defer cancel()
	route, done, err := d.secureRoute(ctx, req.To)
	if err != nil {
		return api.MessageReply{}, err
	}
	defer done()
	m, err := d.node.Request(ctx, route, []byte(req.Payload))
	if u := (*router.UnreachableError)(nil); errors.As(err, &u) {
		// Nodes answer a missing and a refused address alike (telling
		// them apart would tell a stranger what they hold).
		return api.MessageReply{}, notFound(fmt.Errorf("no %s on the route %s: the node there has no such service, or does not let this node reach it", u.Hop, req.To))
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return api.MessageReply{}, fmt.Errorf("no reply from %s within %v: a node on the route is down, or the service at its end does not answer; try the route hop by hop with /service/echo", req.To, timeout(req.Timeout))
	}
	if err != nil {
		return api.MessageReply{}, err
	}
	return api.MessageReply{Payload: string(m.Payload)}, nil
}

// startRelay starts keeping name registered at the relay node at.
func (d *Daemon) startRelay(name string, at routing.Route) (*relay.Registration, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.regs == nil {
		return nil, errors.New("node is shutting down")
	}
	if _, ok := d.regs[regKey(name, at)]; ok {
		return nil, conflict(fmt.Errorf("relay %s at %s already exists on this node", name, at))
	}
	reg, err := relay.Register(d.node, at, name, d.me, d.log)
	if err != nil {
		return nil, badRequest(err)
	}
	d.regs[regKey(name, at)] = reg
	return reg, nil
}

// regKey names a registration: one name may be registered at several
// relays (clients' channels then have a route through each).
func regKey(name string, at routing.Route) string { return name + "@" + at.String() }

// CreateRelay registers a name at a relay node, waits for the first
// registration, and records it.
func (d *Daemon) CreateRelay(ctx context.Context, req api.CreateRelay) (api.RelayInfo, error) {
	at, err := d.resolve(req.At)
	if err != nil {
		return api.RelayInfo{}, badRequest(err)
	}
	reg, err := d.startRelay(req.Name, at)
	if err != nil {
		return api.RelayInfo{}, err
	}
	ctx, cancel := withTimeout(ctx, req.Timeout)
	defer cancel()
	if err := reg.WaitReady(ctx); err != nil {
		d.mu.Lock()
		delete(d.regs, regKey(req.Name, at))
		d.mu.Unlock()
		reg.Close()
		return api.RelayInfo{}, fmt.Errorf("relay %s at %s: %w", req.Name, req.At, err)
	}
	d.remember(kindRelay, regKey(req.Name, at), api.CreateRelay{Name: req.Name, At: at.String()})
	return regInfo(reg.Status()), nil
}

func regInfo(s relay.Status) api.RelayInfo {
	return api.RelayInfo{Name: s.Name, At: s.At, Address: s.Address, Connected: s.Connected,
		Attempts: s.Attempts, LastError: s.LastError, Since: s.Since}
}

// Relays lists the names this node keeps registered and those it hosts.
func (d *Daemon) Relays(context.Context) (api.Relays, error) {
	out := api.Relays{Registered: []api.RelayInfo{}, Hosted: []api.RelayInfo{}}
	d.mu.Lock()
	for _, reg := range d.regs {
		out.Registered = append(out.Registered, regInfo(reg.Status()))
	}
	d.mu.Unlock()
	for _, h := range d.fwd.List() {
		out.Hosted = append(out.Hosted, api.RelayInfo{Name: h.Name, Address: "/service/" + h.Address, Remote: h.Remote, Connected: true, Since: h.Since})
	}
	return out, nil
}

// DeleteRelay stops keeping a name registered, at every relay.
func (d *Daemon) DeleteRelay(_ context.Context, name string) error {
	var regs []*relay.Registration
	d.mu.Lock()
	for k, reg := range d.regs {
		if strings.HasPrefix(k, name+"@") {
			regs = append(regs, reg)
			delete(d.regs, k)
		}
	}
	d.mu.Unlock()
	if len(regs) == 0 {
		return notFound(fmt.Errorf("no relay %s on this node", name))
	}
	for _, reg := range regs {
		reg.Close()
	}
	d.forgetIf(kindRelay, func(k string) bool { return k == name || strings.HasPrefix(k, name+"@") })
	return nil
}
