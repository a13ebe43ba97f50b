package cli

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"gopkg.in/natefinch/lumberjack.v2"

	"github.com/ockam-go/ockam/internal/api"
	"github.com/ockam-go/ockam/internal/home"
	"github.com/ockam-go/ockam/internal/identity"
	"github.com/ockam-go/ockam/internal/node"
	"github.com/ockam-go/ockam/internal/portal"
	"github.com/ockam-go/ockam/internal/router"
	"github.com/ockam-go/ockam/internal/sched"
	"github.com/ockam-go/ockam/internal/vault"
	"github.com/ockam-go/ockam/relay"
)

// StartTimeout bounds how long `node create` waits for the node to answer.
const StartTimeout = 20 * time.Second

func (e *env) nodeCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "node", Short: "Create and manage nodes"}

	var listen, ident, logFile string
	var foreground, restore bool
	var set home.NodeSettings
	var grace time.Duration
	create := &cobra.Command{
		Use:   "create [NAME]",
		Short: "Start a node in the background (default NAME: the default node); a running node of that name is left as it is",
		Args:  optionalArg("NAME"),
		RunE: func(cmd *cobra.Command, a []string) error {
			if err := checkSettings(set); err != nil {
				return err
			}
			h, err := e.home()
			if err != nil {
				return err
			}
			name := defaultNode(h)
			if len(a) == 1 {
				name = a[0]
			}
			var changed []string
			settingsChanged := false
			cmd.Flags().Visit(func(f *pflag.Flag) {
				if cmd.InheritedFlags().Lookup(f.Name) == nil {
					changed = append(changed, "--"+f.Name)
				}
				switch f.Name {
				case "foreground", "restore", "log-file", "tcp-listener-address", "identity":
				default:
					settingsChanged = true
				}
			})
			set.ResumeGrace = grace.String()
			if grace < 0 {
				return fmt.Errorf("--resume-grace must not be negative, not %v", grace)
			}
			if foreground {
				// With --restore, settings given as flags (a service
				// unit's ExecStart) replace the saved ones.
				return e.runNode(name, listen, ident, logFile, restore, settingsChanged, set)
			}
			return e.createNode(name, listen, ident, set, changed)
		},
	}
	create.Flags().StringArrayVar(&set.AllowRouting, "allow-routing", nil, "identifier of a channel peer that may route through this node: reach its private services and make it connect to TCP addresses (repeatable; default: nobody)")
	create.Flags().IntVar(&set.MaxConns, "max-conns", router.DefaultMaxConns, "connections the node holds at once")
	create.Flags().IntVar(&set.MaxConnsPerIP, "max-conns-per-ip", router.DefaultMaxConnsPerIP, "connections accepted from one IP address")
	create.Flags().Int64Var(&set.MaxQueueMiB, "max-queue-mib", router.DefaultMaxQueueBytes>>20, "MiB queued towards one connection; what other connections pass on beyond it is dropped")
	create.Flags().Int64Var(&set.ReadBufferMiB, "read-buffer-mib", router.DefaultReadBufferBytes>>20, "MiB of read buffers (large and partial frames) for all connections")
	create.Flags().IntVar(&set.MaxNamesPerIdentity, "max-names-per-identity", relay.DefaultNamesPerIdentity, "relay names one identity may hold at this node")
	create.Flags().IntVar(&set.LogMaxMiB, "log-max-mib", home.DefaultLogMaxMiB, "size in MiB at which node.log is rotated (one old file is kept)")
	create.Flags().DurationVar(&grace, "resume-grace", portal.DefaultResumeGrace, "how long carried connections wait for their secure channel to come back (a relay restart) and resume where they stopped; 0: they end with it")
	create.Flags().StringVar(&set.MetricsListen, "metrics-listen", "", "also serve Prometheus /metrics and /healthz on this TCP address (bind it to loopback or a private network; the control socket always serves /metrics)")
	create.Flags().IntVar(&set.WindowBudgetMiB, "window-budget-mib", portal.DefaultWindowBudget>>20, "MiB all flows' receive windows may grow by together, beyond their first 256 KiB each")
	create.Flags().IntVar(&set.MaxFlowWindowMiB, "max-flow-window-mib", portal.DefaultMaxFlowWindow>>20, "MiB one flow's receive window may grow to (what one flow carries is about this much per round trip)")
	create.Flags().IntVar(&set.Lanes, "lanes", router.DefaultLanes, fmt.Sprintf("TCP connections opened to each node this one connects to (a relay): a secure channel's flows spread over them, each flow on one (1..%d)", router.MaxLanes))
	create.Flags().StringVar(&logFile, "log-file", "", "write the log to this file, rotated by size (used when detaching)")
	create.Flags().MarkHidden("log-file")
	create.Flags().StringVar(&listen, "tcp-listener-address", "127.0.0.1:0", "address of the node's TCP listener")
	create.Flags().StringVar(&ident, "identity", "", "vault identity to use (default: a new one named after the node)")
	create.Flags().BoolVarP(&foreground, "foreground", "f", false, "run in the foreground instead of detaching")
	create.Flags().BoolVar(&restore, "restore", false, "with --foreground: bring back everything the node had (what node start does; for service units); settings given as flags replace the saved ones")

	stop := &cobra.Command{
		Use: "stop [NAME]", Short: "Stop a node, keeping its state (see node start)", Args: optionalArg("NAME"),
		RunE: func(cmd *cobra.Command, a []string) error {
			a, err := e.orDefault(a)
			if err != nil {
				return err
			}
			h, err := e.home()
			if err != nil {
				return err
			}
			st, err := h.ReadState(a[0])
			if err != nil {
				return err
			}
			if !st.Running() {
				return fmt.Errorf("node %s is not running", a[0])
			}
			if err := stopProcess(h, st); err != nil {
				return err
			}
			if e.tty {
				fmt.Fprintf(e.stdout, "Stopped node %s\n", a[0])
			}
			return nil
		},
	}
	start := &cobra.Command{
		Use: "start [NAME]", Short: "Start a stopped node with everything it had (every resource: outlets, inlets, relays, channels, listeners, TUN and mappings, SOCKS)", Args: optionalArg("NAME"),
		RunE: func(cmd *cobra.Command, a []string) error {
			a, err := e.orDefault(a)
			if err != nil {
				return err
			}
			h, err := e.home()
			if err != nil {
				return err
			}
			st, err := h.ReadState(a[0])
			if err != nil {
				return err
			}
			if st.Running() {
				info := e.nodeInfo(h, a[0])
				return e.printCreated("/node/"+a[0], fmt.Sprintf("Node %s is already running\n  TCP listener: %s", a[0], info.Route), info)
			}
			conf, err := h.ReadConfig(a[0])
			if err != nil {
				return err
			}
			listen := conf.Listen
			if listen == "" {
				listen = st.TCPAddress
			}
			info, err := e.spawnNode(h, a[0], listen, st.Identity, true, home.NodeSettings{})
			if err != nil {
				return err
			}
			return e.printCreated("/node/"+a[0], fmt.Sprintf("Started node %s\n  TCP listener: %s", a[0], info.Route), info)
		},
	}

	list := &cobra.Command{
		Use: "list", Short: "List nodes", Args: args(),
		RunE: func(cmd *cobra.Command, _ []string) error { return e.listNodes() },
	}
	show := &cobra.Command{
		Use: "show [NAME]", Short: "Show a node (default: the default node)", Args: optionalArg("NAME"),
		RunE: func(cmd *cobra.Command, a []string) error {
			a, err := e.orDefault(a)
			if err != nil {
				return err
			}
			return e.showNode(a[0])
		},
	}
	var all, force, yes bool
	del := &cobra.Command{
		Use: "delete [NAME]", Short: "Stop a node and remove its state",
		Args: optionalArg("NAME"),
		RunE: func(cmd *cobra.Command, a []string) error {
			h, err := e.home()
			if err != nil {
				return err
			}
			switch {
			case all && len(a) == 1:
				return errors.New("give a NAME or --all, not both")
			case all:
				names, err := h.Nodes()
				if err != nil {
					return err
				}
				var errs []string
				for _, n := range names {
					if err := e.deleteNode(h, n, force); err != nil {
						errs = append(errs, err.Error())
					}
				}
				if errs != nil {
					return errors.New(strings.Join(errs, "; "))
				}
				if e.tty {
					fmt.Fprintf(e.stdout, "Deleted %d node(s)\n", len(names))
				}
				return nil
			case len(a) == 0:
				return fmt.Errorf("missing NAME (usage: %s)", cmd.UseLine())
			}
			if err := e.deleteNode(h, a[0], force); err != nil {
				return err
			}
			if e.tty {
				fmt.Fprintf(e.stdout, "Deleted node %s\n", a[0])
			}
			return nil
		},
	}
	del.Flags().BoolVar(&all, "all", false, "delete every node")
	del.Flags().BoolVarP(&force, "force", "f", false, "kill the node at once (SIGKILL) instead of asking it to stop")
	del.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask (ockam never asks; accepted for scripts written for Ockam)")
	cmd.AddCommand(create, list, show, del, e.nodeLogsCmd(), stop, start, e.nodeDefaultCmd(), e.nodeMetricsCmd())
	return cmd
}

