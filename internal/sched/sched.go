// Package sched sets how the Go scheduler of a node process runs: how it
// idles, and on how many Ps.
//
// When every P of a Go process is idle, its sysmon thread goes into a deep
// sleep, and the next goroutine to enter a system call wakes it (a futex
// wake on the hot path, then sysmon's own run of 20 µs sleeps). A node
// under request/response traffic goes idle between almost every pair of
// messages, so each message paid for that: on the relay under wrk -c32 it
// was 12% of the CPU in entersyscallWakeSysmon alone, and about half a
// nanosleep and a futex call per request on every node. With schedtrace
// set, sysmon never deep-sleeps; it polls instead, backing off to once
// every 10 ms when there is nothing to retake (about 100 wakeups a second
// for an idle node). The trace itself is printed every schedtrace
// milliseconds: Setting asks for the longest period the runtime takes
// (24.8 days), so a node prints a line to stderr that often (and once at
// start on a host up for longer than that).
//
// The runtime reads GODEBUG's schedtrace only at start, so a process gets
// the setting from its environment: a parent passes Environ to the node it
// starts, and a node started some other way (a service unit, ockam-relay)
// re-executes itself once with Reexec.
package sched

import (
	"os"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// Setting is the GODEBUG entry a node runs with.
const Setting = "schedtrace=2147483647"

// Environ returns environ with Setting added to GODEBUG. An environment
// whose GODEBUG already sets schedtrace is returned as it is: the
// operator's choice wins (GODEBUG=schedtrace=0 turns this off).
func Environ(environ []string) []string {
	out := make([]string, 0, len(environ)+1)
	found := false
	for _, kv := range environ {
		v, ok := strings.CutPrefix(kv, "GODEBUG=")
		if !ok {
			out = append(out, kv)
			continue
		}
		found = true
		if hasSchedtrace(v) {
			out = append(out, kv)
		} else if v == "" {
			out = append(out, "GODEBUG="+Setting)
		} else {
			out = append(out, "GODEBUG="+v+","+Setting)
		}
	}
	if !found {
		out = append(out, "GODEBUG="+Setting)
	}
	return out
}

func hasSchedtrace(godebug string) bool {
	for _, f := range strings.Split(godebug, ",") {
		if strings.HasPrefix(strings.TrimSpace(f), "schedtrace=") {
			return true
		}
	}
	return false
}

// Reexec replaces the running program by itself, with the same arguments
// and Environ's environment, when its GODEBUG lacks schedtrace. It returns
// only when there is nothing to do or the exec failed; the process then
// runs with the runtime's default, which is correct, only slower.
func Reexec() error {
	if hasSchedtrace(os.Getenv("GODEBUG")) {
		return nil
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	return syscall.Exec(exe, os.Args, Environ(os.Environ()))
}

// Procs is the number of Ps (GOMAXPROCS) a node runs with unless its
// environment sets GOMAXPROCS. One: a node's work per message is small and
// comes in wakeups of one goroutine each (a socket became readable); with
// a second P idle, every wakeup also woke another thread to look for work
// (wakep: a futex wake, then a futex sleep when it found none), which cost
// more than the work. Measured on 2 cores, inlet path, wrk -c32: 1.5× the
// requests per second and 0.65× the CPU per request over the three nodes,
// and bulk no slower (iperf3 1 and 8 flows). A node that must carry more
// than one core's worth of traffic (a relay for many sidecars on a large
// machine) sets GOMAXPROCS.
const Procs = 1

// SetProcs sets GOMAXPROCS to Procs unless the environment sets it, and
// returns the value in force.
func SetProcs() int {
	if os.Getenv("GOMAXPROCS") != "" {
		return runtime.GOMAXPROCS(0)
	}
	runtime.GOMAXPROCS(Procs)
	return Procs
}

// Bounds of a Yielder's interval, in bytes moved between turns.
const (
	YieldEvery = 256 << 10
	YieldMax   = 4 << 20
)

// yieldStall is how long a turn takes when nothing else wanted the P: the
// runtime then waits in the network poller, in whole milliseconds, for an
// event or the turn's end.
const yieldStall = 200 * time.Microsecond

// Yielder lets a goroutine that moves bulk data give the others of its
// process a turn every so many bytes.
//
// Such a goroutine never blocks while its sockets always have data or room,
// and on a node's one P (Procs) the goroutines the network poller would
// wake (the reader of a small message: a keystroke, a request beside a
// download) wait until the runtime polls again: when the P has nothing else
// to run, or sysmon's 10 ms. runtime.Gosched does not help: the yielding
// goroutine goes on the global run queue, which the scheduler takes before
// it polls. A short sleep takes the goroutine off the run queues, so the
// scheduler polls the network first and runs what it woke.
//
// When nothing else wanted the P the sleep lasts up to a millisecond (the
// poller's resolution), so the interval adapts: it doubles after a turn that
// stalled, up to YieldMax, and halves after one that did not, down to
// YieldEvery. The zero value is ready; a Yielder belongs to one goroutine.
//
// The portal's flows use one in each direction (a flow's reader of its
// local socket, and its writer). In the transport's connection readers
// too, it only cost bulk throughput: measured beside a bulk flow, the small
// messages' wait came from the flows' loops.
type Yielder struct{ n, every int }

// Moved counts n bytes moved and takes a turn once the interval has been.
func (y *Yielder) Moved(n int) {
	if y.every == 0 {
		y.every = YieldEvery
	}
	y.n += n
	if y.n < y.every {
		return
	}
	y.n = 0
	t := time.Now()
	time.Sleep(time.Microsecond)
	if time.Since(t) > yieldStall {
		y.every = min(2*y.every, YieldMax)
	} else {
		y.every = max(y.every/2, YieldEvery)
	}
}
