// Package cli is the ockam command: a grammar close to Ockam's, driving
// background node processes through their control sockets.
package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/ockam-go/ockam/internal/api"
	"github.com/ockam-go/ockam/internal/home"
)

// env is what every command shares: where state lives, how to print.
type env struct {
	stdin    io.Reader
	stdout   io.Writer
	stderr   io.Writer
	output   string // "" or "json"
	passFile string // --vault-passphrase-file
	tty      bool   // stdout is a terminal
	quiet    bool   // -q: no sentences on success
	verbose  bool   // -v: nodes started by this command log at debug level
	noColor  bool   // --no-color: accepted; nothing is coloured

	lineOnce sync.Once
	line     string
	lineErr  error
}

// Main runs the command with args and returns the process exit code.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr, tty: isTerminal(stdout)}
	root := e.rootCmd()
	args, err := e.substitute(args)
	if err == nil {
		root.SetArgs(args)
		err = root.Execute()
	}
	if err != nil {
		msg := strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", "; ")
		if e.output == "json" || wantsJSON(args) {
			b, _ := json.Marshal(struct {
				Error string `json:"error"`
			}{msg})
			fmt.Fprintf(stderr, "%s\n", b)
		} else {
			fmt.Fprintf(stderr, "ockam: %s\n", msg)
		}
		return 1
	}
	return 0
}

// wantsJSON reports whether args ask for --output json, for errors found
// before the flags were parsed.
func wantsJSON(args []string) bool {
	for i, a := range args {
		if a == "--output=json" || (a == "--output" && i+1 < len(args) && args[i+1] == "json") {
			return true
		}
	}
	return false
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// MaxStdinLine bounds the line read from standard input.
const MaxStdinLine = 4096

func (e *env) stdinLine() (string, error) {
	e.lineOnce.Do(func() {
		if e.stdin == nil {
			e.lineErr = errors.New("an argument uses -/ but there is no standard input")
			return
		}
		r := bufio.NewReaderSize(io.LimitReader(e.stdin, MaxStdinLine+1), MaxStdinLine+1)
		l, err := r.ReadString('\n')
		l = strings.TrimSpace(l)
		switch {
		case len(l) > MaxStdinLine:
			e.lineErr = fmt.Errorf("the line on standard input is over %d bytes", MaxStdinLine)
		case l == "" && (err == nil || err == io.EOF):
			e.lineErr = errors.New("an argument uses -/ but standard input is empty (did the command before the pipe fail?)")
		case l == "":
			e.lineErr = fmt.Errorf("reading standard input: %v", err)
		default:
			e.line = strings.TrimRight(l, "/")
		}
	})
	return e.line, e.lineErr
}

func (e *env) home() (home.Home, error) { return home.Default() }

// printRoute prints what a create command made: in a pipe only the route,
// so the next command can read it; on a terminal a sentence.
func (e *env) printCreated(route string, human string, v any) error {
	switch {
	case e.output == "json":
		return e.printJSON(v)
	case !e.tty:
		_, err := fmt.Fprintln(e.stdout, route)
		return err
	case e.quiet:
		return nil
	default:
		_, err := fmt.Fprintln(e.stdout, human)
		return err
	}
}

func (e *env) printJSON(v any) error {
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func (e *env) table(header string, rows [][]string) {
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	tw.Flush()
}

// nodeName accepts "/node/NAME" or "NAME"; empty means the default node.
func nodeName(flag, s string) (string, error) {
	if s == "" {
		h, err := home.Default()
		if err != nil {
			return "", err
		}
		name := defaultNode(h)
		if _, err := os.Stat(h.NodeDir(name)); err != nil {
			return "", fmt.Errorf("missing %s /node/NAME, and there is no default node (create it with `ockam node create`)", flag)
		}
		return name, nil
	}
	name := s
	if strings.HasPrefix(s, "/node/") {
		name = strings.TrimPrefix(s, "/node/")
	} else if strings.HasPrefix(s, "/") {
		return "", fmt.Errorf("%s %s: want /node/NAME", flag, s)
	}
	if err := home.CheckName(name); err != nil {
		return "", fmt.Errorf("%s: %v", flag, err)
	}
	return name, nil
}

// client returns a control client for a running node.
func (e *env) client(name string) (*api.Client, error) {
	h, err := e.home()
	if err != nil {
		return nil, err
	}
	st, err := h.ReadState(name)
	if err != nil {
		return nil, err
	}
	if !st.Running() {
		return nil, fmt.Errorf("node %s is not running (its process %d exited; start it with `ockam node start %s`, see `ockam node logs %s`)", name, st.PID, name, name)
	}
	return api.NewClient(name, h.SocketPath(name)), nil
}

// do runs f with a typed client of a running node and a context that
// allows wait (what the request itself may wait on the network) plus 5 s.
func (e *env) do(name string, wait time.Duration, f func(ctx context.Context, c *api.Client) error) error {
	c, err := e.client(name)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait+5*time.Second)
	defer cancel()
	return f(ctx, c)
}

// args returns a cobra.PositionalArgs that names what is missing.
func args(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, a []string) error {
		if len(a) < len(names) {
			return fmt.Errorf("missing %s (usage: %s)", names[len(a)], cmd.UseLine())
		}
		if len(a) > len(names) {
			return fmt.Errorf("unexpected argument %q (usage: %s)", a[len(names)], cmd.UseLine())
		}
		return nil
	}
}

