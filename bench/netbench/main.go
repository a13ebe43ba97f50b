// Command netbench is the measuring side of bench/bench.sh: servers and
// clients for request/response latency, a holder of idle flows, a reader of
// per-process CPU and memory, and the report (Markdown table and SVG chart).
// It uses the standard library, and golang.org/x/sys/unix for the TUN
// of the packet line.
//
//	netbench serve -echo ADDR -http ADDR     echo and HTTP servers
//	netbench rr    -addr ADDR -n N           64-byte round trips on one connection
//	netbench crr   -addr ADDR -n N           one fresh connection per round trip
//	netbench urr   -addr ADDR -n N           64-byte datagram round trips (serve -uecho), lost counted
//	netbench hold  -addr ADDR -n N           open N idle flows, print "ready", hold until stdin closes
//	netbench stat  PID...                    CPU seconds and PSS of each process tree
//	netbench iperf FILE                      summary of an iperf3 -J result (-u: rate, loss, jitter)
//	netbench report -in RUN.json -md FILE -svg FILE
//	netbench delay -listen ADDR -to ADDR -delay D [-udp] a delay line (delay.go)
//	netbench wan   -tun NAME -delay D [-loss P] [-control SOCK]  a packet line on a TUN (wan.go)
//	netbench wanctl -control SOCK loss P | stats        set its loss, read its counters
//
// Results are JSON on standard output; errors go to standard error with exit
// status 1.
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: netbench serve|rr|crr|urr|hold|stat|iperf|report|delay|wan|wanctl [flags]")
		os.Exit(2)
	}
	cmds := map[string]func([]string) error{
		"serve":  serve,
		"rr":     rr,
		"crr":    crr,
		"urr":    urr,
		"hold":   hold,
		"stat":   stat,
		"iperf":  iperfSummary,
		"report": report,
		"delay":  delayLine,
		"wan":    wanLineCmd,
		"wanctl": wanCtlCmd,
	}
	run, ok := cmds[os.Args[1]]
	if !ok {
		fmt.Fprintf(os.Stderr, "netbench: unknown command %q\n", os.Args[1])
		os.Exit(2)
	}
	if err := run(os.Args[2:]); err != nil {
		fmt.Fprintf(os.Stderr, "netbench %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}
