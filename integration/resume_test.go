package integration

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
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

// The relay restarts under carried connections (issue 15): the ockam-relay
// binary in its own namespace between the client's and the server's, killed
// (SIGKILL) or stopped (SIGTERM) and started again while connections carry
// data through it. Flows resume: every byte arrives once, in order, and the
// application's connection never sees a reset. An outage longer than the
// grace period ends them with a reset.
//
// OCKAM_RESUME_MIB sets the bulk size (default 256 MiB; the figure
// is 1024).

// resumeGrace is the nodes' --resume-grace in these tests.
const resumeGrace = 8 * time.Second

type relayProc struct {
	w    *world
	bin  string
	port int      // 0: 4000
	args []string // more flags
	log  string
	mu   sync.Mutex
	cmd  *exec.Cmd
	runs int
}

func buildRelay(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "ockam-relay")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/ockam-relay")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// start runs ockam-relay in the relay namespace and waits until the client
// side can connect to it.
func (r *relayProc) start(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	f, err := os.OpenFile(r.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// ip netns exec switches namespace and execs: the PID is the relay's.
	c := exec.Command("ip", append([]string{"netns", "exec", r.w.relay.name, r.bin, "--listen", fmt.Sprintf("0.0.0.0:%d", r.portOr()), "--log-format", "text"}, r.args...)...)
	c.Stdout, c.Stderr = f, f
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	r.cmd = c
	r.runs++
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := r.w.client.dial(fmt.Sprintf("%s:%d", r.w.relayC, r.portOr()), 200*time.Millisecond)
		if err == nil {
			conn.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("ockam-relay does not listen: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (r *relayProc) portOr() int {
	if r.port == 0 {
		return 4000
	}
	return r.port
}

// stop ends the relay with sig and waits for it.
func (r *relayProc) stop(sig syscall.Signal) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return
	}
	r.cmd.Process.Signal(sig)
	r.cmd.Wait()
	r.cmd = nil
}

// restart stops the relay with sig and starts another; it returns how long
// the relay was away.
func (r *relayProc) restart(t *testing.T, sig syscall.Signal) time.Duration {
	start := time.Now()
	r.stop(sig)
	r.start(t)
	return time.Since(start)
}

// upResume starts the relay, the two sidecars (grace resumeGrace), outlets
// to the sink and the echo, the forwarder, the channel, two inlets and the
// TUN with a mapping; it returns the inlets' addresses.
func (w *world) upResume(t *testing.T, r *relayProc, nodeFlags ...string) (sink, echo string) {
	r.start(t)
	grace := resumeGrace.String()
	w.ockam(w.server.name, "", append([]string{"node", "create", "server_sidecar", "--resume-grace", grace}, nodeFlags...)...)
	w.waitNode("server_sidecar")
	w.ockam("", "", "tcp-outlet", "create", "--at", "/node/server_sidecar", "--from", "/service/outlet",
		"--to", "127.0.0.1", "--ports", fmt.Sprintf("%d,%d", portSink, portEcho))
	w.ockam("", "", "tcp-outlet", "create", "--at", "/node/server_sidecar", "--from", "/service/sink", "--to", fmt.Sprintf("127.0.0.1:%d", portSink))
	w.ockam("", "", "tcp-outlet", "create", "--at", "/node/server_sidecar", "--from", "/service/echo_outlet", "--to", fmt.Sprintf("127.0.0.1:%d", portEcho))
	w.ockam("", "", "forwarder", "create", "server_sidecar", "--at", "/ip4/"+w.relayS+"/tcp/4000", "--to", "/node/server_sidecar")
	w.ockam(w.client.name, "", append([]string{"node", "create", "client_sidecar", "--resume-grace", grace}, nodeFlags...)...)
	w.waitNode("client_sidecar")
	w.channel = w.ockam("", "", "secure-channel", "create", "--from", "/node/client_sidecar",
		"--to", "/ip4/"+w.relayC+"/tcp/4000/service/forward_to_server_sidecar/service/api")
	sink = w.ockam("", w.channel+"\n", "tcp-inlet", "create", "--at", "/node/client_sidecar", "--from", "127.0.0.1:7100", "--to", "-/service/sink")
	echo = w.ockam("", w.channel+"\n", "tcp-inlet", "create", "--at", "/node/client_sidecar", "--from", "127.0.0.1:7101", "--to", "-/service/echo_outlet")
	w.ockam("", "", "tun", "create", "--at", "/node/client_sidecar")
	w.ip = w.ockam("", w.channel+"\n", "tun", "map", "--at", "/node/client_sidecar", "--to", "-/service/outlet", "--name", "api.ockam")
	return sink, echo
}

// bulk sends size random bytes to the sink at addr (in the client
// namespace), calling at(k) as each third k (1, 2) has been written, and
// checks the sink's sha256. It returns the longest wait of one write and
// the throughput before the first restart and after the last.
func (w *world) bulk(t *testing.T, addr string, size int64, at func(k int)) (gap time.Duration, before, after float64) {
	t.Helper()
	c, err := w.client.dial(addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Minute))
	h := sha256.New()
	buf := make([]byte, 64<<10)
	var sent int64
	var done sync.WaitGroup
	start := time.Now()
	var t1, t2 time.Time
	var s2 int64
	next := 1
	last := time.Now()
	for sent < size {
		rand.Read(buf)
		n := int(min(int64(len(buf)), size-sent))
		h.Write(buf[:n])
		if _, err := c.Write(buf[:n]); err != nil {
			t.Fatalf("writing after %d MiB: %v (a reset reached the application)", sent>>20, err)
		}
		now := time.Now()
		gap = max(gap, now.Sub(last))
		last = now
		sent += int64(n)
		if next <= 2 && sent >= int64(next)*size/3 {
			if next == 1 {
				t1 = now
				before = float64(sent) / now.Sub(start).Seconds()
			}
			k := next
			done.Add(1)
			go func() { defer done.Done(); at(k) }()
			if next == 2 {
				done.Wait()
				t2, s2 = time.Now(), sent
			}
			next++
		}
	}
	c.(*net.TCPConn).CloseWrite()
	line, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading the sink's sha256: %v (a reset reached the application)", err)
	}
	end := time.Now()
	done.Wait()
	if got, want := strings.TrimSpace(string(line)), hex.EncodeToString(h.Sum(nil)); got != want {
		t.Fatalf("the sink got sha256 %s, sent %s", got, want)
	}
	if !t2.IsZero() && end.After(t2) {
		after = float64(size-s2) / end.Sub(t2).Seconds()
	}
	_ = t1
	return gap, before, after
}

