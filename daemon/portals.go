package daemon

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/ockam-go/ockam/api"
	"github.com/ockam-go/ockam/home"
	"github.com/ockam-go/ockam/identity"
	"github.com/ockam-go/ockam/portal"
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

func (d *Daemon) portalRoutes(mux *http.ServeMux, v string) {
	d.handle(mux, "POST "+v+"/tcp-inlets", func(r *http.Request) (any, error) {
		req, err := decode[api.CreateInlet](r)
		if err != nil {
			return nil, err
		}
		route, err := d.resolve(req.To)
		if err != nil {
			return nil, badRequest(err)
		}
		in, err := d.portals.CreateInlet(req.Name, req.From, route)
		if err != nil {
			return nil, conflict(err)
		}
		d.record(func(c *home.NodeConfig) {
			c.Inlets = append(c.Inlets, raw(api.CreateInlet{Name: in.Name(), From: in.Addr().String(), To: route.String()}))
		})
		return inletInfo(in), nil
	})
	d.handle(mux, "GET "+v+"/tcp-inlets", func(r *http.Request) (any, error) {
		out := []api.PortalInfo{}
		for _, in := range d.portals.Inlets() {
			out = append(out, inletInfo(in))
		}
		return out, nil
	})
	d.handle(mux, "GET "+v+"/tcp-inlets/{name}", func(r *http.Request) (any, error) {
		in := d.portals.Inlet(r.PathValue("name"))
		if in == nil {
			return nil, notFound(fmt.Errorf("no tcp inlet named %s", r.PathValue("name")))
		}
		return inletInfo(in), nil
	})
	d.handle(mux, "DELETE "+v+"/tcp-inlets/{name}", func(r *http.Request) (any, error) {
		name := r.PathValue("name")
		if err := d.portals.DeleteInlet(name); err != nil {
			return nil, notFound(err)
		}
		d.record(func(c *home.NodeConfig) {
			c.Inlets = without(c.Inlets, name, func(r api.CreateInlet) string { return r.Name })
		})
		return nil, nil
	})
	d.handle(mux, "POST "+v+"/tcp-outlets", func(r *http.Request) (any, error) {
		req, err := decode[api.CreateOutlet](r)
		if err != nil {
			return nil, err
		}
		o, err := d.createOutlet(req)
		if err != nil {
			return nil, err
		}
		d.record(func(c *home.NodeConfig) {
			c.Outlets = append(c.Outlets, raw(req))
		})
		return d.withUDP(outletInfo(o)), nil
	})
	d.handle(mux, "GET "+v+"/tcp-outlets", func(r *http.Request) (any, error) {
		out := []api.PortalInfo{}
		for _, o := range d.portals.Outlets() {
			out = append(out, d.withUDP(outletInfo(o)))
		}
		return out, nil
	})
	d.handle(mux, "GET "+v+"/tcp-outlets/{name}", func(r *http.Request) (any, error) {
		o := d.portals.Outlet(r.PathValue("name"))
		if o == nil {
			return nil, notFound(fmt.Errorf("no tcp outlet named %s", r.PathValue("name")))
		}
		return d.withUDP(outletInfo(o)), nil
	})
	d.handle(mux, "DELETE "+v+"/tcp-outlets/{name}", func(r *http.Request) (any, error) {
		name := r.PathValue("name")
		if err := d.portals.DeleteOutlet(name); err != nil {
			return nil, notFound(err)
		}
		d.deleteUDPOutlet(name)
		d.record(func(c *home.NodeConfig) {
			c.Outlets = without(c.Outlets, name, func(r api.CreateOutlet) string { return r.Name })
		})
		return nil, nil
	})
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
