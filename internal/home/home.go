// Package home is the on-disk state under $OCKAM_HOME: one directory per
// node (state, log, control socket) and the vault of identities.
//
//	$OCKAM_HOME/
//	  nodes/NAME/state.json   what a running node publishes (JSON, atomic)
//	  nodes/NAME/node.log     the node's log
//	  run/NAME.sock           the node's control socket (short path: sun_path)
//	  vault/                  identities and their secret keys
//	  trust.json              identifiers trusted by every node of this home
package home

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/ockam-go/ockam/internal/atomicfile"
	"github.com/ockam-go/ockam/internal/routing"
)

// MaxStateFile bounds a state file, checked before reading it.
const MaxStateFile = 64 << 10

// Home is one $OCKAM_HOME.
type Home struct{ Dir string }

// Default returns $OCKAM_HOME, or ~/.ockam.
func Default() (Home, error) {
	if d := os.Getenv("OCKAM_HOME"); d != "" {
		abs, err := filepath.Abs(d)
		if err != nil {
			return Home{}, err
		}
		return Home{Dir: abs}, nil
	}
	h, err := os.UserHomeDir()
	if err != nil {
		return Home{}, fmt.Errorf("cannot find a home directory; set OCKAM_HOME: %w", err)
	}
	return Home{Dir: filepath.Join(h, ".ockam")}, nil
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// CheckName validates a node name.
func CheckName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("invalid node name %q: use 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit", name)
	}
	return nil
}

func (h Home) NodesDir() string           { return filepath.Join(h.Dir, "nodes") }
func (h Home) NodeDir(name string) string { return filepath.Join(h.Dir, "nodes", name) }
func (h Home) LogPath(name string) string { return filepath.Join(h.NodeDir(name), "node.log") }

// StderrPath is where a detached node's standard output and error go: empty
// unless the process dies in a way its log cannot say (a panic).
func (h Home) StderrPath(name string) string { return filepath.Join(h.NodeDir(name), "stderr.log") }
func (h Home) StatePath(name string) string {
	return filepath.Join(h.NodeDir(name), "state.json")
}
func (h Home) SocketPath(name string) string { return filepath.Join(h.Dir, "run", name+".sock") }
func (h Home) VaultDir() string              { return filepath.Join(h.Dir, "vault") }
func (h Home) TrustPath() string             { return filepath.Join(h.Dir, "trust.json") }

// NodeState is what a running node publishes about itself.
type NodeState struct {
	Name       string    `json:"name"`
	PID        int       `json:"pid"`
	TCPAddress string    `json:"tcp_address"`
	Identity   string    `json:"identity"`   // name in the vault
	Identifier string    `json:"identifier"` // full identifier
	Created    time.Time `json:"created"`
}

// ErrNoNode is wrapped when a node does not exist.
var ErrNoNode = errors.New("no such node")

// ReadState reads a node's state.
func (h Home) ReadState(name string) (*NodeState, error) {
	if err := CheckName(name); err != nil {
		return nil, err
	}
	b, err := atomicfile.ReadLimited(h.StatePath(name), MaxStateFile)
	if errors.Is(err, fs.ErrNotExist) {
		if _, derr := os.Stat(h.NodeDir(name)); derr == nil {
			return nil, fmt.Errorf("node %s has no state yet (starting, or it failed: see `ockam node logs %s`)", name, name)
		}
		return nil, fmt.Errorf("%w: %s (see `ockam node list`)", ErrNoNode, name)
	}
	if err != nil {
		return nil, err
	}
	var s NodeState
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("node %s: corrupt state file %s: %v", name, h.StatePath(name), err)
	}
	return &s, nil
}

// WriteState writes a node's state atomically.
func (h Home) WriteState(s *NodeState) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return WriteFileAtomic(h.StatePath(s.Name), append(b, '\n'), 0o600)
}

