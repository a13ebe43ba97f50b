package wire_test

import (
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/ockam-go/ockam/internal/wire"
)

// section returns the text of docs/PROTOCOL.md from the heading that starts
// with head to the next heading of any level.
func section(t *testing.T, head string) string {
	t.Helper()
	b, err := os.ReadFile("../../docs/PROTOCOL.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i := strings.Index(s, "\n"+head)
	if i < 0 {
		t.Fatalf("docs/PROTOCOL.md has no %q", head)
	}
	s = s[i+1+len(head):]
	if j := strings.Index(s, "\n#"); j >= 0 {
		s = s[:j]
	}
	return s
}

// TestProtocolMessageTable holds the message table of docs/PROTOCOL.md
// (section 4.2, Messages) to wire.Types: one row per type, in order, with
// its number and name.
func TestProtocolMessageTable(t *testing.T) {
	t.Parallel()
	row := regexp.MustCompile(`(?m)^\| *(\d+) *\| *(\w+) *\|`)
	rows := row.FindAllStringSubmatch(section(t, "### Messages"), -1)
	if len(rows) != len(wire.Types) {
		t.Fatalf("docs list %d message types, package wire %d", len(rows), len(wire.Types))
	}
	for i, typ := range wire.Types {
		n, _ := strconv.Atoi(rows[i][1])
		want := strings.ReplaceAll(typ.String(), "-channel", "")
		if n != int(typ) || !strings.EqualFold(rows[i][2], want) {
			t.Errorf("row %d: docs say %s = %s, package wire %s = %d", i, rows[i][2], rows[i][1], typ, uint8(typ))
		}
	}
}

// TestProtocolSizes holds the Sizes table of docs/PROTOCOL.md to the
// constants of package wire, both ways: every documented constant has the
// documented value and every constant is documented.
func TestProtocolSizes(t *testing.T) {
	t.Parallel()
	want := map[string]int{
		"ProtocolVersion": wire.ProtocolVersion,
		"KeyLen":          wire.KeyLen,
		"NonceLen":        wire.NonceLen,
		"HeaderLen":       wire.HeaderLen,
		"TagLen":          wire.TagLen,
		"Overhead":        wire.Overhead,
		"MaxPayload":      wire.MaxPayload,
		"MaxMessage":      wire.MaxMessage,
		"Handshake1Len":   wire.Handshake1Len,
		"UnknownLen":      wire.UnknownLen,
		"MaxRefusal":      wire.MaxRefusal,
		"MaxRelayRequest": wire.MaxRelayRequest,
		"ChallengeLen":    wire.ChallengeLen,
	}
	row := regexp.MustCompile("(?m)^\\| *`(\\w+)` *\\| *(\\d+) *\\|")
	got := map[string]int{}
	for _, m := range row.FindAllStringSubmatch(section(t, "### Sizes"), -1) {
		got[m[1]], _ = strconv.Atoi(m[2])
	}
	for k, v := range want {
		g, ok := got[k]
		switch {
		case !ok:
			t.Errorf("docs/PROTOCOL.md Sizes lacks %s (%d)", k, v)
		case g != v:
			t.Errorf("docs say %s = %d, package wire %d", k, g, v)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("docs list %s, which this test (and package wire) does not know", k)
		}
	}
}

// TestTypesDistinct: no two types share a byte, and Types is in order.
func TestTypesDistinct(t *testing.T) {
	t.Parallel()
	for i := 1; i < len(wire.Types); i++ {
		if wire.Types[i] <= wire.Types[i-1] {
			t.Fatalf("Types not strictly increasing at %d: %v", i, wire.Types)
		}
	}
}

// TestLeaf: the package stays free of crypto and of the module's other
// packages, so that the relay can import it and link no decryption code.
func TestLeaf(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("wire.go")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "import \"fmt\"\n") {
		t.Fatal("package wire imports more than fmt")
	}
}
