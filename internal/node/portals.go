package node

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/ockam-go/ockam/internal/api"
	"github.com/ockam-go/ockam/internal/identity"
	"github.com/ockam-go/ockam/internal/portal"
)

func (d *Daemon) stopPortals() {
	if d.portals != nil {
		d.portals.Close()
	}
}

func (d *Daemon) portalServices() []string {
	var s []string
	for _, o := range d.portals.Outlets() {
		kind := "tcp"
		if d.udpOutlet(o.Name()) != nil {
			kind = "tcp+udp"
		}
		s = append(s, "/service/"+o.Address()+" ("+kind+" outlet to "+o.Target()+")")
	}
	return s
}

func flowInfos(fs []portal.FlowInfo) []api.FlowInfo {
	out := make([]api.FlowInfo, 0, len(fs))
	for _, f := range fs {
		out = append(out, api.FlowInfo{ID: f.ID, Client: f.Client, Target: f.Target, BytesIn: f.BytesIn, BytesOut: f.BytesOut, Opened: f.Opened})
	}
	return out
}

func inletInfo(in *portal.Inlet) api.PortalInfo {
	return api.PortalInfo{Name: in.Name(), Kind: "inlet", From: in.Addr().String(), To: in.Route(), Flows: flowInfos(in.Flows()), Total: in.Total(), LastError: in.LastError()}
}

func outletInfo(o *portal.Outlet) api.PortalInfo {
	return api.PortalInfo{Name: o.Name(), Kind: "outlet", From: "/service/" + o.Address(), To: o.Target(), Allow: o.Allow(), Flows: flowInfos(o.Flows()), Total: o.Total(), LastError: o.LastError()}
}

// createInlet validates a request and starts the inlet.
func (d *Daemon) createInlet(req api.CreateInlet) (*portal.Inlet, error) {
	route, err := d.resolve(req.To)
	if err != nil {
		return nil, badRequest(err)
	}
	in, err := d.portals.CreateInlet(req.Name, req.From, route)
	if err != nil {
		return nil, conflict(err)
	}
	return in, nil
}

// CreateInlet listens on a TCP address and carries each connection to an
// outlet; it records the inlet with the address it got and the resolved
// route.
func (d *Daemon) CreateInlet(_ context.Context, req api.CreateInlet) (api.PortalInfo, error) {
	if err := d.checkInletRoute(req.To); err != nil {
		return api.PortalInfo{}, err
	}
	in, err := d.createInlet(req)
	if err != nil {
		return api.PortalInfo{}, err
	}
	d.remember(kindInlet, in.Name(), api.CreateInlet{Name: in.Name(), From: in.Addr().String(), To: in.Route()})
	return inletInfo(in), nil
}

// Inlets lists the inlets.
func (d *Daemon) Inlets(context.Context) ([]api.PortalInfo, error) {
	out := []api.PortalInfo{}
	for _, in := range d.portals.Inlets() {
		out = append(out, inletInfo(in))
	}
	return out, nil
}

// Inlet describes one inlet.
func (d *Daemon) Inlet(_ context.Context, name string) (api.PortalInfo, error) {
	in := d.portals.Inlet(name)
	if in == nil {
		return api.PortalInfo{}, notFound(fmt.Errorf("no tcp inlet named %s", name))
	}
	return inletInfo(in), nil
}

// DeleteInlet closes an inlet and its flows.
func (d *Daemon) DeleteInlet(_ context.Context, name string) error {
	if err := d.portals.DeleteInlet(name); err != nil {
		return notFound(err)
	}
	d.forget(kindInlet, name)
	return nil
}

// CreateOutlet connects flows arriving at an address to a TCP target, and
// records it.
func (d *Daemon) CreateOutlet(_ context.Context, req api.CreateOutlet) (api.PortalInfo, error) {
	o, err := d.createOutlet(req)
	if err != nil {
		return api.PortalInfo{}, err
	}
	req.Name = o.Name()
	d.remember(kindOutlet, o.Name(), req)
	return d.withUDP(outletInfo(o)), nil
}

// Outlets lists the outlets.
func (d *Daemon) Outlets(context.Context) ([]api.PortalInfo, error) {
	out := []api.PortalInfo{}
	for _, o := range d.portals.Outlets() {
		out = append(out, d.withUDP(outletInfo(o)))
	}
	return out, nil
}

// Outlet describes one outlet.
func (d *Daemon) Outlet(_ context.Context, name string) (api.PortalInfo, error) {
	o := d.portals.Outlet(name)
	if o == nil {
		return api.PortalInfo{}, notFound(fmt.Errorf("no tcp outlet named %s", name))
	}
	return d.withUDP(outletInfo(o)), nil
}

// DeleteOutlet closes an outlet and its flows.
func (d *Daemon) DeleteOutlet(_ context.Context, name string) error {
	if err := d.portals.DeleteOutlet(name); err != nil {
		return notFound(err)
	}
	d.deleteUDPOutlet(name)
	d.forget(kindOutlet, name)
	return nil
}

// createOutlet validates a request and creates the outlet.
func (d *Daemon) createOutlet(req api.CreateOutlet) (*portal.Outlet, error) {
	addr := strings.TrimPrefix(req.From, "/service/")
	if addr == "" || strings.Contains(addr, "/") {
		return nil, badRequest(fmt.Errorf("outlet address %q: want /service/NAME", req.From))
	}
	var ports []uint16
	for _, p := range req.Ports {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil || n == 0 {
			return nil, badRequest(fmt.Errorf("bad port %q", p))
		}
		ports = append(ports, uint16(n))
	}
	for _, a := range req.Allow {
		if _, err := identity.ParseIdentifier(a); err != nil {
			return nil, badRequest(err)
		}
	}
	oc := portal.OutletConfig{Name: req.Name, Address: addr, Target: req.To, Ports: ports, Allow: req.Allow}
	if req.Netstack {
		dial, err := d.outletDialer(req.NetstackPrefix, req.NetstackPrefix6)
		if err != nil {
			return nil, err
		}
		oc.Dial = dial
	}
	o, err := d.portals.CreateOutlet(oc)
	if err != nil {
		return nil, conflict(err)
	}
	if req.UDP {
		if err := d.createUDPOutlet(o, ports, req); err != nil {
			d.portals.DeleteOutlet(o.Name())
			return nil, err
		}
	}
	return o, nil
}