// endOfStream sends size random bytes to the sink at addr, half-closes, and
// calls cut at once (in-flight data and both ends of the stream meet it); it
// checks the sink's sha256 and that the stream then ends (EOF, no reset).
// It returns how long the close took and whether the end arrived after cut
// returned (what was in flight crossed the cut).
func (w *world) endOfStream(t *testing.T, addr string, size int, cut func()) (time.Duration, bool) {
	t.Helper()
	c, err := w.client.dial(addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * resumeGrace))
	buf := make([]byte, size)
	rand.Read(buf)
	sum := sha256.Sum256(buf)
	if _, err := c.Write(buf); err != nil {
		t.Fatalf("writing: %v", err)
	}
	start := time.Now()
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	ended := make(chan time.Time, 1)
	var line []byte
	go func() {
		line, err = io.ReadAll(c)
		ended <- time.Now()
	}()
	cut()
	cutDone := time.Now()
	end := <-ended
	if err != nil {
		t.Fatalf("reading the sink's sha256 and its end: %v (a reset reached the application)", err)
	}
	if got, want := strings.TrimSpace(string(line)), hex.EncodeToString(sum[:]); got != want {
		t.Fatalf("the sink got sha256 %q, sent %s", got, want)
	}
	return end.Sub(start), end.After(cutDone)
}

func mibps(bps float64) string { return fmt.Sprintf("%.0f MiB/s", bps/(1<<20)) }

