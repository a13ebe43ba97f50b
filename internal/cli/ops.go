package cli

// Commands for operating nodes the way Ockam users expect: node logs
// --follow/--tail, node default, relay show, vault, reset, trust.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/ockam-go/ockam/internal/api"
	"github.com/ockam-go/ockam/internal/home"
	"github.com/ockam-go/ockam/internal/identity"
)

func (e *env) c16Cmds() []*cobra.Command {
	return []*cobra.Command{e.vaultCmd(), e.resetCmd(), e.trustCmd(), e.statusCmd(), e.serviceCmd()}
}

// existingNode answers `node create NAME` for a node that exists: a running
// node is left as it is (the command succeeds, as Ockam's did), a stopped
// one is pointed at `node start`. Flags given with it are refused rather
// than silently ignored.
func (e *env) existingNode(h home.Home, name string, changed []string) error {
	if len(changed) > 0 {
		return fmt.Errorf("node %s already exists; %s would not change it (delete it first, or leave the flags out)", name, strings.Join(changed, ", "))
	}
	st, err := h.ReadState(name)
	if err != nil {
		return fmt.Errorf("node %s exists but has no readable state (%v); remove it with `ockam node delete %s --force`", name, err, name)
	}
	if !st.Running() {
		return fmt.Errorf("node %s exists and is stopped: start it with `ockam node start %s`", name, name)
	}
	info := e.nodeInfo(h, name)
	return e.printCreated("/node/"+name,
		fmt.Sprintf("Node %s is already running\n  TCP listener: %s (%s)\n  Identifier:   %s", name, info.TCPAddress, info.Route, info.Identifier),
		info)
}

// orDefault gives back a, or the default node's name if a is empty.
func (e *env) orDefault(a []string) ([]string, error) {
	if len(a) > 0 {
		return a, nil
	}
	n, err := nodeName("NAME", "")
	if err != nil {
		return nil, err
	}
	return []string{n}, nil
}

// serviceCmd lists a node's services, as Ockam's `service list` did.
func (e *env) serviceCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "service", Short: "The services a node runs (echo, uppercase, hop, api, forwarding, outlets, ...)"}
	var at string
	list := &cobra.Command{
		Use: "list [--at /node/NAME]", Short: "List a node's services", Args: args(),
		RunE: func(*cobra.Command, []string) error {
			n, err := nodeName("--at", at)
			if err != nil {
				return err
			}
			var info api.NodeInfo
			if err := e.do(n, 0, func(ctx context.Context, c *api.Client) (err error) { info, err = c.Info(ctx); return }); err != nil {
				return err
			}
			if e.output == "json" {
				return e.printJSON(info.Services)
			}
			for _, s := range info.Services {
				fmt.Fprintln(e.stdout, s)
			}
			return nil
		},
	}
	atFlag(list, &at)
	cmd.AddCommand(list)
	return cmd
}

func (e *env) nodeDefaultCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "default [NAME]",
		Short: "Print the default node, or make NAME the default (used when --at/--from/--to is left out)",
		Args:  optionalArg("NAME"),
		RunE: func(cmd *cobra.Command, a []string) error {
			h, err := e.home()
			if err != nil {
				return err
			}
			if len(a) == 0 {
				name := defaultNode(h)
				if e.output == "json" {
					return e.printJSON(struct {
						Name string `json:"name"`
					}{name})
				}
				fmt.Fprintln(e.stdout, "/node/"+name)
				return nil
			}
			if _, err := h.ReadState(a[0]); err != nil {
				return err
			}
			if err := setDefaultNode(h, a[0]); err != nil {
				return err
			}
			if e.tty && !e.quiet {
				fmt.Fprintf(e.stdout, "The default node is now %s\n", a[0])
			}
			return nil
		},
	}
}

// MaxTail bounds node logs --tail.
const MaxTail = 100000

