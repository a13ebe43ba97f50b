package cli

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ockam-go/ockam/internal/api"
)

func (e *env) portalList(kind, at string) error {
	n, err := nodeName("--at", at)
	if err != nil {
		return err
	}
	var out []api.PortalInfo
	if err := e.do(n, 0, func(ctx context.Context, c *api.Client) (err error) {
		if kind == "inlet" {
			out, err = c.Inlets(ctx)
		} else {
			out, err = c.Outlets(ctx)
		}
		return
	}); err != nil {
		return err
	}
	if e.output == "json" {
		return e.printJSON(out)
	}
	var rows [][]string
	for _, p := range out {
		rows = append(rows, []string{p.Name, p.From, p.To, fmt.Sprint(len(p.Flows)), fmt.Sprint(p.Total)})
	}
	e.table("NAME\tFROM\tTO\tOPEN FLOWS\tTOTAL", rows)
	return nil
}

func (e *env) portalShow(kind, at, name string) error {
	n, err := nodeName("--at", at)
	if err != nil {
		return err
	}
	var p api.PortalInfo
	if err := e.do(n, 0, func(ctx context.Context, c *api.Client) (err error) {
		if kind == "inlet" {
			p, err = c.Inlet(ctx, name)
		} else {
			p, err = c.Outlet(ctx, name)
		}
		return
	}); err != nil {
		return err
	}
	if e.output == "json" {
		return e.printJSON(p)
	}
	fmt.Fprintf(e.stdout, "TCP %s %s on /node/%s\n  from:  %s\n  to:    %s\n  flows: %d open, %d in all\n", kind, p.Name, n, p.From, p.To, len(p.Flows), p.Total)
	if len(p.Allow) > 0 {
		fmt.Fprintf(e.stdout, "  allow: %s\n", strings.Join(p.Allow, ", "))
	}
	if p.LastError != "" {
		fmt.Fprintf(e.stdout, "  last error: %s\n", p.LastError)
	}
	var rows [][]string
	for _, f := range p.Flows {
		rows = append(rows, []string{f.ID, f.Client, f.Target, fmt.Sprint(f.BytesIn), fmt.Sprint(f.BytesOut), f.Opened.Format("15:04:05")})
	}
	if len(rows) > 0 {
		e.table("FLOW\tCLIENT\tTARGET\tBYTES IN\tBYTES OUT\tOPENED", rows)
	}
	return nil
}

func (e *env) portalDelete(kind, at, name string) error {
	n, err := nodeName("--at", at)
	if err != nil {
		return err
	}
	return e.do(n, 0, func(ctx context.Context, c *api.Client) error {
		if kind == "inlet" {
			return c.DeleteInlet(ctx, name)
		}
		return c.DeleteOutlet(ctx, name)
	})
}

func (e *env) portalCmds(kind string, create *cobra.Command) *cobra.Command {
	cmd := &cobra.Command{Use: "tcp-" + kind, Short: "TCP " + kind + "s of portals"}
	var at string
	list := &cobra.Command{Use: "list --at /node/NAME", Short: "List " + kind + "s", Args: args(),
		RunE: func(*cobra.Command, []string) error { return e.portalList(kind, at) }}
	show := &cobra.Command{Use: "show NAME --at /node/NAME", Short: "Show an " + kind + " and its flows", Args: args("NAME"),
		RunE: func(_ *cobra.Command, a []string) error { return e.portalShow(kind, at, a[0]) }}
	del := &cobra.Command{Use: "delete NAME --at /node/NAME", Short: "Delete an " + kind + " and end its flows", Args: args("NAME"),
		RunE: func(_ *cobra.Command, a []string) error { return e.portalDelete(kind, at, a[0]) }}
	for _, c := range []*cobra.Command{list, show, del} {
		atFlag(c, &at)
	}
	cmd.AddCommand(create, list, show, del)
	return cmd
}

func (e *env) inletCmd() *cobra.Command {
	var at, from, to, alias string
	var authorized []string
	create := &cobra.Command{
		Use:     "create --at /node/NAME --from HOST:PORT --to ROUTE",
		Short:   "Listen on HOST:PORT and carry each connection to the outlet at ROUTE",
		Example: "  ockam tcp-inlet create --at /node/client_sidecar --from 127.0.0.1:7000 --to /service/<channel>/service/outlet",
		Args:    args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			n, err := nodeName("--at", at)
			if err != nil {
				return err
			}
			if from == "" || to == "" {
				return fmt.Errorf("missing --from HOST:PORT or --to ROUTE")
			}
			var p api.PortalInfo
			if err := e.do(n, 0, func(ctx context.Context, c *api.Client) (err error) {
				if len(authorized) > 0 {
					if err := checkInletPeer(ctx, c, to, authorized); err != nil {
						return err
					}
				}
				p, err = c.CreateInlet(ctx, api.CreateInlet{Name: alias, From: from, To: to})
				return
			}); err != nil {
				return err
			}
			return e.printCreated(p.From, fmt.Sprintf("TCP inlet %s on /node/%s: %s -> %s", p.Name, n, p.From, p.To), p)
		},
	}
	atFlag(create, &at)
	create.Flags().StringVar(&from, "from", "127.0.0.1:0", "address to listen on")
	create.Flags().StringVar(&to, "to", "", "route to the outlet, usually /service/<channel>/service/outlet")
	create.Flags().StringVar(&alias, "alias", "", "name of the inlet (default: its address)")
	create.Flags().StringSliceVar(&authorized, "authorized", nil, "identifier the secure channel at the start of --to must lead to (repeatable): the inlet is refused otherwise")
	return e.portalCmds("inlet", create)
}

