package cli

import (
	"bytes"
	"testing"
)

func TestLogLineHuman(t *testing.T) {
	var out bytes.Buffer
	e := &env{stdout: &out, tty: true}
	e.logLine([]byte(`{"time":"2026-01-02T03:04:05.5Z","level":"WARN","msg":"secure channel down","node":"a","node":"a","reason":"closed by peer","channel":"ab"}` + "\n"))
	got := out.String()
	for _, want := range []string{"WARN  secure channel down", `channel=ab`, `reason="closed by peer"`} {
		if !bytes.Contains([]byte(got), []byte(want)) {
			t.Errorf("%q lacks %q", got, want)
		}
	}
	if bytes.Contains([]byte(got), []byte("node=")) || bytes.Count([]byte(got), []byte("\n")) != 1 {
		t.Errorf("%q", got)
	}
	out.Reset()
	e.tty = false
	raw := `{"msg":"x"}`
	e.logLine([]byte(raw + "\n"))
	if out.String() != raw+"\n" {
		t.Errorf("in a pipe: %q", out.String())
	}
	out.Reset()
	e.tty = true
	e.logLine([]byte("not json\n"))
	if out.String() != "not json\n" {
		t.Errorf("a line that is not JSON: %q", out.String())
	}
}