func optionalArg(name string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, a []string) error {
		if len(a) > 1 {
			return fmt.Errorf("unexpected argument %q (usage: %s)", a[1], cmd.UseLine())
		}
		return nil
	}
}

func (e *env) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "ockam",
		Short:         "End-to-end encrypted, mutually authenticated tunnels through relays",
		SilenceUsage:  true,
		SilenceErrors: true,
		Long: `ockam connects applications in different private networks through a relay
that sees only encrypted bytes.

  ockam node create relay
  ockam node create server_sidecar
  ockam tcp-outlet create --at /node/server_sidecar --from /service/outlet --to 127.0.0.1:5000
  ockam relay create server_sidecar --at /node/relay --to /node/server_sidecar
  ockam node create client_sidecar
  ockam secure-channel create --from /node/client_sidecar --to /node/relay/service/forward_to_server_sidecar/service/api \
      | ockam tcp-inlet create --at /node/client_sidecar --from 127.0.0.1:7000 --to -/service/outlet

State lives in $OCKAM_HOME (default ~/.ockam).`,
	}
	root.Version = version()
	root.SetVersionTemplate("ockam {{.Version}}\n")
	root.Flags().BoolP("version", "V", false, "print the version") // -V, as Ockam's
	root.PersistentFlags().StringVar(&e.output, "output", "", "output format: json")
	root.PersistentFlags().BoolVarP(&e.quiet, "quiet", "q", false, "print no sentences on success (routes and JSON are still printed)")
	root.PersistentFlags().BoolVarP(&e.verbose, "verbose", "v", false, "nodes this command starts log at debug level")
	root.PersistentFlags().BoolVar(&e.noColor, "no-color", false, "no colours (ockam never colours its output; accepted for scripts written for Ockam)")
	root.PersistentFlags().StringVar(&e.passFile, "vault-passphrase-file", "", "file whose first line encrypts the vault's keys at rest (default: $OCKAM_VAULT_PASSPHRASE)")
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		if e.output != "" && e.output != "json" {
			return fmt.Errorf("--output %q: the only format is json", e.output)
		}
		return nil
	}
	root.SetOut(e.stdout)
	root.SetErr(e.stderr)
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return fmt.Errorf("%v (see `%s --help`)", err, cmd.CommandPath())
	})
	root.AddCommand(e.nodeCmd(), e.messageCmd(), e.relayCmd("relay", false), e.relayCmd("forwarder", true), e.identityCmd())
	for _, c := range e.extraCmds() {
		root.AddCommand(c)
	}
	for _, c := range e.c16Cmds() {
		root.AddCommand(c)
	}
	unknownSubcommand(root)
	return root
}
