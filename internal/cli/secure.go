package cli

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ockam-go/ockam/internal/api"
	"github.com/ockam-go/ockam/internal/node"
)

func (e *env) extraCmds() []*cobra.Command {
	return append([]*cobra.Command{e.secureChannelCmd(), e.listenerCmd(), e.inletCmd(), e.outletCmd()}, e.tunCmds()...)
}

// atFlag adds --at /node/NAME to cmd.
func atFlag(cmd *cobra.Command, p *string) {
	cmd.Flags().StringVar(p, "at", "", "node to act on (/node/NAME; default: the default node)")
	cmd.Flags().StringVar(p, "node", "", "same as --at")
}

func (e *env) secureChannelCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "secure-channel", Short: "End-to-end encrypted, mutually authenticated channels"}
	var from string
	var tos []string
	var authorized []string
	var wait time.Duration
	create := &cobra.Command{
		Use:   "create --from /node/NAME --to ROUTE",
		Short: "Open a secure channel to the listener at ROUTE; prints its local route",
		Example: `  ockam secure-channel create --from /node/client_sidecar --to /node/relay/service/forward_to_server_sidecar/service/api
  ockam secure-channel create --from /node/a --to /node/b/service/api | ockam message send hi --from /node/a --to -/service/echo
  ockam secure-channel create --from /node/client_sidecar --to /ip4/RELAY1/tcp/4000/service/forward_to_server_sidecar/service/api --to /ip4/RELAY2/tcp/4000/service/forward_to_server_sidecar/service/api`,
		Args: args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			n, err := nodeName("--from", from)
			if err != nil {
				return err
			}
			to := strings.Join(tos, ",")
			if to == "" {
				return fmt.Errorf("missing --to ROUTE of a secure channel listener (e.g. /node/NAME/service/api)")
			}
			var info api.ChannelInfo
			if err := e.do(n, wait, func(ctx context.Context, c *api.Client) (err error) {
				info, err = c.CreateChannel(ctx, api.CreateChannel{To: to, Authorized: authorized, Timeout: wait})
				return
			}); err != nil {
				return err
			}
			return e.printCreated(info.Address,
				fmt.Sprintf("Secure channel %s created from /node/%s\n  to:   %s\n  peer: %s\nSend through it with: ockam message send hello --from /node/%s --to %s/service/echo",
					info.Address, n, info.To, info.Peer, n, info.Address), info)
		},
	}
	create.Flags().StringVar(&from, "from", "", "node that opens the channel (/node/NAME)")
	create.Flags().StringArrayVar(&tos, "to", nil, "route to the listener; repeated (or ROUTE,ROUTE): routes to the same listener through several relays, the next used when the one in use fails")
	create.Flags().StringSliceVar(&authorized, "authorized", nil, "identifier the peer must have (repeatable; default: the node's trust)")
	timeoutFlag(create, &wait, node.DefaultTimeout, "how long the handshake may take")

	var at string
	list := &cobra.Command{
		Use: "list --at /node/NAME", Short: "List a node's secure channels", Args: args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			n, err := nodeName("--at", at)
			if err != nil {
				return err
			}
			var out []api.ChannelInfo
			if err := e.do(n, 0, func(ctx context.Context, c *api.Client) (err error) { out, err = c.Channels(ctx); return }); err != nil {
				return err
			}
			if e.output == "json" {
				return e.printJSON(out)
			}
			var rows [][]string
			for _, c := range out {
				to := c.To
				if strings.Contains(to, ",") {
					to = c.Route + " (in use; " + strconv.Itoa(strings.Count(c.To, ",")+1) + " routes)"
				}
				rows = append(rows, []string{c.Address, c.Role, c.State, short(c.Peer), to})
			}
			e.table("ADDRESS\tROLE\tSTATE\tPEER\tTO", rows)
			return nil
		},
	}
	atFlag(list, &at)
	show := &cobra.Command{
		Use: "show ADDRESS --at /node/NAME", Short: "Show a secure channel", Args: args("ADDRESS"),
		RunE: func(cmd *cobra.Command, a []string) error {
			n, err := nodeName("--at", at)
			if err != nil {
				return err
			}
			var c api.ChannelInfo
			if err := e.do(n, 0, func(ctx context.Context, cl *api.Client) (err error) { c, err = cl.Channel(ctx, a[0]); return }); err != nil {
				return err
			}
			if e.output == "json" {
				return e.printJSON(c)
			}
			fmt.Fprintf(e.stdout, "Address:  %s\nRole:     %s\nState:    %s\nPeer:     %s\nTo:       %s\nSessions: %d\nSent:     %d\nReceived: %d\nRejected: %d\n",
				c.Address, c.Role, c.State, c.Peer, c.To, c.Epoch, c.Sent, c.Received, c.Rejected)
			if strings.Contains(c.To, ",") {
				fmt.Fprintf(e.stdout, "In use:   %s\n", c.Route)
			}
			if c.LastError != "" {
				fmt.Fprintf(e.stdout, "Last error: %s\n", c.LastError)
			}
			return nil
		},
	}
	atFlag(show, &at)
	del := &cobra.Command{
		Use: "delete ADDRESS --at /node/NAME", Short: "Close a secure channel (the peer is told)", Args: args("ADDRESS"),
		RunE: func(cmd *cobra.Command, a []string) error {
			n, err := nodeName("--at", at)
			if err != nil {
				return err
			}
			return e.do(n, 0, func(ctx context.Context, c *api.Client) error { return c.DeleteChannel(ctx, a[0]) })
		},
	}
	atFlag(del, &at)
	cmd.AddCommand(create, list, show, del)
	return cmd
}