// Nodes lists the node names, sorted.
func (h Home) Nodes() ([]string, error) {
	ents, err := os.ReadDir(h.NodesDir())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() && CheckName(e.Name()) == nil {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out, nil
}

// Running reports whether the node's process is alive. It checks the
// process's command line so that a reused PID is not mistaken for the node.
func (s *NodeState) Running() bool {
	if s.PID <= 0 {
		return false
	}
	if err := syscall.Kill(s.PID, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", s.PID))
	if err != nil {
		return true // no /proc: trust kill(0)
	}
	if len(cmd) == 0 {
		// An exiting process has no command line once its memory is
		// gone, but it still holds its files (its listening sockets)
		// until it is a zombie: not gone yet, or a node start right
		// after a stop finds its port in use.
		return exiting(s.PID)
	}
	args := strings.Split(strings.TrimRight(string(cmd), "\x00"), "\x00")
	for _, a := range args {
		if a == s.Name {
			return true
		}
	}
	return false
}

// exiting reports whether pid, which has no command line, is a user
// process that is exiting (not yet a zombie) rather than a zombie or a
// kernel thread (children of kthreadd, pid 2) that reused the PID.
func exiting(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) state ppid ...; comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return false
	}
	state, ppid := f[0], f[1]
	return state != "Z" && state != "X" && ppid != "2" && pid != 2
}

// Route returns the route of the node's TCP listener.
func (s *NodeState) Route() routing.Route {
	return routing.Route{routing.TCPAddr(s.TCPAddress)}
}

// Resolver resolves /node/NAME to the node's TCP listener.
func (h Home) Resolver() routing.Resolver {
	return func(name string) (routing.Route, error) {
		s, err := h.ReadState(name)
		if err != nil {
			return nil, err
		}
		if s.TCPAddress == "" {
			return nil, fmt.Errorf("node %s has no TCP listener", name)
		}
		return s.Route(), nil
	}
}

// Identifiers returns the identifiers of every node of this home: nodes
// created under the same home trust each other.
func (h Home) Identifiers() []string {
	names, _ := h.Nodes()
	var out []string
	for _, n := range names {
		if s, err := h.ReadState(n); err == nil && s.Identifier != "" {
			out = append(out, s.Identifier)
		}
	}
	return out
}

// TrustList reads the identifiers in trust.json (a JSON array of strings).
func (h Home) TrustList() ([]string, error) {
	b, err := atomicfile.ReadLimited(h.TrustPath(), MaxStateFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var ids []string
	if err := json.Unmarshal(b, &ids); err != nil {
		return nil, fmt.Errorf("corrupt trust list %s: %v", h.TrustPath(), err)
	}
	return ids, nil
}

// WriteFileAtomic writes data to path so that readers see either the old
// file or the new one, never a part (package atomicfile).
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return atomicfile.WriteFile(path, data, perm)
}

// ConfigPath is where a node keeps what it was asked to create, so that
// `ockam node start` brings it back as it was.
func (h Home) ConfigPath(name string) string {
	return filepath.Join(h.NodeDir(name), "config.json")
}

// Resource is one thing a node was asked to create, as the node's registry
// records it: its kind ("outlet", "inlet", "tun", ...), its key within the
// kind (a name, an address), and the request that recreates it (JSON, a
// control API request type of that kind).
type Resource struct {
	Kind string          `json:"kind"`
	Key  string          `json:"key"`
	Spec json.RawMessage `json:"spec"`
}

// NodeConfig is everything a node was asked to create, replayed at start.
type NodeConfig struct {
	Listen    string     `json:"listen"`
	Identity  string     `json:"identity"`
	Resources []Resource `json:"resources,omitempty"`
	// Settings are the node's own flags, given to node create and kept
	// for node start.
	Settings NodeSettings `json:"settings,omitzero"`
}

