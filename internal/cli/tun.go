package cli

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ockam-go/ockam/internal/api"
)

// tunCmds returns the commands of the virtual interface (tun, socks).
func (e *env) tunCmds() []*cobra.Command { return []*cobra.Command{e.tunCmd(), e.socksCmd()} }

func (e *env) tunCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tun",
		Short: "A virtual network interface whose addresses lead to remote services",
		Long: `A node running as root can own a virtual interface (a TUN device with a userspace
TCP/IP stack behind it). Each remote service mapped to it gets a virtual address and a
DNS name; every TCP connection to that address, on any port, is carried to the service's
outlet over the secure channel. The outlet decides which ports it allows.

  sudo ockam node create client_sidecar
  sudo ockam tun create --at /node/client_sidecar
  ockam secure-channel create --from /node/client_sidecar --to /node/relay/service/forward_to_server_sidecar/service/api \
      | ockam tun map --at /node/client_sidecar --to -/service/outlet --name api
  curl http://100.64.0.2:5000/`,
	}
	var at, name, prefix, udpRate string
	var mtu int
	create := &cobra.Command{
		Use:   "create --at /node/NAME [--name ockam0] [--prefix 100.64.0.0/10] [--mtu N] [--udp-rate 100M]",
		Short: "Create the node's virtual interface (the node must run as root)",
		Args:  args(),
		RunE: func(*cobra.Command, []string) error {
			n, err := nodeName("--at", at)
			if err != nil {
				return err
			}
			rate, err := parseRate(udpRate)
			if err != nil {
				return err
			}
			var info api.TunInfo
			if err := e.do(n, 0, func(ctx context.Context, c *api.Client) (err error) {
				info, err = c.CreateTun(ctx, api.CreateTun{Name: name, Prefix: prefix, MTU: mtu, UDPRate: rate})
				return
			}); err != nil {
				return err
			}
			return e.printCreated(info.Name, fmt.Sprintf("Interface %s on /node/%s\n  address: %s\n  dns:     %s (point a resolver at it for names like api.ockam)\n  mtu:     %d\nMap a service to it with: ockam tun map --at /node/%s --to ROUTE",
				info.Name, n, tunAddrs(info), info.DNS, info.MTU, n), info)
		},
	}
	atFlag(create, &at)
	create.Flags().StringVar(&name, "name", "", "interface name (default ockam0)")
	create.Flags().StringVar(&prefix, "prefix", "", "IPv4 range routed into the interface (default 100.64.0.0/10)")
	create.Flags().IntVar(&mtu, "mtu", 0, "interface MTU (default 65000)")
	create.Flags().StringVar(&udpRate, "udp-rate", "", "UDP the interface sends to outlets, in bits/s (e.g. 500M, 2G; off: no limit; default 100M); beyond it datagrams are dropped, in the kernel where it can")

	del := &cobra.Command{
		Use: "delete --at /node/NAME", Short: "Remove the interface and its routes, ending its flows", Args: args(),
		RunE: func(*cobra.Command, []string) error {
			n, err := nodeName("--at", at)
			if err != nil {
				return err
			}
			return e.do(n, 0, func(ctx context.Context, c *api.Client) error { return c.DeleteTun(ctx) })
		},
	}
	atFlag(del, &at)

	var to, ip, host string
	mp := &cobra.Command{
		Use:   "map --at /node/NAME --to ROUTE [--ip ADDR] [--name NAME]",
		Short: "Give the outlet at ROUTE a virtual address and a DNS name; prints the address",
		Example: `  ockam secure-channel create --from /node/client_sidecar --to /node/relay/service/forward_to_server_sidecar/service/api \
      | ockam tun map --at /node/client_sidecar --to -/service/outlet --name api.ockam`,
		Args: args(),
		RunE: func(*cobra.Command, []string) error {
			n, err := nodeName("--at", at)
			if err != nil {
				return err
			}
			if to == "" {
				return fmt.Errorf("missing --to ROUTE of an outlet, usually /service/<channel>/service/outlet")
			}
			var m api.Mapping
			if err := e.do(n, 0, func(ctx context.Context, c *api.Client) (err error) {
				m, err = c.CreateMapping(ctx, api.CreateMapping{To: to, IP: ip, Name: host})
				return
			}); err != nil {
				return err
			}
			human := fmt.Sprintf("Mapped %s", m.IP)
			if m.Name != "" {
				human += " (" + m.Name + ")"
			}
			return e.printCreated(m.IP, human+fmt.Sprintf(" and %s to %s on /node/%s", m.IP6, m.To, n), m)
		},
	}
	atFlag(mp, &at)
	mp.Flags().StringVar(&to, "to", "", "route to the outlet")
	mp.Flags().StringVar(&ip, "ip", "", "virtual IPv4 address (default: the next free one)")
	mp.Flags().StringVar(&host, "name", "", "DNS name (default: the outlet's name; .ockam is added to names without a dot)")

	unmap := &cobra.Command{
		Use: "unmap ADDR|NAME --at /node/NAME", Short: "Remove a mapping and end its flows", Args: args("ADDR|NAME"),
		RunE: func(_ *cobra.Command, a []string) error {
			n, err := nodeName("--at", at)
			if err != nil {
				return err
			}
			return e.do(n, 0, func(ctx context.Context, c *api.Client) error { return c.DeleteMapping(ctx, a[0]) })
		},
	}
	atFlag(unmap, &at)

	show := &cobra.Command{
		Use: "show --at /node/NAME", Short: "Show the interface, its mappings and live flows", Args: args(),
		RunE: func(*cobra.Command, []string) error {
			n, err := nodeName("--at", at)
			if err != nil {
				return err
			}
			var info api.TunInfo
			if err := e.do(n, 0, func(ctx context.Context, c *api.Client) (err error) { info, err = c.Tun(ctx); return }); err != nil {
				return err
			}
			if e.output == "json" {
				return e.printJSON(info)
			}
			if info.Name == "" {
				fmt.Fprintf(e.stdout, "No interface on /node/%s (sudo ockam tun create --at /node/%s)\n", n, n)
			} else {
				s := info.Stats
				fmt.Fprintf(e.stdout, "Interface %s on /node/%s\n  address: %s\n  dns:     %s\n  mtu:     %d\n  flows:   %d open, %d in all, %d refused\n",
					info.Name, n, tunAddrs(info), info.DNS, info.MTU, s.FlowsOpen, s.FlowsTotal, s.SYNsRefused)
				if s.UDPAssocsTotal > 0 || s.UDPDropped > 0 || s.UDPPoliced > 0 {
					fmt.Fprintf(e.stdout, "  udp:     %d associations open, %d in all, %d datagrams dropped by the node, %d by the kernel\n",
						s.UDPAssocsOpen, s.UDPAssocsTotal, s.UDPDropped, s.UDPPoliced)
				}
				if info.UDPRate > 0 {
					fmt.Fprintf(e.stdout, "  udp rate: %s, shed by %s\n", bitRate(info.UDPRate), info.UDPPolicer)
				}
			}
			var rows [][]string
			for _, m := range info.Mappings {
				rows = append(rows, []string{m.IP, m.Name, m.To, fmt.Sprint(m.Flows), fmt.Sprint(m.Total), m.LastError})
			}
			if len(rows) > 0 {
				fmt.Fprintln(e.stdout)
				e.table("ADDRESS\tNAME\tTO\tOPEN\tTOTAL\tLAST ERROR", rows)
			}
			e.flowTable(info.Flows)
			return nil
		},
	}
	atFlag(show, &at)
	cmd.AddCommand(create, del, mp, unmap, show)
	return cmd
}