// passphrase returns the vault passphrase: from --vault-passphrase-file,
// else from $OCKAM_VAULT_PASSPHRASE, else none (keys in clear, mode 0600).
func (e *env) passphrase() ([]byte, error) {
	if e.passFile == "" {
		return []byte(os.Getenv(vault.PassphraseEnv)), nil
	}
	f, err := os.Open(e.passFile)
	if err != nil {
		return nil, fmt.Errorf("--vault-passphrase-file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 1025))
	if err != nil {
		return nil, fmt.Errorf("--vault-passphrase-file: %w", err)
	}
	if len(b) > 1024 {
		return nil, errors.New("--vault-passphrase-file: over 1024 bytes")
	}
	line, _, _ := strings.Cut(string(b), "\n")
	if line == "" {
		return nil, errors.New("--vault-passphrase-file: the file is empty")
	}
	return []byte(line), nil
}

// createNode starts `ockam node create NAME --foreground` detached, with its
// output going to the node's log, and waits until it answers.
func (e *env) createNode(name, listen, ident string, set home.NodeSettings, changed []string) error {
	if err := home.CheckName(name); err != nil {
		return err
	}
	h, err := e.home()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(h.NodesDir(), 0o700); err != nil {
		return err
	}
	if err := os.Mkdir(h.NodeDir(name), 0o700); errors.Is(err, fs.ErrExist) {
		return e.existingNode(h, name, changed)
	} else if err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(h.NodeDir(name))
		}
	}()
	info, err := e.spawnNode(h, name, listen, ident, false, set)
	if err != nil {
		return err
	}
	ok = true
	return e.printCreated("/node/"+name,
		fmt.Sprintf("Created node %s\n  TCP listener: %s (%s)\n  Identifier:   %s", name, info.TCPAddress, info.Route, info.Identifier),
		info)
}

