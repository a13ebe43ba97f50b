package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics of a node, for Prometheus. They are read from the node's own
// counters and from the control API's views at each scrape: nothing is
// counted twice and nothing runs between scrapes.
//
// Counters (_total) only grow. What is summed over things that come and go
// (bytes of open connections, messages of open channels) is a gauge.

// metricsCollector is the node's prometheus.Collector.
type metricsCollector struct{ d *Daemon }

var (
	mInfo        = prometheus.NewDesc("ockam_node_info", "The node, with its name and identifier.", []string{"node", "identifier"}, nil)
	mConns       = prometheus.NewDesc("ockam_node_connections", "TCP connections to other nodes that are open.", nil, nil)
	mConnBytes   = prometheus.NewDesc("ockam_node_connection_bytes", "Bytes carried by the open connections.", []string{"direction"}, nil)
	mSlowDrops   = prometheus.NewDesc("ockam_node_connection_dropped_messages", "Messages the open connections dropped because their peer did not read fast enough.", nil, nil)
	mDropped     = prometheus.NewDesc("ockam_node_messages_dropped_total", "Messages that had nowhere to go (no worker, a full queue, an empty route).", nil, nil)
	mRefused     = prometheus.NewDesc("ockam_node_messages_refused_total", "Messages the router's reachability rules turned away.", nil, nil)
	mHosted      = prometheus.NewDesc("ockam_relay_hosted_names", "Relay names registered at this node's forwarding service.", nil, nil)
	mRegistered  = prometheus.NewDesc("ockam_relay_registrations", "Relay names this node keeps registered elsewhere, by state.", []string{"state"}, nil)
	mChannels    = prometheus.NewDesc("ockam_secure_channels", "Secure channels, by role and state.", []string{"role", "state"}, nil)
	mChanMsgs    = prometheus.NewDesc("ockam_secure_channel_messages", "Messages of the open secure channels: sent, received, and rejected (failed to decrypt or replayed).", []string{"direction"}, nil)
	mChanEpochs  = prometheus.NewDesc("ockam_secure_channel_sessions", "Handshakes completed by the open secure channels (one per session, rekeys and restarts included).", nil, nil)
	mFlowsOpen   = prometheus.NewDesc("ockam_portal_flows", "TCP connections carried by portals now, by kind.", []string{"kind"}, nil)
	mFlowsAll    = prometheus.NewDesc("ockam_portal_flows_started", "TCP connections the portals that exist have carried since they were created, by kind.", []string{"kind"}, nil)
	mFlowBytes   = prometheus.NewDesc("ockam_portal_flow_bytes", "Bytes of the open flows, by kind and direction.", []string{"kind", "direction"}, nil)
	mPortals     = prometheus.NewDesc("ockam_portals", "Inlets and outlets, by kind.", []string{"kind"}, nil)
	mErrReplies  = prometheus.NewDesc("ockam_node_error_replies_total", "Error replies to remote senders whose message named an address this node could not give it to: sent, or not sent because the sender had used up its share.", []string{"result"}, nil)
	mChanBytes   = prometheus.NewDesc("ockam_secure_channel_bytes", "Bytes (ciphertext) of the open secure channels, by direction.", []string{"direction"}, nil)
	mHsFailures  = prometheus.NewDesc("ockam_secure_channel_handshake_failures_total", "Secure channel handshakes that failed, either side, by reason (timeout, unreachable, refused, untrusted, malformed, shed).", []string{"reason"}, nil)
	mStalls      = prometheus.NewDesc("ockam_portal_window_stalls_total", "Times a flow had data to send and no credit: it waited for the peer's window.", nil, nil)
	mResumes     = prometheus.NewDesc("ockam_portal_flow_resumes_total", "Flow suspensions (their path failed, or a relay dropped some of their messages) and resumes, by event.", []string{"event"}, nil)
	mLaneMoves   = prometheus.NewDesc("ockam_portal_flow_lane_moves_total", "Bulk flows that moved off the shared lane 0 to a lane of their own.", nil, nil)
	mWinBudget   = prometheus.NewDesc("ockam_portal_window_budget_bytes", "Receive-window growth the flows hold now (used) out of the node's budget (limit, --window-budget-mib).", []string{"state"}, nil)
	mTunPackets  = prometheus.NewDesc("ockam_tun_packets", "Packets the TUN interface's netstack read from the device (in) and wrote to it (out), since the interface was created.", []string{"direction"}, nil)
	mTunAcks     = prometheus.NewDesc("ockam_tun_acks_carried", "Pure TCP ACKs the TUN netstack did not write because the connection's next data packet carried them, since the interface was created.", nil, nil)
	allNodeDescs = []*prometheus.Desc{mTunPackets, mTunAcks, mInfo, mConns, mConnBytes, mSlowDrops, mDropped, mRefused, mHosted, mRegistered, mChannels, mChanMsgs, mChanEpochs, mFlowsOpen, mFlowsAll, mFlowBytes, mPortals, mErrReplies, mChanBytes, mHsFailures, mStalls, mResumes, mLaneMoves, mWinBudget}
)

