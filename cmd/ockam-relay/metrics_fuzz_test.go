package main

import (
	"bufio"
	"bytes"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ockam-go/ockam/internal/router"
	"github.com/ockam-go/ockam/relay"
)

// FuzzMetricsRequest: whatever a client sends to --metrics-listen, the
// relay answers at most one well-formed HTTP response, or nothing.
func FuzzMetricsRequest(f *testing.F) {
	n := router.New(router.Config{})
	defer n.Close()
	svc, err := relay.NewService(n, relay.Config{})
	if err != nil {
		f.Fatal(err)
	}
	defer svc.Close()
	m := &metricsServer{n: n, svc: svc, log: slog.New(slog.DiscardHandler), start: time.Now()}
	for _, s := range []string{
		"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
		"HEAD /healthz HTTP/1.0\r\n\r\n",
		"POST / HTTP/1.1\r\n\r\n",
		"GET /metrics?x=1 HTTP/1.1\r\n\r\n",
		"GET\r\n\r\n",
		"\x00\x01\x02",
		"GET / HTTP/1.1\r\n" + strings.Repeat("a", 9000),
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, req []byte) {
		var out bytes.Buffer
		m.answer(bytes.NewReader(req), &out)
		if out.Len() == 0 {
			return
		}
		resp, err := http.ReadResponse(bufio.NewReader(&out), nil)
		if err != nil {
			t.Fatalf("not an HTTP response for %q: %v\n%s", req, err, out.String())
		}
		resp.Body.Close()
	})
}