// parseRate reads a rate in bits per second with an optional K, M or G
// suffix, as iperf3 does, and returns bytes per second; "" is 0 (the
// default) and "off" -1 (no limit).
func parseRate(s string) (int64, error) {
	switch s {
	case "":
		return 0, nil
	case "off", "none":
		return -1, nil
	}
	mult := int64(1)
	switch strings.ToUpper(s[len(s)-1:]) {
	case "K":
		mult = 1e3
	case "M":
		mult = 1e6
	case "G":
		mult = 1e9
	}
	if mult != 1 {
		s = s[:len(s)-1]
	}
	var v int64
	if _, err := fmt.Sscanf(s, "%d", &v); err != nil || v <= 0 || v > 1e12/mult || fmt.Sprint(v) != s {
		return 0, fmt.Errorf("--udp-rate %q: want bits per second like 500M or 2G, or off", s)
	}
	return v * mult / 8, nil
}

// bitRate prints bytes per second as bits per second, as --udp-rate takes them.
func bitRate(bytesPerSec int64) string {
	b := float64(bytesPerSec) * 8
	switch {
	case b >= 1e9:
		return fmt.Sprintf("%.3g Gbit/s", b/1e9)
	case b >= 1e6:
		return fmt.Sprintf("%.3g Mbit/s", b/1e6)
	}
	return fmt.Sprintf("%.3g kbit/s", b/1e3)
}

