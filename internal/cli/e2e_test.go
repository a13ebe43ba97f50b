package cli_test

// End-to-end tests of the ockam command: real node processes, real TCP on
// loopback, real curl and python3 where the issue asks for them.

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var ockamBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ockam-e2e")
	if err != nil {
		panic(err)
	}
	ockamBin = filepath.Join(dir, "ockam")
	out, err := exec.Command("go", "build", "-o", ockamBin, "../../cmd/ockam").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building ockam: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// env is one $OCKAM_HOME with its nodes, removed after the test.
type env struct {
	t    *testing.T
	home string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test: skipped with -short")
	}
	home, err := os.MkdirTemp("", "oh")
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, home: home}
	t.Cleanup(func() {
		pids := e.pids()
		if t.Failed() || os.Getenv("E2E_LOGS") != "" {
			// E2E_LOGS=1 shows them for passing tests too. Read before
			// the delete below removes the node directories.
			for _, n := range e.nodeNames() {
				b, _ := os.ReadFile(filepath.Join(home, "nodes", n, "node.log"))
				t.Logf("log of %s:\n%s", n, b)
			}
		}
		e.run("node", "delete", "--all")
		for _, p := range pids {
			if processAlive(p) {
				t.Errorf("node process %d still running after node delete --all", p)
				syscall.Kill(p, syscall.SIGKILL)
			}
		}
		os.RemoveAll(home)
	})
	return e
}

type result struct {
	stdout, stderr string
	code           int
}

func (e *env) cmd(stdin string, args ...string) result {
	e.t.Helper()
	c := exec.Command(ockamBin, args...)
	c.Env = append(os.Environ(), "OCKAM_HOME="+e.home)
	c.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	err := c.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("running ockam %v: %v", args, err)
	}
	return result{out.String(), errb.String(), code}
}

func (e *env) run(args ...string) result { return e.cmd("", args...) }

// must runs a command that must succeed and returns its trimmed stdout.
func (e *env) must(args ...string) string {
	e.t.Helper()
	r := e.run(args...)
	if r.code != 0 {
		e.t.Fatalf("ockam %s: exit %d: %s", strings.Join(args, " "), r.code, r.stderr)
	}
	return strings.TrimSpace(r.stdout)
}

func (e *env) nodeNames() []string {
	ents, _ := os.ReadDir(filepath.Join(e.home, "nodes"))
	var out []string
	for _, d := range ents {
		out = append(out, d.Name())
	}
	return out
}

type nodeInfo struct {
	Name       string `json:"name"`
	PID        int    `json:"pid"`
	TCPAddress string `json:"tcp_address"`
	Identifier string `json:"identifier"`
	Status     string `json:"status"`
}

func (e *env) show(name string) nodeInfo {
	e.t.Helper()
	var i nodeInfo
	if err := json.Unmarshal([]byte(e.must("node", "show", name, "--output", "json")), &i); err != nil {
		e.t.Fatal(err)
	}
	return i
}

func (e *env) pids() []int {
	var out []int
	for _, n := range e.nodeNames() {
		b, err := os.ReadFile(filepath.Join(e.home, "nodes", n, "state.json"))
		if err != nil {
			continue
		}
		var s nodeInfo
		if json.Unmarshal(b, &s) == nil && s.PID > 0 {
			out = append(out, s.PID)
		}
	}
	return out
}

func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// A zombie (state Z) has exited.
	f := strings.Fields(string(b))
	return len(f) > 2 && f[2] != "Z"
}

// cpuTime returns a process's user+system time.
func cpuTime(t *testing.T, pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.Atoi(f[11])
	st, _ := strconv.Atoi(f[12])
	return time.Duration(ut+st) * time.Second / 100
}

func rssKiB(t *testing.T, pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			n, _ := strconv.Atoi(strings.Fields(l)[1])
			return n
		}
	}
	return 0
}

