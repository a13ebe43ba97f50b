package netstack

import (
	"net/netip"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

var testNames = map[string]netip.Addr{
	"api.ockam": netip.MustParseAddr("100.64.0.5"),
	"v6.ockam":  netip.MustParseAddr("fd7a:6f63:6b6d::5"),
}

func testLookup(n string) (netip.Addr, bool) {
	a, ok := testNames[canonicalName(n)]
	return a, ok
}

func query(t testing.TB, id uint16, name string, typ dnsmessage.Type) []byte {
	t.Helper()
	m := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: id, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName(name), Type: typ, Class: dnsmessage.ClassINET}},
	}
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestAnswerDNS(t *testing.T) {
	tests := []struct {
		name  string
		typ   dnsmessage.Type
		rcode dnsmessage.RCode
		want  string
	}{
		{"api.ockam.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, "100.64.0.5"},
		{"API.OCKAM.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, "100.64.0.5"},
		{"v6.ockam.", dnsmessage.TypeAAAA, dnsmessage.RCodeSuccess, "fd7a:6f63:6b6d::5"},
		{"v6.ockam.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, ""},
		{"api.ockam.", dnsmessage.TypeMX, dnsmessage.RCodeSuccess, ""},
		{"other.ockam.", dnsmessage.TypeA, dnsmessage.RCodeNameError, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name+"/"+tt.typ.String(), func(t *testing.T) {
			resp, ok := answerDNS(nil, query(t, 77, tt.name, tt.typ), testLookup)
			if !ok {
				t.Fatal("no answer")
			}
			var m dnsmessage.Message
			if err := m.Unpack(resp); err != nil {
				t.Fatal(err)
			}
			if m.ID != 77 || !m.Response || m.RCode != tt.rcode || len(m.Questions) != 1 {
				t.Fatalf("header = %+v, want id 77 response rcode %v", m.Header, tt.rcode)
			}
			got := ""
			for _, a := range m.Answers {
				switch r := a.Body.(type) {
				case *dnsmessage.AResource:
					got = netip.AddrFrom4(r.A).String()
				case *dnsmessage.AAAAResource:
					got = netip.AddrFrom16(r.AAAA).String()
				}
			}
			if got != tt.want {
				t.Errorf("answer = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestAnswerDNSRejects(t *testing.T) {
	q := query(t, 1, "api.ockam.", dnsmessage.TypeA)
	// Strict prefixes of a query never get a successful answer.
	for i := range q {
		resp, ok := answerDNS(nil, q[:i], testLookup)
		if !ok {
			continue
		}
		var m dnsmessage.Message
		if err := m.Unpack(resp); err != nil {
			t.Fatalf("prefix %d: unparsable reply: %v", i, err)
		}
		if m.RCode == dnsmessage.RCodeSuccess {
			t.Errorf("prefix %d of %d answered with success", i, len(q))
		}
	}
	// A response is never answered.
	resp, _ := answerDNS(nil, q, testLookup)
	if _, ok := answerDNS(nil, resp, testLookup); ok {
		t.Error("answered a response")
	}
	// Oversized input is dropped.
	if _, ok := answerDNS(nil, make([]byte, maxDNSQuery+1), testLookup); ok {
		t.Error("answered an oversized query")
	}
}

func FuzzDNS(f *testing.F) {
	f.Add(query(f, 1, "api.ockam.", dnsmessage.TypeA))
	f.Add(query(f, 2, "v6.ockam.", dnsmessage.TypeAAAA))
	f.Add(query(f, 3, "nope.", dnsmessage.TypeTXT))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		resp, ok := answerDNS(nil, b, testLookup)
		if !ok {
			return
		}
		var m dnsmessage.Message
		if err := m.Unpack(resp); err != nil {
			t.Fatalf("reply does not parse: %v", err)
		}
		if !m.Response {
			t.Fatal("reply without response bit")
		}
		if len(resp) > 512 {
			t.Fatalf("reply of %d bytes exceeds 512", len(resp))
		}
	})
}