func (e *env) nodeLogsCmd() *cobra.Command {
	var follow bool
	var tail int
	cmd := &cobra.Command{
		Use:   "logs [NAME] [--follow] [--tail N]",
		Short: "Print a node's log (human lines on a terminal; the JSON records in a pipe or with --output json)",
		Args:  optionalArg("NAME"),
		RunE: func(cmd *cobra.Command, a []string) error {
			h, err := e.home()
			if err != nil {
				return err
			}
			name := defaultNode(h)
			if len(a) == 1 {
				name = a[0]
			}
			if err := home.CheckName(name); err != nil {
				return err
			}
			if tail < 0 || tail > MaxTail {
				return fmt.Errorf("--tail %d: want 0 to %d", tail, MaxTail)
			}
			f, err := os.Open(h.LogPath(name))
			if errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("%w: %s (see `ockam node list`)", home.ErrNoNode, name)
			}
			if err != nil {
				return err
			}
			defer f.Close()
			if err := e.printLog(f, tail); err != nil {
				return err
			}
			if !follow {
				return nil
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM, syscall.SIGPIPE)
			defer stop()
			return e.followLog(ctx, h.LogPath(name), f)
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing what the node logs (until interrupted)")
	cmd.Flags().IntVarP(&tail, "tail", "n", 0, "print only the last N lines first (0: all)")
	return cmd
}

// printLog prints what is left in f (its last tail lines if tail > 0).
func (e *env) printLog(f *os.File, tail int) error {
	b, err := io.ReadAll(f)
	if err != nil {
		return err
	}
	lines := bytes.SplitAfter(b, []byte("\n"))
	if len(lines) > 0 && len(lines[len(lines)-1]) == 0 {
		lines = lines[:len(lines)-1]
	}
	if tail > 0 && len(lines) > tail {
		lines = lines[len(lines)-tail:]
	}
	for _, l := range lines {
		e.logLine(l)
	}
	return nil
}

// followLog prints what is appended to path, reopening it when the node's
// log is rotated (renamed, and a new one started).
func (e *env) followLog(ctx context.Context, path string, f *os.File) error {
	r := bufio.NewReader(f)
	var partial []byte
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		for {
			l, err := r.ReadBytes('\n')
			partial = append(partial, l...)
			if err != nil {
				break
			}
			e.logLine(partial)
			partial = partial[:0]
		}
		if st, err := os.Stat(path); err == nil {
			cur, _ := f.Stat()
			if cur != nil && !os.SameFile(st, cur) {
				nf, err := os.Open(path)
				if err == nil {
					// Rotated: what the old file got after our last
					// read comes first.
					rest, _ := io.ReadAll(r)
					for _, l := range bytes.SplitAfter(append(partial, rest...), []byte("\n")) {
						e.logLine(l)
					}
					partial = partial[:0]
					f.Close()
					f = nf
					r = bufio.NewReader(f)
					continue
				}
			}
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil
		case <-tick.C:
		}
	}
}

