package datagram

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	for _, m := range []Msg{
		{Kind: KindDatagram, Port: 53, Payload: []byte("query")},
		{Kind: KindDatagram, Port: 0, Payload: []byte{}},
		{Kind: KindDatagram, Port: 65535, Payload: bytes.Repeat([]byte{7}, MaxDatagram)},
		{Kind: KindReply, Payload: []byte("answer")},
		{Kind: KindReply, Payload: []byte{}},
		{Kind: KindClose, Reason: "idle"},
		{Kind: KindClose},
		{Kind: KindBatch, Port: 53, Entries: AppendEntry(AppendEntry(nil, []byte("one")), []byte{})},
		{Kind: KindReplies, Entries: AppendEntry(nil, bytes.Repeat([]byte{1}, MaxBatch-EntryHeader))},
	} {
		b := Append(nil, m)
		got, err := Decode(b)
		if err != nil {
			t.Fatalf("%v: %v", m.Kind, err)
		}
		if got.Kind != m.Kind || got.Port != m.Port || !bytes.Equal(got.Payload, m.Payload) || got.Reason != m.Reason || !bytes.Equal(got.Entries, m.Entries) {
			t.Errorf("round trip of %v: got %+v", m.Kind, got)
		}
	}
	// The in-place header writers agree with Append.
	b := make([]byte, DatagramHeader+3)
	copy(b[DatagramHeader:], "abc")
	PutDatagramHeader(b, 8125)
	if want := Append(nil, Msg{Kind: KindDatagram, Port: 8125, Payload: []byte("abc")}); !bytes.Equal(b, want) {
		t.Errorf("PutDatagramHeader: %x, want %x", b, want)
	}
	r := []byte{0, 'x'}
	PutReplyHeader(r)
	if want := Append(nil, Msg{Kind: KindReply, Payload: []byte("x")}); !bytes.Equal(r, want) {
		t.Errorf("PutReplyHeader: %x, want %x", r, want)
	}
}

func TestDecodeRejects(t *testing.T) {
	for name, b := range map[string][]byte{
		"empty":         {},
		"unknown kind":  {9},
		"kind zero":     {0},
		"short":         {1, Version, 0},
		"version":       {1, 2, 0, 53},
		"too big":       append([]byte{1, Version, 0, 53}, make([]byte, MaxDatagram+1)...),
		"reply too big": append([]byte{2}, make([]byte, MaxDatagram+1)...),
		"long reason":   append([]byte{3}, strings.Repeat("x", MaxReason+1)...),
		"bad utf8":      {3, 0xff},
		"empty batch":   {4, Version, 0, 53},
		"cut entry":     {4, Version, 0, 53, 0, 5, 'a'},
		"cut prefix":    {5, 0, 1, 'a', 0},
		"empty replies": {5},
		"batch version": {4, 9, 0, 53, 0, 0},
		"big batch":     append([]byte{5}, AppendEntry(AppendEntry(nil, make([]byte, MaxDatagram-10)), make([]byte, 10))...),
	} {
		if _, err := Decode(b); err == nil {
			t.Errorf("%s: accepted", name)
		} else if name != "version" && name != "batch version" && !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v does not wrap ErrMalformed", name, err)
		}
	}
	// Every strict prefix of a Datagram header is rejected.
	b := Append(nil, Msg{Kind: KindDatagram, Port: 53})
	for i := 0; i < len(b); i++ {
		if _, err := Decode(b[:i]); err == nil {
			t.Errorf("prefix of %d bytes accepted", i)
		}
	}
	// Long reasons are cut on a rune boundary by Append.
	m, err := Decode(Append(nil, Msg{Kind: KindClose, Reason: strings.Repeat("é", MaxReason)}))
	if err != nil || len(m.Reason) > MaxReason {
		t.Errorf("cut reason: %d bytes, %v", len(m.Reason), err)
	}
}

func TestDecodeRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, 512)
	for i := 0; i < 100000; i++ {
		n := r.IntN(len(b))
		for j := range b[:n] {
			b[j] = byte(r.Uint32())
		}
		if m, err := Decode(b[:n]); err == nil {
			if got := Append(nil, m); !bytes.Equal(got, b[:n]) {
				t.Fatalf("decode/append of %x gave %x", b[:n], got)
			}
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(Append(nil, Msg{Kind: KindDatagram, Port: 53, Payload: []byte("q")}))
	f.Add(Append(nil, Msg{Kind: KindReply, Payload: []byte("a")}))
	f.Add(Append(nil, Msg{Kind: KindClose, Reason: "idle"}))
	f.Add(Append(nil, Msg{Kind: KindBatch, Port: 1, Entries: AppendEntry(AppendEntry(nil, []byte("a")), []byte("bc"))}))
	f.Add(Append(nil, Msg{Kind: KindReplies, Entries: AppendEntry(nil, []byte("a"))}))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b)
		if err != nil {
			return
		}
		if len(m.Payload) > MaxDatagram || len(m.Reason) > MaxReason || len(m.Entries) > MaxBatch {
			t.Fatalf("accepted oversize %+v", m)
		}
		var rebuilt []byte
		m.Each(func(p []byte) { rebuilt = AppendEntry(rebuilt, p) })
		if !bytes.Equal(rebuilt, m.Entries) {
			t.Fatalf("entries %x iterate to %x", m.Entries, rebuilt)
		}
		if got := Append(nil, m); !bytes.Equal(got, b) {
			t.Fatalf("re-encoding %x gave %x", b, got)
		}
	})
}

func TestLimiter(t *testing.T) {
	var nilL *Limiter
	if !nilL.Allow(1 << 20) {
		t.Error("nil limiter refused")
	}
	if NewLimiter(0, 0) != nil {
		t.Error("rate 0 gave a limiter")
	}
	l := NewLimiter(1000, 0)
	for i := 0; i < 4; i++ {
		if !l.Allow(MaxDatagram) {
			t.Error("full bucket refused a burst")
		}
	}
	if l.Allow(MaxDatagram) {
		t.Error("empty bucket allowed a burst")
	}
}

// TestProtocolDoc holds docs/PROTOCOL.md to the wire constants.
func TestProtocolDoc(t *testing.T) {
	b, err := os.ReadFile("../../docs/PROTOCOL.md")
	if err != nil {
		t.Skip(err)
	}
	doc := string(b)
	i := strings.Index(doc, "## 7. Datagrams (UDP)")
	if i < 0 {
		t.Fatal("docs/PROTOCOL.md has no Datagrams section")
	}
	doc = doc[i:]
	for _, k := range []Kind{KindDatagram, KindReply, KindClose, KindBatch, KindReplies} {
		name := strings.ToUpper(k.String()[:1]) + k.String()[1:]
		if want := fmt.Sprintf("| %d | %s |", k, name); !strings.Contains(doc, want) {
			t.Errorf("docs/PROTOCOL.md lacks %q", want)
		}
	}
	if !strings.Contains(doc, fmt.Sprintf("version(1)=%d", Version)) || MaxDatagram != 63<<10 || MaxReason != 256 {
		t.Error("docs/PROTOCOL.md and the constants disagree on version or sizes")
	}
}
