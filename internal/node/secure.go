package node

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/ockam-go/ockam/internal/api"
	"github.com/ockam-go/ockam/internal/identity"
	"github.com/ockam-go/ockam/internal/portal"
	"github.com/ockam-go/ockam/internal/routing"
	"github.com/ockam-go/ockam/internal/secure"
)

// trusts is the node's trust: the identities of the nodes created under the
// same $OCKAM_HOME, and those in its trust list. It is read at each
// handshake and flow open (trust.go keeps what it found while the files are
// unchanged), so nodes created later are trusted too, and a removal counts
// from the next open.
func (d *Daemon) trusts(id identity.Identifier) error {
	s := id.String()
	if s == d.me.Identifier().String() {
		return nil
	}
	stamp := trustStampOf(d.cfg.Home)
	if d.trusted.has(stamp, s) {
		return nil
	}
	if slices.Contains(d.cfg.Home.Identifiers(), s) {
		d.trusted.add(stamp, s)
		return nil
	}
	list, err := d.cfg.Home.TrustList()
	if err != nil {
		return err
	}
	if slices.Contains(list, s) {
		d.trusted.add(stamp, s)
		return nil
	}
	// The caller names the peer already (channel.UntrustedError).
	return fmt.Errorf("not a node of this OCKAM_HOME nor in %s (trust it with `ockam trust add` and that identifier)", d.cfg.Home.TrustPath())
}