// interactive sends a request every 100 ms on one connection to the echo at
// addr and checks each answer, calling mid once after 1 s; it runs for d
// and returns the longest time between two answers.
func (w *world) interactive(t *testing.T, addr string, d time.Duration, mid func()) (gap time.Duration, n int) {
	t.Helper()
	c, err := w.client.dial(addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	last := start
	midDone := make(chan struct{})
	midStarted := false
	for i := 0; time.Since(start) < d; i++ {
		if !midStarted && time.Since(start) > time.Second {
			midStarted = true
			go func() { defer close(midDone); mid() }()
		}
		msg := []byte(fmt.Sprintf("request %06d\n", i))
		c.SetDeadline(time.Now().Add(resumeGrace + 10*time.Second))
		if _, err := c.Write(msg); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatalf("answer %d: %v (a reset reached the application)", i, err)
		}
		if string(got) != string(msg) {
			t.Fatalf("answer %q to %q", got, msg)
		}
		now := time.Now()
		gap = max(gap, now.Sub(last))
		last = now
		n++
		time.Sleep(time.Until(start.Add(time.Duration(i+1) * 100 * time.Millisecond)))
	}
	if midStarted {
		<-midDone
	}
	return gap, n
}

// metric is the value of the sample name (with its labels, if any) in the
// node's /metrics, or 0.
func (w *world) metric(t *testing.T, node, name string) float64 {
	t.Helper()
	for _, l := range strings.Split(string(w.get(t, node, "/metrics")), "\n") {
		if strings.HasPrefix(l, name+" ") {
			v, _ := strconv.ParseFloat(strings.TrimPrefix(l, name+" "), 64)
			return v
		}
	}
	return 0
}

func resumeSize(t *testing.T) int64 {
	mib := int64(256)
	if s := os.Getenv("OCKAM_RESUME_MIB"); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil || v <= 0 {
			t.Fatalf("OCKAM_RESUME_MIB=%q: want a positive number of MiB", s)
		}
		mib = v
	}
	return mib << 20
}

