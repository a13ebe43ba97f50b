package socks

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"
)

// pipeFlow is a Flow that echoes what the client sends.
type pipeFlow struct {
	aborted chan string
	wg      *sync.WaitGroup
}

func (f *pipeFlow) Run(c net.Conn) error {
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		defer c.Close()
		io.Copy(c, c)
	}()
	return nil
}

func (f *pipeFlow) Abort(reason string) { f.aborted <- reason }

func startServer(t *testing.T, dial func(context.Context, Addr) (Flow, error)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- (&Server{Dial: dial}).Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String()
}

// connect runs the client side of a CONNECT and returns the reply code.
func connect(t *testing.T, addr string, req []byte, oneByte bool) (net.Conn, Reply) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(5 * time.Second))
	msg := append(AppendGreeting(nil, 0x02, MethodNoAuth), req...)
	if oneByte {
		for i := range msg {
			if _, err := c.Write(msg[i : i+1]); err != nil {
				t.Fatal(err)
			}
		}
	} else if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	var m [2]byte
	if _, err := io.ReadFull(c, m[:]); err != nil || m != [2]byte{Version, byte(MethodNoAuth)} {
		t.Fatalf("method reply %x, %v", m, err)
	}
	var rep [10]byte
	if _, err := io.ReadFull(c, rep[:]); err != nil {
		t.Fatalf("reading reply: %v", err)
	}
	r, _, _, err := ParseReply(rep[:])
	if err != nil {
		t.Fatalf("reply %x: %v", rep, err)
	}
	return c, r
}

func TestServer(t *testing.T) {
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	var mu sync.Mutex
	var seen []Addr
	addr := startServer(t, func(ctx context.Context, dst Addr) (Flow, error) {
		mu.Lock()
		seen = append(seen, dst)
		mu.Unlock()
		switch dst.Port {
		case 1:
			return nil, syscall.ECONNREFUSED
		case 2:
			return nil, &Error{Reply: NotAllowed, Err: errors.New("port 2 is not allowed")}
		case 3:
			return nil, context.DeadlineExceeded
		}
		return &pipeFlow{aborted: make(chan string, 1), wg: &wg}, nil
	})
	tests := []struct {
		name string
		req  Request
		want Reply
	}{
		{"ipv4", Request{CmdConnect, Addr{IP: netip.MustParseAddr("10.0.0.1"), Port: 80}}, Succeeded},
		{"ipv6", Request{CmdConnect, Addr{IP: netip.MustParseAddr("::1"), Port: 80}}, Succeeded},
		{"domain", Request{CmdConnect, Addr{Name: "api.ockam", Port: 80}}, Succeeded},
		{"refused", Request{CmdConnect, Addr{Name: "api.ockam", Port: 1}}, ConnectionRefused},
		{"not allowed", Request{CmdConnect, Addr{Name: "api.ockam", Port: 2}}, NotAllowed},
		{"timeout", Request{CmdConnect, Addr{Name: "api.ockam", Port: 3}}, TTLExpired},
		{"bind", Request{CmdBind, Addr{Name: "api.ockam", Port: 80}}, CommandNotSupported},
	}
	for _, tt := range tests {
		for _, oneByte := range []bool{false, true} {
			t.Run(tt.name, func(t *testing.T) {
				c, got := connect(t, addr, AppendRequest(nil, tt.req), oneByte)
				if got != tt.want {
					t.Fatalf("reply %v, want %v", got, tt.want)
				}
				if got != Succeeded {
					return
				}
				if _, err := c.Write([]byte("hello")); err != nil {
					t.Fatal(err)
				}
				b := make([]byte, 5)
				if _, err := io.ReadFull(c, b); err != nil || string(b) != "hello" {
					t.Fatalf("echo %q, %v", b, err)
				}
			})
		}
	}
	if len(seen) == 0 || seen[0] != tests[0].req.Dst {
		t.Errorf("dial saw %v", seen)
	}
}

func TestServerRejects(t *testing.T) {
	addr := startServer(t, func(context.Context, Addr) (Flow, error) {
		t.Error("Dial called")
		return nil, errors.New("no")
	})
	for _, tt := range []struct {
		name string
		in   []byte
		want []byte
	}{
		{"auth only", []byte{5, 1, 2}, []byte{5, 0xff}},
		{"socks4", []byte{4, 1, 0, 80, 10, 0, 0, 1, 0}, nil},
		{"bad atyp", []byte{5, 1, 0, 5, 1, 0, 9, 0, 0, 0}, []byte{5, 0, 5, byte(AddressTypeNotSupported), 0, 1, 0, 0, 0, 0, 0, 0}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			c.Write(tt.in)
			got, err := io.ReadAll(c) // the server closes after answering
			if err != nil && !(tt.want == nil && errors.Is(err, syscall.ECONNRESET)) {
				t.Fatal(err)
			}
			if string(got) != string(tt.want) {
				t.Fatalf("got %x, want %x", got, tt.want)
			}
		})
	}
}