func (d *Daemon) startSecure() error {
	var err error
	d.sc, err = secure.NewManager(d.node, secure.Config{Identity: d.me, Trust: d.trusts, Logger: d.log})
	if err != nil {
		return err
	}
	if _, err := d.sc.Listen(secure.DefaultListener, nil, false); err != nil {
		return err
	}
	grace, err := resumeGrace(d.conf.Settings.ResumeGrace)
	if err != nil {
		return err
	}
	d.portals, err = portal.New(d.node, portal.Config{
		Logger:        d.log,
		Path:          d.sc,
		WindowBudget:  d.conf.Settings.WindowBudgetMiB << 20,
		MaxFlowWindow: d.conf.Settings.MaxFlowWindowMiB << 20,
		ResumeGrace:   grace,
		Lanes:         d.conf.Settings.Lanes,
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

// resumeGrace is portal.Config.ResumeGrace for the node setting s.
func resumeGrace(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	g, err := time.ParseDuration(s)
	if err != nil || g < 0 {
		return 0, fmt.Errorf("resume grace %q: want a duration such as 30s", s)
	}
	if g == 0 {
		return -1, nil
	}
	return g, nil
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

func channelInfo(c *secure.Channel) api.ChannelInfo {
	st := c.Stats()
	info := api.ChannelInfo{
		Address: c.Route().String(), Role: c.Role(), State: c.State(), Epoch: st.Epoch,
		Sent: st.Sent, Received: st.Received, Rejected: st.Rejected, LastError: st.LastError,
		BytesOut: st.BytesOut, BytesIn: st.BytesIn, UpSince: st.UpSince,
	}
	if p := c.Peer(); !p.IsZero() {
		info.Peer = p.String()
	}
	if c.Role() == "initiator" {
		info.To = joinRoutes(c.Routes())
		info.Route = c.ListenerRoute().String()
	}
	return info
}

// channelAddr accepts "/service/ADDR" or "ADDR".
func channelAddr(s string) string {
	return strings.TrimPrefix(s, "/service/")
}

// resolveRoutes resolves "ROUTE[,ROUTE...]": several routes to the same
// listener (through several relays).
func (d *Daemon) resolveRoutes(s string) ([]routing.Route, error) {
	parts := strings.Split(s, ",")
	if len(parts) > MaxChannelRoutes {
		return nil, fmt.Errorf("%d routes, at most %d", len(parts), MaxChannelRoutes)
	}
	var out []routing.Route
	for _, p := range parts {
		r, err := d.resolve(strings.TrimSpace(p))
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// MaxChannelRoutes bounds the routes one channel is given.
const MaxChannelRoutes = 8

func joinRoutes(rs []routing.Route) string {
	s := make([]string, len(rs))
	for i, r := range rs {
		s[i] = r.String()
	}
	return strings.Join(s, ",")
}

// CreateChannel opens a secure channel to a listener and records it.
func (d *Daemon) CreateChannel(ctx context.Context, req api.CreateChannel) (api.ChannelInfo, error) {
	routes, err := d.resolveRoutes(req.To)
	if err != nil {
		return api.ChannelInfo{}, badRequest(err)
	}
	ids, err := parseIDs(req.Authorized)
	if err != nil {
		return api.ChannelInfo{}, err
	}
	ctx, cancel := withTimeout(ctx, req.Timeout)
	defer cancel()
	c, err := d.sc.CreateRoutes(ctx, routes, ids)
	if err != nil {
		if strings.Contains(err.Error(), "got handshake1 message, want handshake2") {
			// Our own first message came back: the route ends at a
			// service that answers with what it gets.
			return api.ChannelInfo{}, badRequest(fmt.Errorf("%s answered with the handshake it was sent, as echo does: it is not a secure channel listener (every node listens at /service/api)", req.To))
		}
		if strings.Contains(err.Error(), "want handshake2") {
			return api.ChannelInfo{}, badRequest(fmt.Errorf("%s answered with something other than a handshake: it is not a secure channel listener (every node listens at /service/api)", req.To))
		}
		return api.ChannelInfo{}, err
	}
	d.remember(kindChannel, c.Address(), savedChannel{Address: c.Address(), To: joinRoutes(routes), Authorized: req.Authorized})
	return channelInfo(c), nil
}

// Channels lists the secure channels.
func (d *Daemon) Channels(context.Context) ([]api.ChannelInfo, error) {
	out := []api.ChannelInfo{}
	for _, c := range d.sc.Channels() {
		out = append(out, channelInfo(c))
	}
	return out, nil
}

func (d *Daemon) channel(addr string) (*secure.Channel, error) {
	c := d.sc.Channel(channelAddr(addr))
	if c == nil {
		return nil, notFound(fmt.Errorf("no secure channel at /service/%s", channelAddr(addr)))
	}
	return c, nil
}

// Channel describes one secure channel.
func (d *Daemon) Channel(_ context.Context, addr string) (api.ChannelInfo, error) {
	c, err := d.channel(addr)
	if err != nil {
		return api.ChannelInfo{}, err
	}
	return channelInfo(c), nil
}

// DeleteChannel closes a secure channel, telling the peer.
func (d *Daemon) DeleteChannel(_ context.Context, addr string) error {
	c, err := d.channel(addr)
	if err != nil {
		return err
	}
	c.Close()
	d.forget(kindChannel, c.Address())
	return nil
}

// createListener validates a request and starts the listener.
func (d *Daemon) createListener(req api.CreateListener) (*secure.Listener, error) {
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
	return l, nil
}

// CreateListener accepts secure channels at an address, and records it.
func (d *Daemon) CreateListener(_ context.Context, req api.CreateListener) (api.ListenerInfo, error) {
	l, err := d.createListener(req)
	if err != nil {
		return api.ListenerInfo{}, err
	}
	d.remember(kindListener, l.Address(), api.CreateListener{Address: l.Address(), Authorized: req.Authorized, TrustEveryone: req.TrustEveryone})
	return listenerInfo(l), nil
}

// Listeners lists the secure channel listeners.
func (d *Daemon) Listeners(context.Context) ([]api.ListenerInfo, error) {
	out := []api.ListenerInfo{}
	for _, l := range d.sc.Listeners() {
		out = append(out, listenerInfo(l))
	}
	return out, nil
}

// DeleteListener stops a listener; channels it accepted live on.
func (d *Daemon) DeleteListener(_ context.Context, addr string) error {
	if err := d.sc.DeleteListener(channelAddr(addr)); err != nil {
		return notFound(err)
	}
	d.forget(kindListener, channelAddr(addr))
	return nil
}

func listenerInfo(l *secure.Listener) api.ListenerInfo {
	return api.ListenerInfo{Address: routing.Route{routing.LocalAddr(l.Address())}.String(), Authorized: idStrings(l.Authorized()), TrustEveryone: l.TrustEveryone()}
}
