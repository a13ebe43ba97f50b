package portal

import (
	"bytes"
	"errors"
	"strings"
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
		{Kind: KindCredit, Credit: 65536, Recv: 1 << 40},
		{Kind: KindResume, Gen: 2, Recv: 1 << 33, Granted: 1<<33 + 1<<20, Seq: 77, Fin: true, Flow: "flow_0123456789abcdef"},
		{Kind: KindResumed, Gen: 2, Recv: 5, Granted: 262149, Seq: 1},
		{Kind: KindFin, Seq: 9},
		{Kind: KindFin, Seq: 10, Ack: true},
		{Kind: KindFinAck, Seq: 10},
		{Kind: KindRewind, Seq: 12},
		{Kind: KindProbe, Seq: 13},
		{Kind: KindGranted, Granted: 1 << 20, Recv: 5},
		{Kind: KindReset, Reason: "peer reset"},
	}
	for _, m := range msgs {
		b := Append(nil, m)
		got, err := Decode(b)
		if err != nil {
			t.Fatalf("%v: %v", m.Kind, err)
		}
		if got.Kind != m.Kind || got.Window != m.Window || got.Port != m.Port || got.Seq != m.Seq ||
			got.Credit != m.Credit || got.ID != m.ID || got.Reason != m.Reason || !bytes.Equal(got.Data, m.Data) ||
			got.Recv != m.Recv || got.Gen != m.Gen || got.Granted != m.Granted || got.Fin != m.Fin || got.Flow != m.Flow || got.Ack != m.Ack {
			t.Fatalf("round trip %+v -> %+v", m, got)
		}
		// Every strict prefix of a fixed-size message is rejected.
		if m.Kind != KindData && m.Kind != KindRefused && m.Kind != KindReset {
			fixed := len(b)
			if m.Kind == KindOpen {
				fixed = OpenHeader // early bytes may be any length
			}
			if m.Kind == KindResume {
				fixed = 1 + ResumeState + 1 // flow ids of any length up to MaxFlowID
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
		"empty":          {},
		"unknown":        {99},
		"zero window":    {byte(KindOpened), 0, 0, 0, 0},
		"huge window":    {byte(KindOpened), 0xff, 0xff, 0xff, 0xff},
		"bad version":    {byte(KindOpen), 9, 0, 0, 1, 0, 0, 0},
		"v1 open":        {byte(KindOpen), 1, 0, 0, 1, 0, 0, 0},
		"v2 open":        {byte(KindOpen), 2, 0, 0, 1, 0, 0, 0},
		"v2 credit":      {byte(KindCredit), 0, 0, 1, 0},
		"long credit":    append([]byte{byte(KindCredit)}, make([]byte, 13)...),
		"resume no id":   append([]byte{byte(KindResume)}, make([]byte, ResumeState)...),
		"resume long id": append(append([]byte{byte(KindResume)}, make([]byte, ResumeState)...), bytes.Repeat([]byte("a"), MaxFlowID+1)...),
		"resume bad id":  append(append([]byte{byte(KindResume)}, make([]byte, ResumeState)...), "a/b"...),
		"resume flags":   append(append([]byte{byte(KindResume)}, make([]byte, ResumeState-1)...), 2, 'a'),
		"resumed id":     append(append([]byte{byte(KindResumed)}, make([]byte, ResumeState)...), 'a'),
		"short resumed":  append([]byte{byte(KindResumed)}, make([]byte, ResumeState-1)...),
		"long rewind":    {byte(KindRewind), 0, 0, 0, 1, 0},
		"short probe":    {byte(KindProbe), 0, 0, 1},
		"v4 fin":         {byte(KindFin), 0, 0, 0, 1},
		"fin flags":      {byte(KindFin), 0, 0, 0, 1, 2},
		"long finack":    {byte(KindFinAck), 0, 0, 0, 1, 0},
		"v4 open":        {byte(KindOpen), 4, 0, 0, 1, 0, 0, 0},
		"short granted":  append([]byte{byte(KindGranted)}, make([]byte, 15)...),
		"v3 open":        {byte(KindOpen), 3, 0, 0, 1, 0, 0, 0},
		"huge early":     append([]byte{byte(KindOpen), Version, 0, 1, 0, 0, 0, 0}, make([]byte, MaxEarly+1)...),
		"long ping":      {byte(KindPing), 0, 0, 0, 0, 0},
		"short pong":     {byte(KindPong), 0, 0, 0},
		"long release":   {byte(KindRelease), 0, 0, 0, 1, 0},
		"long opened":    {byte(KindOpened), 0, 0, 1, 0, 0},
		"bad utf8":       {byte(KindReset), 0xff},
		"short data":     {byte(KindData), 0, 0},
		"huge data":      append([]byte{byte(KindData), 0, 0, 0, 0}, make([]byte, MaxChunk+1)...),
		"long reason":    append([]byte{byte(KindRefused)}, bytes.Repeat([]byte("a"), MaxReason+1)...),
	} {
		if _, err := Decode(b); err == nil {
			t.Errorf("%s: accepted", name)
		} else if !strings.HasSuffix(name, " open") && name != "bad version" && !errors.Is(err, ErrMalformed) {
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
	f.Add(Append(nil, Msg{Kind: KindCredit, Credit: 1, Recv: 9}))
	f.Add(Append(nil, Msg{Kind: KindResume, Gen: 1, Recv: 2, Granted: 3, Seq: 4, Flow: "flow_ab"}))
	f.Add(Append(nil, Msg{Kind: KindResumed, Gen: 1, Recv: 2, Granted: 3, Seq: 4, Fin: true}))
	f.Add(Append(nil, Msg{Kind: KindRewind, Seq: 7}))
	f.Add(Append(nil, Msg{Kind: KindProbe, Seq: 8}))
	f.Add(Append(nil, Msg{Kind: KindGranted, Granted: 9, Recv: 3}))
	f.Add(Append(nil, Msg{Kind: KindFin, Seq: 5, Ack: true}))
	f.Add(Append(nil, Msg{Kind: KindFinAck, Seq: 5}))
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
