package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, 100 on every Linux architecture Go supports.
const clockTicks = 100

// usage is what one role (client side, relay, server side) costs.
type usage struct {
	CPUs  float64 `json:"cpu_s"`  // user+system, own and reaped children
	PSSkB int64   `json:"pss_kb"` // proportional set size, or RSS without smaps_rollup
	Procs int     `json:"procs"`
}

// stat prints the usage of each role's process trees. Arguments are
// ROLE=PID[,PID...]; a tree is a process and all its descendants, so forked
// helpers (sshd sessions, socat children) are counted, and the CPU time of
// children already reaped is in their parent's cutime/cstime.
func stat(args []string) error {
	procs, err := readProcs()
	if err != nil {
		return err
	}
	children := map[int][]int{}
	for pid, p := range procs {
		children[p.ppid] = append(children[p.ppid], pid)
	}
	out := map[string]usage{}
	for _, a := range args {
		role, list, ok := strings.Cut(a, "=")
		if !ok {
			return fmt.Errorf("argument %q is not ROLE=PID[,PID...]", a)
		}
		var u usage
		seen := map[int]bool{}
		for _, s := range strings.Split(list, ",") {
			if s == "" {
				continue
			}
			root, err := strconv.Atoi(s)
			if err != nil {
				return fmt.Errorf("argument %q: %v", a, err)
			}
			stack := []int{root}
			for len(stack) > 0 {
				pid := stack[len(stack)-1]
				stack = stack[:len(stack)-1]
				p, ok := procs[pid]
				if !ok || seen[pid] {
					continue
				}
				seen[pid] = true
				u.CPUs += float64(p.ticks) / clockTicks
				u.PSSkB += pss(pid)
				u.Procs++
				stack = append(stack, children[pid]...)
			}
		}
		out[role] = u
	}
	return json.NewEncoder(os.Stdout).Encode(out)
}

type proc struct {
	ppid  int
	ticks int64 // utime+stime+cutime+cstime
}

func readProcs() (map[int]proc, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	m := map[int]proc{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // exited
		}
		// The command name is in parentheses and may hold spaces.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		// f[0] is field 3 (state); ppid is field 4, utime..cstime 14..17.
		if len(f) < 15 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		var t int64
		for _, k := range f[11:15] {
			v, _ := strconv.ParseInt(k, 10, 64)
			t += v
		}
		m[pid] = proc{ppid: ppid, ticks: t}
	}
	return m, nil
}

func pss(pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "Pss:"); ok {
				n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				return n
			}
		}
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/statm", pid))
	if err != nil {
		return 0
	}
	f2 := strings.Fields(string(b))
	if len(f2) < 2 {
		return 0
	}
	pages, _ := strconv.ParseInt(f2[1], 10, 64)
	return pages * int64(os.Getpagesize()) / 1024
}

// iperfSummary prints throughput, bytes and retransmits of an iperf3 -J result.
func iperfSummary(args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("usage: netbench iperf FILE")
	}
	b, err := os.ReadFile(args[0])
	if err != nil {
		return err
	}
	// iperf3 may print a warning line before its JSON.
	if i := bytes.IndexByte(b, '{'); i > 0 {
		b = b[i:]
	}
	var r struct {
		Error string `json:"error"`
		End   struct {
			SumSent struct {
				Bytes       int64   `json:"bytes"`
				Retransmits int64   `json:"retransmits"`
				BPS         float64 `json:"bits_per_second"`
				Packets     *int64  `json:"packets"` // UDP (-u) only
			} `json:"sum_sent"`
			SumReceived struct {
				Bytes       int64   `json:"bytes"`
				BPS         float64 `json:"bits_per_second"`
				Packets     int64   `json:"packets"`
				LostPackets int64   `json:"lost_packets"`
				JitterMs    float64 `json:"jitter_ms"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return fmt.Errorf("%s: %v", args[0], err)
	}
	if r.Error != "" {
		return fmt.Errorf("iperf3: %s", r.Error)
	}
	if r.End.SumReceived.Bytes == 0 {
		return fmt.Errorf("iperf3: no bytes received")
	}
	if r.End.SumSent.Packets != nil {
		// UDP: the rate that arrived is the sent rate less the lost
		// share (the receiver's own figure counts what was sent).
		rcv := r.End.SumReceived
		if rcv.Packets <= 0 {
			return fmt.Errorf("iperf3: no datagrams counted")
		}
		lost := float64(rcv.LostPackets) / float64(rcv.Packets)
		return printJSON(map[string]any{
			"sent_mbps": r.End.SumSent.BPS / 1e6,
			"mbps":      r.End.SumSent.BPS * (1 - lost) / 1e6,
			"loss_pct":  100 * lost,
			"jitter_ms": rcv.JitterMs,
			"packets":   rcv.Packets,
		})
	}
	return printJSON(map[string]any{
		"gbps":        r.End.SumReceived.BPS / 1e9,
		"bytes":       r.End.SumReceived.Bytes,
		"retransmits": r.End.SumSent.Retransmits,
	})
}
