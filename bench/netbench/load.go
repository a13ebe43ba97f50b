package main

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"sync"
	"syscall"
	"time"
)

// MsgSize is the request and response size of the latency measures.
const MsgSize = 64

// serve runs an echo server (also the peer of idle flows) and an HTTP server
// with a small fixed response, until SIGTERM.
func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	echoAddr := fs.String("echo", "", "echo server address")
	httpAddr := fs.String("http", "", "HTTP server address")
	uechoAddr := fs.String("uecho", "", "UDP echo server address")
	fs.Parse(args)
	errc := make(chan error, 3)
	if *uechoAddr != "" {
		a, err := net.ResolveUDPAddr("udp", *uechoAddr)
		if err != nil {
			return err
		}
		pc, err := net.ListenUDP("udp", a)
		if err != nil {
			return err
		}
		go func() { errc <- udpEchoServe(pc) }()
	}
	if *echoAddr != "" {
		ln, err := net.Listen("tcp", *echoAddr)
		if err != nil {
			return err
		}
		go func() { errc <- echoServe(ln) }()
	}
	if *httpAddr != "" {
		ln, err := net.Listen("tcp", *httpAddr)
		if err != nil {
			return err
		}
		body := []byte("ok\n")
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.Write(body)
		})
		go func() { errc <- http.Serve(ln, h) }()
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-sig:
		return nil
	case err := <-errc:
		return err
	}
}

func echoServe(ln net.Listener) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return err
		}
		go func() {
			defer c.Close()
			buf := make([]byte, 4096)
			for {
				n, err := c.Read(buf)
				if n > 0 {
					if _, werr := c.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
	}
}

// udpEchoServe answers each datagram with itself.
func udpEchoServe(pc *net.UDPConn) error {
	buf := make([]byte, 65536)
	for {
		n, from, err := pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			return err
		}
		pc.WriteToUDPAddrPort(buf[:n], from)
	}
}

// urr measures round trips of MsgSize-byte datagrams to a UDP echo server,
// one at a time; a datagram not answered within -wait is counted lost
// (answers that come later are told apart by a sequence number).
func urr(args []string) error {
	fs := flag.NewFlagSet("urr", flag.ExitOnError)
	addr := fs.String("addr", "", "UDP echo server address")
	n := fs.Int("n", 10000, "round trips measured")
	warm := fs.Int("warmup", 200, "round trips not measured")
	wait := fs.Duration("wait", time.Second, "how long a datagram's answer is waited for")
	fs.Parse(args)
	c, err := net.Dial("udp", *addr)
	if err != nil {
		return err
	}
	defer c.Close()
	req, resp := make([]byte, MsgSize), make([]byte, 2*MsgSize)
	var seq uint64
	one := func() (time.Duration, bool, error) {
		seq++
		binary.BigEndian.PutUint64(req, seq)
		t := time.Now()
		if _, err := c.Write(req); err != nil {
			return 0, false, err
		}
		c.SetReadDeadline(t.Add(*wait))
		for {
			k, err := c.Read(resp)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return 0, false, nil
			}
			if err != nil {
				return 0, false, err
			}
			if k == MsgSize && binary.BigEndian.Uint64(resp) == seq {
				return time.Since(t), true, nil
			}
		}
	}
	lost := 0
	for i := range *warm {
		if _, _, err := one(); err != nil {
			return fmt.Errorf("warmup %d: %w", i, err)
		}
	}
	d := make([]time.Duration, 0, *n)
	for i := range *n {
		x, ok, err := one()
		if err != nil {
			return fmt.Errorf("round trip %d: %w", i, err)
		}
		if !ok {
			lost++
			continue
		}
		d = append(d, x)
	}
	if len(d) == 0 {
		return fmt.Errorf("no answer to any of %d datagrams", *n)
	}
	return printJSON(struct {
		latency
		Lost int `json:"lost"`
	}{summarize(d), lost})
}

// latency is the result of rr and crr.
type latency struct {
	N      int     `json:"n"`
	P50us  float64 `json:"p50_us"`
	P99us  float64 `json:"p99_us"`
	MeanUs float64 `json:"mean_us"`
	MaxUs  float64 `json:"max_us"`
}