func (c metricsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allNodeDescs {
		ch <- d
	}
}

func (c metricsCollector) Collect(ch chan<- prometheus.Metric) {
	d := c.d
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	g := func(desc *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, v, labels...)
	}
	cnt := func(desc *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(v), labels...)
	}
	g(mInfo, 1, d.cfg.Name, d.me.Identifier().String())
	ls := d.node.LinkStats()
	g(mConns, float64(ls.Conns))
	g(mConnBytes, float64(ls.BytesIn), "in")
	g(mConnBytes, float64(ls.BytesOut), "out")
	g(mSlowDrops, float64(ls.Dropped))
	cnt(mDropped, d.node.Dropped.Load())
	cnt(mRefused, d.node.Refused.Load())
	cnt(mErrReplies, d.node.ErrorReplies.Load(), "sent")
	cnt(mErrReplies, d.node.ErrorRepliesLimited.Load(), "limited")
	if d.sc != nil {
		for reason, n := range d.sc.HandshakeFailures() {
			cnt(mHsFailures, n, reason)
		}
	}
	if d.portals != nil {
		cnt(mStalls, d.portals.Stalls.Load())
		sus, res := d.portals.Resumes()
		cnt(mResumes, sus, "suspended")
		cnt(mResumes, res, "resumed")
		cnt(mLaneMoves, d.portals.LaneMoves.Load())
	}
	if st, ok := d.tunStats(); ok {
		g(mTunPackets, float64(st.PacketsIn), "in")
		g(mTunPackets, float64(st.PacketsOut), "out")
		g(mTunAcks, float64(st.AcksCarried))
	}

	if r, err := d.Relays(ctx); err == nil {
		g(mHosted, float64(len(r.Hosted)))
		var up, down int
		for _, x := range r.Registered {
			if x.Connected {
				up++
			} else {
				down++
			}
		}
		g(mRegistered, float64(up), "up")
		g(mRegistered, float64(down), "down")
	}
	if chans, err := d.Channels(ctx); err == nil {
		type key struct{ role, state string }
		by := map[key]int{}
		var sent, recv, rej, epochs, bin, bout uint64
		for _, c := range chans {
			by[key{c.Role, c.State}]++
			bin += c.BytesIn
			bout += c.BytesOut
			sent += c.Sent
			recv += c.Received
			rej += c.Rejected
			epochs += c.Epoch
		}
		for k, n := range by {
			g(mChannels, float64(n), k.role, k.state)
		}
		g(mChanMsgs, float64(sent), "sent")
		g(mChanMsgs, float64(recv), "received")
		g(mChanMsgs, float64(rej), "rejected")
		g(mChanEpochs, float64(epochs))
		g(mChanBytes, float64(bin), "in")
		g(mChanBytes, float64(bout), "out")
	}
	if d.portals != nil {
		used, limit := d.portals.WindowBudget()
		g(mWinBudget, float64(used), "used")
		g(mWinBudget, float64(limit), "limit")
	}
	for _, kind := range []string{"inlet", "outlet"} {
		ps, err := d.Inlets(ctx)
		if kind == "outlet" {
			ps, err = d.Outlets(ctx)
		}
		if err != nil {
			continue
		}
		var open, all int
		var in, out uint64
		for _, p := range ps {
			open += len(p.Flows)
			all += int(p.Total)
			for _, f := range p.Flows {
				in += f.BytesIn
				out += f.BytesOut
			}
		}
		g(mPortals, float64(len(ps)), kind)
		g(mFlowsOpen, float64(open), kind)
		g(mFlowsAll, float64(all), kind)
		g(mFlowBytes, float64(in), kind, "in")
		g(mFlowBytes, float64(out), kind, "out")
	}
}

// metricsHandler serves the node's metrics, with the Go runtime's and the
// process's.
func (d *Daemon) metricsHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(metricsCollector{d},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError, MaxRequestsInFlight: 4, Timeout: 10 * time.Second})
}

// serveMetrics serves /metrics (and /healthz) on a TCP address of its own,
// for a Prometheus that cannot reach the control socket. Bind it to
// loopback or a private network: it tells what the node carries, in counts.
func (d *Daemon) serveMetrics(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--metrics-listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", d.metricsHandler())
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	d.metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	d.metricsAddr = ln.Addr()
	go func() {
		if err := d.metricsSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.log.Warn("metrics listener stopped", "err", err.Error())
		}
	}()
	d.log.Info("metrics listening", "tcp", ln.Addr().String())
	return nil
}

// MetricsAddr returns the address of the metrics listener, or nil.
func (d *Daemon) MetricsAddr() net.Addr { return d.metricsAddr }

func (d *Daemon) stopMetrics() {
	if d.metricsSrv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		d.metricsSrv.Shutdown(ctx)
		cancel()
	}
}
