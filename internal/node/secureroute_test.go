package node

import "testing"

func TestSplitSecure(t *testing.T) {
	for _, tc := range []struct {
		in, before, name, after string
		ok                      bool
	}{
		{"/node/n1/secure/api/service/echo", "/node/n1", "api", "/service/echo", true},
		{"/secure/api/service/echo", "", "api", "/service/echo", true},
		{"/node/r/service/forward_to_n1/secure/api", "/node/r/service/forward_to_n1", "api", "", true},
		{"/service/secure/service/echo", "", "", "", false}, // a service named secure
		{"/ip4/127.0.0.1/tcp/4000/secure/api/service/x", "/ip4/127.0.0.1/tcp/4000", "api", "/service/x", true},
		{"/node/n1/secure/", "", "", "", false},
		{"/node/n1", "", "", "", false},
		{"node/n1/secure/api", "", "", "", false},
	} {
		before, name, after, ok := splitSecure(tc.in)
		if ok != tc.ok || ok && (before != tc.before || name != tc.name || after != tc.after) {
			t.Errorf("splitSecure(%q) = %q %q %q %v, want %q %q %q %v", tc.in, before, name, after, ok, tc.before, tc.name, tc.after, tc.ok)
		}
	}
}

func FuzzSplitSecure(f *testing.F) {
	f.Add("/node/n1/secure/api/service/echo")
	f.Add("/secure/a/secure/b")
	f.Fuzz(func(t *testing.T, s string) {
		before, name, after, ok := splitSecure(s)
		if ok && before+"/secure/"+name+after != s {
			t.Fatalf("%q split into %q %q %q", s, before, name, after)
		}
	})
}
