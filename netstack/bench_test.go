package netstack_test

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/ockam-go/ockam/netstack"
)

// BenchmarkCapture measures one TCP flow through TUN + gVisor + the proxy
// Handler's loopback hop to a server, against the same flow on direct
// loopback, in the same run. "up" is app -> server, "down" server -> app.
//
//	go test -run XXX -bench Capture -benchtime 3x ./netstack
func BenchmarkCapture(b *testing.B) { benchCapture(b) }

// BenchmarkCapturePlain is BenchmarkCapture with the link endpoint forced
// to the plain mode (wgtun.Device batched Read/Write + gVisor GRO).
func BenchmarkCapturePlain(b *testing.B) {
	netstack.SetForcePlain(true)
	defer netstack.SetForcePlain(false)
	benchCapture(b)
}

func benchCapture(b *testing.B) {
	targets := servers(b)
	e := newEnv(b, netstack.Config{Handler: proxy(targets)})
	size := int64(512 << 20)
	if raceEnabled {
		size = 32 << 20
	}
	direct := func(port uint16) (net.Conn, error) { return net.Dial("tcp", targets[port]) }
	captured := func(port uint16) (net.Conn, error) {
		return e.ns.dial(b, "tcp", netip.AddrPortFrom(virt4, port).String())
	}
	for _, dir := range []string{"up", "down"} {
		b.Run(dir, func(b *testing.B) {
			b.ReportAllocs()
			var dDirect, dTun time.Duration
			for i := 0; i < b.N; i++ {
				dDirect += transfer(b, direct, dir, size)
				dTun += transfer(b, captured, dir, size)
			}
			bits := float64(size*int64(b.N)) * 8
			gDirect := bits / dDirect.Seconds() / 1e9
			gTun := bits / dTun.Seconds() / 1e9
			b.ReportMetric(gDirect, "direct-Gbit/s")
			b.ReportMetric(gTun, "tun-Gbit/s")
			b.ReportMetric(gTun/gDirect, "ratio")
		})
	}
}

func transfer(b *testing.B, dial func(uint16) (net.Conn, error), dir string, size int64) time.Duration {
	b.Helper()
	buf := make([]byte, netstack.CopyBufferSize)
	start := time.Now()
	switch dir {
	case "up":
		c, err := dial(portDiscard)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		for n := size; n > 0; {
			w, err := c.Write(buf[:min(n, int64(len(buf)))])
			if err != nil {
				b.Fatal(err)
			}
			n -= int64(w)
		}
		c.(*net.TCPConn).CloseWrite()
		if _, err := io.ReadFull(c, buf[:1]); err != nil {
			b.Fatal(err)
		}
	case "down":
		c, err := dial(portZero)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "%d\n", size)
		if n, err := io.CopyBuffer(io.Discard, io.LimitReader(c, size), buf); err != nil || n != size {
			b.Fatalf("read %d of %d: %v", n, size, err)
		}
	}
	return time.Since(start)
}

// BenchmarkCaptureRR measures 64-byte request/response exchanges on one TCP
// connection through TUN + gVisor + the proxy Handler's loopback hop to an
// echo server, against the same exchanges on direct loopback, in the same
// run, and the packets the stack reads and writes per exchange (a pure ACK
// sent before the answer shows as more than one out).
//
//	go test -run XXX -bench CaptureRR ./netstack
func BenchmarkCaptureRR(b *testing.B) {
	targets := servers(b)
	e := newEnv(b, netstack.Config{Handler: proxy(targets)})
	rr := func(c net.Conn, n int) time.Duration {
		msg := make([]byte, 64)
		got := make([]byte, 64)
		start := time.Now()
		for i := 0; i < n; i++ {
			if _, err := c.Write(msg); err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(c, got); err != nil {
				b.Fatal(err)
			}
		}
		return time.Since(start)
	}
	d, err := net.Dial("tcp", targets[portEcho])
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	c, err := e.ns.dial(b, "tcp", netip.AddrPortFrom(virt4, portEcho).String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	rr(d, 100) // warm both
	rr(c, 100)
	s0 := e.st.Stats()
	b.ResetTimer()
	dTun := rr(c, b.N)
	b.StopTimer()
	s1 := e.st.Stats()
	dDirect := rr(d, b.N)
	b.ReportMetric(float64(dDirect.Microseconds())/float64(b.N), "direct-µs/rr")
	b.ReportMetric(float64(dTun.Microseconds())/float64(b.N), "tun-µs/rr")
	b.ReportMetric(float64(s1.PacketsIn-s0.PacketsIn)/float64(b.N), "pkts-in/rr")
	b.ReportMetric(float64(s1.PacketsOut-s0.PacketsOut)/float64(b.N), "pkts-out/rr")
}

// BenchmarkCaptureRRParallel is BenchmarkCaptureRR with 32 connections at
// once, as wrk -c32 drives the TUN: what it reports is CPU (the process's
// user+system time, echo server and client included) per exchange, through
// the TUN and on direct loopback, and the exchanges per second through the
// TUN. Under load the stack's cost per packet shows, not its latency.
//
//	go test -run XXX -bench CaptureRRParallel -benchtime 40000x ./netstack
func BenchmarkCaptureRRParallel(b *testing.B) {
	const conns = 32
	targets := servers(b)
	e := newEnv(b, netstack.Config{Handler: proxy(targets)})
	run := func(dial func() (net.Conn, error), n int) (wall, cpu time.Duration) {
		cs := make([]net.Conn, conns)
		for i := range cs {
			c, err := dial()
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			cs[i] = c
		}
		per := max(n/conns, 1)
		errs := make(chan error, conns)
		cpu0 := processCPU(b)
		start := time.Now()
		for _, c := range cs {
			go func() {
				msg, got := make([]byte, 64), make([]byte, 64)
				for range per {
					if _, err := c.Write(msg); err != nil {
						errs <- err
						return
					}
					if _, err := io.ReadFull(c, got); err != nil {
						errs <- err
						return
					}
				}
				errs <- nil
			}()
		}
		for range cs {
			if err := <-errs; err != nil {
				b.Fatal(err)
			}
		}
		return time.Since(start), processCPU(b) - cpu0
	}
	direct := func() (net.Conn, error) { return net.Dial("tcp", targets[portEcho]) }
	tun := func() (net.Conn, error) {
		return e.ns.dial(b, "tcp", netip.AddrPortFrom(virt4, portEcho).String())
	}
	run(tun, 10*conns) // warm
	s0 := e.st.Stats()
	b.ResetTimer()
	wTun, cTun := run(tun, b.N)
	b.StopTimer()
	s1 := e.st.Stats()
	_, cDirect := run(direct, b.N)
	n := float64(max(b.N/conns, 1) * conns)
	b.ReportMetric(n/wTun.Seconds(), "tun-rr/s")
	b.ReportMetric(float64(cTun.Microseconds())/n, "tun-cpu-µs/rr")
	b.ReportMetric(float64(cDirect.Microseconds())/n, "direct-cpu-µs/rr")
	b.ReportMetric(float64(s1.PacketsOut-s0.PacketsOut)/n, "pkts-out/rr")
}

// processCPU returns the user and system time the process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
