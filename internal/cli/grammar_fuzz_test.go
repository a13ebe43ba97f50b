package cli

import (
	"strings"
	"testing"
)

// FuzzParseSeconds: --timeout never panics and never yields a value
// outside (0, MaxTimeout].
func FuzzParseSeconds(f *testing.F) {
	for _, s := range []string{"5", "1.5", "5s", "300ms", "0", "-1", "NaN", "Inf", "1e309", "5m1s", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := parseSeconds(s)
		if err == nil && (d <= 0 || d > MaxTimeout) {
			t.Fatalf("parseSeconds(%q) = %v", s, d)
		}
	})
}

// FuzzSubstitute: any arguments and any standard input give arguments
// back or an error, and "-" segments are gone from what comes back.
func FuzzSubstitute(f *testing.F) {
	f.Add("-/service/outlet", "/service/abc\n")
	f.Add("/node/a/-/service/x", "/service/abc/\n")
	f.Add("/-", "")
	f.Add("a-b", "x")
	f.Fuzz(func(t *testing.T, arg, stdin string) {
		e := &env{stdin: strings.NewReader(stdin)}
		out, err := e.substitute([]string{"--to", arg})
		if err != nil {
			return
		}
		if len(out) != 2 {
			t.Fatalf("%d arguments back", len(out))
		}
		if (strings.HasPrefix(arg, "-/") || strings.HasPrefix(arg, "/")) && hasDashSegment(arg) && hasDashSegment(out[1]) && !hasDashSegment(e.line) {
			t.Fatalf("substitute(%q) with %q = %q", arg, stdin, out[1])
		}
	})
}
