package cli

// Ockam's grammar of the 0.77–0.83 era, where it does not weaken security:
// the default node, --timeout in seconds, "-" as a route segment anywhere,
// typos that fail with one suggestion, --version.

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ockam-go/ockam/internal/home"
)

// DefaultNode is the node that commands without --at/--from/--to use, and
// that `ockam node create` without a NAME creates, unless `ockam node
// default NAME` chose another.
const DefaultNode = "default"

// defaultNodeFile names the file of $OCKAM_HOME that holds the name of the
// default node when it is not DefaultNode.
const defaultNodeFile = "default-node"

// defaultNode returns the name of the default node.
func defaultNode(h home.Home) string {
	b, err := os.ReadFile(filepath.Join(h.Dir, defaultNodeFile))
	if err != nil {
		return DefaultNode
	}
	name := strings.TrimSpace(string(b))
	if home.CheckName(name) != nil {
		return DefaultNode
	}
	if _, err := os.Stat(h.NodeDir(name)); err != nil {
		return DefaultNode
	}
	return name
}

func setDefaultNode(h home.Home, name string) error {
	if name == DefaultNode {
		err := os.Remove(filepath.Join(h.Dir, defaultNodeFile))
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	return home.WriteFileAtomic(filepath.Join(h.Dir, defaultNodeFile), []byte(name+"\n"), 0o600)
}

// seconds is a --timeout value: a number of seconds, as Ockam took it
// ("5", "1.5"), or a Go duration ("5s", "300ms").
type seconds struct{ d *time.Duration }

// MaxTimeout bounds --timeout.
const MaxTimeout = 5 * time.Minute

func (s seconds) String() string {
	if s.d == nil {
		return ""
	}
	return s.d.String()
}

func (s seconds) Type() string { return "seconds" }

func (s seconds) Set(v string) error {
	d, err := parseSeconds(v)
	if err != nil {
		return err
	}
	*s.d = d
	return nil
}

func parseSeconds(v string) (time.Duration, error) {
	var d time.Duration
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		if f != f || f < 0 || f > MaxTimeout.Seconds() {
			return 0, fmt.Errorf("want a number of seconds between 0 and %v", MaxTimeout.Seconds())
		}
		d = time.Duration(f * float64(time.Second))
	} else {
		d, err = time.ParseDuration(v)
		if err != nil {
			return 0, fmt.Errorf("want seconds (5) or a duration (5s, 300ms)")
		}
	}
	if d <= 0 || d > MaxTimeout {
		return 0, fmt.Errorf("want more than 0 and at most %v", MaxTimeout)
	}
	return d, nil
}

// timeoutFlag adds --timeout SECONDS to cmd.
func timeoutFlag(cmd *cobra.Command, p *time.Duration, def time.Duration, usage string) {
	*p = def
	cmd.Flags().Var(seconds{p}, "timeout", usage+" in seconds (or a duration: 500ms, 1m)")
}

// substitute replaces the route segment "-" of an argument (anywhere:
// "-/service/outlet", "/node/a/-/service/x", "/service/api/-"), or a lone
// "-" value of a flag, with one line read from standard input: this is how
// `secure-channel create ... | tcp-inlet create --to -/service/outlet`
// composes. Only arguments that look like routes (start with "/" or "-/")
// are looked at, so a payload such as "a-b" or "-x" is left alone.
func (e *env) substitute(args []string) ([]string, error) {
	out := make([]string, len(args))
	for i, a := range args {
		switch {
		case a == "-" && i > 0 && strings.HasPrefix(args[i-1], "--"):
			l, err := e.stdinLine()
			if err != nil {
				return nil, err
			}
			a = l
		case strings.HasPrefix(a, "-/") || (strings.HasPrefix(a, "/") && hasDashSegment(a)):
			l, err := e.stdinLine()
			if err != nil {
				return nil, err
			}
			segs := strings.Split(a, "/")
			for j, s := range segs {
				if s == "-" {
					segs[j] = strings.Trim(l, "/")
					if j == 0 && strings.HasPrefix(l, "/") {
						segs[j] = "/" + segs[j]
					}
				}
			}
			a = strings.Join(segs, "/")
		}
		out[i] = a
	}
	return out, nil
}

func hasDashSegment(a string) bool {
	for _, s := range strings.Split(a, "/") {
		if s == "-" {
			return true
		}
	}
	return false
}

// Version, when set at link time (-ldflags "-X
// github.com/ockam-go/ockam/cli.Version=v0.1.0"), is what --version prints.
var Version string

// version is what --version prints: Version, else the module version of a
// released build, else the commit it was built from.
func version() string {
	if Version != "" {
		return Version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	if (v == "" || v == "(devel)") && rev != "" {
		if len(rev) > 12 {
			rev = rev[:12]
		}
		return "devel-" + rev + dirty
	}
	if v == "" {
		return "(devel)"
	}
	return v
}

// unknownSubcommand makes every command that only groups others fail on an
// argument that names none of them, with one suggestion, instead of
// printing its help and exiting 0.
func unknownSubcommand(cmd *cobra.Command) {
	for _, c := range cmd.Commands() {
		unknownSubcommand(c)
	}
	if !cmd.HasSubCommands() || cmd.RunE != nil || cmd.Run != nil {
		return
	}
	cmd.SuggestionsMinimumDistance = 2
	cmd.Args = func(c *cobra.Command, a []string) error {
		if len(a) == 0 {
			return nil
		}
		msg := fmt.Sprintf("unknown command %q for %q", a[0], c.CommandPath())
		if s := c.SuggestionsFor(a[0]); len(s) > 0 {
			msg += fmt.Sprintf(" (did you mean %q?)", s[0])
		} else {
			msg += fmt.Sprintf(" (see `%s --help`)", c.CommandPath())
		}
		return errors.New(msg)
	}
	cmd.RunE = func(c *cobra.Command, a []string) error { return c.Help() }
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
