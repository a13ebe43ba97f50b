package routing

import (
	"bytes"
	"errors"
	"testing"
)

func TestErrorReplyRoundTrip(t *testing.T) {
	m := &Message{
		Kind:    KindError,
		Onward:  Route{LocalAddr("conn"), LocalAddr("req_1")},
		Return:  Route{},
		Payload: AppendUnreachable(nil, LocalAddr("nope")),
	}
	b, err := AppendMessage(nil, m)
	if err != nil {
		t.Fatal(err)
	}
	if b[0] != 0x80|2 {
		t.Fatalf("count byte %#x, want %#x", b[0], 0x80|2)
	}
	var got Message
	if err := DecodeMessage(&got, b); err != nil {
		t.Fatal(err)
	}
	if got.Kind != KindError || got.Onward.String() != m.Onward.String() {
		t.Fatalf("decoded %v %v, want error %v", got.Kind, got.Onward, m.Onward)
	}
	u, err := DecodeUnreachable(got.Payload)
	if err != nil {
		t.Fatal(err)
	}
	if u.Hop != LocalAddr("nope") {
		t.Fatalf("hop %v, want /service/nope", u.Hop)
	}
	// A data message is what version 1 sent: no flag.
	m.Kind = KindData
	b, _ = AppendMessage(nil, m)
	if b[0] != 2 {
		t.Fatalf("data count byte %#x, want 2", b[0])
	}
	if err := DecodeMessage(&got, b); err != nil || got.Kind != KindData {
		t.Fatalf("data decoded as %v, %v", got.Kind, err)
	}
	if _, err := AppendMessage(nil, &Message{Kind: 7}); err == nil {
		t.Fatal("unknown kind encoded")
	}
}

func TestDecodeMessageRejectsOtherFlags(t *testing.T) {
	for _, b := range [][]byte{{0x40, 0}, {0xc0, 0}, {0x80 | 33, 0}, {0x80}} {
		var m Message
		if err := DecodeMessage(&m, b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%x: err = %v, want ErrMalformed", b, err)
		}
	}
}

func TestDecodeUnreachableRejects(t *testing.T) {
	long := make([]byte, 300)
	for _, b := range [][]byte{nil, {1}, {1, 0}, {2, 0, 0}, {1, 9, 0}, {1, 0, 2, 'a'}, {1, 0, 1, 'a', 'b'}, long} {
		if _, err := DecodeUnreachable(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%x: err = %v, want ErrMalformed", b, err)
		}
	}
}

func FuzzDecodeUnreachable(f *testing.F) {
	f.Add(AppendUnreachable(nil, LocalAddr("nope")))
	f.Add(AppendUnreachable(nil, TCPAddr("1.2.3.4:5")))
	f.Add([]byte{1, 0, 0})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		u, err := DecodeUnreachable(b)
		if err != nil {
			return
		}
		if out := AppendUnreachable(nil, u.Hop); !bytes.Equal(out, b) {
			t.Fatalf("re-encode %x != %x", out, b)
		}
	})
}