// logLine prints one JSON log record as it is in a pipe, and on a
// terminal as a human line:
// "15:04:05.000 INFO  message key=value ...", each key once.
func (e *env) logLine(l []byte) {
	l = bytes.TrimRight(l, "\n")
	if len(l) == 0 {
		return
	}
	if e.output == "json" || !e.tty {
		fmt.Fprintf(e.stdout, "%s\n", l)
		return
	}
	var rec map[string]any
	if err := json.Unmarshal(l, &rec); err != nil {
		fmt.Fprintf(e.stdout, "%s\n", l)
		return
	}
	var b strings.Builder
	if t, ok := rec["time"].(string); ok {
		if tt, err := time.Parse(time.RFC3339Nano, t); err == nil {
			t = tt.Local().Format("2006-01-02 15:04:05.000")
		}
		b.WriteString(t)
		b.WriteByte(' ')
	}
	lvl, _ := rec["level"].(string)
	fmt.Fprintf(&b, "%-5s %v", lvl, rec["msg"])
	keys := make([]string, 0, len(rec))
	for k := range rec {
		switch k {
		case "time", "level", "msg", "node":
		default:
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := fmt.Sprint(rec[k])
		if strings.ContainsAny(v, " \t\"") {
			v = fmt.Sprintf("%q", v)
		}
		fmt.Fprintf(&b, " %s=%s", k, v)
	}
	fmt.Fprintln(e.stdout, b.String())
}

func (e *env) relayShow(to, name string) error {
	n, err := nodeName("--to", to)
	if err != nil {
		return err
	}
	var r api.Relays
	if err := e.do(n, 0, func(ctx context.Context, c *api.Client) (err error) { r, err = c.Relays(ctx); return }); err != nil {
		return err
	}
	type shown struct {
		api.RelayInfo
		Kind string `json:"kind"`
	}
	var found []shown
	for _, g := range r.Registered {
		if g.Name == name {
			found = append(found, shown{g, "registered"})
		}
	}
	for _, h := range r.Hosted {
		if h.Name == name {
			found = append(found, shown{h, "hosted"})
		}
	}
	if len(found) == 0 {
		return fmt.Errorf("node %s neither registered nor hosts a relay named %s (see `ockam relay list --at /node/%s`)", n, name, n)
	}
	if e.output == "json" {
		if len(found) == 1 {
			return e.printJSON(found[0])
		}
		return e.printJSON(found)
	}
	for _, f := range found {
		fmt.Fprintf(e.stdout, "Relay %s (%s by /node/%s)\n", f.Name, f.Kind, n)
		if f.At != "" {
			fmt.Fprintf(e.stdout, "  at:        %s\n", f.At)
		}
		if f.Address != "" {
			fmt.Fprintf(e.stdout, "  address:   %s\n", f.Address)
		}
		if f.Remote != "" {
			fmt.Fprintf(e.stdout, "  remote:    %s\n", f.Remote)
		}
		if f.Kind == "registered" {
			state := "up"
			if !f.Connected {
				state = "down"
			}
			fmt.Fprintf(e.stdout, "  state:     %s\n", state)
			if !f.Since.IsZero() {
				fmt.Fprintf(e.stdout, "  since:     %s\n", f.Since.Local().Format(time.DateTime))
			}
			if f.LastError != "" {
				fmt.Fprintf(e.stdout, "  last error: %s\n", f.LastError)
			}
		}
	}
	return nil
}

type vaultInfo struct {
	Name       string   `json:"name"`
	Path       string   `json:"path"`
	Encrypted  bool     `json:"encrypted_at_rest"`
	Identities []string `json:"identities"`
}

// The vault commands manage the one vault of $OCKAM_HOME, named "default"
// (Ockam could hold several; one per home is a deliberate difference).
func (e *env) vaultCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "vault", Short: "The vault that keeps this home's identity keys (one per $OCKAM_HOME, named default)"}
	check := func(a []string) error {
		if len(a) == 1 && a[0] != DefaultNode {
			return fmt.Errorf("vault %s: this home has one vault, named default (use another OCKAM_HOME for another vault)", a[0])
		}
		return nil
	}
	info := func() (vaultInfo, error) {
		h, err := e.home()
		if err != nil {
			return vaultInfo{}, err
		}
		vi := vaultInfo{Name: "default", Path: h.VaultDir(), Identities: []string{}}
		if _, err := os.Stat(h.VaultDir()); err != nil {
			return vi, fmt.Errorf("no vault yet in %s (create it with `ockam vault create`)", h.Dir)
		}
		v, err := e.vault()
		if err != nil {
			return vi, err
		}
		vi.Encrypted = v.Encrypted()
		names, err := v.List()
		if err != nil {
			return vi, err
		}
		vi.Identities = append(vi.Identities, names...)
		return vi, nil
	}
	create := &cobra.Command{
		Use: "create [default]", Short: "Create the vault (nodes and identity create make it when needed)", Args: optionalArg("NAME"),
		RunE: func(_ *cobra.Command, a []string) error {
			if err := check(a); err != nil {
				return err
			}
			h, err := e.home()
			if err != nil {
				return err
			}
			if _, err := os.Stat(h.VaultDir()); err == nil {
				return errors.New("vault default already exists (see `ockam vault show`)")
			}
			if _, err := e.vault(); err != nil {
				return err
			}
			vi, err := info()
			if err != nil {
				return err
			}
			return e.printCreated(vi.Name, "Created vault default at "+vi.Path, vi)
		},
	}
	show := &cobra.Command{
		Use: "show [default]", Short: "Show the vault", Args: optionalArg("NAME"),
		RunE: func(_ *cobra.Command, a []string) error {
			if err := check(a); err != nil {
				return err
			}
			vi, err := info()
			if err != nil {
				return err
			}
			if e.output == "json" {
				return e.printJSON(vi)
			}
			at := "no (keys in files of mode 0600; set $OCKAM_VAULT_PASSPHRASE or --vault-passphrase-file to encrypt)"
			if vi.Encrypted {
				at = "yes (passphrase)"
			}
			fmt.Fprintf(e.stdout, "Vault:      %s\nPath:       %s\nEncrypted:  %s\nIdentities: %s\n", vi.Name, vi.Path, at, strings.Join(vi.Identities, ", "))
			return nil
		},
	}
	list := &cobra.Command{
		Use: "list", Short: "List vaults", Args: args(),
		RunE: func(*cobra.Command, []string) error {
			vi, err := info()
			var out []vaultInfo
			if err == nil {
				out = append(out, vi)
			}
			if e.output == "json" {
				if out == nil {
					out = []vaultInfo{}
				}
				return e.printJSON(out)
			}
			var rows [][]string
			for _, v := range out {
				rows = append(rows, []string{v.Name, fmt.Sprint(len(v.Identities)), v.Path})
			}
			e.table("NAME\tIDENTITIES\tPATH", rows)
			return nil
		},
	}
	del := &cobra.Command{
		Use: "delete [default]", Short: "Delete the vault and every identity in it (refused while nodes exist)", Args: optionalArg("NAME"),
		RunE: func(_ *cobra.Command, a []string) error {
			if err := check(a); err != nil {
				return err
			}
			h, err := e.home()
			if err != nil {
				return err
			}
			if _, err := os.Stat(h.VaultDir()); err != nil {
				return errors.New("no vault to delete")
			}
			if nodes, _ := h.Nodes(); len(nodes) > 0 {
				return fmt.Errorf("nodes use the vault's identities (%s): delete them first (`ockam node delete --all`), or use `ockam reset`", strings.Join(nodes, ", "))
			}
			if err := os.RemoveAll(h.VaultDir()); err != nil {
				return err
			}
			if e.tty && !e.quiet {
				fmt.Fprintln(e.stdout, "Deleted vault default")
			}
			return nil
		},
	}
	cmd.AddCommand(create, show, list, del)
	return cmd
}