// NodeSettings are what `ockam node create` flags set about the node
// itself. Zero fields take their defaults.
type NodeSettings struct {
	// AllowRouting lists the channel peers that may route through the
	// node: reach its private workers and make it open TCP connections.
	AllowRouting []string `json:"allow_routing,omitempty"`
	// Limits on what other nodes can make this one hold (see
	// transport.Limits and relay.Config).
	MaxConns            int   `json:"max_conns,omitempty"`
	MaxConnsPerIP       int   `json:"max_conns_per_ip,omitempty"`
	MaxQueueMiB         int64 `json:"max_queue_mib,omitempty"`
	ReadBufferMiB       int64 `json:"read_buffer_mib,omitempty"`
	MaxNamesPerIdentity int   `json:"max_names_per_identity,omitempty"`
	// LogMaxMiB is the size at which node.log is rotated (one old file is
	// kept), DefaultLogMaxMiB when zero.
	LogMaxMiB int `json:"log_max_mib,omitempty"`
	// MetricsListen is a TCP address to serve Prometheus metrics on, as
	// well as the control socket; empty for none.
	MetricsListen string `json:"metrics_listen,omitempty"`
	// WindowBudgetMiB is the node-wide budget for flows' receive windows
	// above their initial size, MaxFlowWindowMiB the most one flow's window
	// grows to (portal.Config; their defaults when zero).
	WindowBudgetMiB  int `json:"window_budget_mib,omitempty"`
	MaxFlowWindowMiB int `json:"max_flow_window_mib,omitempty"`
	// ResumeGrace is how long carried connections wait for their channel
	// to come back and resume (a Go duration, "0s": they end with it);
	// empty for portal.DefaultResumeGrace.
	ResumeGrace string `json:"resume_grace,omitempty"`
	// Lanes is how many TCP connections the node opens to each node it
	// connects to (transport.Config.Lanes); zero for the default.
	Lanes int `json:"lanes,omitempty"`
}

// IsZero reports whether no setting is set.
func (s NodeSettings) IsZero() bool {
	return len(s.AllowRouting) == 0 && s.MaxConns == 0 && s.MaxConnsPerIP == 0 && s.MaxQueueMiB == 0 &&
		s.ReadBufferMiB == 0 && s.MaxNamesPerIdentity == 0 && s.LogMaxMiB == 0 && s.MetricsListen == "" &&
		s.WindowBudgetMiB == 0 && s.MaxFlowWindowMiB == 0 && s.ResumeGrace == "" && s.Lanes == 0
}

// DefaultLogMaxMiB is the default of NodeSettings.LogMaxMiB.
const DefaultLogMaxMiB = 10

// ReadConfig reads a node's configuration; a node without one has an empty
// configuration.
func (h Home) ReadConfig(name string) (*NodeConfig, error) {
	b, err := atomicfile.ReadLimited(h.ConfigPath(name), 4<<20)
	if errors.Is(err, fs.ErrNotExist) {
		return &NodeConfig{}, nil
	}
	if err != nil {
		return nil, err
	}
	var c struct {
		NodeConfig
		legacyConfig
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("node %s: corrupt configuration %s: %v", name, h.ConfigPath(name), err)
	}
	c.Resources = append(c.Resources, c.legacyConfig.resources()...)
	return &c.NodeConfig, nil
}

// legacyConfig is the configuration of nodes made before the registry: a
// list per kind. ReadConfig turns it into resources; WriteConfig writes
// only resources.
type legacyConfig struct {
	Outlets  []json.RawMessage `json:"outlets,omitempty"`
	Relays   []json.RawMessage `json:"relays,omitempty"`
	Channels []json.RawMessage `json:"channels,omitempty"`
	Inlets   []json.RawMessage `json:"inlets,omitempty"`
}

func (l legacyConfig) resources() []Resource {
	var out []Resource
	add := func(kind, keyField string, specs []json.RawMessage) {
		for _, s := range specs {
			var m map[string]any
			json.Unmarshal(s, &m)
			key, _ := m[keyField].(string)
			out = append(out, Resource{Kind: kind, Key: key, Spec: s})
		}
	}
	add("outlet", "name", l.Outlets)
	add("relay", "name", l.Relays)
	add("channel", "address", l.Channels)
	add("inlet", "name", l.Inlets)
	return out
}

// WriteConfig writes a node's configuration atomically.
func (h Home) WriteConfig(name string, c *NodeConfig) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return WriteFileAtomic(h.ConfigPath(name), append(b, '\n'), 0o600)
}

// PrivateDir makes sure dir exists as a directory of the current user that
// nobody else may enter (mode 0700): the node's control socket lives there,
// and anyone who could replace it could command the node. A directory that
// is more open is closed up; one that is a symbolic link or belongs to
// another user is refused.
func PrivateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory (a symbolic link?): refusing to put a control socket there", dir)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("%s belongs to user %d, not to you: refusing to put a control socket there", dir, st.Uid)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("%s is open to other users (mode %v) and cannot be closed: %w", dir, fi.Mode().Perm(), err)
		}
	}
	return nil
}
