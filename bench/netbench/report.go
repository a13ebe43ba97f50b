package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"html"
	"math"
	"os"
	"slices"
	"strings"
)

// sample is one line of the samples file written by bench.sh.
type sample struct {
	Path      string           `json:"path"`
	Round     int              `json:"round"`
	Measure   string           `json:"measure"`
	Data      map[string]any   `json:"data,omitempty"`
	Before    map[string]usage `json:"before,omitempty"`
	After     map[string]usage `json:"after,omitempty"`
	Error     string           `json:"error,omitempty"`
	Skipped   string           `json:"skipped,omitempty"`
	Component string           `json:"component,omitempty"`
}

// pathInfo names the paths in display order.
var paths = []struct{ id, label string }{
	{"direct", "direct (relay ns → server, no hop)"},
	{"socat", "socat TCP relay"},
	{"chain", "socat ×3 (client, relay, server: our topology, no crypto)"},
	{"ssh", "ssh -J, aes128-gcm"},
	{"wg", "wireguard-go, relay routes UDP"},
	{"ockam", "ockam inlet → relay → outlet"},
	{"tun", "ockam tun"},
}

var roles = []string{"client", "relay", "server"}

// metric is one column: a value derived from the samples of one measure.
type metric struct {
	id, label, unit string
	higher          bool // higher is better
	prec            int
	get             func(s sample) (float64, bool)
}

func dataField(measure, field string) func(sample) (float64, bool) {
	return func(s sample) (float64, bool) {
		if s.Measure != measure || s.Error != "" || s.Data == nil {
			return 0, false
		}
		v, ok := s.Data[field].(float64)
		return v, ok
	}
}

// cpuPerGB is CPU seconds of the path's processes per GB carried, from the
// single-flow iperf3 run. role "" sums all roles.
func cpuPerGB(role string) func(sample) (float64, bool) { return cpuPer("iperf1", "bytes", 1e9, role) }

// cpuPerMReq is CPU seconds of the path's processes per million HTTP
// requests, from the wrk run. role "" sums all roles.
func cpuPerMReq(role string) func(sample) (float64, bool) {
	return cpuPer("wrk", "requests", 1e6, role)
}

// cpuPer is CPU seconds of role's processes per unit of what the sample
// of measure counts in its data field.
func cpuPer(measure, field string, unit float64, role string) func(sample) (float64, bool) {
	return func(s sample) (float64, bool) {
		if s.Measure != measure || s.Error != "" || s.Before == nil {
			return 0, false
		}
		n, _ := s.Data[field].(float64)
		if n <= 0 {
			return 0, false
		}
		return roleDelta(s, role, func(u usage) float64 { return u.CPUs }) / (n / unit), true
	}
}

// kibPerFlow is the growth of PSS per idle flow, from the run with all the
// idle flows (see idleFallback for paths that could not hold them).
func kibPerFlow(role string) func(sample) (float64, bool) {
	return idleKiB("idle", role)
}

func idleKiB(measure, role string) func(sample) (float64, bool) {
	return func(s sample) (float64, bool) {
		if s.Measure != measure || s.Error != "" || s.Before == nil {
			return 0, false
		}
		n, _ := s.Data["flows"].(float64)
		if n <= 0 {
			return 0, false
		}
		return roleDelta(s, role, func(u usage) float64 { return float64(u.PSSkB) }) / n, true
	}
}

func roleDelta(s sample, role string, f func(usage) float64) float64 {
	var d float64
	for _, r := range roles {
		if role == "" || role == r {
			d += f(s.After[r]) - f(s.Before[r])
		}
	}
	return d
}