func summarize(d []time.Duration) latency {
	slices.Sort(d)
	var sum time.Duration
	for _, x := range d {
		sum += x
	}
	q := func(p float64) float64 {
		i := int(p * float64(len(d)-1))
		return float64(d[i].Nanoseconds()) / 1e3
	}
	return latency{
		N:      len(d),
		P50us:  q(0.50),
		P99us:  q(0.99),
		MeanUs: float64(sum.Nanoseconds()) / float64(len(d)) / 1e3,
		MaxUs:  float64(d[len(d)-1].Nanoseconds()) / 1e3,
	}
}

func printJSON(v any) error {
	return json.NewEncoder(os.Stdout).Encode(v)
}

func roundTrip(c net.Conn, req, resp []byte) error {
	if _, err := c.Write(req); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if _, err := io.ReadFull(c, resp); err != nil {
		return fmt.Errorf("read: %w", err)
	}
	return nil
}

// rr measures round trips of MsgSize bytes on one connection.
func rr(args []string) error {
	fs := flag.NewFlagSet("rr", flag.ExitOnError)
	addr := fs.String("addr", "", "echo server address")
	n := fs.Int("n", 10000, "round trips measured")
	warm := fs.Int("warmup", 200, "round trips not measured")
	timeout := fs.Duration("timeout", 60*time.Second, "overall deadline")
	dur := fs.Duration("for", 0, "stop measuring after this long, even short of -n (0: never; at least 10 round trips)")
	fs.Parse(args)
	c, err := net.DialTimeout("tcp", *addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(*timeout))
	req, resp := make([]byte, MsgSize), make([]byte, MsgSize)
	for i := range *warm {
		if err := roundTrip(c, req, resp); err != nil {
			return fmt.Errorf("warmup %d: %w", i, err)
		}
	}
	d := make([]time.Duration, 0, *n)
	start := time.Now()
	for len(d) < *n && (*dur == 0 || len(d) < 10 || time.Since(start) < *dur) {
		t := time.Now()
		if err := roundTrip(c, req, resp); err != nil {
			return fmt.Errorf("round trip %d: %w", len(d), err)
		}
		d = append(d, time.Since(t))
	}
	return printJSON(summarize(d))
}

// crr measures dial + one round trip + close, on a fresh connection each time.
func crr(args []string) error {
	fs := flag.NewFlagSet("crr", flag.ExitOnError)
	addr := fs.String("addr", "", "echo server address")
	n := fs.Int("n", 1000, "connections measured")
	warm := fs.Int("warmup", 20, "connections not measured")
	fs.Parse(args)
	req, resp := make([]byte, MsgSize), make([]byte, MsgSize)
	one := func() error {
		c, err := net.DialTimeout("tcp", *addr, 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		return roundTrip(c, req, resp)
	}
	for i := range *warm {
		if err := one(); err != nil {
			return fmt.Errorf("warmup %d: %w", i, err)
		}
	}
	d := make([]time.Duration, *n)
	for i := range d {
		t := time.Now()
		if err := one(); err != nil {
			return fmt.Errorf("connection %d: %w", i, err)
		}
		d[i] = time.Since(t)
	}
	return printJSON(summarize(d))
}

// hold opens n flows, each proven end to end by one round trip, prints
// "ready N" and holds them until standard input reaches EOF.
func hold(args []string) error {
	fs := flag.NewFlagSet("hold", flag.ExitOnError)
	addr := fs.String("addr", "", "echo server address")
	n := fs.Int("n", 10000, "flows")
	par := fs.Int("parallel", 32, "flows opened at once")
	fs.Parse(args)
	conns := make([]net.Conn, *n)
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		firstEr error
	)
	sem := make(chan struct{}, *par)
	for i := range conns {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := net.DialTimeout("tcp", *addr, 10*time.Second)
			if err == nil {
				c.SetDeadline(time.Now().Add(30 * time.Second))
				err = roundTrip(c, []byte{1}, make([]byte, 1))
				c.SetDeadline(time.Time{})
			}
			if err != nil {
				mu.Lock()
				if firstEr == nil {
					firstEr = fmt.Errorf("flow %d: %w", i, err)
				}
				mu.Unlock()
				if c != nil {
					c.Close()
				}
				return
			}
			conns[i] = c
		}()
	}
	wg.Wait()
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	if firstEr != nil {
		return firstEr
	}
	fmt.Printf("ready %d\n", len(conns))
	io.Copy(io.Discard, bufio.NewReader(os.Stdin))
	return nil
}