// tunAddrs lists the interface's addresses and says which family it left
// out and why.
func tunAddrs(info api.TunInfo) string {
	s := info.Address
	if info.Address6 != "" {
		s += ", " + info.Address6
	}
	if info.LeftOut != "" {
		s += " (" + info.LeftOut + ")"
	}
	return s
}

func (e *env) flowTable(fs []api.FlowInfo) {
	var rows [][]string
	for _, f := range fs {
		rows = append(rows, []string{f.ID, f.Client, f.Target, fmt.Sprint(f.BytesIn), fmt.Sprint(f.BytesOut), f.Opened.Format("15:04:05")})
	}
	if len(rows) > 0 {
		fmt.Fprintln(e.stdout)
		e.table("FLOW\tCLIENT\tTARGET\tBYTES IN\tBYTES OUT\tOPENED", rows)
	}
}

func (e *env) socksCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "socks", Short: "SOCKS5 listeners that carry each CONNECT to an outlet (no root needed)"}
	var at, from, to string
	create := &cobra.Command{
		Use:   "create --at /node/NAME --from HOST:PORT [--to ROUTE]",
		Short: "Listen for SOCKS5 on HOST:PORT; each CONNECT goes to the outlet at ROUTE with its port",
		Long: `Listen for SOCKS5 (no authentication: bind it to a loopback address). Each CONNECT opens
a flow to the outlet at ROUTE asking for the requested port; the requested host is ignored.
Without --to, the host must be a name or address mapped with ` + "`ockam tun map`" + ` (no
interface is needed for that).`,
		Example: `  ockam secure-channel create --from /node/client_sidecar --to /node/relay/service/forward_to_server_sidecar/service/api \
      | ockam socks create --at /node/client_sidecar --from 127.0.0.1:1080 --to -/service/outlet
  curl --socks5-hostname 127.0.0.1:1080 http://api:5000/`,
		Args: args(),
		RunE: func(*cobra.Command, []string) error {
			n, err := nodeName("--at", at)
			if err != nil {
				return err
			}
			var info api.SocksInfo
			if err := e.do(n, 0, func(ctx context.Context, c *api.Client) (err error) {
				info, err = c.CreateSocks(ctx, api.CreateSocks{From: from, To: to})
				return
			}); err != nil {
				return err
			}
			dest := info.To
			if dest == "" {
				dest = "the mapped names of /node/" + n
			}
			return e.printCreated(info.From, fmt.Sprintf("SOCKS5 listener on %s (/node/%s) -> %s", info.From, n, dest), info)
		},
	}
	atFlag(create, &at)
	create.Flags().StringVar(&from, "from", "127.0.0.1:1080", "address to listen on")
	create.Flags().StringVar(&to, "to", "", "route to the outlet (default: resolve hosts through `tun map`)")

	list := &cobra.Command{
		Use: "list --at /node/NAME", Short: "List SOCKS5 listeners and their flows", Args: args(),
		RunE: func(*cobra.Command, []string) error {
			n, err := nodeName("--at", at)
			if err != nil {
				return err
			}
			var out []api.SocksInfo
			if err := e.do(n, 0, func(ctx context.Context, c *api.Client) (err error) { out, err = c.SocksListeners(ctx); return }); err != nil {
				return err
			}
			if e.output == "json" {
				return e.printJSON(out)
			}
			var rows [][]string
			var flows []api.FlowInfo
			for _, l := range out {
				to := l.To
				if to == "" {
					to = "(mapped names)"
				}
				rows = append(rows, []string{l.From, to, fmt.Sprint(len(l.Flows)), fmt.Sprint(l.Total), strings.ReplaceAll(l.LastError, "\t", " ")})
				flows = append(flows, l.Flows...)
			}
			e.table("FROM\tTO\tOPEN\tCONNECTS\tLAST ERROR", rows)
			e.flowTable(flows)
			return nil
		},
	}
	atFlag(list, &at)
	del := &cobra.Command{
		Use: "delete HOST:PORT --at /node/NAME", Short: "Stop a SOCKS5 listener and end its flows", Args: args("HOST:PORT"),
		RunE: func(_ *cobra.Command, a []string) error {
			n, err := nodeName("--at", at)
			if err != nil {
				return err
			}
			return e.do(n, 0, func(ctx context.Context, c *api.Client) error { return c.DeleteSocks(ctx, a[0]) })
		},
	}
	atFlag(del, &at)
	cmd.AddCommand(create, list, del)
	return cmd
}