var metrics = []metric{
	{"iperf1", "1 flow Gbit/s", "Gbit/s", true, 2, dataField("iperf1", "gbps")},
	{"iperf8", "8 flows Gbit/s", "Gbit/s", true, 2, dataField("iperf8", "gbps")},
	{"iperf1loss", "1 flow Gbit/s, relay legs lossy", "Gbit/s", true, 2, dataField("iperf1loss", "gbps")},
	{"iperf1nooff", "1 flow Gbit/s, lines without offloads, no loss", "Gbit/s", true, 2, dataField("iperf1nooff", "gbps")},
	{"rr50", "rr p50 µs", "µs", false, 0, dataField("rr", "p50_us")},
	{"rr99", "rr p99 µs", "µs", false, 0, dataField("rr", "p99_us")},
	{"rrbulk50", "rr p50 µs beside a bulk flow", "µs", false, 0, dataField("rrbulk", "p50_us")},
	{"rrbulk99", "rr p99 µs beside a bulk flow", "µs", false, 0, dataField("rrbulk", "p99_us")},
	{"crr50", "new conn + rr p50 µs", "µs", false, 0, dataField("crr", "p50_us")},
	{"crr99", "new conn + rr p99 µs", "µs", false, 0, dataField("crr", "p99_us")},
	{"wrk", "HTTP req/s (32 conns)", "req/s", true, 0, dataField("wrk", "rps")},
	{"cpureq", "CPU s/M req (path procs)", "s/M req", false, 1, cpuPerMReq("")},
	{"cpu", "CPU s/GB (path procs)", "s/GB", false, 2, cpuPerGB("")},
	{"cpurelay", "relay CPU s/GB", "s/GB", false, 2, cpuPerGB("relay")},
	{"idle", "KiB/idle flow", "KiB", false, 1, kibPerFlow("")},
	{"idlerelay", "relay KiB/idle flow", "KiB", false, 1, kibPerFlow("relay")},
	{"udpmbps", "UDP Mbit/s arrived", "Mbit/s", true, 1, dataField("udp", "mbps")},
	{"udploss", "UDP loss %", "%", false, 2, dataField("udp", "loss_pct")},
	{"udpjitter", "UDP jitter ms", "ms", false, 3, dataField("udp", "jitter_ms")},
	{"urr50", "UDP rr p50 µs", "µs", false, 0, dataField("urr", "p50_us")},
	{"urr99", "UDP rr p99 µs", "µs", false, 0, dataField("urr", "p99_us")},
	{"urrlost", "UDP rr lost", "datagrams", false, 0, dataField("urr", "lost")},
}

