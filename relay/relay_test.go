package relay_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/fxamacker/cbor/v2"

	"github.com/ockam-go/ockam/internal/identity"
	"github.com/ockam-go/ockam/internal/router"
	"github.com/ockam-go/ockam/internal/routing"
	"github.com/ockam-go/ockam/relay"
)

func newNode(t *testing.T, listen string) (*router.Node, string) {
	t.Helper()
	n := router.New(router.Config{})
	t.Cleanup(func() { n.Close() })
	if listen == "" {
		return n, ""
	}
	a, err := n.Listen(listen)
	if err != nil {
		t.Fatal(err)
	}
	return n, a.String()
}

func newID(t *testing.T) *identity.Secret {
	t.Helper()
	id, err := identity.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestRegistrationNeedsChallengeAndSignature(t *testing.T) {
	rn, raddr := newNode(t, "127.0.0.1:0")
	svc, _ := relay.NewService(rn, relay.Config{})
	defer svc.Close()
	cli, _ := newNode(t, "")
	id := newID(t)
	at := routing.Route{routing.TCPAddr(raddr), routing.LocalAddr(relay.ServiceAddress)}
	ask := func(req relay.Request) relay.Response {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		b, _ := cbor.Marshal(req)
		m, err := cli.Request(ctx, at, b)
		if err != nil {
			t.Fatal(err)
		}
		var resp relay.Response
		if err := cbor.Unmarshal(m.Payload, &resp); err != nil {
			t.Fatal(err)
		}
		return resp
	}
	if r := ask(relay.Request{Op: "register", Name: "x", Identity: id.Identity().Export(), Sig: make([]byte, 64)}); !strings.Contains(r.Error, "without a challenge") {
		t.Fatalf("register without challenge: %+v", r)
	}
	ch := ask(relay.Request{Op: "challenge"}).Challenge
	if r := ask(relay.Request{Op: "register", Name: "x", Identity: id.Identity().Export(), Sig: id.Sign(relay.SignContext, append(ch, "y"...))}); !strings.Contains(r.Error, "signature does not verify") {
		t.Fatalf("signature for another name: %+v", r)
	}
	// A challenge is good once.
	if r := ask(relay.Request{Op: "register", Name: "x", Identity: id.Identity().Export(), Sig: id.Sign(relay.SignContext, append(ch, "x"...))}); !strings.Contains(r.Error, "without a challenge") {
		t.Fatalf("reused challenge: %+v", r)
	}
	ch = ask(relay.Request{Op: "challenge"}).Challenge
	if r := ask(relay.Request{Op: "register", Name: "x", Identity: id.Identity().Export(), Sig: id.Sign(relay.SignContext, append(ch, "x"...))}); r.Error != "" || r.Address != "forward_to_x" {
		t.Fatalf("valid registration: %+v", r)
	}
}

func waitRegistered(t *testing.T, reg *relay.Registration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := reg.WaitReady(ctx); err != nil {
		t.Fatalf("registration: %v", err)
	}
}

func TestForwardThroughRelay(t *testing.T) {
	defer goleak.VerifyNone(t)
	rn, raddr := newNode(t, "127.0.0.1:0")
	svc, err := relay.NewService(rn, relay.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	b, _ := newNode(t, "")
	a, _ := newNode(t, "")

	bID := newID(t)
	reg, err := relay.Register(b, routing.Route{routing.TCPAddr(raddr)}, "b", bID, nil)
	if err != nil {
		t.Fatal(err)
	}
	waitRegistered(t, reg)
	if got := reg.Status().Address; got != "/ip4/127.0.0.1/tcp/"+raddr[strings.LastIndexByte(raddr, ':')+1:]+"/service/forward_to_b" {
		t.Errorf("status address = %q", got)
	}
	if l := svc.List(); len(l) != 1 || l[0].Name != "b" || l[0].Address != "forward_to_b" {
		t.Fatalf("List() = %+v", l)
	}

	route, _ := routing.ParseRoute("/tcp/"+raddr+"/service/forward_to_b/service/echo", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	payload := bytes.Repeat([]byte("x"), 60<<10)
	m, err := a.Request(ctx, route, payload)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(m.Payload, payload) {
		t.Fatalf("echo payload differs: %d bytes", len(m.Payload))
	}
	// The reply came back directly over a's connection to the relay, then
	// from b's echo service: the forwarder is not on the return path.
	if len(m.Return) != 3 || m.Return[2].Value != router.EchoAddress {
		t.Fatalf("reply return route = %v", m.Return)
	}

	if l := svc.List(); l[0].Owner != bID.Identifier().String() {
		t.Fatalf("owner = %s, want b's identifier", l[0].Owner)
	}

	// Another identity cannot take the name while b holds it.
	c, _ := newNode(t, "")
	reg2, _ := relay.Register(c, routing.Route{routing.TCPAddr(raddr)}, "b", newID(t), nil)
	ctx2, cancel2 := context.WithTimeout(context.Background(), 2*time.Second)
	err = reg2.WaitReady(ctx2)
	cancel2()
	reg2.Close()
	if err == nil || !strings.Contains(err.Error(), "is held by identity "+bID.Identifier().String()) {
		t.Fatalf("squatting: err = %v, want 'held by identity'", err)
	}
	// The same identity may take its name over from another connection
	// (a restarted node whose old connection the relay still holds).
	b2, _ := newNode(t, "")
	reg3, _ := relay.Register(b2, routing.Route{routing.TCPAddr(raddr)}, "b", bID, nil)
	waitRegistered(t, reg3)
	if l := svc.List(); len(l) != 1 || l[0].Remote == "" {
		t.Fatalf("List() after takeover = %+v", l)
	}
	m, err = a.Request(ctx, route, []byte("after takeover"))
	if err != nil || string(m.Payload) != "after takeover" {
		t.Fatalf("echo after takeover: %v", err)
	}
	reg3.Close()
	b2.Close()

	// Closing the registrant frees the name.
	reg.Close()
	b.Close()
	deadline := time.Now().Add(5 * time.Second)
	for len(svc.List()) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("name not freed: %+v", svc.List())
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.Close()
	a.Close()
	rn.Close()
}

func TestReRegisterAfterRelayRestart(t *testing.T) {
	defer goleak.VerifyNone(t)

	rn, raddr := newNode(t, "127.0.0.1:0")
	if _, err := relay.NewService(rn, relay.Config{}); err != nil {
		t.Fatal(err)
	}
	b, _ := newNode(t, "")
	a, _ := newNode(t, "")
	reg, _ := relay.RegisterConfig(b, routing.Route{routing.TCPAddr(raddr)}, "b", newID(t), relay.RegistrationConfig{BackoffMin: 50 * time.Millisecond})
	defer reg.Close()
	waitRegistered(t, reg)

	route, _ := routing.ParseRoute("/tcp/"+raddr+"/service/forward_to_b/service/echo", nil)
	send := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := a.Request(ctx, route, []byte("ping"))
		return err
	}
	if err := send(); err != nil {
		t.Fatal(err)
	}

	rn.Close()
	// While the relay is down the registrant retries with backoff: count
	// attempts over a fixed window to prove it is not a hot loop.
	before := reg.Status().Attempts
	downSince := time.Now()
	for time.Since(downSince) < 1500*time.Millisecond {
		time.Sleep(50 * time.Millisecond)
	}
	tries := reg.Status().Attempts - before
	if tries > 8 {
		t.Errorf("%d registration attempts in 1.5s while the relay was down: hot loop", tries)
	}
	if reg.Status().Connected {
		t.Errorf("status says connected while the relay is down")
	}

	rn2 := router.New(router.Config{})
	defer rn2.Close()
	if _, err := rn2.Listen(raddr); err != nil {
		t.Fatal(err)
	}
	if _, err := relay.NewService(rn2, relay.Config{}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for {
		if err := send(); err == nil {
			break
		} else if time.Since(start) > 10*time.Second {
			t.Fatalf("no echo 10s after relay restart: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("messages flow again %v after the relay came back", time.Since(start).Round(time.Millisecond))
}

func TestDecodeRequestLimits(t *testing.T) {
	if _, err := relay.DecodeRequest(make([]byte, relay.MaxRequestSize+1)); err == nil {
		t.Fatal("oversize request accepted")
	}
	if _, err := relay.DecodeRequest([]byte{0xff}); err == nil {
		t.Fatal("garbage accepted")
	}
}

func FuzzDecodeRequest(f *testing.F) {
	f.Add([]byte{0xa2, 0x01, 0x68, 'r', 'e', 'g', 'i', 's', 't', 'e', 'r', 0x02, 0x61, 'b'})
	f.Fuzz(func(t *testing.T, b []byte) {
		relay.DecodeRequest(b)
	})
}

func identityForBench() (*identity.Secret, error) { return identity.Generate(nil) }
