package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// A delay line: the Internet path of the WAN profile in userspace, at the
// stream level, because this kernel has no sch_netem. The WAN profile uses
// the packet line (wan.go) by default; these lines serve `bench.sh
// --wan-line stream`, an upper bound for the kernel TCP paths, and a UDP
// relay with a delay.
//
// TCP mode accepts connections on -listen and carries each to -to, holding
// every chunk it reads for -delay before writing it on, in each direction.
// Each chunk is stamped when read and released at stamp+delay, so the line
// adds latency without limiting throughput: it holds up to -max-inflight
// bytes per direction and connection (the bytes "on the wire"), and stops
// reading (TCP pushes back) only beyond that.
//
// What TCP mode cannot do honestly: it terminates TCP on both sides, so the
// end hosts' congestion and flow control see a sub-millisecond path and the
// line's buffer as their window (a split-TCP proxy, like a PEP). A plain TCP
// relay through it is therefore an upper bound of what kernel TCP reaches on
// a real path of that RTT (there it is capped at tcp_rmem's max / RTT).
// Protocols that run their own windows end to end over it (our portal
// credits, ssh channel windows) see the full RTT, which is what the WAN
// profile measures. Loss or reordering cannot be emulated in a byte stream:
// loss stays the job of nftables on the veths (scripts/faults.sh).
//
// UDP mode (-udp) is packet-level and honest: datagrams from a client are
// delayed and sent to -to from a socket per client; replies come back the
// same way. -loss drops that share of datagrams each way, and a full queue
// (-max-packets) drops too, as a router would.

// delayChunk is the read size of the TCP line.
const delayChunk = 64 << 10

var delayPool = sync.Pool{New: func() any { b := make([]byte, delayChunk); return &b }}

func delayLine(args []string) error {
	fs := flag.NewFlagSet("delay", flag.ExitOnError)
	listen := fs.String("listen", "", "address to accept on")
	to := fs.String("to", "", "address to carry to")
	d := fs.Duration("delay", 0, "one-way delay added in each direction")
	maxInflight := fs.Int("max-inflight", 64<<20, "TCP: most bytes held per direction and connection")
	udp := fs.Bool("udp", false, "carry UDP datagrams instead of TCP")
	loss := fs.Float64("loss", 0, "UDP: share of datagrams dropped each way (0..1)")
	maxPackets := fs.Int("max-packets", 1<<16, "UDP: most datagrams queued per direction")
	fs.Parse(args)
	if *listen == "" || *to == "" || *d < 0 {
		return errors.New("need -listen, -to and a delay >= 0")
	}
	if *maxInflight < delayChunk {
		return fmt.Errorf("-max-inflight must be at least %d", delayChunk)
	}
	if *loss < 0 || *loss >= 1 {
		return errors.New("-loss must be in [0, 1)")
	}
	errc := make(chan error, 1)
	if *udp {
		pc, err := net.ListenPacket("udp", *listen)
		if err != nil {
			return err
		}
		go func() { errc <- udpLine(pc, *to, *d, *loss, *maxPackets) }()
	} else {
		ln, err := net.Listen("tcp", *listen)
		if err != nil {
			return err
		}
		go func() { errc <- tcpLine(ln, *to, *d, *maxInflight) }()
	}
	fmt.Fprintf(os.Stderr, "delay line %s -> %s, %v each way\n", *listen, *to, *d)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-sig:
		return nil
	case err := <-errc:
		return err
	}
}

func tcpLine(ln net.Listener, to string, d time.Duration, maxInflight int) error {
	for {
		a, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return err
		}
		go func() {
			b, err := net.DialTimeout("tcp", to, 10*time.Second)
			if err != nil {
				abortConn(a)
				return
			}
			setNoDelay(a)
			setNoDelay(b)
			var wg sync.WaitGroup
			wg.Add(2)
			go func() { defer wg.Done(); delayPipe(a, b, d, maxInflight) }()
			go func() { defer wg.Done(); delayPipe(b, a, d, maxInflight) }()
			wg.Wait()
			a.Close()
			b.Close()
		}()
	}
}

func setNoDelay(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
}