// spawnNode starts `ockam node create NAME --foreground` detached, with its
// output going to the node's log, and waits until it answers.
// With restore, the node takes its saved settings and set is not used.
func (e *env) spawnNode(h home.Home, name, listen, ident string, restore bool, set home.NodeSettings) (*api.NodeInfo, error) {
	logf, err := os.OpenFile(h.StderrPath(name), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	argv := []string{"node", "create", name, "--foreground", "--tcp-listener-address", listen, "--log-file", h.LogPath(name)}
	if ident != "" {
		argv = append(argv, "--identity", ident)
	}
	if restore {
		argv = append(argv, "--restore")
	} else {
		argv = append(argv, settingsArgs(set)...)
	}
	pass, err := e.passphrase()
	if err != nil {
		return nil, err
	}
	c := exec.Command(exe, argv...)
	c.Env = sched.Environ(append(os.Environ(), "OCKAM_HOME="+h.Dir))
	if e.verbose {
		c.Env = append(c.Env, "OCKAM_LOG=debug")
	}
	if len(pass) > 0 {
		c.Env = append(c.Env, vault.PassphraseEnv+"="+string(pass))
	}
	c.Stdout, c.Stderr = logf, logf
	c.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := c.Start(); err != nil {
		return nil, fmt.Errorf("starting node %s: %w", name, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- c.Wait() }()
	info, err := e.waitReady(h, name, exited)
	if err != nil {
		c.Process.Kill()
		return nil, err
	}
	return info, nil
}

func (e *env) waitReady(h home.Home, name string, exited <-chan error) (*api.NodeInfo, error) {
	deadline := time.Now().Add(StartTimeout)
	cl := api.NewClient(name, h.SocketPath(name))
	for {
		select {
		case <-exited:
			return nil, fmt.Errorf("node %s failed to start: %s", name, lastError(h.LogPath(name)))
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		info, err := cl.Info(ctx)
		cancel()
		if err == nil {
			return &info, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("node %s did not start within %v (see `ockam node logs %s`)", name, StartTimeout, name)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// lastError returns the message of the last error logged in a node log.
func lastError(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "no log"
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		var rec struct {
			Err string `json:"err"`
		}
		if json.Unmarshal([]byte(lines[i]), &rec) == nil && rec.Err != "" {
			return rec.Err
		}
	}
	return lines[len(lines)-1]
}

// runNode runs a node in this process until SIGINT/SIGTERM or a shutdown
// request.
func (e *env) runNode(name, listen, ident, logFile string, restore, keepSettings bool, set home.NodeSettings) error {
	// A node started by spawnNode has the scheduler setting already; one
	// started by hand or by a service unit becomes itself again with it.
	if err := sched.Reexec(); err != nil {
		fmt.Fprintf(e.stderr, "ockam: running without the scheduler setting (%v)\n", err)
	}
	sched.SetProcs()
	h, err := e.home()
	if err != nil {
		return err
	}
	if err := home.CheckName(name); err != nil {
		return err
	}
	if err := os.MkdirAll(h.NodeDir(name), 0o700); err != nil {
		return err
	}
	level := slog.LevelInfo
	if os.Getenv("OCKAM_LOG") == "debug" {
		level = slog.LevelDebug
	}
	if restore && !keepSettings {
		saved, err := h.ReadConfig(name)
		if err != nil {
			return err
		}
		set = saved.Settings
	}
	var out io.Writer = e.stderr
	if logFile != "" {
		lj := &lumberjack.Logger{Filename: logFile, MaxSize: cmp.Or(set.LogMaxMiB, home.DefaultLogMaxMiB), MaxBackups: 1}
		defer lj.Close()
		out = lj
	}
	var handler slog.Handler = slog.NewJSONHandler(out, &slog.HandlerOptions{Level: level})
	if logFile == "" && isTerminal(e.stderr) {
		// A person watching a foreground node reads lines; journald,
		// files and collectors get JSON.
		handler = slog.NewTextHandler(out, &slog.HandlerOptions{Level: level})
	}
	// No .With("node", name): the daemon names the node in the lines
	// where it matters (started, stopped), and a key given twice is
	// what JSON readers choke on.
	log := slog.New(handler)
	pass, err := e.passphrase()
	if err != nil {
		return err
	}
	d, err := node.Start(node.Config{Home: h, Name: name, Listen: listen, Identity: ident, Passphrase: pass, Logger: log, Restore: restore, Settings: set})
	if err != nil {
		log.Error("node failed to start", "err", err.Error())
		return err
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sig)
	select {
	case s := <-sig:
		log.Info("shutting down", "signal", s.String())
	case <-d.Done():
		log.Info("shutting down", "reason", "requested")
	}
	return d.Close()
}

func (e *env) listNodes() error {
	h, err := e.home()
	if err != nil {
		return err
	}
	names, err := h.Nodes()
	if err != nil {
		return err
	}
	var infos []api.NodeInfo
	for _, n := range names {
		infos = append(infos, e.nodeInfo(h, n))
	}
	if e.output == "json" {
		if infos == nil {
			infos = []api.NodeInfo{}
		}
		return e.printJSON(infos)
	}
	var rows [][]string
	for _, i := range infos {
		id := i.Identifier
		if len(id) > 17 {
			id = id[:17] + "…"
		}
		rows = append(rows, []string{i.Name, i.Status, i.Route, id})
	}
	e.table("NAME\tSTATUS\tROUTE\tIDENTIFIER", rows)
	return nil
}

// nodeInfo asks a running node, or reads what a stopped one left.
func (e *env) nodeInfo(h home.Home, name string) api.NodeInfo {
	st, err := h.ReadState(name)
	if err != nil {
		return api.NodeInfo{Name: name, Status: "unknown: " + err.Error()}
	}
	info := api.NodeInfo{Name: name, PID: st.PID, TCPAddress: st.TCPAddress, Route: st.Route().String(),
		Identity: st.Identity, Identifier: st.Identifier, Status: "stopped"}
	if !st.Running() {
		if crashed(h, name) {
			info.Status = "crashed"
		}
		return info
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	live, err := api.NewClient(name, h.SocketPath(name)).Info(ctx)
	if err != nil {
		info.Status = "not answering"
		return info
	}
	return live
}

func (e *env) showNode(name string) error {
	h, err := e.home()
	if err != nil {
		return err
	}
	if _, err := h.ReadState(name); err != nil {
		return err
	}
	info := e.nodeInfo(h, name)
	var relays api.Relays
	if info.Status == "running" {
		e.do(name, 0, func(ctx context.Context, c *api.Client) (err error) { relays, err = c.Relays(ctx); return })
	}
	if e.output == "json" {
		return e.printJSON(struct {
			api.NodeInfo
			Relays api.Relays `json:"relays"`
		}{info, relays})
	}
	fmt.Fprintf(e.stdout, "Node:       %s\nStatus:     %s\nPID:        %d\nRoute:      %s\nIdentity:   %s\nIdentifier: %s\n",
		info.Name, info.Status, info.PID, info.Route, info.Identity, info.Identifier)
	if len(info.Services) > 0 {
		fmt.Fprintf(e.stdout, "Services:\n")
		for _, s := range info.Services {
			fmt.Fprintf(e.stdout, "  %s\n", s)
		}
	}
	for _, r := range relays.Registered {
		state := "up"
		if !r.Connected {
			state = "down: " + r.LastError
		}
		fmt.Fprintf(e.stdout, "Relay:      %s at %s (%s)\n", r.Name, r.At, state)
	}
	for _, r := range relays.Hosted {
		fmt.Fprintf(e.stdout, "Hosting:    %s for %s\n", r.Address, r.Remote)
	}
	for _, r := range info.RestoreErrors {
		fmt.Fprintf(e.stdout, "Not restored: %s (kept; tried again at the next start)\n", r)
	}
	return nil
}

// deleteNode stops a node (shutdown request, then SIGTERM, then SIGKILL,
// each with a deadline; with force SIGKILL at once) and removes its state.
func (e *env) deleteNode(h home.Home, name string, force bool) error {
	if err := home.CheckName(name); err != nil {
		return err
	}
	if _, err := os.Stat(h.NodeDir(name)); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: %s (see `ockam node list`)", home.ErrNoNode, name)
	}
	st, err := h.ReadState(name)
	if err == nil && st.Running() {
		if force {
			syscall.Kill(st.PID, syscall.SIGKILL)
			if !waitExit(st, 5*time.Second) {
				return fmt.Errorf("node %s (pid %d) did not die on SIGKILL", name, st.PID)
			}
		} else if err := stopProcess(h, st); err != nil {
			return err
		}
	}
	os.Remove(h.SocketPath(name))
	return os.RemoveAll(h.NodeDir(name))
}

// stopProcess stops a node: a shutdown request, then SIGTERM, then SIGKILL,
// each with a deadline.
func stopProcess(h home.Home, st *home.NodeState) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	api.NewClient(st.Name, h.SocketPath(st.Name)).Shutdown(ctx)
	cancel()
	if waitExit(st, 5*time.Second) {
		return nil
	}
	syscall.Kill(st.PID, syscall.SIGTERM)
	if waitExit(st, 5*time.Second) {
		return nil
	}
	syscall.Kill(st.PID, syscall.SIGKILL)
	if waitExit(st, 5*time.Second) {
		return nil
	}
	return fmt.Errorf("node %s (pid %d) did not stop", st.Name, st.PID)
}

func waitExit(st *home.NodeState, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for st.Running() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// checkSettings refuses settings no node could run with.
func checkSettings(s home.NodeSettings) error {
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"--max-conns", int64(s.MaxConns)}, {"--max-conns-per-ip", int64(s.MaxConnsPerIP)},
		{"--max-queue-mib", s.MaxQueueMiB}, {"--read-buffer-mib", s.ReadBufferMiB},
		{"--max-names-per-identity", int64(s.MaxNamesPerIdentity)}, {"--log-max-mib", int64(s.LogMaxMiB)},
		{"--window-budget-mib", int64(s.WindowBudgetMiB)}, {"--max-flow-window-mib", int64(s.MaxFlowWindowMiB)},
	} {
		if f.v <= 0 {
			return fmt.Errorf("%s must be positive, not %d", f.name, f.v)
		}
	}
	if s.Lanes < 0 || s.Lanes > router.MaxLanes {
		return fmt.Errorf("--lanes must be 1 to %d, not %d", router.MaxLanes, s.Lanes)
	}
	if s.MaxFlowWindowMiB > s.WindowBudgetMiB {
		return fmt.Errorf("--max-flow-window-mib %d is more than --window-budget-mib %d", s.MaxFlowWindowMiB, s.WindowBudgetMiB)
	}
	for _, id := range s.AllowRouting {
		if _, err := identity.ParseIdentifier(id); err != nil {
			return fmt.Errorf("--allow-routing %s: %v", id, err)
		}
	}
	return nil
}

// settingsArgs gives back the flags of node create that make s.
func settingsArgs(s home.NodeSettings) []string {
	var a []string
	for _, id := range s.AllowRouting {
		a = append(a, "--allow-routing", id)
	}
	return append(a,
		"--max-conns", strconv.Itoa(s.MaxConns),
		"--max-conns-per-ip", strconv.Itoa(s.MaxConnsPerIP),
		"--max-queue-mib", strconv.FormatInt(s.MaxQueueMiB, 10),
		"--read-buffer-mib", strconv.FormatInt(s.ReadBufferMiB, 10),
		"--max-names-per-identity", strconv.Itoa(s.MaxNamesPerIdentity),
		"--log-max-mib", strconv.Itoa(s.LogMaxMiB),
		"--window-budget-mib", strconv.Itoa(s.WindowBudgetMiB),
		"--max-flow-window-mib", strconv.Itoa(s.MaxFlowWindowMiB),
		"--metrics-listen", s.MetricsListen,
		"--lanes", strconv.Itoa(cmp.Or(s.Lanes, router.DefaultLanes)),
		"--resume-grace", cmp.Or(s.ResumeGrace, portal.DefaultResumeGrace.String()))
}
