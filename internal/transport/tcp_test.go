package transport

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"go.uber.org/goleak"

	"github.com/ockam-go/ockam/internal/routing"
)

// syncBuf is a goroutine-safe log sink.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestSendReceive(t *testing.T) {
	defer goleak.VerifyNone(t)
	got := make(chan string, 10)
	srv := New(Config{OnMessage: func(c *Conn, m *routing.Message) {
		got <- m.Onward.String() + " " + string(m.Payload)
	}})
	defer srv.Close()
	addr, err := srv.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cli := New(Config{OnMessage: func(*Conn, *routing.Message) {}})
	defer cli.Close()
	ctx := context.Background()
	c1, err := cli.Dial(ctx, addr.String())
	if err != nil {
		t.Fatal(err)
	}
	c2, _ := cli.Dial(ctx, addr.String())
	if c1 != c2 {
		t.Fatal("second Dial opened a new connection instead of reusing")
	}
	for i := 0; i < 3; i++ {
		if err := c1.Send(&routing.Message{Onward: routing.Route{routing.LocalAddr("x")}, Payload: []byte("hi")}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 3; i++ {
		select {
		case s := <-got:
			if s != "/service/x hi" {
				t.Fatalf("got %q", s)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("message not received")
		}
	}
	big := &routing.Message{Onward: routing.Route{routing.LocalAddr("x")}, Payload: make([]byte, MaxFrameSize)}
	if err := c1.Send(big); err == nil || !strings.Contains(err.Error(), "frame limit") {
		t.Fatalf("oversize Send: err = %v", err)
	}
}

// TestBadInputClosesConnection writes hostile bytes at a listening transport:
// each must close the connection with a logged reason, and never panic.
func TestBadInputClosesConnection(t *testing.T) {
	defer goleak.VerifyNone(t)
	valid, _ := routing.AppendMessage(nil, &routing.Message{Onward: routing.Route{routing.LocalAddr("x")}})
	frame := func(body []byte) []byte {
		b := binary.BigEndian.AppendUint32(nil, uint32(len(body)))
		return append(b, body...)
	}
	tests := []struct {
		name   string
		input  []byte
		reason string
	}{
		// Refused before it is a connection: logged, no OnClose.
		{"wrong version", []byte{9}, "peer speaks 9"},
		{"bad hello", append([]byte{ProtocolVersion}, make([]byte, helloLen)...), "bundle of 0 lanes"},
		{"short hello", append([]byte{ProtocolVersion}, 1, 2, 3), "reading hello"},
		{"oversize frame", append(Preamble(), 0xff, 0xff, 0xff, 0xff), "over the"},
		{"truncated frame", append(Preamble(), frame(valid)[:5]...), "truncated frame"},
		{"garbage message", append(Preamble(), frame([]byte{40, 1, 2, 3})...), "bad frame"},
		{"unknown address type", append(Preamble(), frame([]byte{1, 7, 1, 'a', 0})...), "unknown address type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logs := &syncBuf{}
			closed := make(chan error, 1)
			tr := New(Config{
				Logger:    slog.New(slog.NewTextHandler(logs, nil)),
				OnMessage: func(*Conn, *routing.Message) { t.Error("message delivered from bad input") },
				OnClose:   func(c *Conn, err error) { closed <- err },
			})
			defer tr.Close()
			addr, err := tr.Listen("127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			nc, err := net.Dial("tcp", addr.String())
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			nc.Write(tt.input)
			if tt.name == "truncated frame" || tt.name == "short hello" {
				nc.(*net.TCPConn).CloseWrite()
			}
			early := strings.Contains(tt.name, "version") || strings.Contains(tt.name, "hello")
			if !early {
				select {
				case err := <-closed:
					if err == nil || !strings.Contains(err.Error(), tt.reason) {
						t.Fatalf("close reason = %v, want %q", err, tt.reason)
					}
				case <-time.After(5 * time.Second):
					t.Fatal("connection not closed")
				}
			}
			// The peer sees the connection end.
			nc.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.ReadAll(nc); err != nil && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset") {
				t.Fatalf("reading from closed conn: %v", err)
			}
			if !strings.Contains(logs.String(), tt.reason) {
				t.Errorf("log does not name the reason %q:\n%s", tt.reason, logs)
			}
		})
	}
}

func TestIdleTimeoutDetectsSilentPeer(t *testing.T) {
	defer goleak.VerifyNone(t)
	closed := make(chan error, 1)
	tr := New(Config{
		OnMessage:   func(*Conn, *routing.Message) {},
		OnClose:     func(c *Conn, err error) { closed <- err },
		Keepalive:   100 * time.Millisecond,
		IdleTimeout: 300 * time.Millisecond,
	})
	defer tr.Close()
	addr, _ := tr.Listen("127.0.0.1:0")
	nc, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.Write(Preamble()) // then silence: a half-open peer
	start := time.Now()
	select {
	case err := <-closed:
		if !strings.Contains(err.Error(), "keepalive timeout") {
			t.Fatalf("reason = %v", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("detected after %v", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("silent peer not detected")
	}
}

func TestKeepalivesKeepIdleConnectionOpen(t *testing.T) {
	defer goleak.VerifyNone(t)
	cfg := Config{OnMessage: func(*Conn, *routing.Message) {}, Keepalive: 50 * time.Millisecond, IdleTimeout: 200 * time.Millisecond}
	srv, cli := New(cfg), New(cfg)
	defer srv.Close()
	defer cli.Close()
	addr, _ := srv.Listen("127.0.0.1:0")
	c, err := cli.Dial(context.Background(), addr.String())
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Done():
		t.Fatalf("idle connection with keepalives closed: %v", c.Err())
	case <-time.After(time.Second):
	}
}

func TestListenPortInUse(t *testing.T) {
	tr := New(Config{OnMessage: func(*Conn, *routing.Message) {}})
	defer tr.Close()
	a, err := tr.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, err = tr.Listen(a.String())
	if err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("err = %v", err)
	}
}

func FuzzReadFrame(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{0, 0, 0, 3, 1, 2, 3})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0, 0, 0, 2, 1, 2, 0, 0, 0, 0, 0, 0, 0, 1, 9, 0, 0})
	big := binary.BigEndian.AppendUint32(nil, 100<<10)
	f.Add(append(append(big, make([]byte, 100<<10)...), 0, 0, 0, 1, 7))
	f.Fuzz(func(t *testing.T, b []byte) {
		fr := frameReader{r: iotest.OneByteReader(bytes.NewReader(b))}
		whole := frameReader{r: bytes.NewReader(b)}
		for {
			buf, err := fr.next()
			buf2, err2 := whole.next()
			if (err == nil) != (err2 == nil) || !bytes.Equal(buf, buf2) {
				t.Fatalf("byte-at-a-time and whole reads differ: %v %v", err, err2)
			}
			if err != nil {
				return
			}
			if len(buf) > MaxFrameSize {
				t.Fatalf("frame of %d bytes accepted", len(buf))
			}
			var m routing.Message
			routing.DecodeMessage(&m, buf)
		}
	})
}

