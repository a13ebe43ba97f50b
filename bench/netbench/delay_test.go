package main

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"testing"
	"time"
)

// startLine runs a TCP delay line to target and returns its address.
func startLine(t *testing.T, target string, d time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go tcpLine(ln, target, d, 64<<20)
	return ln.Addr().String()
}

func startEcho(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				io.Copy(c, c)
				c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	return ln.Addr().String()
}

// The line adds its delay each way: a round trip takes at least twice it,
// and the bytes of a large echo, half-closed, come back intact.
func TestDelayLine(t *testing.T) {
	const d = 20 * time.Millisecond
	addr := startLine(t, startEcho(t), d)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 64)
	var best time.Duration
	for i := 0; i < 5; i++ {
		start := time.Now()
		if _, err := c.Write(buf); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatal(err)
		}
		if rtt := time.Since(start); best == 0 || rtt < best {
			best = rtt
		}
	}
	if best < 2*d || best > 2*d+50*time.Millisecond {
		t.Errorf("best round trip %v, want about %v", best, 2*d)
	}

	c2, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	want := make([]byte, 8<<20)
	rand.Read(want)
	go func() {
		c2.Write(want)
		c2.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(c2)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("echo through the line: %d bytes back of %d, or different", len(got), len(want))
	}
}