func TestResumeAcrossRelayRestarts(t *testing.T) {
	w := newWorld(t)
	r := &relayProc{w: w, bin: buildRelay(t), log: filepath.Join(w.home, "relay.log")}
	t.Cleanup(func() {
		r.stop(syscall.SIGKILL)
		if t.Failed() {
			b, _ := os.ReadFile(r.log)
			t.Logf("ockam-relay log:\n%s", b)
		}
	})
	sink, echo := w.upResume(t, r)
	size := resumeSize(t)

	t.Run("bulk through the inlet, relay killed twice", func(t *testing.T) {
		var away [3]time.Duration
		gap, before, after := w.bulk(t, sink, size, func(k int) { away[k] = r.restart(t, syscall.SIGKILL) })
		t.Logf("%d MiB, relay SIGKILLed and restarted twice (away %v, %v): sha256 equal, no reset; longest write wait %v; %s before, %s after the restarts",
			size>>20, away[1].Round(time.Millisecond), away[2].Round(time.Millisecond), gap.Round(time.Millisecond), mibps(before), mibps(after))
		// The flow moved off the shared lane 0 (portal lanes.go) on the
		// way: the stream stayed whole across the move and the restarts.
		if m := w.metric(t, "client_sidecar", "ockam_portal_flow_lane_moves_total"); m < 1 {
			t.Errorf("the bulk flow never moved to a lane of its own (lane moves %v)", m)
		}
	})
	t.Run("bulk through the TUN, relay killed twice", func(t *testing.T) {
		gap, before, after := w.bulk(t, fmt.Sprintf("%s:%d", w.ip, portSink), size/2, func(int) { r.restart(t, syscall.SIGKILL) })
		t.Logf("%d MiB through the TUN, relay SIGKILLed and restarted twice: sha256 equal, no reset; longest write wait %v; %s before, %s after",
			size>>21, gap.Round(time.Millisecond), mibps(before), mibps(after))
	})
	t.Run("end of stream, relay killed as it ends", func(t *testing.T) {
		// The relay dies while a transfer's last bytes, its end (the
		// client's half-close) and the sink's answer and end are on the
		// way: they must all arrive, through the restarted relay.
		crossed := 0
		for i, addr := range []string{sink, fmt.Sprintf("%s:%d", w.ip, portSink), sink, fmt.Sprintf("%s:%d", w.ip, portSink)} {
			took, after := w.endOfStream(t, addr, 4<<20, func() { r.restart(t, syscall.SIGKILL) })
			if after {
				crossed++
			}
			t.Logf("round %d (%s): 4 MiB, half-closed, relay SIGKILLed at once and restarted: sha256 equal, end of stream seen %s the restart, no reset, %v",
				i+1, addr, map[bool]string{true: "after", false: "before"}[after], took.Round(time.Millisecond))
		}
		if crossed == 0 {
			t.Fatal("every stream ended before the relay was killed: nothing was in flight, the test did not test")
		}
	})
	t.Run("interactive, relay killed", func(t *testing.T) {
		gap, n := w.interactive(t, echo, 5*time.Second, func() { r.restart(t, syscall.SIGKILL) })
		t.Logf("interactive (a request every 100 ms): %d answers, longest gap %v across a SIGKILL and restart of the relay", n, gap.Round(time.Millisecond))
	})
	t.Run("interactive, rolling restart (SIGTERM)", func(t *testing.T) {
		gap, n := w.interactive(t, echo, 5*time.Second, func() { r.restart(t, syscall.SIGTERM) })
		t.Logf("interactive: %d answers, longest gap %v across a SIGTERM and restart of the relay", n, gap.Round(time.Millisecond))
	})
	t.Run("outage longer than the grace ends flows with a reset", func(t *testing.T) {
		c, err := w.client.dial(echo, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * resumeGrace))
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		r.stop(syscall.SIGKILL)
		down := time.Now()
		_, err = c.Read(make([]byte, 1))
		took := time.Since(down)
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("after an outage longer than the grace: %v, want a reset", err)
		}
		if took < resumeGrace-time.Second || took > resumeGrace+5*time.Second {
			t.Errorf("reset %v after the relay went, grace %v", took, resumeGrace)
		}
		t.Logf("relay gone for good: the connection was reset %v later (grace %v)", took.Round(time.Millisecond), resumeGrace)
		r.start(t)
		// New connections work again.
		deadline := time.Now().Add(20 * time.Second)
		for {
			c2, err := w.client.dial(echo, time.Second)
			if err == nil {
				c2.SetDeadline(time.Now().Add(3 * time.Second))
				c2.Write([]byte("y"))
				_, err = io.ReadFull(c2, make([]byte, 1))
				c2.Close()
				if err == nil {
					break
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("no new connection after the relay came back: %v", err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
}

// TestTwoRelays: the server registers its name at two ockam-relay
// processes, the client's channel has a route through each. Killing the
// relay in use moves the channel to the other within 2 s; the interactive
// session on it goes on without a reset, and secure-channel show names the
// route in use.
func TestTwoRelays(t *testing.T) {
	w := newWorld(t)
	bin := buildRelay(t)
	r1 := &relayProc{w: w, bin: bin, port: 4000, log: filepath.Join(w.home, "relay1.log")}
	r2 := &relayProc{w: w, bin: bin, port: 4001, log: filepath.Join(w.home, "relay2.log")}
	for _, r := range []*relayProc{r1, r2} {
		t.Cleanup(func() { r.stop(syscall.SIGKILL) })
		r.start(t)
	}
	w.ockam(w.server.name, "", "node", "create", "server_sidecar")
	w.waitNode("server_sidecar")
	w.ockam("", "", "tcp-outlet", "create", "--at", "/node/server_sidecar", "--from", "/service/echo_outlet", "--to", fmt.Sprintf("127.0.0.1:%d", portEcho))
	for _, port := range []int{4000, 4001} {
		w.ockam("", "", "relay", "create", "server_sidecar", "--at", fmt.Sprintf("/ip4/%s/tcp/%d", w.relayS, port), "--to", "/node/server_sidecar")
	}
	w.ockam(w.client.name, "", "node", "create", "client_sidecar")
	w.waitNode("client_sidecar")
	route := func(port int) string {
		return fmt.Sprintf("/ip4/%s/tcp/%d/service/forward_to_server_sidecar/service/api", w.relayC, port)
	}
	w.channel = w.ockam("", "", "secure-channel", "create", "--from", "/node/client_sidecar", "--to", route(4000), "--to", route(4001))
	echo := w.ockam("", w.channel+"\n", "tcp-inlet", "create", "--at", "/node/client_sidecar", "--from", "127.0.0.1:7101", "--to", "-/service/echo_outlet")
	inUse := func() string {
		out := w.ockam("", "", "secure-channel", "show", w.channel, "--at", "/node/client_sidecar")
		for _, l := range strings.Split(out, "\n") {
			if v, ok := strings.CutPrefix(l, "In use:"); ok {
				return strings.TrimSpace(v)
			}
		}
		t.Fatalf("secure-channel show has no In use line:\n%s", out)
		return ""
	}
	if got := inUse(); got != route(4000) {
		t.Fatalf("route in use %s, want %s", got, route(4000))
	}
	gap, n := w.interactive(t, echo, 5*time.Second, func() { r1.stop(syscall.SIGKILL) })
	if gap > 2*time.Second {
		t.Errorf("longest gap %v when the relay in use died, want under 2s", gap)
	}
	if got := inUse(); got != route(4001) {
		t.Fatalf("route in use %s after the first relay died, want %s", got, route(4001))
	}
	t.Logf("two relays, the one in use SIGKILLed: %d answers, longest gap %v; the channel moved to %s", n, gap.Round(time.Millisecond), route(4001))
}

// TestResumeAfterRelayDrops: a relay with a 1 MiB queue towards each
// connection, and small socket buffers in the relay's and the server's
// namespaces, drops what 64 bulk flows send while the server's sidecar is
// stopped (SIGSTOP, 300 ms, twice); the flows repair the gaps (Rewind,
// resume) and the sink gets every byte of each, with no reset. Before, the
// first dropped Data reset its flow ("data out of order"). 64 flows: their
// first windows (256 KiB each) must exceed what the relay's socket holds,
// which asks for net.core.wmem_max (transport.sendBuffer) whatever tcp_wmem
// says, and that cannot be lowered in a namespace: on a host with a 4 MiB
// wmem_max, the four lanes of a bundle hold 32 MiB between them, more than
// the 16 MiB of first windows, and nothing was dropped. So the sidecars
// open one lane each here. Flows end cleanly too: a lost Fin or last Data is sent again while
// the sender lingers for the peer's FinAck (portal version 5).
func TestResumeAfterRelayDrops(t *testing.T) {
	w := newWorld(t)
	for _, ns := range []string{w.relay.name, w.server.name} {
		for _, kv := range []string{"net.ipv4.tcp_rmem=4096 65536 131072", "net.ipv4.tcp_wmem=4096 65536 131072"} {
			if out, err := exec.Command("ip", "netns", "exec", ns, "sysctl", "-w", kv).CombinedOutput(); err != nil {
				t.Fatalf("sysctl %s: %v: %s", kv, err, out)
			}
		}
	}
	r := &relayProc{w: w, bin: buildRelay(t), log: filepath.Join(w.home, "relay.log"), args: []string{"--max-queue-mib", "1"}}
	t.Cleanup(func() {
		r.stop(syscall.SIGKILL)
		if t.Failed() {
			b, _ := os.ReadFile(r.log)
			t.Logf("ockam-relay log:\n%s", b)
		}
	})
	sink, _ := w.upResume(t, r, "--lanes", "1")
	var st struct {
		PID int `json:"pid"`
	}
	json.Unmarshal([]byte(w.ockam("", "", "node", "show", "server_sidecar", "--output", "json")), &st)
	if st.PID == 0 {
		t.Fatal("no pid for server_sidecar")
	}
	metric := func(node, name string) float64 { return w.metric(t, node, name) }
	const resumed = `ockam_portal_flow_resumes_total{event="resumed"}`
	before := metric("client_sidecar", resumed)
	const flows, size = 64, 4 << 20
	t.Run("flows", func(t *testing.T) {
		// All at once (t.Parallel would run GOMAXPROCS of them at a time).
		var wg sync.WaitGroup
		defer wg.Wait()
		for i := range flows {
			wg.Add(1)
			go t.Run(fmt.Sprint(i), func(t *testing.T) {
				defer wg.Done()
				at := func(int) {}
				if i == 0 {
					at = func(int) {
						syscall.Kill(st.PID, syscall.SIGSTOP)
						time.Sleep(300 * time.Millisecond) // the stall the test is about
						syscall.Kill(st.PID, syscall.SIGCONT)
					}
				}
				w.bulk(t, sink, size, at)
			})
		}
	})
	n := metric("client_sidecar", resumed) - before
	t.Logf("%d flows of %d MiB through a relay with a 1 MiB queue, the server's sidecar stopped twice for 300 ms: sha256 equal, no reset; %.0f resumes",
		flows, size>>20, n)
	if n == 0 {
		t.Error("no flow resumed: the relay dropped nothing, or the repair is not what kept the bytes")
	}
}
