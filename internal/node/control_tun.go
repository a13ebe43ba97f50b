package node

import (
	"context"
	"net/netip"
	"sort"

	"github.com/ockam-go/ockam/internal/api"
)

// The control methods of the virtual interface, its mappings and the SOCKS
// listeners: each calls the implementation in tun.go and records or
// forgets the resource.

// CreateTun creates the node's interface (needs CAP_NET_ADMIN).
func (d *Daemon) CreateTun(_ context.Context, req api.CreateTun) (api.TunInfo, error) {
	info, err := d.createTun(req)
	if err != nil {
		return info, err
	}
	d.remember(kindTun, kindTun, req)
	return info, nil
}

// Tun describes the interface, its mappings and flows.
func (d *Daemon) Tun(context.Context) (api.TunInfo, error) { return d.tunInfo(), nil }

// DeleteTun removes the interface; the mappings stay.
func (d *Daemon) DeleteTun(context.Context) error {
	if err := d.deleteTun(); err != nil {
		return err
	}
	d.forget(kindTun, kindTun)
	return nil
}

// CreateMapping gives an outlet a virtual address and a name, recorded
// with the address and name it got.
func (d *Daemon) CreateMapping(_ context.Context, req api.CreateMapping) (api.Mapping, error) {
	m, err := d.createMapping(req)
	if err != nil {
		return m, err
	}
	d.remember(kindMapping, m.IP, api.CreateMapping{To: m.To, IP: m.IP, Name: m.Name})
	return m, nil
}

// DeleteMapping removes the mapping of an address or a name.
func (d *Daemon) DeleteMapping(_ context.Context, key string) error {
	if err := d.deleteMapping(key); err != nil {
		return err
	}
	d.forgetIf(kindMapping, func(ip string) bool {
		a, err := netip.ParseAddr(ip)
		return err != nil || d.tun.lookup(a, "") == nil
	})
	return nil
}

// CreateSocks runs a SOCKS5 listener, recorded with the address it got.
func (d *Daemon) CreateSocks(_ context.Context, req api.CreateSocks) (api.SocksInfo, error) {
	info, err := d.createSocks(req)
	if err != nil {
		return info, err
	}
	d.remember(kindSocks, info.From, api.CreateSocks{From: info.From, To: info.To})
	return info, nil
}

// SocksListeners lists the SOCKS5 listeners.
func (d *Daemon) SocksListeners(context.Context) ([]api.SocksInfo, error) {
	d.tun.mu.Lock()
	ls := make([]*socksListener, 0, len(d.tun.socks))
	for _, l := range d.tun.socks {
		ls = append(ls, l)
	}
	d.tun.mu.Unlock()
	sort.Slice(ls, func(i, j int) bool { return ls[i].from < ls[j].from })
	out := []api.SocksInfo{}
	for _, l := range ls {
		out = append(out, d.socksInfo(l))
	}
	return out, nil
}

// DeleteSocks stops a SOCKS5 listener and its flows.
func (d *Daemon) DeleteSocks(_ context.Context, from string) error {
	if err := d.deleteSocks(from); err != nil {
		return err
	}
	d.forget(kindSocks, from)
	return nil
}
