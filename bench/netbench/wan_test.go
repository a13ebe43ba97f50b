package main

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The packet line's tests run in two network namespaces of their own
// (client ─veth─ relay, the relay routing one address through the line's
// TUN), so they need root; they are skipped without it.
//
//	client 10.203.0.2 ──veth── relay 10.203.0.1 (direct), 10.203.0.11 (through the line)

const (
	wtClientIP = "10.203.0.2"
	wtDirectIP = "10.203.0.1"
	wtLineIP   = "10.203.0.11"
)

type wanBed struct {
	client, relay string // namespace names
	line          *wanLine
}

func run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// inNetns runs f on a thread that is in namespace ns; sockets and devices f
// creates stay in ns.
func inNetns(t *testing.T, ns string, f func()) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	defer self.Close()
	target, err := os.Open("/var/run/netns/" + ns)
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
			panic(err) // this thread must not run anything else
		}
	}()
	f()
}

// newWANBed builds the two namespaces and a line of delay d.
func newWANBed(t *testing.T, d time.Duration) *wanBed {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skip("no /dev/net/tun")
	}
	for _, tool := range []string{"ip", "ping", "sysctl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skip("needs " + tool)
		}
	}
	tag := strconv.Itoa(os.Getpid() % 100000)
	b := &wanBed{client: "wntc" + tag, relay: "wntr" + tag}
	cv, rv, tun := "wntc"+tag, "wntr"+tag, "wntt"+tag
	for _, ns := range []string{b.client, b.relay} {
		run(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	run(t, "ip", "link", "add", cv, "netns", b.client, "type", "veth", "peer", "name", rv, "netns", b.relay)
	run(t, "ip", "-n", b.client, "addr", "add", wtClientIP+"/24", "dev", cv)
	run(t, "ip", "-n", b.relay, "addr", "add", wtDirectIP+"/24", "dev", rv)
	run(t, "ip", "-n", b.relay, "addr", "add", wtLineIP+"/24", "dev", rv)
	run(t, "ip", "-n", b.client, "link", "set", cv, "up")
	run(t, "ip", "-n", b.relay, "link", "set", rv, "up")

	var f *os.File
	var err error
	inNetns(t, b.relay, func() { f, err = openTUN(tun) })
	if err != nil {
		t.Fatal(err)
	}
	b.line, err = newWANLine(f, d, 0, 64<<20, wanDefaultMaxPackets)
	if err != nil {
		f.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { b.line.Close() })
	// The rules of bench.sh's wan_line_up, for one leg.
	rs := []string{"ip", "netns", "exec", b.relay}
	run(t, append(rs, "sysctl", "-qw", "net.ipv4.tcp_early_demux=0", "net.ipv4.udp_early_demux=0",
		"net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf."+rv+".rp_filter=0", "net.ipv4.conf."+tun+".rp_filter=0",
		"net.ipv4.conf."+rv+".forwarding=1", "net.ipv4.conf."+tun+".forwarding=1",
		"net.ipv4.conf."+tun+".accept_local=1", "net.ipv6.conf."+tun+".disable_ipv6=1",
		"net.ipv4.conf."+rv+".proxy_arp=1", "net.ipv4.neigh."+rv+".proxy_delay=0")...)
	run(t, "ip", "-n", b.relay, "link", "set", tun, "mtu", "1500", "txqueuelen", "10000", "up")
	run(t, "ip", "-n", b.relay, "route", "add", "default", "dev", tun, "table", "201")
	run(t, "ip", "-n", b.relay, "rule", "add", "pref", "100", "iif", rv, "to", wtLineIP, "lookup", "201")
	run(t, "ip", "-n", b.relay, "rule", "add", "pref", "101", "iif", "lo", "from", wtLineIP, "to", wtClientIP, "lookup", "201")
	run(t, "ip", "-n", b.relay, "rule", "add", "pref", "1000", "lookup", "local")
	run(t, "ip", "-n", b.relay, "rule", "del", "pref", "0", "lookup", "local")
	return b
}

var pingTime = regexp.MustCompile(`time=([0-9.]+) ms`)

// pings returns the round trips of n pings from the client to host.
func (b *wanBed) pings(t *testing.T, host string, n int, interval string) []time.Duration {
	t.Helper()
	out, _ := exec.Command("ip", "netns", "exec", b.client, "ping", "-n", "-c", strconv.Itoa(n), "-i", interval, "-W", "2", host).CombinedOutput()
	var rtts []time.Duration
	for _, m := range pingTime.FindAllStringSubmatch(string(out), -1) {
		ms, _ := strconv.ParseFloat(m[1], 64)
		rtts = append(rtts, time.Duration(ms*float64(time.Millisecond)))
	}
	sort.Slice(rtts, func(i, j int) bool { return rtts[i] < rtts[j] })
	return rtts
}

// A ping through the line takes the delay each way, within a millisecond;
// the direct address, beside it, does not.
func TestWANLineRTT(t *testing.T) {
	const d = 10 * time.Millisecond
	b := newWANBed(t, d)
	rtts := b.pings(t, wtLineIP, 20, "0.05")
	if len(rtts) < 18 {
		t.Fatalf("%d of 20 pings came back", len(rtts))
	}
	med := rtts[len(rtts)/2]
	t.Logf("ping through a %v line: median %v, min %v, max %v", d, med, rtts[0], rtts[len(rtts)-1])
	if med < 2*d || med > 2*d+time.Millisecond {
		t.Errorf("median round trip %v, want %v to %v", med, 2*d, 2*d+time.Millisecond)
	}
	if direct := b.pings(t, wtDirectIP, 5, "0.05"); len(direct) == 0 || direct[len(direct)/2] > d {
		t.Errorf("the direct address answered in %v: the line is on it too", direct)
	}
}

// The loss asked is the loss measured: by the line's counters, and by ping
// (each echo crosses the line twice).
func TestWANLineLoss(t *testing.T) {
	const p = 0.05
	b := newWANBed(t, time.Millisecond)
	if err := b.line.setLoss(p); err != nil {
		t.Fatal(err)
	}
	if b.line.stats().Offloads {
		t.Error("offloads still on with loss")
	}
	const n = 1000
	got := len(b.pings(t, wtLineIP, n, "0.002"))
	st := b.line.stats()
	lineLoss := float64(st.LossDrops) / float64(st.Packets)
	pingLoss := 1 - float64(got)/n
	want := 1 - (1-p)*(1-p)
	t.Logf("asked %.0f%%: line dropped %d of %d (%.2f%%); ping lost %.2f%% (expected %.2f%%)",
		100*p, st.LossDrops, st.Packets, 100*lineLoss, 100*pingLoss, 100*want)
	// Five standard deviations of the binomial each.
	if sd := math.Sqrt(p * (1 - p) / float64(st.Packets)); math.Abs(lineLoss-p) > 5*sd {
		t.Errorf("line dropped %.3f, want %.3f ± %.3f", lineLoss, p, 5*sd)
	}
	if sd := math.Sqrt(want * (1 - want) / n); math.Abs(pingLoss-want) > 5*sd {
		t.Errorf("ping lost %.3f, want %.3f ± %.3f", pingLoss, want, 5*sd)
	}
	if err := b.line.setLoss(0); err != nil || !b.line.stats().Offloads {
		t.Errorf("loss 0: offloads not back on (%v)", err)
	}
	// The baseline of a lossy measure: no loss, offloads off; and never
	// offloads with loss (a dropped super-packet would be many segments).
	if got := wanCommand(b.line, "offloads off"); got != "ok" || b.line.stats().Offloads || b.line.stats().Loss != 0 {
		t.Errorf("offloads off: %q, stats %+v", got, b.line.stats())
	}
	if got := wanCommand(b.line, "loss 0.01"); got != "ok" {
		t.Errorf("loss 0.01: %q", got)
	}
	if got := wanCommand(b.line, "offloads on"); !strings.HasPrefix(got, "error:") || b.line.stats().Offloads {
		t.Errorf("offloads on with loss: %q, offloads %v", got, b.line.stats().Offloads)
	}
	if got := wanCommand(b.line, "loss 0"); got != "ok" || !b.line.stats().Offloads {
		t.Errorf("loss 0 after offloads off: %q, offloads %v", got, b.line.stats().Offloads)
	}
	for _, bad := range []float64{-0.1, 1, math.NaN()} {
		if err := b.line.setLoss(bad); err == nil {
			t.Errorf("setLoss(%v) accepted", bad)
		}
	}
}

// transfer sends size random bytes from the client to a sink on host and
// returns the rate; the sink checks they arrived intact.
func (b *wanBed) transfer(t *testing.T, host string, size int) float64 {
	t.Helper()
	var ln net.Listener
	var err error
	inNetns(t, b.relay, func() { ln, err = net.Listen("tcp", host+":0") })
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	sums := make(chan [32]byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			sums <- [32]byte{}
			return
		}
		defer c.Close()
		h := sha256.New()
		io.Copy(h, c)
		var s [32]byte
		copy(s[:], h.Sum(nil))
		sums <- s
	}()
	data := make([]byte, size)
	rand.Read(data)
	var c net.Conn
	inNetns(t, b.client, func() { c, err = net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second) })
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := io.Copy(c, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	got := <-sums
	elapsed := time.Since(start)
	c.Close()
	if got != sha256.Sum256(data) {
		t.Fatalf("%d bytes to %s: different bytes arrived", size, host)
	}
	return float64(size) * 8 / elapsed.Seconds() / 1e9
}