func abortConn(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

type delayed struct {
	bp  *[]byte // nil: the end of the stream
	n   int
	at  time.Time
	err error // at the end: nil for EOF (half-close), else a reset
}

// delayPipe carries src to dst, each chunk at its read time + d.
func delayPipe(src, dst net.Conn, d time.Duration, maxInflight int) {
	var (
		mu       sync.Mutex
		cond     = sync.NewCond(&mu)
		queue    []delayed
		inflight int
		dead     bool // the writer has failed
	)
	go func() { // reader
		for {
			mu.Lock()
			for inflight+delayChunk > maxInflight && !dead {
				cond.Wait()
			}
			stop := dead
			mu.Unlock()
			if stop {
				return
			}
			bp := delayPool.Get().(*[]byte)
			n, err := src.Read(*bp)
			now := time.Now()
			mu.Lock()
			if n > 0 {
				queue = append(queue, delayed{bp: bp, n: n, at: now.Add(d)})
				inflight += delayChunk
			} else {
				delayPool.Put(bp)
			}
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = nil
				}
				queue = append(queue, delayed{at: now.Add(d), err: err})
			}
			cond.Broadcast()
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	bufs := make(net.Buffers, 0, 64)
	var taken []delayed
	for {
		mu.Lock()
		for len(queue) == 0 {
			cond.Wait()
		}
		head := queue[0].at
		mu.Unlock()
		if w := time.Until(head); w > 0 {
			time.Sleep(w)
		}
		// Write every chunk that is due, in one writev.
		now := time.Now()
		mu.Lock()
		i := 0
		for i < len(queue) && !queue[i].at.After(now) && i < 64 {
			i++
		}
		taken = append(taken[:0], queue[:i]...)
		queue = queue[i:]
		mu.Unlock()
		bufs = bufs[:0]
		var end *delayed
		for k := range taken {
			if taken[k].bp == nil {
				end = &taken[k]
				break
			}
			bufs = append(bufs, (*taken[k].bp)[:taken[k].n])
		}
		out := bufs // WriteTo consumes its receiver
		_, werr := out.WriteTo(dst)
		freed := 0
		for _, t := range taken {
			if t.bp != nil {
				delayPool.Put(t.bp)
				freed += delayChunk
			}
		}
		mu.Lock()
		inflight -= freed
		if werr != nil {
			dead = true
		}
		cond.Broadcast()
		mu.Unlock()
		switch {
		case werr != nil:
			abortConn(src)
			abortConn(dst)
			return
		case end != nil && end.err != nil:
			abortConn(dst)
			return
		case end != nil:
			if tc, ok := dst.(*net.TCPConn); ok {
				tc.CloseWrite()
			}
			return
		}
	}
}

// udpLineBuffer is the socket buffer the UDP line asks for each way.
const udpLineBuffer = 32 << 20

// udpLine relays datagrams between clients of pc and to, each way after d.
func udpLine(pc net.PacketConn, to string, d time.Duration, loss float64, maxPackets int) error {
	raddr, err := net.ResolveUDPAddr("udp", to)
	if err != nil {
		return err
	}
	// Socket buffers large enough for a burst at line rate: the kernel's
	// default (208 KiB) drops what a single reader is late for, and the
	// drops would be the emulator's, not the path's (capped by rmem_max).
	if u, ok := pc.(*net.UDPConn); ok {
		u.SetReadBuffer(udpLineBuffer)
		u.SetWriteBuffer(udpLineBuffer)
	}
	type packet struct {
		b  []byte
		at time.Time
	}
	// One queue per direction and client; a scheduler goroutine per queue.
	newQueue := func(send func([]byte)) chan packet {
		q := make(chan packet, maxPackets)
		go func() {
			for p := range q {
				if w := time.Until(p.at); w > 0 {
					time.Sleep(w)
				}
				send(p.b)
			}
		}()
		return q
	}
	push := func(q chan packet, b []byte) {
		if loss > 0 && rand.Float64() < loss {
			return
		}
		select {
		case q <- packet{b: b, at: time.Now().Add(d)}:
		default: // queue full: dropped, as a router would
		}
	}
	type client struct {
		up   chan packet
		conn *net.UDPConn
	}
	var mu sync.Mutex
	clients := map[string]*client{}
	buf := make([]byte, 65536)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return err
		}
		b := append([]byte(nil), buf[:n]...)
		mu.Lock()
		c := clients[from.String()]
		if c == nil {
			conn, err := net.DialUDP("udp", nil, raddr)
			if err != nil {
				mu.Unlock()
				continue
			}
			conn.SetReadBuffer(udpLineBuffer)
			conn.SetWriteBuffer(udpLineBuffer)
			c = &client{conn: conn}
			c.up = newQueue(func(b []byte) { conn.Write(b) })
			down := newQueue(func(b []byte) { pc.WriteTo(b, from) })
			clients[from.String()] = c
			go func() {
				rb := make([]byte, 65536)
				for {
					n, err := conn.Read(rb)
					if err != nil {
						return
					}
					push(down, append([]byte(nil), rb[:n]...))
				}
			}()
		}
		mu.Unlock()
		push(c.up, b)
	}
}
