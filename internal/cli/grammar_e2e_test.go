package cli_test

// Ockam's grammar (issue 16), tried as a user who knows Ockam 0.8x would:
// real node processes of the ockam binary, real TCP on loopback.

import (
	"bufio"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// oneLine checks a failed command printed exactly one error line holding want.
func oneLine(t *testing.T, r result, want string) {
	t.Helper()
	if r.code == 0 {
		t.Fatalf("exit 0 (stdout %q), want an error with %q", r.stdout, want)
	}
	lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], want) {
		t.Fatalf("stderr %q: want one line with %q", r.stderr, want)
	}
}

func TestDefaultNodeAndServices(t *testing.T) {
	e := newEnv(t)
	out := e.must("node", "create")
	if out != "/node/default" {
		t.Fatalf("node create without a name printed %q, want /node/default", out)
	}
	pid := e.show("default").PID
	// Idempotent, as Ockam's was: a second create and a start of the
	// running node succeed and leave the same process.
	e.must("node", "create")
	e.must("node", "create", "default")
	e.must("node", "start", "default")
	if p := e.show("default").PID; p != pid {
		t.Fatalf("node create of a running node replaced its process: %d -> %d", pid, p)
	}
	if got := e.must("node", "default"); got != "/node/default" {
		t.Fatalf("node default = %q", got)
	}
	// No --from: the default node. --timeout in seconds, as Ockam took it.
	if got := e.must("message", "send", "hello", "--to", "/service/uppercase", "--timeout", "5"); got != "HELLO" {
		t.Fatalf("uppercase answered %q", got)
	}
	if got := e.must("message", "send", "hello", "--to", "/service/echo", "--timeout", "5s"); got != "hello" {
		t.Fatalf("echo answered %q", got)
	}
	e.must("node", "create", "b")
	if got := e.must("message", "send", "hi", "--to", "/node/b/service/hop/service/uppercase"); got != "HI" {
		t.Fatalf("through b's hop: %q", got)
	}
	// /- anywhere in an argument.
	if got := strings.TrimSpace(e.cmd("/service/hop\n", "message", "send", "mid", "--to", "/node/b/-/service/echo").stdout); got != "mid" {
		t.Fatalf("/- in the middle of a route: %q", got)
	}
	// --at and --node name the node; without either, the default.
	if list := e.must("tcp-outlet", "list", "--node", "/node/b"); !strings.Contains(list, "NAME") {
		t.Fatalf("tcp-outlet list --node: %q", list)
	}
	e.must("node", "default", "b")
	var info struct {
		Services []string `json:"services"`
		Name     string   `json:"name"`
	}
	if err := json.Unmarshal([]byte(e.must("node", "show", "b", "--output", "json")), &info); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"/service/echo", "/service/uppercase", "/service/hop"} {
		if !strings.Contains(strings.Join(info.Services, " "), s) {
			t.Errorf("node b services %v lack %s", info.Services, s)
		}
	}
	if got := e.must("message", "send", "x", "--to", "/service/uppercase"); got != "X" {
		t.Fatalf("after node default b: %q", got)
	}
	// node show/stop/start and service list without a name: the default.
	if out := e.must("node", "show"); !strings.Contains(out, "Node:       b") {
		t.Fatalf("node show without a name:\n%s", out)
	}
	if out := e.must("service", "list"); !strings.Contains(out, "/service/hop") || !strings.Contains(out, "/service/uppercase") {
		t.Fatalf("service list:\n%s", out)
	}
	e.must("node", "stop")
	if s := e.show("b"); s.Status != "stopped" {
		t.Fatalf("node stop without a name left b %s", s.Status)
	}
	e.must("node", "start")
	for _, bad := range []string{"0", "-1", "abc", "1e9"} {
		oneLine(t, e.run("message", "send", "x", "--to", "/service/echo", "--timeout", bad), "--timeout")
	}
}

