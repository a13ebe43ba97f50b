package routing

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
)

func TestParseRouteRoundTrip(t *testing.T) {
	resolve := func(name string) (Route, error) {
		if name == "relay" {
			return Route{TCPAddr("127.0.0.1:4000")}, nil
		}
		return nil, errors.New("no node " + name)
	}
	tests := []struct {
		in, want string
	}{
		{"/service/echo", "/service/echo"},
		{"/worker/echo", "/service/echo"},
		{"/ip4/10.0.0.1/tcp/4000/service/echo", "/ip4/10.0.0.1/tcp/4000/service/echo"},
		{"/ip6/::1/tcp/4000/service/api", "/ip6/::1/tcp/4000/service/api"},
		{"/dnsaddr/example.com/tcp/4000/service/x", "/dnsaddr/example.com/tcp/4000/service/x"},
		{"/tcp/127.0.0.1:9/service/x", "/ip4/127.0.0.1/tcp/9/service/x"},
		{"/node/relay/service/forward_to_x/service/api", "/ip4/127.0.0.1/tcp/4000/service/forward_to_x/service/api"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			r, err := ParseRoute(tt.in, resolve)
			if err != nil {
				t.Fatalf("ParseRoute(%q): %v", tt.in, err)
			}
			if got := r.String(); got != tt.want {
				t.Fatalf("String() = %q, want %q", got, tt.want)
			}
			r2, err := ParseRoute(r.String(), nil)
			if err != nil {
				t.Fatalf("reparse %q: %v", r.String(), err)
			}
			if r2.String() != r.String() {
				t.Fatalf("round trip %q != %q", r2, r)
			}
		})
	}
}

func TestParseRouteErrors(t *testing.T) {
	tests := []struct{ in, wantSub string }{
		{"", "must start with /"},
		{"service/x", "must start with /"},
		{"/", "empty route"},
		{"/service", "missing"},
		{"/service/", "missing"},
		{"/bogus/x", "unknown segment /bogus"},
		{"/ip4/10.0.0.1/service/x", "must be followed by /tcp/PORT"},
		{"/ip4/10.0.0.1/tcp/99999", "not a TCP port"},
		{"/ip4/::1/tcp/1", "not an IPv4"},
		{"/ip6/1.2.3.4/tcp/1", "not an IPv6"},
		{"/dnsaddr/a b/tcp/1", "not a host name"},
		{"/node/x", "node resolver"},
		{"/service/a//service/b", "empty segment"},
		{"/service/" + strings.Repeat("a", 256), "longer than"},
		{strings.Repeat("/service/a", MaxRouteLen+1), "more than"},
	}
	for _, tt := range tests {
		_, err := ParseRoute(tt.in, nil)
		if err == nil || !strings.Contains(err.Error(), tt.wantSub) {
			t.Errorf("ParseRoute(%.40q) error = %v, want it to contain %q", tt.in, err, tt.wantSub)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("error is not one line: %q", err)
		}
	}
}

func TestMessageRoundTrip(t *testing.T) {
	m := &Message{
		Onward:  Route{TCPAddr("127.0.0.1:4000"), LocalAddr("forward_to_b"), LocalAddr("api")},
		Return:  Route{LocalAddr("app")},
		Payload: []byte("hello"),
	}
	b, err := AppendMessage(nil, m)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != EncodedLen(m) {
		t.Fatalf("EncodedLen = %d, encoded %d", EncodedLen(m), len(b))
	}
	var got Message
	if err := DecodeMessage(&got, b); err != nil {
		t.Fatal(err)
	}
	if got.Onward.String() != m.Onward.String() || got.Return.String() != m.Return.String() || !bytes.Equal(got.Payload, m.Payload) {
		t.Fatalf("got %v %v %q, want %v %v %q", got.Onward, got.Return, got.Payload, m.Onward, m.Return, m.Payload)
	}
	// Every strict prefix that cuts a route must be rejected.
	routeBytes := len(b) - len(m.Payload)
	for i := 0; i < routeBytes; i++ {
		if err := DecodeMessage(&got, b[:i]); !errors.Is(err, ErrMalformed) {
			t.Errorf("prefix %d: err = %v, want ErrMalformed", i, err)
		}
	}
}

func TestDecodeRandomBytes(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var m Message
	for i := 0; i < 10000; i++ {
		b := make([]byte, r.IntN(64))
		for j := range b {
			b[j] = byte(r.Uint32())
		}
		if err := DecodeMessage(&m, b); err == nil {
			// Whatever decoded must re-encode to the same bytes.
			out, err := AppendMessage(nil, &m)
			if err != nil || !bytes.Equal(out, b) {
				t.Fatalf("decode/encode of %x gave %x, %v", b, out, err)
			}
		}
	}
}

func FuzzDecodeMessage(f *testing.F) {
	m := &Message{Onward: Route{TCPAddr("1.2.3.4:5"), LocalAddr("x")}, Return: Route{LocalAddr("y")}, Payload: []byte("p")}
	b, _ := AppendMessage(nil, m)
	f.Add(b)
	f.Add([]byte{})
	f.Add([]byte{0, 0})
	f.Add([]byte{33})
	e := &Message{Kind: KindError, Onward: Route{LocalAddr("c")}, Payload: AppendUnreachable(nil, LocalAddr("nope"))}
	b, _ = AppendMessage(nil, e)
	f.Add(b)
	var in Interner // shared by the inputs, as a link's is by its messages
	var reused Message
	f.Fuzz(func(t *testing.T, b []byte) {
		var m Message
		err := DecodeMessage(&m, b)
		// The interned decoder, into a reused message, agrees.
		ierr := DecodeMessageInterned(&reused, b, &in)
		if (err == nil) != (ierr == nil) {
			t.Fatalf("DecodeMessage: %v, DecodeMessageInterned: %v", err, ierr)
		}
		if len(in.m) > MaxInterned {
			t.Fatalf("interner holds %d values, more than %d", len(in.m), MaxInterned)
		}
		if err != nil {
			return
		}
		if reused.Onward.String() != m.Onward.String() || reused.Return.String() != m.Return.String() || !bytes.Equal(reused.Payload, m.Payload) {
			t.Fatalf("interned decode %v differs from %v", reused, m)
		}
		out, err := AppendMessage(nil, &m)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		if !bytes.Equal(out, b) {
			t.Fatalf("re-encode %x != %x", out, b)
		}
	})
}

func FuzzParseRoute(f *testing.F) {
	for _, s := range []string{"/service/echo", "/ip4/1.2.3.4/tcp/5/service/x", "/dnsaddr/a.b/tcp/1", "/ip6/::1/tcp/2", "/tcp/a:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRoute(s, nil)
		if err != nil {
			return
		}
		r2, err := ParseRoute(r.String(), nil)
		if err != nil {
			t.Fatalf("reparse of %q (from %q): %v", r.String(), s, err)
		}
		if r2.String() != r.String() {
			t.Fatalf("%q != %q", r2.String(), r.String())
		}
	})
}

func BenchmarkMessageCodec(b *testing.B) {
	m := &Message{
		Onward:  Route{LocalAddr("0123456789abcdef"), LocalAddr("outlet")},
		Return:  Route{LocalAddr("fedcba9876543210")},
		Payload: make([]byte, 16<<10),
	}
	buf := make([]byte, 0, EncodedLen(m))
	var got Message
	b.SetBytes(int64(len(m.Payload)))
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = AppendMessage(buf[:0], m)
		if err := DecodeMessage(&got, buf); err != nil {
			b.Fatal(err)
		}
	}
}
