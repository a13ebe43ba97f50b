package api

import (
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestRoutesServed: Handler serves exactly the route table, in its order.
func TestRoutesServed(t *testing.T) {
	t.Parallel()
	h := &handler{mux: http.NewServeMux()}
	h.all(nil)
	if fmt.Sprint(h.routes) != fmt.Sprint(Routes) {
		t.Fatalf("Handler serves\n%v\nthe table says\n%v", h.routes, Routes)
	}
	seen := map[string]bool{}
	for _, r := range Routes {
		k := r.Method + " " + r.Pattern
		if seen[k] {
			t.Errorf("%s twice in the table", k)
		}
		seen[k] = true
	}
}

// docRow is how docs/PROTOCOL.md section 6 lists a route.
func docRow(r Route) string {
	body := "—"
	switch {
	case r.Request != "" && r.Reply != "":
		body = "`" + r.Request + "` → `" + r.Reply + "`"
	case r.Request != "":
		body = "`" + r.Request + "` →"
	case r.Reply != "":
		body = "→ `" + r.Reply + "`"
	}
	return fmt.Sprintf("| `%s /%s%s` | %s | %s |", r.Method, Version, r.Pattern, body, r.Doc)
}

// TestProtocolControlSection holds the route table of docs/PROTOCOL.md
// (section 6) to Routes, row by row. On failure it prints the table to
// paste.
func TestProtocolControlSection(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../../docs/PROTOCOL.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i := strings.Index(s, "\n## 6. Control API")
	if i < 0 {
		t.Fatal("docs/PROTOCOL.md has no section 6. Control API")
	}
	s = s[i+1:]
	if j := strings.Index(s[1:], "\n## "); j >= 0 {
		s = s[:j+1]
	}
	var got []string
	for _, line := range strings.Split(s, "\n") {
		if regexp.MustCompile("^\\| `(GET|POST|DELETE) ").MatchString(line) {
			got = append(got, line)
		}
	}
	var want []string
	for _, r := range Routes {
		want = append(want, docRow(r))
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("docs/PROTOCOL.md section 6 does not match api.Routes; the table should read:\n\n| method and path | request → reply | what |\n|---|---|---|\n%s", strings.Join(want, "\n"))
	}
}

func TestPathArguments(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		arg, want string
	}{
		{"web", "/tcp-inlets/web"},
		{"a/b", "/tcp-inlets/a%2Fb"},
		{"x y", "/tcp-inlets/x%20y"},
	} {
		got, err := GetInlet.path([]string{tc.arg})
		if err != nil || got != tc.want {
			t.Errorf("path(%q) = %q, %v; want %q", tc.arg, got, err, tc.want)
		}
	}
	if _, err := GetInlet.path([]string{""}); err == nil || !strings.Contains(err.Error(), "missing name") {
		t.Errorf("empty argument: %v", err)
	}
	if p, _ := DeleteSocks.path([]string{"127.0.0.1:1080"}); p != "/socks/127.0.0.1:1080" {
		t.Errorf("socks path %q", p)
	}
}