// TestHopDoesNotRouteOnward: a message that reaches a node's hop over TCP
// must not make that node open a TCP connection the sender named: hop keeps
// the sender's origin, and the router refuses TCP hops for remote senders.
func TestHopDoesNotRouteOnward(t *testing.T) {
	e := newEnv(t)
	e.must("node", "create", "a")
	e.must("node", "create", "b")
	var dialed atomic.Int32
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			dialed.Add(1)
			c.Close()
		}
	}()
	target := tcpRoute(ln.Addr().String())
	r := e.run("message", "send", "x", "--from", "/node/a", "--to", "/node/b/service/hop"+target+"/service/echo", "--timeout", "1")
	if r.code == 0 {
		t.Fatalf("a message routed through b's hop to a new TCP address got a reply: %q", r.stdout)
	}
	// Control: the same target is reachable when the route is a's own.
	if got := e.must("message", "send", "x", "--from", "/node/a", "--to", "/service/hop/node/b/service/echo"); got != "x" {
		t.Fatalf("local hop: %q", got)
	}
	if n := dialed.Load(); n != 0 {
		t.Fatalf("node b opened %d connection(s) to an address a remote sender named through hop", n)
	}
}

func TestTyposAndVersion(t *testing.T) {
	e := newEnv(t)
	oneLine(t, e.run("node", "crate", "x"), `did you mean "create"?`)
	oneLine(t, e.run("nod"), `did you mean "node"?`)
	oneLine(t, e.run("tcp-outlet", "zzz"), "unknown command")
	r := e.run("--version")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "ockam ") {
		t.Fatalf("--version: %+v", r)
	}
	if v := e.run("-V"); v.code != 0 || v.stdout != r.stdout {
		t.Fatalf("-V: %+v", v)
	}
	r = e.run("completion", "bash")
	if r.code != 0 || !strings.Contains(r.stdout, "ockam") {
		t.Fatalf("completion bash: exit %d, %d bytes", r.code, len(r.stdout))
	}
	// Errors as JSON with --output json.
	r = e.run("node", "show", "nope", "--output", "json")
	var je struct {
		Error string `json:"error"`
	}
	if r.code == 0 || json.Unmarshal([]byte(r.stderr), &je) != nil || !strings.Contains(je.Error, "no such node") {
		t.Fatalf("--output json error: %+v", r)
	}
	r = e.run("message", "send", "x", "--to", "/service/echo")
	oneLine(t, r, "no default node")
	// -q and --no-color are accepted.
	e.must("-q", "--no-color", "node", "list")
}

func TestIdentityVaultTrustReset(t *testing.T) {
	e := newEnv(t)
	id := e.must("identity", "create", "alice")
	second := e.must("identity", "create")
	third := e.must("identity", "create")
	if second == third {
		t.Fatal("two nameless identity creates gave the same identity")
	}
	var vi struct {
		Name       string   `json:"name"`
		Identities []string `json:"identities"`
	}
	if err := json.Unmarshal([]byte(e.must("vault", "show", "--output", "json")), &vi); err != nil {
		t.Fatal(err)
	}
	if vi.Name != "default" || len(vi.Identities) != 3 {
		t.Fatalf("vault show: %+v", vi)
	}
	oneLine(t, e.run("vault", "show", "other"), "one vault")
	e.must("identity", "delete", "alice")
	oneLine(t, e.run("identity", "show", "alice"), "no identity named alice")
	oneLine(t, e.run("identity", "delete", "alice"), "no identity named alice")

	e.must("trust", "add", id)
	e.must("trust", "add", id) // twice: kept once
	var tl []struct {
		Identifier string `json:"identifier"`
		Source     string `json:"source"`
	}
	if err := json.Unmarshal([]byte(e.must("trust", "list", "--output", "json")), &tl); err != nil {
		t.Fatal(err)
	}
	if len(tl) != 1 || tl[0].Identifier != id || tl[0].Source != "trust.json" {
		t.Fatalf("trust list: %+v", tl)
	}
	oneLine(t, e.run("trust", "add", "Inot-an-identifier"), "not-an-identifier")
	e.must("trust", "delete", id)

	e.must("node", "create", "n")
	oneLine(t, e.run("vault", "delete"), "delete them first")
	oneLine(t, e.run("reset"), "--yes")
	pid := e.show("n").PID
	e.must("reset", "--yes")
	if processAlive(pid) {
		t.Fatalf("node process %d alive after reset", pid)
	}
	for _, p := range []string{"nodes", "vault", "trust.json"} {
		if _, err := os.Stat(filepath.Join(e.home, p)); err == nil {
			t.Errorf("%s left after reset", p)
		}
	}
}

