package portal

import (
	"bytes"
	"errors"
	"testing"
)

func TestWireRoundTrip(t *testing.T) {
	msgs := []Msg{
		{Kind: KindOpen, Window: 1 << 20, Port: 5000},
		{Kind: KindOpen, Window: 1 << 20, Data: []byte("GET / HTTP/1.1\r\n")},
		{Kind: KindPing, ID: 3},
		{Kind: KindPong, ID: 3},
		{Kind: KindRelease, Credit: 1 << 20},
		{Kind: KindOpened, Window: 4096},
		{Kind: KindRefused, Reason: "connection refused"},
		{Kind: KindData, Seq: 7, Data: []byte("hello")},
		{Kind: KindCredit, Credit: 65536},
		{Kind: KindFin, Seq: 9},
		{Kind: KindReset, Reason: "peer reset"},
	}
	for _, m := range msgs {
		b := Append(nil, m)
		got, err := Decode(b)
		if err != nil {
			t.Fatalf("%v: %v", m.Kind, err)
		}
		if got.Kind != m.Kind || got.Window != m.Window || got.Port != m.Port || got.Seq != m.Seq ||
			got.Credit != m.Credit || got.ID != m.ID || got.Reason != m.Reason || !bytes.Equal(got.Data, m.Data) {
			t.Fatalf("round trip %+v -> %+v", m, got)
		}
		// Every strict prefix of a fixed-size message is rejected.
		if m.Kind != KindData && m.Kind != KindRefused && m.Kind != KindReset {
			fixed := len(b)
			if m.Kind == KindOpen {
				fixed = OpenHeader // early bytes may be any length
			}
			for i := 0; i < fixed; i++ {
				if _, err := Decode(b[:i]); err == nil {
					t.Errorf("%v prefix %d accepted", m.Kind, i)
				}
			}
		}
	}
}

func TestWireRejects(t *testing.T) {
	for name, b := range map[string][]byte{
		"empty":        {},
		"unknown":      {99},
		"zero window":  {byte(KindOpened), 0, 0, 0, 0},
		"huge window":  {byte(KindOpened), 0xff, 0xff, 0xff, 0xff},
		"bad version":  {byte(KindOpen), 9, 0, 0, 1, 0, 0, 0},
		"v1 open":      {byte(KindOpen), 1, 0, 0, 1, 0, 0, 0},
		"huge early":   append([]byte{byte(KindOpen), Version, 0, 1, 0, 0, 0, 0}, make([]byte, MaxEarly+1)...),
		"long ping":    {byte(KindPing), 0, 0, 0, 0, 0},
		"short pong":   {byte(KindPong), 0, 0, 0},
		"long release": {byte(KindRelease), 0, 0, 0, 1, 0},
		"long opened":  {byte(KindOpened), 0, 0, 1, 0, 0},
		"bad utf8":     {byte(KindReset), 0xff},
		"short data":   {byte(KindData), 0, 0},
		"huge data":    append([]byte{byte(KindData), 0, 0, 0, 0}, make([]byte, MaxChunk+1)...),
		"long reason":  append([]byte{byte(KindRefused)}, bytes.Repeat([]byte("a"), MaxReason+1)...),
	} {
		if _, err := Decode(b); err == nil {
			t.Errorf("%s: accepted", name)
		} else if name != "bad version" && name != "v1 open" && !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", name, err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(Append(nil, Msg{Kind: KindOpen, Window: 1, Port: 1}))
	f.Add(Append(nil, Msg{Kind: KindData, Seq: 1, Data: []byte("x")}))
	f.Add(Append(nil, Msg{Kind: KindReset, Reason: "r"}))
	f.Add(Append(nil, Msg{Kind: KindOpen, Window: 1, Port: 1, Data: []byte("early")}))
	f.Add(Append(nil, Msg{Kind: KindPing, ID: 1}))
	f.Add(Append(nil, Msg{Kind: KindRelease, Credit: 1}))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b)
		if err != nil {
			return
		}
		if out := Append(nil, m); !bytes.Equal(out, b) {
			t.Fatalf("re-encode %x != %x", out, b)
		}
	})
}
