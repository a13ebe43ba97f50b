package cli

// ockam status: one screen with every node and what it runs, in the manner
// of `tailscale status`.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ockam-go/ockam/internal/api"
	"github.com/ockam-go/ockam/internal/home"
)

// NodeStatus is one node in `ockam status --output json`.
type NodeStatus struct {
	api.NodeInfo
	// LastLog is the node's last log line, for a node that is not running.
	LastLog   string             `json:"last_log,omitempty"`
	Default   bool               `json:"default,omitempty"`
	Relays    *api.Relays        `json:"relays,omitempty"`
	Channels  []api.ChannelInfo  `json:"channels,omitempty"`
	Listeners []api.ListenerInfo `json:"listeners,omitempty"`
	Inlets    []api.PortalInfo   `json:"inlets,omitempty"`
	Outlets   []api.PortalInfo   `json:"outlets,omitempty"`
	Tun       *api.TunInfo       `json:"tun,omitempty"`
	Socks     []api.SocksInfo    `json:"socks,omitempty"`
	Errors    []string           `json:"errors,omitempty"`
}

func (e *env) statusCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Every node: running, stopped or crashed, with its relays, channels, portals and TUN",
		Args:  args(),
		RunE: func(*cobra.Command, []string) error {
			h, err := e.home()
			if err != nil {
				return err
			}
			names, err := h.Nodes()
			if err != nil {
				return err
			}
			def := defaultNode(h)
			out := []NodeStatus{}
			for _, n := range names {
				s := e.nodeStatus(h, n)
				s.Default = n == def
				out = append(out, s)
			}
			if e.output == "json" {
				return e.printJSON(out)
			}
			if len(out) == 0 {
				fmt.Fprintln(e.stdout, "No nodes. Create one with `ockam node create`.")
				return nil
			}
			for _, s := range out {
				e.printStatus(s)
			}
			return nil
		},
	}
}

// nodeStatus gathers what a node runs, or why it does not.
func (e *env) nodeStatus(h home.Home, name string) NodeStatus {
	s := NodeStatus{NodeInfo: e.nodeInfo(h, name)}
	if s.Status != "running" {
		if s.Status == "crashed" {
			s.LastLog = lastWords(h, name)
		}
		return s
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c := api.NewClient(name, h.SocketPath(name))
	note := func(what string, err error) {
		if err != nil {
			s.Errors = append(s.Errors, what+": "+err.Error())
		}
	}
	r, err := c.Relays(ctx)
	note("relays", err)
	if err == nil && (len(r.Registered) > 0 || len(r.Hosted) > 0) {
		s.Relays = &r
	}
	s.Channels, err = c.Channels(ctx)
	note("channels", err)
	s.Listeners, err = c.Listeners(ctx)
	note("listeners", err)
	s.Inlets, err = c.Inlets(ctx)
	note("inlets", err)
	s.Outlets, err = c.Outlets(ctx)
	note("outlets", err)
	if t, err := c.Tun(ctx); err == nil && t.Name != "" {
		s.Tun = &t
	}
	s.Socks, _ = c.SocksListeners(ctx)
	return s
}

// cleanStop reports whether a node's last log line says it stopped on
// request.
func cleanStop(line string) bool {
	return strings.Contains(line, "node stopped") || strings.Contains(line, "shutting down")
}

// crashed reports whether a node that is not running ended without
// stopping: its log (a node started in the background has one) does not
// end with its stop. A node run in the foreground logs elsewhere and is
// only ever "stopped".
func crashed(h home.Home, name string) bool {
	if _, err := os.Stat(h.LogPath(name)); err != nil {
		return false
	}
	return !cleanStop(lastLogLine(h.LogPath(name)))
}

// lastWords returns what a crashed node said last: a panic or fatal
// error on its standard error if there is one, else its last log line.
func lastWords(h home.Home, name string) string {
	if b, err := os.ReadFile(h.StderrPath(name)); err == nil && len(b) > 0 {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "panic:") || strings.HasPrefix(l, "fatal error:") {
				return l
			}
		}
	}
	return lastLogLine(h.LogPath(name))
}

// lastLogLine returns the message of the last record of a node log, with
// its error if it has one.
func lastLogLine(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	const window = 16 << 10
	off := max(st.Size()-window, 0)
	b := make([]byte, st.Size()-off)
	if _, err := f.ReadAt(b, off); err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	last := lines[len(lines)-1]
	var rec struct {
		Msg string `json:"msg"`
		Err string `json:"err"`
	}
	if json.Unmarshal([]byte(last), &rec) != nil || rec.Msg == "" {
		return last
	}
	if rec.Err != "" {
		return rec.Msg + ": " + rec.Err
	}
	return rec.Msg
}

func (e *env) printStatus(s NodeStatus) {
	mark := " "
	if s.Default {
		mark = "*"
	}
	switch s.Status {
	case "running":
		fmt.Fprintf(e.stdout, "%s %-16s running   pid %-7d %-21s %s\n", mark, s.Name, s.PID, s.TCPAddress, short(s.Identifier))
	case "crashed":
		fmt.Fprintf(e.stdout, "%s %-16s crashed   last log: %s\n", mark, s.Name, s.LastLog)
		return
	default:
		fmt.Fprintf(e.stdout, "%s %-16s %s\n", mark, s.Name, s.Status)
		return
	}
	if s.Relays != nil {
		for _, r := range s.Relays.Registered {
			state := "up"
			if !r.Connected {
				state = "down: " + r.LastError
			} else if !r.Since.IsZero() {
				state = "up since " + r.Since.Local().Format(time.DateTime)
			}
			fmt.Fprintf(e.stdout, "    relay     %s at %s (%s)\n", r.Name, r.At, state)
		}
		for _, r := range s.Relays.Hosted {
			fmt.Fprintf(e.stdout, "    hosting   %s for %s\n", r.Address, r.Remote)
		}
	}
	for _, c := range s.Channels {
		to := c.To
		if to == "" {
			to = "(accepted)"
		}
		state := c.State
		if !c.UpSince.IsZero() {
			state += " since " + c.UpSince.Local().Format(time.DateTime)
		}
		fmt.Fprintf(e.stdout, "    channel   %s %s %s, peer %s, to %s, %s out %s in (%d/%d messages)\n", c.Address, c.Role, state, short(c.Peer), to, bytesText(c.BytesOut), bytesText(c.BytesIn), c.Sent, c.Received)
	}
	for _, p := range s.Inlets {
		fmt.Fprintf(e.stdout, "    inlet     %s -> %s, %d open %d in all\n", p.From, p.To, len(p.Flows), p.Total)
	}
	for _, p := range s.Outlets {
		fmt.Fprintf(e.stdout, "    outlet    %s -> %s, %d open %d in all\n", p.From, p.To, len(p.Flows), p.Total)
	}
	if t := s.Tun; t != nil {
		fmt.Fprintf(e.stdout, "    tun       %s %s, %d mapped, %d open flows\n", t.Name, t.Address, len(t.Mappings), len(t.Flows))
	}
	for _, k := range s.Socks {
		fmt.Fprintf(e.stdout, "    socks     %s, %d open %d in all\n", k.From, len(k.Flows), k.Total)
	}
	for _, er := range s.Errors {
		fmt.Fprintf(e.stdout, "    error     %s\n", er)
	}
}

// bytesText prints a byte count as tailscale status does: B, KiB, MiB, GiB.
func bytesText(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n)/unit, 0
	for v >= unit && i < 2 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f %ciB", v, "KMG"[i])
}
