package daemon

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/ockam-go/ockam/api"
	"github.com/ockam-go/ockam/home"
	"github.com/ockam-go/ockam/identity"
	"github.com/ockam-go/ockam/portal"
	"github.com/ockam-go/ockam/routing"
	"github.com/ockam-go/ockam/securechannel"
)

// trusts is the node's trust: the identities of the nodes created under the
// same $OCKAM_HOME, and those in its trust list. It is read at each
// handshake, so nodes created later are trusted too.
func (d *Daemon) trusts(id identity.Identifier) error {
	s := id.String()
	if s == d.me.Identifier().String() || slices.Contains(d.cfg.Home.Identifiers(), s) {
		return nil
	}
	list, err := d.cfg.Home.TrustList()
	if err != nil {
		return err
	}
	if slices.Contains(list, s) {
		return nil
	}
	return fmt.Errorf("%s is not a node of this OCKAM_HOME nor in %s", s, d.cfg.Home.TrustPath())
}

func (d *Daemon) startSecure() error {
	var err error
	d.sc, err = securechannel.NewManager(d.node, securechannel.Config{Identity: d.me, Trust: d.trusts, Logger: d.log})
	if err != nil {
		return err
	}
	if _, err := d.sc.Listen(securechannel.DefaultListener, nil, false); err != nil {
		return err
	}
	d.portals, err = portal.New(d.node, portal.Config{
		Logger: d.log,
		Path:   d.sc,
		Allowed: func(peer string) error {
			id, err := identity.ParseIdentifier(peer)
			if err != nil {
				return err
			}
			return d.trusts(id)
		},
	})
	return err
}

func (d *Daemon) stopSecure() {
	if d.sc != nil {
		d.sc.Close()
	}
}

func (d *Daemon) secureServices() []string {
	var s []string
	for _, l := range d.sc.Listeners() {
		s = append(s, "/service/"+l.Address()+" (secure channel listener)")
	}
	return s
}

func parseIDs(ids []string) ([]identity.Identifier, error) {
	var out []identity.Identifier
	for _, s := range ids {
		id, err := identity.ParseIdentifier(s)
		if err != nil {
			return nil, badRequest(err)
		}
		out = append(out, id)
	}
	return out, nil
}

func idStrings(ids []identity.Identifier) []string {
	var out []string
	for _, id := range ids {
		out = append(out, id.String())
	}
	return out
}

func channelInfo(c *securechannel.Channel) api.ChannelInfo {
	st := c.Stats()
	info := api.ChannelInfo{
		Address: c.Route().String(), Role: c.Role(), State: c.State(), Epoch: st.Epoch,
		Sent: st.Sent, Received: st.Received, Rejected: st.Rejected, LastError: st.LastError,
	}
	if p := c.Peer(); !p.IsZero() {
		info.Peer = p.String()
	}
	if c.Role() == "initiator" {
		info.To = c.ListenerRoute().String()
	}
	return info
}

// channelAddr accepts "/service/ADDR" or "ADDR".
func channelAddr(s string) string {
	return strings.TrimPrefix(s, "/service/")
}

func (d *Daemon) secureRoutes(mux *http.ServeMux, v string) {
	d.handle(mux, "POST "+v+"/secure-channels", func(r *http.Request) (any, error) {
		req, err := decode[api.CreateChannel](r)
		if err != nil {
			return nil, err
		}
		route, err := d.resolve(req.To)
		if err != nil {
			return nil, badRequest(err)
		}
		ids, err := parseIDs(req.Authorized)
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(r.Context(), timeout(req.Timeout))
		defer cancel()
		c, err := d.sc.Create(ctx, route, ids)
		if err != nil {
			return nil, err
		}
		d.record(func(cf *home.NodeConfig) {
			cf.Channels = append(cf.Channels, home.ChannelConfig{Address: c.Address(), To: route.String(), Authorized: req.Authorized})
		})
		return channelInfo(c), nil
	})
	d.handle(mux, "GET "+v+"/secure-channels", func(r *http.Request) (any, error) {
		out := []api.ChannelInfo{}
		for _, c := range d.sc.Channels() {
			out = append(out, channelInfo(c))
		}
		return out, nil
	})
	d.handle(mux, "GET "+v+"/secure-channels/{addr}", func(r *http.Request) (any, error) {
		c := d.sc.Channel(channelAddr(r.PathValue("addr")))
		if c == nil {
			return nil, notFound(fmt.Errorf("no secure channel at /service/%s", r.PathValue("addr")))
		}
		return channelInfo(c), nil
	})
	d.handle(mux, "DELETE "+v+"/secure-channels/{addr}", func(r *http.Request) (any, error) {
		c := d.sc.Channel(channelAddr(r.PathValue("addr")))
		if c == nil {
			return nil, notFound(fmt.Errorf("no secure channel at /service/%s", r.PathValue("addr")))
		}
		c.Close()
		d.record(func(cf *home.NodeConfig) {
			var keep []home.ChannelConfig
			for _, ch := range cf.Channels {
				if ch.Address != c.Address() {
					keep = append(keep, ch)
				}
			}
			cf.Channels = keep
		})
		return nil, nil
	})
	d.handle(mux, "POST "+v+"/secure-channel-listeners", func(r *http.Request) (any, error) {
		req, err := decode[api.CreateListener](r)
		if err != nil {
			return nil, err
		}
		addr := channelAddr(req.Address)
		if addr == "" || strings.Contains(addr, "/") {
			return nil, badRequest(fmt.Errorf("listener address %q: want NAME or /service/NAME", req.Address))
		}
		ids, err := parseIDs(req.Authorized)
		if err != nil {
			return nil, err
		}
		l, err := d.sc.Listen(addr, ids, req.TrustEveryone)
		if err != nil {
			return nil, conflict(err)
		}
		return listenerInfo(l), nil
	})
	d.handle(mux, "GET "+v+"/secure-channel-listeners", func(r *http.Request) (any, error) {
		out := []api.ListenerInfo{}
		for _, l := range d.sc.Listeners() {
			out = append(out, listenerInfo(l))
		}
		return out, nil
	})
	d.handle(mux, "DELETE "+v+"/secure-channel-listeners/{addr}", func(r *http.Request) (any, error) {
		if err := d.sc.DeleteListener(channelAddr(r.PathValue("addr"))); err != nil {
			return nil, notFound(err)
		}
		return nil, nil
	})
}

func listenerInfo(l *securechannel.Listener) api.ListenerInfo {
	return api.ListenerInfo{Address: routing.Route{routing.LocalAddr(l.Address())}.String(), Authorized: idStrings(l.Authorized()), TrustEveryone: l.TrustEveryone()}
}
