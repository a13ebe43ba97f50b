package main

// The relay's /metrics and /healthz, without net/http: net/http links
// crypto/tls, and with it AES-GCM, X25519 and HKDF, every primitive our
// secure channels use, which the relay must not link (main_test.go). So
// the relay writes the Prometheus text format itself (version 0.0.4: a
// handful of counters and gauges need nothing more) and answers one
// HTTP/1.0-style GET per connection. The node's metrics use client_golang;
// the names here are the same for what both have. A test parses this
// output with Prometheus' own text parser.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/ockam-go/ockam/internal/router"
	"github.com/ockam-go/ockam/relay"
)

// MaxMetricsRequest bounds the request a metrics client may send.
const MaxMetricsRequest = 8 << 10

// metricsConns bounds the metrics connections served at once.
const metricsConns = 8

type metricsServer struct {
	ln    net.Listener
	n     *router.Node
	svc   *relay.Service
	log   *slog.Logger
	start time.Time
	slots chan struct{}
	wg    sync.WaitGroup
}

func serveMetrics(addr string, n *router.Node, svc *relay.Service, log *slog.Logger) (*metricsServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-listen %s: %w", addr, err)
	}
	m := &metricsServer{ln: ln, n: n, svc: svc, log: log, start: time.Now(), slots: make(chan struct{}, metricsConns)}
	m.wg.Add(1)
	go m.accept()
	log.Info("metrics listening", "tcp", ln.Addr().String())
	return m, nil
}

func (m *metricsServer) Close() {
	m.ln.Close()
	m.wg.Wait()
}

func (m *metricsServer) accept() {
	defer m.wg.Done()
	for {
		c, err := m.ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				m.log.Warn("metrics listener stopped", "err", err.Error())
			}
			return
		}
		select {
		case m.slots <- struct{}{}:
		default:
			c.Close()
			continue
		}
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			defer func() { <-m.slots }()
			defer c.Close()
			m.serve(c)
		}()
	}
}

// serve answers one request: GET /metrics, GET /healthz, else 404.
func (m *metricsServer) serve(c net.Conn) {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	m.answer(c, c)
}

// answer reads one request from in (at most MaxMetricsRequest bytes) and
// writes the response to out.
func (m *metricsServer) answer(in io.Reader, c io.Writer) {
	r := bufio.NewReaderSize(io.LimitReader(in, MaxMetricsRequest), 1024)
	line, err := r.ReadString('\n')
	if err != nil {
		return
	}
	// Read the headers to their end so the client sees a clean close.
	for {
		h, err := r.ReadString('\n')
		if err != nil {
			return
		}
		if strings.TrimRight(h, "\r\n") == "" {
			break
		}
	}
	f := strings.Fields(line)
	if len(f) != 3 || !strings.HasPrefix(f[2], "HTTP/1.") {
		respond(c, "400 Bad Request", "text/plain", []byte("bad request\n"), false)
		return
	}
	head := f[0] == "HEAD"
	if f[0] != "GET" && !head {
		respond(c, "405 Method Not Allowed", "text/plain", []byte("GET only\n"), head)
		return
	}
	path, _, _ := strings.Cut(f[1], "?")
	switch path {
	case "/metrics":
		respond(c, "200 OK", "text/plain; version=0.0.4; charset=utf-8", m.exposition(), head)
	case "/healthz", "/health":
		respond(c, "200 OK", "text/plain", []byte("ok\n"), head)
	default:
		respond(c, "404 Not Found", "text/plain", []byte("try /metrics or /healthz\n"), head)
	}
}

func respond(w io.Writer, status, ctype string, body []byte, head bool) {
	fmt.Fprintf(w, "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n", status, ctype, len(body))
	if !head {
		w.Write(body)
	}
}

// exposition writes the relay's metrics in the Prometheus text format.
func (m *metricsServer) exposition() []byte {
	var b bytes.Buffer
	metric := func(name, typ, help string, samples ...sample) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
		for _, s := range samples {
			fmt.Fprintf(&b, "%s%s %v\n", name, s.labels, s.v)
		}
	}
	ls := m.n.LinkStats()
	metric("ockam_relay_up", "gauge", "1 while the relay runs.", sample{"", 1})
	metric("ockam_relay_start_time_seconds", "gauge", "When the relay started, in seconds since the epoch.", sample{"", float64(m.start.Unix())})
	metric("ockam_node_connections", "gauge", "TCP connections to other nodes that are open.", sample{"", float64(ls.Conns)})
	metric("ockam_node_connection_bytes", "gauge", "Bytes carried by the open connections.",
		sample{`{direction="in"}`, float64(ls.BytesIn)}, sample{`{direction="out"}`, float64(ls.BytesOut)})
	metric("ockam_node_connection_dropped_messages", "gauge", "Messages the open connections dropped because their peer did not read fast enough.", sample{"", float64(ls.Dropped)})
	metric("ockam_node_messages_dropped_total", "counter", "Messages that had nowhere to go (no worker, a full queue, an empty route).", sample{"", float64(m.n.Dropped.Load())})
	metric("ockam_node_messages_refused_total", "counter", "Messages the router's reachability rules turned away.", sample{"", float64(m.n.Refused.Load())})
	metric("ockam_node_error_replies_total", "counter", "Error replies to senders whose message named an address the relay could not give it to (a name nobody holds): sent, or not sent because the sender had used up its share.",
		sample{`{result="sent"}`, float64(m.n.ErrorReplies.Load())}, sample{`{result="limited"}`, float64(m.n.ErrorRepliesLimited.Load())})
	metric("ockam_relay_hosted_names", "gauge", "Relay names registered at this relay.", sample{"", float64(len(m.svc.List()))})
	return b.Bytes()
}

type sample struct {
	labels string
	v      float64
}
