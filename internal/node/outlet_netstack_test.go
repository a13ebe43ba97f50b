package node

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

func TestVirtualSource(t *testing.T) {
	last := lastAddr(OutletPrefix)
	seen := map[netip.Addr]string{}
	for i := range 2000 {
		id := fmt.Sprintf("I%064x", i)
		a := VirtualSource(id, false)
		if !OutletPrefix.Contains(a) || a == OutletPrefix.Addr() || a == OutletPrefix.Addr().Next() || a == last {
			t.Fatalf("VirtualSource(%s) = %s: outside %s or reserved", id, a, OutletPrefix)
		}
		if b := VirtualSource(id, false); b != a {
			t.Fatalf("VirtualSource(%s) = %s, then %s", id, a, b)
		}
		a6 := VirtualSource(id, true)
		if !OutletPrefix6.Contains(a6) || a6 == OutletPrefix6.Addr() || a6 == OutletPrefix6.Addr().Next() {
			t.Fatalf("VirtualSource(%s, ipv6) = %s: outside %s or reserved", id, a6, OutletPrefix6)
		}
		if seen[a6] != "" {
			t.Fatalf("%s and %s share %s", seen[a6], id, a6)
		}
		seen[a6] = id
	}
	// Known answer: the derivation is documented (docs/TUN.md) and must not
	// change, or every server log would renumber its clients.
	id := "I" + strings.Repeat("0", 64)
	// (Computed independently: python3 hashlib, 198.18.0.0 + 2 + h mod (2^17-3).)
	for _, tc := range []struct {
		ipv6 bool
		want string
	}{{false, "198.18.123.62"}, {true, "fd7a:6f63:6b6f:0:9472:ac08:f285:175b"}} {
		if got := VirtualSource(id, tc.ipv6); got != netip.MustParseAddr(tc.want) {
			t.Errorf("VirtualSource(%s, %v) = %s, want %s", id, tc.ipv6, got, tc.want)
		}
	}
	if tun := netip.MustParsePrefix("100.64.0.0/10"); tun.Overlaps(OutletPrefix) {
		t.Errorf("OutletPrefix %s overlaps the client side's %s", OutletPrefix, tun)
	}
}

func TestOutletRanges(t *testing.T) {
	r4, r6, err := outletRanges("10.200.0.0/16", "fd00:1:2::/48")
	if err != nil || r4.String() != "10.200.0.0/16" || r6.String() != "fd00:1:2::/48" {
		t.Fatalf("outletRanges = %s, %s, %v", r4, r6, err)
	}
	for i := range 500 {
		id := fmt.Sprintf("I%064x", i)
		if a := virtualSource(id, r4); !r4.Contains(a) || a == r4.Addr() || a == r4.Addr().Next() || a == lastAddr(r4) {
			t.Fatalf("virtualSource in %s = %s", r4, a)
		}
		if a := virtualSource(id, r6); !r6.Contains(a) {
			t.Fatalf("virtualSource in %s = %s", r6, a)
		}
	}
	for _, tc := range []struct{ p4, p6, err string }{
		{"10.0.0.0/31", "", "from /8 to /30"},
		{"fd00::/48", "", "want an IPv4 range"},
		{"", "10.0.0.0/8", "want an IPv6 range"},
		{"", "fd00::/96", "from /16 to /64"},
		{"100.64.0.0/16", "", "overlap the client side"},
	} {
		if _, _, err := outletRanges(tc.p4, tc.p6); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("outletRanges(%q, %q) = %v, want %q", tc.p4, tc.p6, err, tc.err)
		}
	}
}

func TestResolveTarget(t *testing.T) {
	for _, tc := range []struct{ target, want, err string }{
		{"127.0.0.1:5000", "127.0.0.1:5000", ""},
		{"[::ffff:10.0.0.1]:80", "10.0.0.1:80", ""},
		{"[fd00::2]:80", "[fd00::2]:80", ""},
		{"[::1]:80", "", "cannot be reached from an interface"},
		{"127.0.0.1", "", "missing port"},
		{"127.0.0.1:0", "", "bad port"},
		{"127.0.0.1:70000", "", "bad port"},
	} {
		got, err := resolveTarget(context.Background(), tc.target)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("resolveTarget(%q) = %v, %v; want an error with %q", tc.target, got, err, tc.err)
			}
			continue
		}
		if err != nil || got.String() != tc.want {
			t.Errorf("resolveTarget(%q) = %v, %v; want %s", tc.target, got, err, tc.want)
		}
	}
}