// Kernel TCP through the line: super-packets pass whole (the line is not
// one packet per MTU), the bytes arrive intact with and without loss, and
// the rate without delay stays near the direct address's. The rates are
// logged; the floor is loose, as the machine is shared.
func TestWANLineTCP(t *testing.T) {
	b := newWANBed(t, 0)
	direct := b.transfer(t, wtDirectIP, 256<<20)
	before := b.line.stats()
	line := b.transfer(t, wtLineIP, 256<<20)
	st := b.line.stats()
	pk, by := st.Packets-before.Packets, st.Bytes-before.Bytes
	t.Logf("256 MiB: direct %.2f Gbit/s, through the line (0 delay) %.2f Gbit/s (%.2fx); %d packets, %d B each on average",
		direct, line, line/direct, pk, by/max(pk, 1))
	if by/max(pk, 1) < 3000 {
		t.Errorf("%d bytes a packet on average: TSO super-packets do not pass whole", by/max(pk, 1))
	}
	if line < direct/4 && !raceEnabled { // the race detector slows the line more than the kernel
		t.Errorf("through the line %.2f Gbit/s, direct %.2f: the line limits TCP", line, direct)
	}
	if st.QueueDrops != 0 || st.WriteErrs != 0 {
		t.Errorf("line: %d queue drops, %d write errors", st.QueueDrops, st.WriteErrs)
	}

	if err := b.line.setLoss(0.01); err != nil {
		t.Fatal(err)
	}
	before = b.line.stats()
	lossy := b.transfer(t, wtLineIP, 16<<20)
	st = b.line.stats()
	pk, by = st.Packets-before.Packets, st.Bytes-before.Bytes
	t.Logf("16 MiB with 1%% loss: %.3f Gbit/s, %d of %d packets dropped, %d B each on average",
		lossy, st.LossDrops-before.LossDrops, pk, by/max(pk, 1))
	if limit := uint64(1500 + 10); by/max(pk, 1) > limit {
		t.Errorf("%d bytes a packet on average with loss: the kernel still hands the line super-packets", by/pk)
	}
	if st.LossDrops == before.LossDrops {
		t.Error("no packet dropped at 1% loss")
	}
}

// The control commands: loss, stats, and clear errors for the rest.
func TestWANCommand(t *testing.T) {
	b := newWANBed(t, 0)
	for _, c := range []struct{ in, want string }{
		{"loss 0.02", "ok"},
		{"stats", `"loss":0.02`},
		{"loss 0", "ok"},
		{"loss 2", "error: loss must be in [0, 1)"},
		{"loss x", "error"},
		{"drop everything", "error: commands are"},
		{"", "error"},
	} {
		if got := wanCommand(b.line, c.in); !strings.Contains(got, c.want) {
			t.Errorf("%q: got %q, want %q in it", c.in, got, c.want)
		}
	}
	if got := fmt.Sprint(b.line.stats().Loss); got != "0" {
		t.Errorf("loss after `loss 0`: %s", got)
	}
}