func TestStatusDeleteForceAndLogs(t *testing.T) {
	e := newEnv(t)
	e.must("node", "create", "relay")
	e.must("node", "create")
	e.must("node", "create", "gone")
	target := tcpServer(t, func(c net.Conn) {})
	e.must("tcp-outlet", "create", "--alias", "web", "--from", "/service/outlet", "--to", target)
	e.must("tcp-outlet", "show", "web")
	e.must("relay", "create", "srv", "--at", "/node/relay")
	if show := e.must("relay", "show", "srv"); !strings.Contains(show, "registered") || !strings.Contains(show, "up") {
		t.Fatalf("relay show:\n%s", show)
	}
	e.must("forwarder", "show", "srv")
	if show := e.must("relay", "show", "srv", "--at", "/node/relay"); !strings.Contains(show, "hosted") {
		t.Fatalf("relay show at the relay:\n%s", show)
	}
	ch := e.must("secure-channel", "create", "--to", "/node/relay/service/forward_to_srv/service/api")
	peer := e.show("default").Identifier
	oneLine(t, e.cmd(ch+"\n", "tcp-inlet", "create", "--to", "-/service/outlet", "--authorized", e.show("relay").Identifier), "not authorized")
	e.must("tcp-inlet", "create", "--to", ch+"/service/outlet", "--authorized", peer)

	// A node killed without a word shows as crashed, with its last log line.
	gone := e.show("gone").PID
	syscall.Kill(gone, syscall.SIGKILL)
	eventually(t, 5*time.Second, "gone exits", func() error {
		if processAlive(gone) {
			return errString("alive")
		}
		return nil
	})
	e.must("node", "stop", "relay")
	var st []struct {
		Name     string `json:"name"`
		Status   string `json:"status"`
		LastLog  string `json:"last_log"`
		Default  bool   `json:"default"`
		Outlets  []any  `json:"outlets"`
		Inlets   []any  `json:"inlets"`
		Channels []any  `json:"channels"`
		Relays   *struct {
			Registered []any `json:"registered"`
		} `json:"relays"`
	}
	if err := json.Unmarshal([]byte(e.must("status", "--output", "json")), &st); err != nil {
		t.Fatal(err)
	}
	byName := map[string]int{}
	for i, s := range st {
		byName[s.Name] = i
	}
	d, g, r := st[byName["default"]], st[byName["gone"]], st[byName["relay"]]
	if d.Status != "running" || !d.Default || len(d.Outlets) != 1 || len(d.Inlets) != 1 || len(d.Channels) != 1 || d.Relays == nil || len(d.Relays.Registered) != 1 {
		t.Errorf("default in status: %+v", d)
	}
	if g.Status != "crashed" || g.LastLog == "" {
		t.Errorf("killed node in status: %+v", g)
	}
	if r.Status != "stopped" {
		t.Errorf("stopped node in status: %+v", r)
	}
	if human := e.must("status"); !strings.Contains(human, "crashed") || !strings.Contains(human, "outlet") {
		t.Errorf("status:\n%s", human)
	}

	// logs --tail and --follow.
	if tail := e.must("node", "logs", "--tail", "1"); strings.Count(tail, "\n") != 0 || tail == "" {
		t.Errorf("node logs --tail 1:\n%s", tail)
	}
	e.must("node", "start", "relay")
	f := exec.Command(ockamBin, "node", "logs", "relay", "--follow", "--tail", "1")
	f.Env = append(os.Environ(), "OCKAM_HOME="+e.home)
	pr, err := f.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { f.Process.Kill(); f.Wait() }()
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	select {
	case <-lines: // the tail
	case <-time.After(10 * time.Second):
		t.Fatal("node logs --follow printed nothing")
	}
	e.must("node", "stop", "relay")
	deadline := time.After(10 * time.Second)
	for found := false; !found; {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("node logs --follow ended")
			}
			found = strings.Contains(l, "node stopped")
			if strings.Count(l, `"node":`) > 1 {
				t.Fatalf("a log record with a duplicated key: %s", l)
			}
		case <-deadline:
			t.Fatal("node logs --follow did not print the stop")
		}
	}

	// delete --force kills at once.
	pid := e.show("default").PID
	e.must("node", "delete", "--force", "default")
	if processAlive(pid) {
		t.Fatal("node delete --force left the process")
	}
}

