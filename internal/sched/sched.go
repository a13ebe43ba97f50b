// Package sched sets how the Go scheduler of a node process idles.
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
	"strings"
	"syscall"
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