func (e *env) resetCmd() *cobra.Command {
	var yes bool
	cmd := &cobra.Command{
		Use:   "reset --yes",
		Short: "Delete every node, the vault with its identities and the trust list of $OCKAM_HOME",
		Args:  args(),
		RunE: func(*cobra.Command, []string) error {
			h, err := e.home()
			if err != nil {
				return err
			}
			if !yes {
				return fmt.Errorf("this deletes every node, identity and key in %s: run `ockam reset --yes`", h.Dir)
			}
			names, err := h.Nodes()
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
			var errs []string
			for _, n := range names {
				if err := e.deleteNode(h, n, false); err != nil {
					errs = append(errs, err.Error())
				}
			}
			if errs != nil {
				return fmt.Errorf("reset stopped: %s", strings.Join(errs, "; "))
			}
			for _, p := range []string{h.NodesDir(), h.VaultDir(), h.TrustPath(), h.Dir + "/run", h.Dir + "/" + defaultNodeFile} {
				if err := os.RemoveAll(p); err != nil {
					return err
				}
			}
			if e.tty && !e.quiet {
				fmt.Fprintf(e.stdout, "Reset %s: %d node(s) deleted, vault and trust list removed\n", h.Dir, len(names))
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "really delete everything")
	return cmd
}

// trust add/list/delete edit $OCKAM_HOME/trust.json: the identifiers that
// every node of this home trusts besides its own and its siblings'. Nodes
// read it at each handshake, so a change applies to the next channel.
func (e *env) trustCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "trust", Short: "Identifiers every node of this home trusts (besides this home's own nodes)"}
	write := func(h home.Home, ids []string) error {
		b, err := json.MarshalIndent(ids, "", "  ")
		if err != nil {
			return err
		}
		if len(b)+1 > home.MaxStateFile {
			return fmt.Errorf("the trust list would be over %d bytes (%d identifiers): nodes could not read it", home.MaxStateFile, len(ids))
		}
		return home.WriteFileAtomic(h.TrustPath(), append(b, '\n'), 0o600)
	}
	add := &cobra.Command{
		Use: "add IDENTIFIER...", Short: "Trust identifiers (printed by `ockam identity show` on the other machine)",
		Args: cobra.MinimumNArgs(1),
		RunE: func(_ *cobra.Command, a []string) error {
			h, err := e.home()
			if err != nil {
				return err
			}
			ids, err := h.TrustList()
			if err != nil {
				return err
			}
			for _, s := range a {
				id, err := identity.ParseIdentifier(s)
				if err != nil {
					return fmt.Errorf("%s: %v", truncateArg(s), err)
				}
				if !slices.Contains(ids, id.String()) {
					ids = append(ids, id.String())
				}
			}
			if err := write(h, ids); err != nil {
				return err
			}
			if e.tty && !e.quiet {
				fmt.Fprintf(e.stdout, "Trusted: %d identifier(s) in %s\n", len(ids), h.TrustPath())
			}
			return nil
		},
	}
	list := &cobra.Command{
		Use: "list", Short: "List trusted identifiers (this home's nodes, then trust.json)", Args: args(),
		RunE: func(*cobra.Command, []string) error {
			h, err := e.home()
			if err != nil {
				return err
			}
			ids, err := h.TrustList()
			if err != nil {
				return err
			}
			type entry struct {
				Identifier string `json:"identifier"`
				Source     string `json:"source"`
			}
			out := []entry{}
			names, _ := h.Nodes()
			for _, n := range names {
				if st, err := h.ReadState(n); err == nil && st.Identifier != "" {
					out = append(out, entry{st.Identifier, "node " + n})
				}
			}
			for _, id := range ids {
				out = append(out, entry{id, "trust.json"})
			}
			if e.output == "json" {
				return e.printJSON(out)
			}
			var rows [][]string
			for _, t := range out {
				rows = append(rows, []string{t.Identifier, t.Source})
			}
			e.table("IDENTIFIER\tSOURCE", rows)
			return nil
		},
	}
	del := &cobra.Command{
		Use: "delete IDENTIFIER", Short: "Stop trusting an identifier (channels already open stay open)", Args: args("IDENTIFIER"),
		RunE: func(_ *cobra.Command, a []string) error {
			h, err := e.home()
			if err != nil {
				return err
			}
			ids, err := h.TrustList()
			if err != nil {
				return err
			}
			i := slices.Index(ids, a[0])
			if i < 0 {
				return fmt.Errorf("%s is not in %s", truncateArg(a[0]), h.TrustPath())
			}
			return write(h, slices.Delete(ids, i, i+1))
		},
	}
	cmd.AddCommand(add, list, del)
	return cmd
}

func truncateArg(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}