func (e *env) outletCmd() *cobra.Command {
	var at, from, to, alias string
	var allow, ports []string
	var netstack, udp bool
	var nsPrefix, nsPrefix6 string
	create := &cobra.Command{
		Use:     "create --at /node/NAME --from /service/NAME --to HOST:PORT",
		Short:   "Open a connection to HOST:PORT for each flow that reaches /service/NAME through a secure channel",
		Example: "  ockam tcp-outlet create --at /node/server_sidecar --from /service/outlet --to 127.0.0.1:5000",
		Args:    args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			n, err := nodeName("--at", at)
			if err != nil {
				return err
			}
			if to == "" {
				return fmt.Errorf("missing --to HOST:PORT")
			}
			name := strings.TrimPrefix(from, "/service/")
			if alias != "" {
				name = alias
			}
			var p api.PortalInfo
			if err := e.do(n, 0, func(ctx context.Context, c *api.Client) (err error) {
				p, err = c.CreateOutlet(ctx, api.CreateOutlet{Name: name, From: from, To: to, Ports: ports, Allow: allow, Netstack: netstack, UDP: udp, NetstackPrefix: nsPrefix, NetstackPrefix6: nsPrefix6})
				return
			}); err != nil {
				return err
			}
			kind := "TCP"
			if p.UDP != nil {
				kind = "TCP and UDP"
			}
			return e.printCreated(p.From, fmt.Sprintf("%s outlet %s on /node/%s -> %s", kind, p.From, n, p.To), p)
		},
	}
	atFlag(create, &at)
	create.Flags().StringVar(&from, "from", "/service/outlet", "address of the outlet on its node")
	create.Flags().StringVar(&to, "to", "", "HOST:PORT to connect to (or HOST with --ports)")
	create.Flags().StringVar(&alias, "alias", "", "name of the outlet (default: its address without /service/)")
	create.Flags().StringSliceVar(&ports, "ports", nil, "ports a flow may ask for when --to has no port")
	create.Flags().StringSliceVar(&allow, "allow", nil, "identifier allowed to use the outlet (repeatable; default: the node's trust)")
	create.Flags().BoolVar(&netstack, "netstack", false, "connect from a virtual source address per client identity (node must run as root)")
	create.Flags().StringVar(&nsPrefix, "netstack-prefix", "", "with --netstack: the node's IPv4 range of virtual sources (default 198.18.0.0/15; set by the first --netstack outlet)")
	create.Flags().StringVar(&nsPrefix6, "netstack-prefix6", "", "with --netstack: the node's IPv6 range of virtual sources (default fd7a:6f63:6b6f::/48)")
	create.Flags().BoolVar(&udp, "udp", false, "also carry UDP to the same host and ports (for `tun map` and SOCKS5 UDP ASSOCIATE clients)")
	return e.portalCmds("outlet", create)
}

// checkInletPeer makes sure route starts with a secure channel of this node
// whose peer is one of ids, as Ockam's `tcp-inlet create --authorized` did.
func checkInletPeer(ctx context.Context, c *api.Client, route string, ids []string) error {
	first, _, _ := strings.Cut(strings.TrimPrefix(route, "/service/"), "/")
	if !strings.HasPrefix(route, "/service/") || first == "" {
		return fmt.Errorf("--authorized: --to %s does not start with a secure channel (/service/<channel>/...)", route)
	}
	chans, err := c.Channels(ctx)
	if err != nil {
		return err
	}
	for _, ch := range chans {
		if strings.TrimPrefix(ch.Address, "/service/") != first {
			continue
		}
		if slices.Contains(ids, ch.Peer) {
			return nil
		}
		return fmt.Errorf("--authorized: the secure channel /service/%s leads to %s, which is not authorized", first, ch.Peer)
	}
	return fmt.Errorf("--authorized: --to %s does not start with a secure channel of this node (see `ockam secure-channel list`)", route)
}