func eventually(t *testing.T, d time.Duration, what string, f func() error) time.Duration {
	t.Helper()
	start := time.Now()
	var err error
	for time.Since(start) < d {
		if err = f(); err == nil {
			return time.Since(start)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: not within %v: %v", what, d, err)
	return 0
}

func freePort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// tcpServer serves each connection on 127.0.0.1 with handle (which need
// not close it) until the test ends, and returns the server's address.
func tcpServer(t *testing.T, handle func(c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

func TestNodeLifecycle(t *testing.T) {
	e := newEnv(t)
	if got := e.must("node", "create", "n1"); got != "/node/n1" {
		t.Fatalf("piped node create printed %q, want /node/n1", got)
	}
	e.must("node", "create", "n2")
	// A second create of a running node succeeds (as Ockam's did), unless
	// it asks for settings the node does not have.
	e.must("node", "create", "n1")
	r := e.run("node", "create", "n1", "--tcp-listener-address", "127.0.0.1:0")
	if r.code == 0 || !strings.Contains(r.stderr, "node n1 already exists") {
		t.Fatalf("duplicate create with flags: %+v", r)
	}
	list := e.must("node", "list")
	for _, n := range []string{"n1", "n2"} {
		if !strings.Contains(list, n) || strings.Count(list, "running") != 2 {
			t.Fatalf("node list:\n%s", list)
		}
	}
	i := e.show("n1")
	if i.Status != "running" || i.PID == 0 || !strings.HasPrefix(i.Identifier, "I") || len(i.Identifier) != 65 {
		t.Fatalf("node show: %+v", i)
	}
	if out := e.must("node", "show", "n1"); !strings.Contains(out, "/service/echo") || !strings.Contains(out, "/service/api") {
		t.Fatalf("node show lists no services:\n%s", out)
	}
	if logs := e.must("node", "logs", "n1"); !strings.Contains(logs, "node started") {
		t.Fatalf("node logs:\n%s", logs)
	}
	pid := i.PID
	e.must("node", "delete", "n1")
	if processAlive(pid) {
		t.Fatalf("process %d alive after node delete", pid)
	}
	if list := e.must("node", "list"); strings.Contains(list, "n1") {
		t.Fatalf("n1 still listed:\n%s", list)
	}
	// A node whose process died is reported, not hung on.
	p2 := e.show("n2").PID
	syscall.Kill(p2, syscall.SIGKILL)
	eventually(t, 5*time.Second, "n2 to die", func() error {
		if processAlive(p2) {
			return fmt.Errorf("alive")
		}
		return nil
	})
	r = e.run("message", "send", "hi", "--from", "/node/n2", "--to", "/service/echo")
	if r.code == 0 || !strings.Contains(r.stderr, "node n2 is not running") {
		t.Fatalf("message to a dead node: %+v", r)
	}
	if s := e.show("n2"); s.Status != "crashed" {
		t.Fatalf("killed node status %q, want crashed", s.Status)
	}
	e.must("node", "delete", "--all")
	if list := e.must("node", "list"); strings.Contains(list, "n2") {
		t.Fatalf("node list after delete --all:\n%s", list)
	}
}

func TestBadInputOneLineError(t *testing.T) {
	e := newEnv(t)
	e.must("node", "create", "a")
	busy := e.show("a").TCPAddress
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown node", []string{"message", "send", "hi", "--from", "/node/nope", "--to", "/service/echo"}, "no such node: nope"},
		{"malformed route", []string{"message", "send", "hi", "--from", "/node/a", "--to", "/ip4/1.2.3/tcp/1"}, "not an IPv4 address"},
		{"unknown segment", []string{"message", "send", "hi", "--from", "/node/a", "--to", "/foo/bar"}, "unknown segment /foo"},
		{"port in use", []string{"node", "create", "b", "--tcp-listener-address", busy}, "address already in use"},
		{"missing argument", []string{"relay", "show"}, "missing NAME"},
		{"missing flag", []string{"message", "send", "hi", "--to", "/service/echo"}, "missing --from"},
		{"unknown flag", []string{"node", "list", "--bogus"}, "unknown flag: --bogus"},
		{"bad node name", []string{"node", "create", "../x"}, "invalid node name"},
		{"window above budget", []string{"node", "create", "w", "--max-flow-window-mib", "64", "--window-budget-mib", "32"}, "more than --window-budget-mib"},
		{"unreachable", []string{"message", "send", "hi", "--from", "/node/a", "--to", "/tcp/" + freePort(t) + "/service/echo"}, "connection refused"},
		{"empty pipe", []string{"tcp-inlet", "create", "--at", "/node/a", "--to", "-/service/outlet"}, "standard input is empty"},
		{"bad output", []string{"node", "list", "--output", "yaml"}, "the only format is json"},
		{"unknown service", []string{"message", "send", "hi", "--from", "/node/a", "--to", "/node/a/service/nothing", "--timeout", "300ms"}, "no /service/nothing on the route"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.run(tt.args...)
			if r.code == 0 {
				t.Fatalf("exit 0, stdout %q", r.stdout)
			}
			lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
			if len(lines) != 1 || !strings.HasPrefix(lines[0], "ockam: ") || !strings.Contains(lines[0], tt.want) {
				t.Fatalf("stderr = %q, want one line containing %q", r.stderr, tt.want)
			}
			if strings.Contains(r.stderr, "goroutine") || strings.Contains(r.stderr, "panic") {
				t.Fatalf("stack trace: %s", r.stderr)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(e.home, "nodes", "b")); err == nil {
		t.Error("a node that failed to start left its directory")
	}
}

// three nodes: relay, a, b. b registers at the relay; a sends through it.
func threeNodes(t *testing.T, e *env) {
	e.must("node", "create", "relay")
	e.must("node", "create", "b")
	e.must("node", "create", "a")
	route := e.must("relay", "create", "b", "--at", "/node/relay", "--to", "/node/b")
	if !strings.HasSuffix(route, "/service/forward_to_b") {
		t.Fatalf("relay create printed %q", route)
	}
}

func TestMessageThroughRelay(t *testing.T) {
	e := newEnv(t)
	threeNodes(t, e)
	if got := e.must("message", "send", "hello", "--from", "/node/a", "--to", "/node/relay/service/forward_to_b/service/echo"); got != "hello" {
		t.Fatalf("reply %q", got)
	}
	if out := e.must("relay", "list", "--at", "/node/relay"); !strings.Contains(out, "forward_to_b") {
		t.Fatalf("relay list:\n%s", out)
	}
	// The seed's older spelling works too, and a secure channel composes
	// through a pipe.
	e.must("forwarder", "create", "b2", "--at", "/node/relay", "--to", "/node/b")
	ch := e.must("secure-channel", "create", "--from", "/node/a", "--to", "/node/relay/service/forward_to_b2/service/api")
	if !strings.HasPrefix(ch, "/service/") {
		t.Fatalf("secure-channel create printed %q", ch)
	}
	r := e.cmd(ch+"\n", "message", "send", "through the channel", "--from", "/node/a", "--to", "-/service/echo")
	if r.code != 0 || strings.TrimSpace(r.stdout) != "through the channel" {
		t.Fatalf("message via channel: %+v", r)
	}
}

func TestRelayRestartReRegisters(t *testing.T) {
	e := newEnv(t)
	threeNodes(t, e)
	relayInfo := e.show("relay")
	bPID := e.show("b").PID
	send := func() error {
		r := e.run("message", "send", "ping", "--from", "/node/a", "--to", "/node/relay/service/forward_to_b/service/echo", "--timeout", "1s")
		if r.code != 0 {
			return fmt.Errorf("%s", r.stderr)
		}
		return nil
	}
	if err := send(); err != nil {
		t.Fatal(err)
	}
	syscall.Kill(relayInfo.PID, syscall.SIGKILL)
	eventually(t, 5*time.Second, "relay to die", func() error {
		if processAlive(relayInfo.PID) {
			return fmt.Errorf("alive")
		}
		return nil
	})
	// While the relay is down, b retries with backoff: it must not spin.
	cpu0 := cpuTime(t, bPID)
	down := time.Now()
	for time.Since(down) < 2*time.Second {
		time.Sleep(100 * time.Millisecond)
	}
	if spent := cpuTime(t, bPID) - cpu0; spent > 300*time.Millisecond {
		t.Errorf("b used %v of CPU in 2s while the relay was down: a hot retry loop", spent)
	}
	e.must("node", "delete", "relay")
	e.must("node", "create", "relay", "--tcp-listener-address", relayInfo.TCPAddress)
	took := eventually(t, 15*time.Second, "messages through the restarted relay", send)
	t.Logf("messages flow again %v after the relay came back", took.Round(time.Millisecond))
}

// seed sets up the seed demo's nodes with an outlet to target and an inlet.
func seed(t *testing.T, e *env, target string) (inlet string) {
	t.Helper()
	e.must("node", "create", "relay")
	e.must("node", "create", "server_sidecar")
	e.must("tcp-outlet", "create", "--at", "/node/server_sidecar", "--from", "/service/outlet", "--to", target)
	e.must("forwarder", "create", "server_sidecar", "--at", "/node/relay", "--to", "/node/server_sidecar")
	e.must("node", "create", "client_sidecar")
	ch := e.must("secure-channel", "create", "--from", "/node/client_sidecar", "--to", "/node/relay/service/forward_to_server_sidecar/service/api")
	inlet = freePort(t)
	r := e.cmd(ch+"\n", "tcp-inlet", "create", "--at", "/node/client_sidecar", "--from", inlet, "--to", "-/service/outlet")
	if r.code != 0 || strings.TrimSpace(r.stdout) != inlet {
		t.Fatalf("tcp-inlet create: %+v", r)
	}
	return inlet
}

// pythonServer serves dir with python3 -m http.server and returns its address.
func pythonServer(t *testing.T, dir string) string {
	t.Helper()
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 not installed")
	}
	addr := freePort(t)
	_, port, _ := net.SplitHostPort(addr)
	c := exec.Command("python3", "-m", "http.server", "--bind", "127.0.0.1", port)
	c.Dir = dir
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Process.Kill(); c.Wait() })
	eventually(t, 10*time.Second, "python http.server", func() error {
		cn, err := net.Dial("tcp", addr)
		if err == nil {
			cn.Close()
		}
		return err
	})
	return addr
}

func curl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl not installed")
	}
	out, err := exec.Command("curl", append([]string{"--silent", "--show-error", "--max-time", "60"}, args...)...).CombinedOutput()
	return string(out), err
}

