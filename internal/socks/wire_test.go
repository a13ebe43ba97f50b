package socks

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"net/netip"
	"testing"
)

var requests = []Request{
	{Cmd: CmdConnect, Dst: Addr{IP: netip.MustParseAddr("100.64.0.10"), Port: 5000}},
	{Cmd: CmdConnect, Dst: Addr{IP: netip.MustParseAddr("fd7a:6f63:6b6d::1"), Port: 443}},
	{Cmd: CmdConnect, Dst: Addr{Name: "api.ockam", Port: 80}},
	{Cmd: CmdBind, Dst: Addr{Name: string(bytes.Repeat([]byte{'a'}, 255)), Port: 65535}},
}

func TestRequestRoundTrip(t *testing.T) {
	for _, want := range requests {
		t.Run(want.Dst.String()[:min(20, len(want.Dst.String()))], func(t *testing.T) {
			b := AppendRequest(nil, want)
			if len(b) > MaxRequest {
				t.Fatalf("len %d > MaxRequest", len(b))
			}
			got, n, err := ParseRequest(b)
			if err != nil || n != len(b) || got != want {
				t.Fatalf("ParseRequest = %+v, %d, %v; want %+v, %d", got, n, err, want, len(b))
			}
			// Every strict prefix asks for more.
			for i := range len(b) {
				if _, _, err := ParseRequest(b[:i]); err != ErrShort {
					t.Fatalf("prefix %d/%d: err %v, want ErrShort", i, len(b), err)
				}
			}
		})
	}
}

func TestGreetingRoundTrip(t *testing.T) {
	b := AppendGreeting(nil, MethodNoAuth, 0x02)
	m, n, err := ParseGreeting(b)
	if err != nil || n != len(b) || !bytes.Equal(m, []byte{0, 2}) {
		t.Fatalf("ParseGreeting = %v, %d, %v", m, n, err)
	}
	for i := range len(b) {
		if _, _, err := ParseGreeting(b[:i]); err != ErrShort {
			t.Fatalf("prefix %d: err %v, want ErrShort", i, err)
		}
	}
}

func TestParseRejects(t *testing.T) {
	tests := []struct {
		name string
		b    []byte
	}{
		{"version 4", []byte{4, 1, 0, 1, 1, 2, 3, 4, 0, 80}},
		{"reserved", []byte{5, 1, 1, 1, 1, 2, 3, 4, 0, 80}},
		{"empty name", []byte{5, 1, 0, 3, 0, 0, 80}},
		{"address type", []byte{5, 1, 0, 9, 1, 2, 3, 4, 0, 80}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := ParseRequest(tt.b); err == nil || err == ErrShort {
				t.Fatalf("ParseRequest(%x) err = %v, want a rejection", tt.b, err)
			}
		})
	}
	var ua *UnsupportedAddrError
	if _, _, err := ParseRequest(tests[3].b); !errors.As(err, &ua) {
		t.Errorf("unknown ATYP: err %v, want *UnsupportedAddrError", err)
	}
	if _, _, err := ParseGreeting([]byte{5, 0}); err == nil {
		t.Error("greeting with no method accepted")
	}
}

func TestParseRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, MaxRequest+10)
	for range 20000 {
		n := r.IntN(len(b))
		for i := range n {
			b[i] = byte(r.Uint32())
		}
		if r.IntN(2) == 0 && n > 0 {
			b[0] = Version
		}
		checkParse(t, b[:n])
	}
}

// checkParse is the property every input must keep: no panic, bounded
// consumption, and accepted messages re-encode to the bytes they came from.
func checkParse(t *testing.T, b []byte) {
	t.Helper()
	if m, n, err := ParseGreeting(b); err == nil {
		if n > MaxGreeting || n > len(b) || len(m) == 0 {
			t.Fatalf("greeting %x: n %d, methods %d", b, n, len(m))
		}
		ms := make([]Method, len(m))
		for i := range m {
			ms[i] = Method(m[i])
		}
		if got := AppendGreeting(nil, ms...); !bytes.Equal(got, b[:n]) {
			t.Fatalf("greeting %x re-encodes to %x", b[:n], got)
		}
	}
	if r, n, err := ParseRequest(b); err == nil {
		if n > MaxRequest || n > len(b) {
			t.Fatalf("request %x: n %d", b, n)
		}
		if got := AppendRequest(nil, r); !bytes.Equal(got, b[:n]) {
			t.Fatalf("request %x re-encodes to %x", b[:n], got)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, r := range requests {
		f.Add(AppendRequest(nil, r))
	}
	f.Add(AppendGreeting(nil, MethodNoAuth))
	f.Add([]byte{5, 1, 0, 3, 0})
	f.Fuzz(checkParse)
}

func TestUDPHeader(t *testing.T) {
	for _, a := range []Addr{
		{IP: netip.MustParseAddr("10.1.2.3"), Port: 53},
		{IP: netip.MustParseAddr("fd00::1"), Port: 8125},
		{Name: "api.ockam", Port: 5353},
	} {
		b := AppendUDP(nil, a, []byte("payload"))
		got, data, err := ParseUDP(b)
		if err != nil || got != a || string(data) != "payload" {
			t.Errorf("round trip of %v: %v %q %v", a, got, data, err)
		}
		for i := 0; i < len(b)-len("payload"); i++ {
			if _, _, err := ParseUDP(b[:i]); err == nil {
				t.Errorf("%v: header cut at %d accepted", a, i)
			}
		}
	}
	for name, b := range map[string][]byte{
		"rsv":      {0, 1, 0, 1, 1, 2, 3, 4, 0, 53},
		"fragment": {0, 0, 1, 1, 1, 2, 3, 4, 0, 53},
		"atyp":     {0, 0, 0, 9, 1, 2, 3, 4, 0, 53},
		"empty":    {0, 0, 0, 3, 0, 0, 53},
	} {
		if _, _, err := ParseUDP(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzParseUDP(f *testing.F) {
	f.Add(AppendUDP(nil, Addr{IP: netip.MustParseAddr("10.1.2.3"), Port: 53}, []byte("q")))
	f.Add(AppendUDP(nil, Addr{Name: "a.b", Port: 1}, nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, data, err := ParseUDP(b)
		if err != nil {
			return
		}
		if got := AppendUDP(nil, a, data); !bytes.Equal(got, b) {
			t.Fatalf("re-encoding %x gave %x", b, got)
		}
	})
}
