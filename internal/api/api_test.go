package api

import (
	"strings"
	"testing"
)

func TestDecodeBytes(t *testing.T) {
	var r CreateInlet
	if err := DecodeBytes([]byte(`{"from":"127.0.0.1:7000","to":"/service/x"}`), &r); err != nil || r.From != "127.0.0.1:7000" {
		t.Fatalf("got %+v, %v", r, err)
	}
	for _, bad := range []string{``, `{`, `{"nope":1}`, `{"from":1}`, `{} {}`, `[]`, strings.Repeat(" ", MaxBody+1)} {
		var r CreateInlet
		if err := DecodeBytes([]byte(bad), &r); err == nil {
			t.Errorf("DecodeBytes(%.20q) accepted", bad)
		}
	}
}

func FuzzDecodeRequests(f *testing.F) {
	f.Add([]byte(`{"to":"/service/echo","payload":"hi"}`))
	f.Add([]byte(`{"name":"x","at":"/ip4/127.0.0.1/tcp/1"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, v := range []any{&SendMessage{}, &CreateRelay{}, &CreateChannel{}, &CreateListener{}, &CreateInlet{}, &CreateOutlet{}, &CreateTun{}, &CreateMapping{}, &CreateSocks{}} {
			DecodeBytes(b, v)
		}
	})
}
