package transport

import (
	"os"
	"strconv"
	"strings"
	"sync"
)

// MaxSendBuffer bounds the kernel send buffer a connection asks for.
const MaxSendBuffer = 32 << 20

// sendBuffer is the SO_SNDBUF a connection asks for, or 0 to leave the
// kernel's autotuning alone.
//
// One connection carries every flow to a peer, and on a long path what it
// has in flight is bounded by its kernel send buffer: Linux autotunes that
// up to tcp_wmem's max (4 MiB by default: 1.3 Gbit/s at 25 ms), where a
// plain TCP relay has one such buffer per flow. An explicit SO_SNDBUF may
// reach 2 x net.core.wmem_max (the kernel doubles the ask for its
// bookkeeping), so where that is larger than autotuning's ceiling, the
// connection asks for it; elsewhere (Linux's default wmem_max is 208 KiB)
// it would shrink the buffer and lock it, so it asks nothing. Read once, in
// the network namespace the process runs in.
var sendBuffer = sync.OnceValue(func() int {
	return sendBufferFor(procInt("/proc/sys/net/core/wmem_max", 0), procInt("/proc/sys/net/ipv4/tcp_wmem", 2))
})

// sendBufferFor is sendBuffer for the given net.core.wmem_max and
// tcp_wmem's max (0: unknown).
func sendBufferFor(wmemMax, tcpWmemMax int) int {
	if wmemMax <= 0 || tcpWmemMax <= 0 || 2*wmemMax <= tcpWmemMax {
		return 0
	}
	return min(wmemMax, MaxSendBuffer)
}

// procInt is the field-th number of a /proc/sys file, or 0.
func procInt(path string, field int) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if field >= len(f) {
		return 0
	}
	n, err := strconv.Atoi(f[field])
	if err != nil {
		return 0
	}
	return n
}