func TestPortalSeedDemo(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	const size = 100 << 20
	blob := make([]byte, size)
	rand.Read(blob)
	want := sha256.Sum256(blob)
	os.WriteFile(filepath.Join(dir, "blob"), blob, 0o644)
	inlet := seed(t, e, pythonServer(t, dir))

	out, err := curl(t, "--head", inlet)
	if err != nil || !strings.HasPrefix(out, "HTTP/1.0 200 OK") {
		t.Fatalf("curl --head: %v\n%s", err, out)
	}

	// 100 MiB down.
	start := time.Now()
	down := filepath.Join(t.TempDir(), "down")
	if out, err := curl(t, "-o", down, "http://"+inlet+"/blob"); err != nil {
		t.Fatalf("download: %v %s", err, out)
	}
	dt := time.Since(start)
	got, _ := os.ReadFile(down)
	if sha256.Sum256(got) != want {
		t.Fatalf("download: %d bytes, sha256 differs", len(got))
	}
	t.Logf("100 MiB download through the portal: %v (%.2f Gbit/s)", dt.Round(time.Millisecond), float64(size*8)/dt.Seconds()/1e9)
}

func TestPortalUploadAndConcurrency(t *testing.T) {
	e := newEnv(t)
	// An HTTP server in the test that hashes what it receives.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, _ := io.Copy(h, r.Body)
		if r.URL.Path == "/echo" {
			w.Write([]byte(fmt.Sprint(n)))
			return
		}
		fmt.Fprintf(w, "%d %s", n, hex.EncodeToString(h.Sum(nil)))
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	inlet := seed(t, e, ln.Addr().String())

	const size = 100 << 20
	blob := make([]byte, size)
	rand.Read(blob)
	want := sha256.Sum256(blob)
	f := filepath.Join(t.TempDir(), "up")
	os.WriteFile(f, blob, 0o644)
	start := time.Now()
	out, err := curl(t, "-T", f, "http://"+inlet+"/up")
	if err != nil {
		t.Fatalf("upload: %v %s", err, out)
	}
	if out != fmt.Sprintf("%d %x", size, want) {
		t.Fatalf("server saw %q, want %d %x", out, size, want)
	}
	t.Logf("100 MiB upload through the portal: %v", time.Since(start).Round(time.Millisecond))

	// 50 connections at once, 1 MiB each way, all intact.
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := make([]byte, 1<<20)
			rand.Read(body)
			resp, err := http.Post("http://"+inlet+"/", "application/octet-stream", bytes.NewReader(body))
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if string(b) != fmt.Sprintf("%d %x", len(body), sha256.Sum256(body)) {
				errs <- fmt.Errorf("got %q", b)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// The relay dies mid-transfer and comes back: the transfer pauses and goes
// on, on the same connection, without anyone running a command; new
// connections work too.
func TestPortalSurvivesRelayRestart(t *testing.T) {
	e := newEnv(t)
	target := tcpServer(t, func(c net.Conn) { // "hi" then an endless counted stream
		c.Write([]byte("hi"))
		buf := make([]byte, 32<<10)
		var n uint32
		for {
			for i := 0; i < len(buf); i += 4 {
				binary.BigEndian.PutUint32(buf[i:], n)
				n++
			}
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	})
	inlet := seed(t, e, target)
	relayInfo := e.show("relay")

	c, err := net.Dial("tcp", inlet)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(60 * time.Second))
	if _, err := io.ReadFull(c, make([]byte, 2)); err != nil {
		t.Fatal(err)
	}
	var next uint32
	check := func(n int) error {
		buf := make([]byte, n)
		if _, err := io.ReadFull(c, buf); err != nil {
			return err
		}
		for i := 0; i < n; i += 4 {
			if v := binary.BigEndian.Uint32(buf[i:]); v != next {
				return fmt.Errorf("word %d is %d: the stream lost, doubled or reordered bytes", next, v)
			}
			next++
		}
		return nil
	}
	if err := check(1 << 20); err != nil {
		t.Fatalf("transfer before the relay died: %v", err)
	}
	syscall.Kill(relayInfo.PID, syscall.SIGKILL)
	killed := time.Now()
	e.must("node", "delete", "relay")
	e.must("node", "create", "relay", "--tcp-listener-address", relayInfo.TCPAddress)
	t.Logf("relay back %v after it was killed", time.Since(killed).Round(time.Millisecond))
	if err := check(8 << 20); err != nil {
		t.Fatalf("transfer after the relay came back: %v", err)
	}
	t.Logf("8 MiB more on the same connection %v after the relay was killed", time.Since(killed).Round(time.Millisecond))
	took := eventually(t, 20*time.Second, "a new connection through the restarted relay", func() error {
		c, err := net.DialTimeout("tcp", inlet, time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		b := make([]byte, 2)
		if _, err := io.ReadFull(c, b); err != nil {
			return err
		}
		if string(b) != "hi" {
			return fmt.Errorf("got %q", b)
		}
		return nil
	})
	t.Logf("recovery: new connections work %v after the relay came back", took.Round(time.Millisecond))
}

// With --resume-grace 0, flows end with their channel, at once.
func TestPortalWithoutResumeEndsWithRelay(t *testing.T) {
	e := newEnv(t)
	target := tcpServer(t, func(c net.Conn) {
		buf := make([]byte, 32<<10)
		for {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	})
	e.must("node", "create", "relay")
	e.must("node", "create", "server_sidecar")
	e.must("tcp-outlet", "create", "--at", "/node/server_sidecar", "--from", "/service/outlet", "--to", target)
	e.must("forwarder", "create", "server_sidecar", "--at", "/node/relay", "--to", "/node/server_sidecar")
	e.must("node", "create", "client_sidecar", "--resume-grace", "0")
	ch := e.must("secure-channel", "create", "--from", "/node/client_sidecar", "--to", "/node/relay/service/forward_to_server_sidecar/service/api")
	inlet := freePort(t)
	if r := e.cmd(ch+"\n", "tcp-inlet", "create", "--at", "/node/client_sidecar", "--from", inlet, "--to", "-/service/outlet"); r.code != 0 {
		t.Fatalf("tcp-inlet create: %+v", r)
	}
	c, err := net.Dial("tcp", inlet)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.ReadFull(c, make([]byte, 1<<20)); err != nil {
		t.Fatalf("transfer before the relay died: %v", err)
	}
	syscall.Kill(e.show("relay").PID, syscall.SIGKILL)
	killed := time.Now()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = io.Copy(io.Discard, c)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("transfer hung after the relay died")
	}
	t.Logf("transfer ended %v after the relay died (%v)", time.Since(killed).Round(time.Millisecond), err)
}

func TestPortalStalledReaderKeepsOthersFastAndMemoryBounded(t *testing.T) {
	e := newEnv(t)
	const bulk = 200 << 20
	chunk := make([]byte, 256<<10)
	target := tcpServer(t, func(c net.Conn) {
		var cmd [1]byte
		if _, err := c.Read(cmd[:]); err != nil {
			return
		}
		for sent := 0; cmd[0] == 's' || sent < bulk; sent += len(chunk) {
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	})
	inlet := seed(t, e, target)
	download := func() time.Duration {
		c, err := net.Dial("tcp", inlet)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte("b"))
		start := time.Now()
		c.SetReadDeadline(time.Now().Add(60 * time.Second))
		if n, err := io.Copy(io.Discard, c); err != nil || n != bulk {
			t.Fatalf("bulk: %d bytes, %v", n, err)
		}
		return time.Since(start)
	}
	// 2 shared cores, three processes and the test: alone and beside a
	// stalled flow are interleaved, best of three each, and the best of
	// three rounds counts. A flow that really stalls the others fails
	// every round; the machine's drift between two halves does not.
	best := func() time.Duration { return min(download(), download(), download()) }
	download() // warm up
	var ratio float64
	var stalled net.Conn
	for round := range 3 {
		alone := best()
		s, err := net.Dial("tcp", inlet)
		if err != nil {
			t.Fatal(err)
		}
		s.Write([]byte("s"))
		together := best()
		r := float64(alone) / float64(together)
		t.Logf("round %d: bulk alone %v (%.2f Gbit/s); beside a stalled flow %v: %.0f%%", round+1, alone.Round(time.Millisecond),
			float64(bulk*8)/alone.Seconds()/1e9, together.Round(time.Millisecond), 100*r)
		ratio = max(ratio, r)
		if stalled != nil {
			stalled.Close()
		}
		stalled = s // the last one stays stalled for the memory check
		if ratio >= 0.8 {
			break
		}
	}
	defer stalled.Close()
	if ratio < 0.8 {
		t.Errorf("bulk kept at best %.0f%% of its throughput beside a stalled flow, want >= 80%%", 100*ratio)
	}
	for _, n := range []string{"client_sidecar", "server_sidecar", "relay"} {
		rss := rssKiB(t, e.show(n).PID)
		t.Logf("%s RSS %d KiB with a stalled flow", n, rss)
		if rss > 256<<10 {
			t.Errorf("%s RSS %d KiB: memory not bounded", n, rss)
		}
	}
}

// Sidecars are killed and started again: flows in flight end promptly, and
// `ockam node start` brings each back with its outlets, relays, channels and
// inlets, so new connections work again within seconds, with no other
// command.
func TestSidecarRestarts(t *testing.T) {
	e := newEnv(t)
	target := tcpServer(t, func(c net.Conn) { io.Copy(c, c) })
	inlet := seed(t, e, target)
	roundTrip := func() error {
		c, err := net.DialTimeout("tcp", inlet, time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write([]byte("ping")); err != nil {
			return err
		}
		b := make([]byte, 4)
		if _, err := io.ReadFull(c, b); err != nil {
			return err
		}
		if string(b) != "ping" {
			return fmt.Errorf("got %q", b)
		}
		return nil
	}
	if err := roundTrip(); err != nil {
		t.Fatal(err)
	}
	// Each sidecar, stopped gracefully (its peer hears an authenticated
	// Close) or killed, then started again: new connections work within
	// 2 s of the node being back, with no command re-run.
	for _, tc := range []struct{ sidecar, how string }{
		{"server_sidecar", "stop"}, {"client_sidecar", "stop"},
		{"server_sidecar", "kill"}, {"client_sidecar", "kill"},
	} {
		sidecar := tc.sidecar
		t.Run(sidecar+"/"+tc.how, func(t *testing.T) {
			open, err := net.Dial("tcp", inlet)
			if err != nil {
				t.Fatal(err)
			}
			defer open.Close()
			open.Write([]byte("x"))
			open.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.ReadFull(open, make([]byte, 1)); err != nil {
				t.Fatal(err)
			}
			pid := e.show(sidecar).PID
			if tc.how == "kill" {
				syscall.Kill(pid, syscall.SIGKILL)
			} else {
				e.must("node", "stop", sidecar)
			}
			killed := time.Now()
			// A killed server sidecar cannot tell: the client's flow
			// waits (--resume-grace) for it to come back, and ends
			// when its restarted outlet answers that it has no such
			// flow. Anything else ends the flow at once.
			serverKilled := sidecar == "server_sidecar" && tc.how == "kill"
			if !serverKilled {
				_, err = io.ReadFull(open, make([]byte, 1))
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					t.Fatalf("connection in flight hung after %s went", sidecar)
				}
				t.Logf("connection in flight ended %v after %s went", time.Since(killed).Round(time.Millisecond), sidecar)
			}
			eventually(t, 5*time.Second, sidecar+" to exit", func() error {
				if processAlive(pid) {
					return fmt.Errorf("alive")
				}
				return nil
			})
			e.must("node", "start", sidecar)
			if serverKilled {
				back := time.Now()
				_, err = io.ReadFull(open, make([]byte, 1))
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					t.Fatalf("connection in flight hung after %s came back", sidecar)
				}
				t.Logf("connection in flight ended %v after %s came back (%v)", time.Since(back).Round(time.Millisecond), sidecar, err)
			}
			took := eventually(t, 15*time.Second, "a new connection after "+sidecar+" restarted", roundTrip)
			t.Logf("recovery: new connections work %v after %s came back", took.Round(time.Millisecond), sidecar)
			if took > 2*time.Second {
				t.Errorf("recovery took %v, want within 2s", took)
			}
		})
	}
	// node stop keeps the node's state; node start brings it back.
	e.must("node", "stop", "relay")
	if s := e.show("relay"); s.Status != "stopped" {
		t.Fatalf("relay status after stop: %q", s.Status)
	}
	e.must("node", "start", "relay")
	eventually(t, 15*time.Second, "a new connection after the relay was stopped and started", roundTrip)
}

// An encrypted vault: nodes start with the passphrase, a wrong one is one
// clear line, and the secret file is never rewritten by a failed open.
func TestEncryptedVault(t *testing.T) {
	e := newEnv(t)
	pass := filepath.Join(t.TempDir(), "pass")
	os.WriteFile(pass, []byte("correct horse\n"), 0o600)
	id := e.must("identity", "create", "alice", "--vault-passphrase-file", pass)
	if !strings.HasPrefix(id, "I") || len(id) != 65 {
		t.Fatalf("identity create printed %q", id)
	}
	secret := filepath.Join(e.home, "vault", "alice.secret")
	before, _ := os.ReadFile(secret)
	if bytes.Contains(before, []byte("alice")) && len(before) < 64 {
		t.Fatalf("secret file looks unencrypted: %q", before)
	}
	// Public identities need no passphrase.
	if got := e.must("identity", "show", "alice"); got != id {
		t.Fatalf("identity show = %q, want %q", got, id)
	}
	// A node cannot use the identity without the passphrase...
	r := e.run("node", "create", "n", "--identity", "alice")
	if r.code == 0 || !strings.Contains(r.stderr, "passphrase") || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
		t.Fatalf("node without passphrase: %+v", r)
	}
	// ... nor with a wrong one,
	wrong := filepath.Join(t.TempDir(), "wrong")
	os.WriteFile(wrong, []byte("battery staple\n"), 0o600)
	r = e.run("node", "create", "n", "--identity", "alice", "--vault-passphrase-file", wrong)
	if r.code == 0 || !strings.Contains(r.stderr, "wrong passphrase") {
		t.Fatalf("node with a wrong passphrase: %+v", r)
	}
	after, _ := os.ReadFile(secret)
	if !bytes.Equal(before, after) {
		t.Fatal("a failed open rewrote the secret file")
	}
	// ... and with the right one it runs as alice.
	e.must("node", "create", "n", "--identity", "alice", "--vault-passphrase-file", pass)
	if got := e.show("n").Identifier; got != id {
		t.Fatalf("node identifier %s, want alice's %s", got, id)
	}
}
