package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/ockam-go/ockam/internal/api"
	"github.com/ockam-go/ockam/internal/node"
)

func (e *env) messageCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "message", Short: "Send messages along routes"}
	var from, to string
	var wait time.Duration
	send := &cobra.Command{
		Use:   "send TEXT --from /node/NAME --to ROUTE",
		Short: "Send TEXT along ROUTE from a node and print the reply",
		Example: `  ockam message send hello --from /node/a --to /node/relay/service/forward_to_b/service/echo
  ockam message send hello --from /node/client_sidecar --to /service/<channel>/service/echo
  ockam message send hello --to /node/n1/secure/api/service/echo   # through a channel to n1's api listener`,
		Args: args("TEXT"),
		RunE: func(cmd *cobra.Command, a []string) error {
			n, err := nodeName("--from", from)
			if err != nil {
				return err
			}
			if to == "" {
				return fmt.Errorf("missing --to ROUTE")
			}
			var reply api.MessageReply
			if err := e.do(n, wait, func(ctx context.Context, c *api.Client) (err error) {
				reply, err = c.Send(ctx, api.SendMessage{To: to, Payload: a[0], Timeout: wait})
				return
			}); err != nil {
				return err
			}
			if e.output == "json" {
				return e.printJSON(reply)
			}
			fmt.Fprintln(e.stdout, reply.Payload)
			return nil
		},
	}
	send.Flags().StringVar(&from, "from", "", "node that sends the message (/node/NAME)")
	send.Flags().StringVar(&to, "to", "", "route of the message")
	timeoutFlag(send, &wait, node.DefaultTimeout, "how long to wait for the reply")
	cmd.AddCommand(send)
	return cmd
}

func (e *env) relayCmd(use string, hidden bool) *cobra.Command {
	cmd := &cobra.Command{Use: use, Short: "Register names at relay nodes", Hidden: hidden}
	if hidden {
		cmd.Short = "Older name of `ockam relay`"
	}
	var at, to string
	var wait time.Duration
	create := &cobra.Command{
		Use:     "create [NAME] --at /node/RELAY --to /node/NODE",
		Short:   "Keep NAME registered at a relay, so that forward_to_NAME reaches NODE",
		Example: "  ockam " + use + " create server_sidecar --at /node/relay --to /node/server_sidecar",
		Args:    optionalArg("NAME"),
		RunE: func(cmd *cobra.Command, a []string) error {
			name := "default"
			if len(a) == 1 {
				name = a[0]
			}
			n, err := nodeName("--to", to)
			if err != nil {
				return err
			}
			if at == "" {
				return fmt.Errorf("missing --at ROUTE of the relay node (e.g. /node/relay)")
			}
			var info api.RelayInfo
			if err := e.do(n, wait, func(ctx context.Context, c *api.Client) (err error) {
				info, err = c.CreateRelay(ctx, api.CreateRelay{Name: name, At: at, Timeout: wait})
				return
			}); err != nil {
				return err
			}
			return e.printCreated(info.Address,
				fmt.Sprintf("Relay %s registered at %s\n  Reach /node/%s at %s", name, info.At, n, info.Address), info)
		},
	}
	create.Flags().StringVar(&at, "at", "", "route of the relay node")
	create.Flags().StringVar(&to, "to", "", "node to forward to (/node/NAME)")
	timeoutFlag(create, &wait, node.DefaultTimeout, "how long to wait for the first registration")

	var listAt string
	list := &cobra.Command{
		Use: "list --at /node/NAME", Short: "List the relays a node hosts and those it registered",
		Args: args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			n, err := nodeName("--at", listAt)
			if err != nil {
				return err
			}
			var r api.Relays
			if err := e.do(n, 0, func(ctx context.Context, c *api.Client) (err error) { r, err = c.Relays(ctx); return }); err != nil {
				return err
			}
			if e.output == "json" {
				return e.printJSON(r)
			}
			var rows [][]string
			for _, h := range r.Hosted {
				rows = append(rows, []string{h.Name, "hosted", h.Address, h.Remote})
			}
			for _, g := range r.Registered {
				st := "up"
				if !g.Connected {
					st = "down"
				}
				rows = append(rows, []string{g.Name, "registered (" + st + ")", g.Address, g.At})
			}
			e.table("NAME\tKIND\tADDRESS\tPEER", rows)
			return nil
		},
	}
	list.Flags().StringVar(&listAt, "at", "", "node to ask (/node/NAME; default: the default node)")

	var delAt string
	del := &cobra.Command{
		Use: "delete NAME --to /node/NODE", Short: "Stop keeping NAME registered", Args: args("NAME"),
		RunE: func(cmd *cobra.Command, a []string) error {
			n, err := nodeName("--to", delAt)
			if err != nil {
				return err
			}
			return e.do(n, 0, func(ctx context.Context, c *api.Client) error { return c.DeleteRelay(ctx, a[0]) })
		},
	}
	del.Flags().StringVar(&delAt, "to", "", "node that registered the relay (/node/NAME)")
	var showTo string
	show := &cobra.Command{
		Use: "show NAME [--to /node/NODE]", Short: "Show a relay this node registered, or one it hosts", Args: args("NAME"),
		RunE: func(cmd *cobra.Command, a []string) error { return e.relayShow(showTo, a[0]) },
	}
	show.Flags().StringVar(&showTo, "to", "", "node that registered or hosts the relay (/node/NAME; default: the default node)")
	show.Flags().StringVar(&showTo, "at", "", "same as --to")
	cmd.AddCommand(create, list, show, del)
	return cmd
}