// udpSection writes the UDP measures of the paths that carry UDP, and our
// TUN relative to wireguard-go in the same run.
func udpSection(w func(string, ...any), meta map[string]string, med map[string]map[string]float64) {
	cols := []string{"udpmbps", "udploss", "udpjitter", "urr50", "urr99", "urrlost"}
	var ps []struct{ id, label string }
	for _, p := range paths {
		for _, c := range cols {
			if _, ok := med[p.id][c]; ok {
				ps = append(ps, p)
				break
			}
		}
	}
	if len(ps) == 0 {
		return
	}
	byID := map[string]metric{}
	for _, m := range metrics {
		byID[m.id] = m
	}
	w("## UDP\n\n")
	w("%s. Only the paths that carry UDP: the kernel (direct), wireguard-go and our TUN\n", meta["udp"])
	w("(an outlet created with `--udp`); the inlet, socat and ssh carry TCP only.\n\n")
	w("| path |")
	for _, c := range cols {
		w(" %s |", byID[c].label)
	}
	w("\n|---|")
	for range cols {
		w("---:|")
	}
	w("\n")
	for _, p := range ps {
		w("| %s |", p.label)
		for _, c := range cols {
			if v, ok := med[p.id][c]; ok {
				w(" %s |", format(v, byID[c].prec))
			} else {
				w(" – |")
			}
		}
		w("\n")
	}
	if len(med["tun"]) > 0 && len(med["wg"]) > 0 {
		w("| ockam tun ÷ wireguard-go |")
		for _, c := range cols {
			v, ok1 := med["tun"][c]
			r, ok2 := med["wg"][c]
			if ok1 && ok2 && r != 0 {
				w(" %.2f× |", v/r)
			} else {
				w(" – |")
			}
		}
		w("\n")
	}
	w("\n")
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// report reads the meta and samples written by bench.sh and writes the run
// JSON, the Markdown page and the SVG chart.
func report(args []string) error {
	fs := flag.NewFlagSet("report", flag.ExitOnError)
	metaPath := fs.String("meta", "", "key=value lines describing the run")
	samplesPath := fs.String("samples", "", "JSON lines, one per sample")
	jsonOut := fs.String("json", "", "write the run (meta, samples, medians) here")
	mdOut := fs.String("md", "", "write the Markdown page here")
	svgOut := fs.String("svg", "", "write the SVG chart here")
	svgRef := fs.String("svg-ref", "", "how the Markdown page links the chart")
	fs.Parse(args)

	meta, order, err := readMeta(*metaPath)
	if err != nil {
		return err
	}
	samples, err := readSamples(*samplesPath)
	if err != nil {
		return err
	}
	// medians[path][metric], and every value for the JSON.
	values := map[string]map[string][]float64{}
	for _, s := range samples {
		for _, m := range metrics {
			if v, ok := m.get(s); ok && !math.IsNaN(v) && !math.IsInf(v, 0) {
				if values[s.Path] == nil {
					values[s.Path] = map[string][]float64{}
				}
				values[s.Path][m.id] = append(values[s.Path][m.id], v)
			}
		}
	}
	// A path that never held all the idle flows is shown with a tenth of them.
	idleAt := map[string]float64{}
	for _, s := range samples {
		if v, ok := kibPerFlow("")(s); ok && !math.IsNaN(v) {
			idleAt[s.Path] = s.Data["flows"].(float64)
		}
	}
	for _, s := range samples {
		if _, full := idleAt[s.Path]; full {
			continue
		}
		for id, role := range map[string]string{"idle": "", "idlerelay": "relay"} {
			if v, ok := idleKiB("idle_small", role)(s); ok {
				values[s.Path][id] = append(values[s.Path][id], v)
			}
		}
	}
	for _, s := range samples {
		if _, full := idleAt[s.Path]; !full {
			if _, ok := idleKiB("idle_small", "")(s); ok {
				idleAt[s.Path+"/small"] = s.Data["flows"].(float64)
			}
		}
	}
	medians := map[string]map[string]float64{}
	for p, mv := range values {
		medians[p] = map[string]float64{}
		for id, v := range mv {
			medians[p][id] = median(v)
		}
	}
	if *jsonOut != "" {
		b, err := json.MarshalIndent(map[string]any{
			"meta": meta, "samples": samples, "medians": medians, "values": values,
		}, "", " ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(*jsonOut, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	if *svgOut != "" {
		if err := os.WriteFile(*svgOut, []byte(chart(medians, meta)), 0o644); err != nil {
			return err
		}
	}
	if *mdOut != "" {
		md := markdown(meta, order, samples, medians, values, idleAt, *svgRef)
		if err := os.WriteFile(*mdOut, []byte(md), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func readMeta(path string) (map[string]string, []string, error) {
	m := map[string]string{}
	var order []string
	if path == "" {
		return m, nil, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if ok {
			if _, dup := m[k]; !dup {
				order = append(order, k)
			}
			m[k] = v
		}
	}
	return m, order, sc.Err()
}

func readSamples(path string) ([]sample, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []sample
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for line := 1; sc.Scan(); line++ {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var s sample
		if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
			return nil, fmt.Errorf("%s:%d: %v", path, line, err)
		}
		out = append(out, s)
	}
	return out, sc.Err()
}

func format(v float64, prec int) string {
	if prec == 0 && math.Abs(v) >= 1000 {
		return groupThousands(fmt.Sprintf("%.0f", v))
	}
	return fmt.Sprintf("%.*f", prec, v)
}

func groupThousands(s string) string {
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func markdown(meta map[string]string, order []string, samples []sample, med map[string]map[string]float64, values map[string]map[string][]float64, idleAt map[string]float64, svgRef string) string {
	var b strings.Builder
	w := func(f string, a ...any) { fmt.Fprintf(&b, f, a...) }
	w("# Benchmarks\n\n")
	w("Generated by `bench/bench.sh` (`make bench`); do not edit by hand. Raw samples: `%s`.\n\n", meta["results"])
	w("Topology: three network namespaces, client ─veth─ relay ─veth─ server (1500 MTU). The client and\n")
	w("the server reach only the relay; every path below carries the client's TCP to servers in the\n")
	w("server namespace (iperf3, a 64-byte echo server, a small Go HTTP server). \"direct\" runs the\n")
	w("client in the relay namespace against the server's veth address: one veth hop, no relay.\n")
	w("\"socat ×3\" runs a socat in each namespace, client → relay → server: the hops of the sidecars\n")
	w("and of ssh -J (three processes, four TCP connections) with no crypto, the floor of that shape.\n\n")
	w("| | |\n|---|---|\n")
	for _, k := range order {
		if k == "results" {
			continue
		}
		w("| %s | %s |\n", k, strings.ReplaceAll(meta[k], "|", "\\|"))
	}
	w("\n## Results (median over %s rounds, paths interleaved A B C … A B C …)\n\n", meta["rounds"])
	cols := []string{"iperf1", "iperf8", "rr50", "rr99", "rrbulk50", "rrbulk99", "crr50", "crr99", "wrk", "cpureq", "cpu", "cpurelay", "idle", "idlerelay"}
	byID := map[string]metric{}
	for _, m := range metrics {
		byID[m.id] = m
	}
	w("| path |")
	for _, c := range cols {
		w(" %s |", byID[c].label)
	}
	w("\n|---|")
	for range cols {
		w("---:|")
	}
	w("\n")
	skipped := map[string]string{}
	var failures []string
	for _, s := range samples {
		if s.Skipped != "" {
			skipped[s.Path] = s.Skipped
		}
		if s.Error != "" {
			failures = append(failures, fmt.Sprintf("%s round %d %s: %s", s.Path, s.Round, s.Measure, s.Error))
		}
	}
	for _, p := range paths {
		if reason, ok := skipped[p.id]; ok && len(med[p.id]) == 0 {
			w("| %s | skipped: %s |%s\n", p.label, reason, strings.Repeat(" |", len(cols)-1))
			continue
		}
		if _, ok := med[p.id]; !ok {
			if _, ran := meta["path_"+p.id]; !ran {
				continue
			}
		}
		w("| %s |", p.label)
		for _, c := range cols {
			v, ok := med[p.id][c]
			switch {
			case ok && (c == "idle" || c == "idlerelay") && idleAt[p.id+"/small"] > 0:
				w(" %s (%s flows; %s failed) |", format(v, byID[c].prec), format(idleAt[p.id+"/small"], 0), meta["idle_flows"])
			case ok:
				w(" %s |", format(v, byID[c].prec))
			case p.id == "direct" && (c == "cpureq" || c == "cpu" || c == "cpurelay" || c == "idle" || c == "idlerelay"):
				w(" kernel |")
			default:
				w(" – |")
			}
		}
		w("\n")
	}
	w("\nCPU s/GB: user+system seconds of the processes on the path (sidecars, relay, ssh/sshd, socat,\n")
	w("wireguard-go; not iperf3, not the kernel's softirq work) per GB carried in the single-flow run.\n")
	w("CPU s/M req: the same processes' user+system seconds per million HTTP requests during the wrk run\n")
	w("(not wrk, not the HTTP server).\n")
	w("KiB/idle flow: growth of the proportional set size of those processes with %s idle flows\n", meta["idle_flows"])
	w("open (each proven by one round trip), divided by the number of flows; socat forks a process per\n")
	w("flow, so it holds only %s. Measured after every other measure of every round (holding them leaves\n", meta["idle_flows_socat"])
	w("OpenSSH slower for good: its channel table never shrinks), after a run with a tenth of the flows,\n")
	w("which is the figure shown for a path that could not hold them all. Go processes keep freed heap,\n")
	w("so their figures are lower bounds and noisy around zero. \"kernel\": direct has no process on the path.\n\n")

	ratio := func(ref, refLabel string) {
		if len(med[ref]) == 0 {
			return
		}
		w("## Relative to %s\n\n", refLabel)
		w("Each cell is path ÷ %s. For Gbit/s and req/s higher is better; for latency, CPU and memory lower is better.\n\n", refLabel)
		rc := []string{"iperf1", "iperf8", "rr50", "rr99", "rrbulk50", "rrbulk99", "crr50", "crr99", "wrk", "cpureq", "cpu", "idle"}
		w("| path |")
		for _, c := range rc {
			w(" %s |", byID[c].label)
		}
		w("\n|---|")
		for range rc {
			w("---:|")
		}
		w("\n")
		for _, p := range paths {
			if len(med[p.id]) == 0 {
				continue
			}
			w("| %s |", p.label)
			for _, c := range rc {
				v, ok1 := med[p.id][c]
				r, ok2 := med[ref][c]
				if ok1 && ok2 && r != 0 {
					w(" %.2f× |", v/r)
				} else {
					w(" – |")
				}
			}
			w("\n")
		}
		w("\n")
	}
	ratio("ssh", "ssh -J")
	ratio("direct", "direct")

	w("## CPU and memory by role\n\n")
	w("| path | CPU s/M req client / relay / server | CPU s/GB client / relay / server | KiB per idle flow client / relay / server |\n|---|---:|---:|---:|\n")
	for _, p := range paths {
		var cpuReq, cpu, mem []string
		any := false
		for _, r := range roles {
			var qv, cv, mv []float64
			for _, s := range samples {
				if s.Path != p.id {
					continue
				}
				if v, ok := cpuPerMReq(r)(s); ok {
					qv = append(qv, v)
				}
				if v, ok := cpuPerGB(r)(s); ok {
					cv = append(cv, v)
				}
				if v, ok := kibPerFlow(r)(s); ok {
					mv = append(mv, v)
				} else if v, ok := idleKiB("idle_small", r)(s); ok && idleAt[p.id+"/small"] > 0 {
					mv = append(mv, v)
				}
			}
			qs, cs, ms := "–", "–", "–"
			if len(qv) > 0 {
				qs, any = fmt.Sprintf("%.1f", median(qv)), true
			}
			if len(cv) > 0 {
				cs, any = fmt.Sprintf("%.2f", median(cv)), true
			}
			if len(mv) > 0 {
				ms, any = fmt.Sprintf("%.1f", median(mv)), true
			}
			cpuReq, cpu, mem = append(cpuReq, qs), append(cpu, cs), append(mem, ms)
		}
		if any && p.id != "direct" {
			w("| %s | %s | %s | %s |\n", p.label, strings.Join(cpuReq, " / "), strings.Join(cpu, " / "), strings.Join(mem, " / "))
		}
	}
	w("\n")
	udpSection(w, meta, med)
	if svgRef != "" {
		w("## Chart\n\n![throughput, latency and HTTP rate by path](%s)\n\n", svgRef)
	}
	wanSection(w, meta, med, skipped)
	w("## Every round\n\n")
	w("| path | metric | values |\n|---|---|---|\n")
	for _, p := range append(slices.Clone(paths), wanPaths()...) {
		for _, m := range metrics {
			if v := values[p.id][m.id]; len(v) > 0 {
				s := make([]string, len(v))
				for i, x := range v {
					s[i] = format(x, m.prec)
				}
				w("| %s | %s | %s |\n", p.id, m.label, strings.Join(s, ", "))
			}
		}
	}
	w("\n")
	if len(failures) > 0 || len(skipped) > 0 {
		w("## Failed or skipped\n\n")
		for p, r := range skipped {
			w("- %s: skipped: %s\n", p, r)
		}
		for _, f := range failures {
			w("- %s\n", strings.ReplaceAll(f, "\n", " "))
		}
		w("\n")
	}
	w("## How to run\n\n")
	w("```console\nsudo make bench                 # or: sudo bench/bench.sh\nsudo bench/bench.sh --quick     # smoke test, under 3 minutes\nsudo bench/bench.sh --rounds 3 --idle-flows 0 --paths direct,ssh,ockam\n```\n\n")
	w("Needs iperf3, socat, openssh-server, openssh-client, wireguard-tools, wrk, curl, python3, iproute2.\n")
	return b.String()
}

// chart draws four panels of horizontal bars: 1-flow and 8-flow throughput,
// rr p50 latency and HTTP req/s, one bar per path.
func chart(med map[string]map[string]float64, meta map[string]string) string {
	type panel struct{ id, title string }
	panels := []panel{
		{"iperf1", "iperf3, 1 flow (Gbit/s, higher is better)"},
		{"iperf8", "iperf3, 8 flows (Gbit/s, higher is better)"},
		{"rr50", "64 B request/response p50 (µs, lower is better)"},
		{"crr50", "new connection + request p50 (µs, lower is better)"},
		{"wrk", "HTTP, 32 connections (req/s, higher is better)"},
		{"cpu", "CPU of path processes (s/GB, lower is better)"},
	}
	var ps []struct{ id, label string }
	for _, p := range paths {
		if len(med[p.id]) > 0 {
			ps = append(ps, p)
		}
	}
	colors := map[string]string{"direct": "#7f7f7f", "socat": "#bcbd22", "chain": "#17becf", "ssh": "#1f77b4", "wg": "#9467bd", "ockam": "#d62728", "tun": "#ff7f0e"}
	const (
		width  = 980
		colW   = 490
		labelW = 210
		barH   = 16
		gap    = 4
	)
	panelH := 30 + len(ps)*(barH+gap) + 16
	rows := (len(panels) + 1) / 2
	height := 50 + rows*panelH
	var b strings.Builder
	w := func(f string, a ...any) { fmt.Fprintf(&b, f, a...) }
	w(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="11">`+"\n", width, height, width, height)
	w(`<rect width="100%%" height="100%%" fill="white"/>` + "\n")
	w(`<text x="10" y="20" font-size="14" font-weight="bold">%s</text>`+"\n", html.EscapeString("ockam-go paths through a relay namespace ("+meta["date"]+", "+meta["mode"]+")"))
	w(`<text x="10" y="36" fill="#555">%s</text>`+"\n", html.EscapeString(meta["machine"]))
	for i, pn := range panels {
		x0 := (i % 2) * colW
		y0 := 50 + (i/2)*panelH
		w(`<text x="%d" y="%d" font-weight="bold">%s</text>`+"\n", x0+10, y0+14, html.EscapeString(pn.title))
		maxV := 0.0
		for _, p := range ps {
			maxV = math.Max(maxV, med[p.id][pn.id])
		}
		if maxV == 0 {
			maxV = 1
		}
		barMax := float64(colW - labelW - 70)
		for j, p := range ps {
			y := y0 + 24 + j*(barH+gap)
			w(`<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", x0+labelW-6, y+barH-4, html.EscapeString(p.label))
			v, ok := med[p.id][pn.id]
			if !ok {
				w(`<text x="%d" y="%d" fill="#999">n/a</text>`+"\n", x0+labelW+4, y+barH-4)
				continue
			}
			bw := v / maxV * barMax
			w(`<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>`+"\n", x0+labelW, y, bw, barH, colors[p.id])
			m := metric{prec: 2}
			for _, mm := range metrics {
				if mm.id == pn.id {
					m = mm
				}
			}
			w(`<text x="%.1f" y="%d">%s</text>`+"\n", float64(x0+labelW)+bw+4, y+barH-4, format(v, m.prec))
		}
	}
	w("</svg>\n")
	return b.String()
}

// wanPaths are the paths measured through the WAN profile's delay lines.
func wanPaths() []struct{ id, label string } {
	var out []struct{ id, label string }
	for _, p := range paths {
		out = append(out, struct{ id, label string }{p.id + "@wan", p.label + " @ WAN"})
	}
	return out
}

// wanSection writes the WAN profile beside the LAN one, and the WAN
// ratios against the plain TCP relay and ssh through the same delay.
func wanSection(w func(string, ...any), meta map[string]string, med map[string]map[string]float64, skipped map[string]string) {
	any := false
	for _, p := range paths {
		if len(med[p.id+"@wan"]) > 0 {
			any = true
		}
	}
	if !any {
		return
	}
	w("## LAN and WAN side by side\n\n")
	if meta["wan_line"] == "packet" {
		w("WAN: %s. Each leg's line (bench/netbench/wan.go) holds every packet the relay\n", meta["wan"])
		w("routes through its TUN, so every kernel TCP on a WAN path (the plain relay's, ssh's, our transport's)\n")
		w("sees the real round trip and loss; direct@wan is the client reaching the server through the relay's\n")
		w("forwarding, both legs, no process. Checked in this run: %s.", meta["wan_check"])
		if c := meta["wan_loss_check"]; c != "" {
			w(" Loss: %s.", c)
		}
		if c := meta["wan_line_cost"]; c != "" {
			w(" The lines: %s (the kernel's receive work of the packets they write back counts in it).", c)
		}
		if c := meta["tcp"]; c != "" {
			w(" Kernel TCP: %s; a flow's window is bounded by tcp_wmem's max at the sender.", c)
		}
		w("\n\n")
	} else {
		w("WAN: %s. The delay lines are split-TCP proxies: kernel TCP through them sees the\n", meta["wan"])
		w("delay as latency but the lines' buffers (64 MiB) as its window, so the TCP relay rows are an upper bound\n")
		w("of real TCP at that RTT; windows run end to end (ssh channels, our flows) see the full RTT.\n\n")
	}
	w("| path | 1 flow Gbit/s LAN | WAN | 8 flows LAN | WAN | rr p50 LAN µs | WAN ms | new conn + rr p50 LAN µs | WAN ms | WAN new conn + rr ÷ RTT | HTTP req/s LAN | WAN |\n")
	w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	rtt := 0.0
	if d := med["direct@wan"]["rr50"]; d > 0 {
		rtt = d
	}
	cell := func(p, id string, prec int, scale float64) string {
		if v, ok := med[p][id]; ok {
			return format(v*scale, prec)
		}
		if r, ok := skipped[p]; ok {
			_ = r
			return "skipped"
		}
		return "–"
	}
	for _, p := range paths {
		wp := p.id + "@wan"
		if len(med[p.id]) == 0 && len(med[wp]) == 0 {
			continue
		}
		ratio := "–"
		if v, ok := med[wp]["crr50"]; ok && rtt > 0 {
			ratio = fmt.Sprintf("%.2f", v/rtt)
		}
		w("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", p.label,
			cell(p.id, "iperf1", 2, 1), cell(wp, "iperf1", 2, 1),
			cell(p.id, "iperf8", 2, 1), cell(wp, "iperf8", 2, 1),
			cell(p.id, "rr50", 0, 1), cell(wp, "rr50", 1, 1e-3),
			cell(p.id, "crr50", 0, 1), cell(wp, "crr50", 1, 1e-3), ratio,
			cell(p.id, "wrk", 0, 1), cell(wp, "wrk", 0, 1))
	}
	w("\nRTT for the last-but-one column: the rr p50 of direct@wan (%s ms).\n\n", format(rtt/1000, 1))
	if meta["loss"] != "" {
		w("### Loss on the relay legs\n\n")
		w("One flow with loss (%s), in the same run, and its share of the same path without loss. ", meta["loss"])
		w("The packet lines drop MTU-sized packets, so with loss they run without offloads (TSO): the last two\n")
		w("columns are the WAN flow without loss on lines without offloads, and the lossy flow's share of that.\n\n")
		w("| path | LAN lossy Gbit/s | ÷ no loss | WAN lossy Gbit/s | ÷ no loss | WAN no loss, no offloads | lossy ÷ that |\n|---|---:|---:|---:|---:|---:|---:|\n")
		shareOf := func(p, base string) string {
			v, ok1 := med[p]["iperf1loss"]
			r, ok2 := med[p][base]
			if ok1 && ok2 && r > 0 {
				return fmt.Sprintf("%.2f", v/r)
			}
			return "–"
		}
		share := func(p string) string { return shareOf(p, "iperf1") }
		for _, p := range paths {
			wp := p.id + "@wan"
			if _, ok := med[p.id]["iperf1loss"]; !ok {
				if _, ok := med[wp]["iperf1loss"]; !ok {
					continue
				}
			}
			w("| %s | %s | %s | %s | %s | %s | %s |\n", p.label, cell(p.id, "iperf1loss", 2, 1), share(p.id), cell(wp, "iperf1loss", 2, 1), share(wp),
				cell(wp, "iperf1nooff", 2, 1), shareOf(wp, "iperf1nooff"))
		}
		w("\n")
	}
	for _, ref := range []struct{ id, label string }{{"socat@wan", "the plain TCP relay (socat) @ WAN"}, {"ssh@wan", "ssh -J @ WAN"}} {
		if len(med[ref.id]) == 0 {
			continue
		}
		w("### WAN, relative to %s\n\n", ref.label)
		w("| path | 1 flow | 8 flows | new conn + rr p50 | HTTP req/s |\n|---|---:|---:|---:|---:|\n")
		for _, p := range wanPaths() {
			if len(med[p.id]) == 0 {
				continue
			}
			w("| %s |", p.label)
			for _, c := range []string{"iperf1", "iperf8", "crr50", "wrk"} {
				v, ok1 := med[p.id][c]
				r, ok2 := med[ref.id][c]
				if ok1 && ok2 && r != 0 {
					w(" %.2f× |", v/r)
				} else {
					w(" – |")
				}
			}
			w("\n")
		}
		w("\n")
	}
}
