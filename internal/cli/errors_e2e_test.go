package cli_test

import (
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"
)

// fastError runs a command that must fail within a few seconds although
// its --timeout is 10 s, with one error line holding want.
func fastError(t *testing.T, e *env, want string, args ...string) string {
	t.Helper()
	start := time.Now()
	r := e.run(append(args, "--timeout", "10")...)
	d := time.Since(start)
	oneLine(t, r, want)
	t.Logf("%v: %v: %s", args, d.Round(time.Millisecond), strings.TrimSpace(r.stderr))
	if d > 4*time.Second {
		t.Fatalf("%v took %v with --timeout 10: it waited for a timeout instead of the error reply", args, d)
	}
	return strings.TrimSpace(r.stderr)
}

// TestUnknownHopsAnswerAtOnce: a service missing anywhere on a route, directly,
// through a relay, through the hop service and through a secure channel,
// comes back as an error naming it, in well under the timeout; a hidden
// (refused) service reads exactly as a missing one; channels and inlets
// aimed at such routes say what is wrong.
func TestUnknownHopsAnswerAtOnce(t *testing.T) {
	e := newEnv(t)
	e.must("node", "create")
	e.must("node", "create", "n1")
	e.must("node", "create", "relay")
	e.must("relay", "create", "n1", "--at", "/node/relay", "--to", "/node/n1")
	target := tcpServer(t, func(c net.Conn) {})
	e.must("tcp-outlet", "create", "--at", "/node/n1", "--from", "/service/outlet", "--to", target)

	missing := fastError(t, e, "no /service/nope on the route /node/n1/service/nope", "message", "send", "hello", "--to", "/node/n1/service/nope")
	// The outlet is there but takes flows only out of a channel: a plain
	// TCP sender is told exactly what it is told for a missing service.
	hidden := fastError(t, e, "/service/outlet", "message", "send", "hello", "--to", "/node/n1/service/outlet")
	if strings.ReplaceAll(hidden, "outlet", "nope") != missing {
		t.Fatalf("a refused service reads differently from a missing one:\n%s\n%s", hidden, missing)
	}
	fastError(t, e, "no /service/nope on the route", "message", "send", "hello", "--to", "/node/n1/service/hop/service/nope")
	fastError(t, e, "no /service/nope on the route", "message", "send", "hello", "--to", "/node/relay/service/forward_to_n1/service/nope")
	fastError(t, e, "no /service/forward_to_nobody on the route", "message", "send", "hello", "--to", "/node/relay/service/forward_to_nobody/service/echo")

	ch := e.must("secure-channel", "create", "--to", "/node/relay/service/forward_to_n1/service/api")
	fastError(t, e, "no /service/nope on the route "+ch+"/service/nope", "message", "send", "hello", "--to", ch+"/service/nope")
	if got := e.must("message", "send", "still up", "--to", ch+"/service/echo"); got != "still up" {
		t.Fatalf("the channel after an error reply: %q", got)
	}

	// Ockam's /secure/NAME segment: a channel to the listener NAME at the
	// end of the route before it, reused if this node has one up, made for
	// the message (and closed after it) if not.
	channels := func() int {
		var l []any
		if err := json.Unmarshal([]byte(e.must("secure-channel", "list", "--output", "json")), &l); err != nil {
			t.Fatal(err)
		}
		return len(l)
	}
	before := channels()
	fastError(t, e, "no /service/nope on the route /node/n1/secure/api/service/nope", "message", "send", "hello", "--to", "/node/n1/secure/api/service/nope")
	for _, to := range []string{"/node/n1/secure/api/service/echo", "/node/relay/service/forward_to_n1/secure/api/service/uppercase"} {
		if got := e.must("message", "send", "hi", "--to", to); got != "hi" && got != "HI" {
			t.Fatalf("message send --to %s: %q", to, got)
		}
	}
	if n := channels(); n != before {
		t.Fatalf("%d secure channels after /secure/ routes, want %d (made ones closed, the existing one reused)", n, before)
	}
	fastError(t, e, "has no /service/nope", "message", "send", "hello", "--to", "/node/n1/secure/nope/service/echo")

	// A channel aimed at a service that is not a listener.
	fastError(t, e, "not a secure channel listener", "secure-channel", "create", "--to", "/node/n1/service/forwarding_service")

	// A channel aimed at a missing listener, directly and through the relay.
	fastError(t, e, "has no /service/nope", "secure-channel", "create", "--to", "/node/n1/service/nope")
	fastError(t, e, "has no /service/nope", "secure-channel", "create", "--to", "/node/relay/service/forward_to_n1/service/nope")

	// Inlets: a missing outlet, and a route that ends at something else.
	oneLine(t, e.run("tcp-inlet", "create", "--to", ch+"/service/nope"), "no /service/nope on that route")
	oneLine(t, e.run("tcp-inlet", "create", "--to", ch+"/service/echo"), "not a tcp outlet")
	if list := e.must("tcp-inlet", "list"); strings.Count(list, "\n") != 0 {
		t.Fatalf("a refused inlet was created:\n%s", list)
	}
	e.must("tcp-inlet", "create", "--to", ch+"/service/outlet")
	if show := e.must("tcp-outlet", "show", "outlet", "--at", "/node/n1"); strings.Contains(show, "expected an open") {
		t.Fatalf("the inlet's route check shows as a refused flow at the outlet:\n%s", show)
	}
}