func BenchmarkConnSend(b *testing.B) {
	var n int
	done := make(chan struct{})
	total := b.N
	srv := New(Config{OnMessage: func(*Conn, *routing.Message) {
		n++
		if n == total {
			close(done)
		}
	}})
	defer srv.Close()
	addr, _ := srv.Listen("127.0.0.1:0")
	cli := New(Config{OnMessage: func(*Conn, *routing.Message) {}})
	defer cli.Close()
	c, err := cli.Dial(context.Background(), addr.String())
	if err != nil {
		b.Fatal(err)
	}
	m := &routing.Message{Onward: routing.Route{routing.LocalAddr("x")}, Payload: make([]byte, 16<<10)}
	b.SetBytes(int64(len(m.Payload)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < total; i++ {
		if err := c.Send(m); err != nil {
			b.Fatal(err)
		}
	}
	<-done
}

// TestConcurrentSendersUnderPressure sends from many goroutines through a
// small socket buffer, so that direct writes are cut short and their rest is
// queued while other senders queue frames: no frame may ever be written
// inside another.
func TestConcurrentSendersUnderPressure(t *testing.T) {
	defer goleak.VerifyNone(t)
	const senders, each = 16, 100
	var mu sync.Mutex
	got := map[byte]int{}
	var bad error
	done := make(chan struct{})
	srv := New(Config{OnMessage: func(c *Conn, m *routing.Message) {
		// Every payload is one byte value repeated: a frame written
		// inside another would break that (or the framing itself).
		for _, b := range m.Payload {
			if b != m.Payload[0] {
				mu.Lock()
				bad = fmt.Errorf("payload mixes bytes %d and %d", m.Payload[0], b)
				mu.Unlock()
				break
			}
		}
		mu.Lock()
		got[m.Payload[0]]++
		n := 0
		for _, v := range got {
			n += v
		}
		mu.Unlock()
		if n == senders*each {
			close(done)
		}
	}})
	defer srv.Close()
	addr, _ := srv.Listen("127.0.0.1:0")
	cli := New(Config{OnMessage: func(*Conn, *routing.Message) {}})
	defer cli.Close()
	c, err := cli.Dial(context.Background(), addr.String())
	if err != nil {
		t.Fatal(err)
	}
	// A small send buffer: direct writes are cut short often.
	c.nc.(*net.TCPConn).SetWriteBuffer(128 << 10)
	var wg sync.WaitGroup
	for s := 0; s < senders; s++ {
		wg.Add(1)
		go func(s int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				size := 1 + (i*7919)%(60<<10) // small and large frames
				p := bytes.Repeat([]byte{byte(s)}, size)
				if err := c.Send(&routing.Message{Onward: routing.Route{routing.LocalAddr("x")}, Payload: p}); err != nil {
					t.Errorf("send: %v", err)
					return
				}
			}
		}(s)
	}
	wg.Wait()
	select {
	case <-done:
	case <-c.Done():
		t.Fatalf("connection closed: %v", c.Err())
	case <-time.After(60 * time.Second):
		t.Fatal("not every message arrived")
	}
	mu.Lock()
	defer mu.Unlock()
	if bad != nil {
		t.Fatal(bad)
	}
	for s := 0; s < senders; s++ {
		if got[byte(s)] != each {
			t.Fatalf("sender %d: %d messages arrived, want %d", s, got[byte(s)], each)
		}
	}
}

// TestSendBatchKeepsOrder: batches from several goroutines, mixed with
// single Sends and large frames, arrive whole and each sender's messages in
// its order; an oversize message fails the batch before anything is queued.
func TestSendBatchKeepsOrder(t *testing.T) {
	defer goleak.VerifyNone(t)
	const senders, batches, per = 4, 200, 8
	var mu sync.Mutex
	next := make(map[string]int)
	bad := make(chan string, 1)
	total := make(chan struct{}, senders*batches*(per+1))
	srv := New(Config{OnMessage: func(c *Conn, m *routing.Message) {
		var k, i int
		fmt.Sscanf(string(m.Payload[:16]), "%3d %10d", &k, &i)
		key := fmt.Sprint(k)
		mu.Lock()
		if next[key] != i {
			select {
			case bad <- fmt.Sprintf("sender %d: got message %d, want %d", k, i, next[key]):
			default:
			}
		}
		next[key] = i + 1
		mu.Unlock()
		total <- struct{}{}
	}})
	defer srv.Close()
	addr, err := srv.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cli := New(Config{OnMessage: func(*Conn, *routing.Message) {}})
	defer cli.Close()
	c, err := cli.Dial(context.Background(), addr.String())
	if err != nil {
		t.Fatal(err)
	}
	msg := func(k, i, size int) routing.Message {
		p := make([]byte, max(size, 16))
		copy(p, fmt.Sprintf("%3d %10d ", k, i))
		return routing.Message{Onward: routing.Route{routing.LocalAddr("x")}, Payload: p}
	}
	over := []routing.Message{msg(99, 0, 10), msg(99, 1, MaxFrameSize)}
	if err := c.SendBatch(over, true); err == nil || !strings.Contains(err.Error(), "frame limit") {
		t.Fatalf("oversize SendBatch: err = %v", err)
	}
	var wg sync.WaitGroup
	for k := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			i := 0
			for b := range batches {
				ms := make([]routing.Message, per)
				for j := range ms {
					size := 64
					if (b+j)%17 == 0 {
						size = 60 << 10
					}
					ms[j] = msg(k, i, size)
					i++
				}
				if err := c.SendBatch(ms, b%2 == 0); err != nil {
					t.Error(err)
					return
				}
				m := msg(k, i, 64)
				i++
				if err := c.Send(&m); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	for range senders * batches * (per + 1) {
		select {
		case <-total:
		case s := <-bad:
			t.Fatal(s)
		case <-time.After(10 * time.Second):
			t.Fatal("messages lost")
		}
	}
	select {
	case s := <-bad:
		t.Fatal(s)
	default:
	}
}