func short(id string) string {
	if len(id) > 17 {
		return id[:17] + "…"
	}
	return id
}

func (e *env) listenerCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "secure-channel-listener", Short: "Accept secure channels at an address (every node listens at api)"}
	var at string
	var authorized []string
	var everyone bool
	create := &cobra.Command{
		Use: "create NAME --at /node/NAME", Short: "Listen for secure channels at /service/NAME", Args: args("NAME"),
		RunE: func(cmd *cobra.Command, a []string) error {
			n, err := nodeName("--at", at)
			if err != nil {
				return err
			}
			var l api.ListenerInfo
			if err := e.do(n, 0, func(ctx context.Context, c *api.Client) (err error) {
				l, err = c.CreateListener(ctx, api.CreateListener{Address: a[0], Authorized: authorized, TrustEveryone: everyone})
				return
			}); err != nil {
				return err
			}
			return e.printCreated(l.Address, "Secure channel listener at "+l.Address+" on /node/"+n, l)
		},
	}
	atFlag(create, &at)
	create.Flags().StringSliceVar(&authorized, "authorized", nil, "identifier allowed to connect (repeatable; default: the node's trust)")
	create.Flags().BoolVar(&everyone, "trust-everyone", false, "accept any identity (never the default)")
	list := &cobra.Command{
		Use: "list --at /node/NAME", Short: "List listeners", Args: args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			n, err := nodeName("--at", at)
			if err != nil {
				return err
			}
			var out []api.ListenerInfo
			if err := e.do(n, 0, func(ctx context.Context, c *api.Client) (err error) { out, err = c.Listeners(ctx); return }); err != nil {
				return err
			}
			if e.output == "json" {
				return e.printJSON(out)
			}
			var rows [][]string
			for _, l := range out {
				trust := "node's trust"
				if l.TrustEveryone {
					trust = "everyone"
				} else if len(l.Authorized) > 0 {
					trust = strconv.Itoa(len(l.Authorized)) + " identities"
				}
				rows = append(rows, []string{l.Address, trust})
			}
			e.table("ADDRESS\tACCEPTS", rows)
			return nil
		},
	}
	atFlag(list, &at)
	del := &cobra.Command{
		Use: "delete NAME --at /node/NAME", Short: "Stop a listener", Args: args("NAME"),
		RunE: func(cmd *cobra.Command, a []string) error {
			n, err := nodeName("--at", at)
			if err != nil {
				return err
			}
			return e.do(n, 0, func(ctx context.Context, c *api.Client) error { return c.DeleteListener(ctx, a[0]) })
		},
	}
	atFlag(del, &at)
	cmd.AddCommand(create, list, del)
	return cmd
}