// TestInletChecksItsRoute: an inlet whose route cannot work is refused
// with what to do, instead of being created and resetting every
// connection.
func TestInletChecksItsRoute(t *testing.T) {
	e := newEnv(t)
	e.must("node", "create")
	e.must("node", "create", "b")
	oneLine(t, e.run("tcp-inlet", "create", "--to", "/service/0123abcd/service/outlet"), "this node has no /service/0123abcd")
	oneLine(t, e.run("tcp-inlet", "create", "--to", "/node/b/service/outlet"), "only through a secure channel")
	if list := e.must("tcp-inlet", "list"); strings.Count(list, "\n") != 0 {
		t.Fatalf("a refused inlet was created:\n%s", list)
	}
	// An unknown local address on a message's route fails at once, naming it.
	start := time.Now()
	oneLine(t, e.run("message", "send", "x", "--to", "/service/nothing"), "nothing")
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("an unknown local address took %v", d)
	}
}

// TestWrongRoutesSayWhat: a channel aimed at echo and a message to a
// missing remote service fail with errors a person can act on, within the
// --timeout asked for.
func TestWrongRoutesSayWhat(t *testing.T) {
	e := newEnv(t)
	e.must("node", "create")
	e.must("node", "create", "b")
	oneLine(t, e.run("secure-channel", "create", "--to", "/node/b/service/echo", "--timeout", "3"), "not a secure channel listener")
	start := time.Now()
	r := e.run("message", "send", "x", "--to", "/node/b/service/nothing", "--timeout", "1")
	oneLine(t, r, "no /service/nothing on the route")
	if d := time.Since(start); d > 4*time.Second {
		t.Fatalf("--timeout 1 took %v", d)
	}
	start = time.Now()
	oneLine(t, e.run("secure-channel", "create", "--to", "/node/b/service/nothing/service/api", "--timeout", "2"), "")
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("secure-channel create --timeout 2 took %v", d)
	}
	r = e.run("secure-channel", "create", "--to", "/node/b/service/nothing/service/api", "--timeout", "2")
	if strings.Contains(r.stderr, "10s") {
		t.Fatalf("error names the default timeout, not --timeout: %s", r.stderr)
	}
}

// TestLogsFollowAcrossRotation: node logs --follow keeps following when
// node.log is rotated (at debug level each connection is logged).
func TestLogsFollowAcrossRotation(t *testing.T) {
	e := newEnv(t)
	t.Setenv("OCKAM_LOG", "debug")
	e.must("node", "create", "chatty", "--log-max-mib", "1")
	addr := e.show("chatty").TCPAddress
	f := exec.Command(ockamBin, "node", "logs", "chatty", "--follow")
	f.Env = append(os.Environ(), "OCKAM_HOME="+e.home)
	pr, err := f.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { f.Process.Kill(); f.Wait() }()
	lines := make(chan string, 1024)
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "node stopped") {
				lines <- sc.Text() // the line the test waits for is never dropped
				continue
			}
			select {
			case lines <- sc.Text():
			default: // the test reads only the end; a follower behind under load must not lose it
			}
		}
		close(lines)
	}()
	dir := filepath.Join(e.home, "nodes", "chatty")
	for i := 0; ; i++ {
		ents, _ := os.ReadDir(dir)
		n := 0
		for _, d := range ents {
			if strings.HasPrefix(d.Name(), "node") && strings.HasSuffix(d.Name(), ".log") {
				n++
			}
		}
		if n >= 2 {
			t.Logf("node.log rotated after %d connections", i)
			break
		}
		if i == 40000 {
			t.Fatal("node.log never rotated")
		}
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte{9})
		c.Close()
	}
	// Drain what was printed so far, then stop the node: its last line is
	// in the new file.
	for drained := false; !drained; {
		select {
		case <-lines:
		default:
			drained = true
		}
	}
	e.must("node", "stop", "chatty")
	deadline := time.After(15 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("node logs --follow ended")
			}
			if strings.Contains(l, "node stopped") {
				return
			}
		case <-deadline:
			t.Fatal("node logs --follow did not print the stop after the rotation")
		}
	}
}
