package datagram

import (
	"errors"
	"net"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// maxBurst bounds the datagrams gathered into one batch.
const maxBurst = 256

// A busy association's datagrams wait for company: a datagram that arrives
// while the association has carried more than holdAbove bytes in the last
// holdFor or two waits until the end of the current holdFor, and goes with
// what queued meanwhile. Every message costs each hop a seal or an open, a
// routing step and a syscall, whatever it carries: a 100 Mbit/s stream of
// 1400-byte datagrams arrives one at a time, 9,000 messages a second, and
// cost a parallel TCP transfer of the same channel a quarter of its speed
// (integration TestUDPTun/flood_vs_tcp); held, it is about a thousand.
// Quiet associations (DNS, calls, request/response) never reach holdAbove
// (65 Mbit/s) and never wait.
const (
	holdFor   = time.Millisecond
	holdAbove = 8 << 10
)

// socketBuffer is the receive buffer asked for the outlet's kernel sockets:
// a millisecond of 1 Gbit/s in 1400-byte datagrams, at the kernel's 2.3 KiB
// of accounting each.
const socketBuffer = 1 << 20

// pacer measures an association's recent bytes in windows of holdFor.
type pacer struct {
	start       time.Time
	bytes, prev int // in the current window, in the one before it
}

// add counts n bytes read at now.
func (p *pacer) add(now time.Time, n int) {
	if d := now.Sub(p.start); d >= holdFor {
		p.prev = p.bytes
		if d >= 2*holdFor {
			p.prev = 0
		}
		p.start, p.bytes = now, 0
	}
	p.bytes += n
}

// hold is how long a datagram read now should wait: until the end of the
// window, if the association is busy.
func (p *pacer) hold(now time.Time) time.Duration {
	if p.prev+p.bytes <= holdAbove {
		return 0
	}
	return p.start.Add(holdFor).Sub(now)
}

// bufSize holds any UDP payload and the largest header in front of it, or
// a whole batch.
const bufSize = DatagramHeader + 1<<16

var bufs = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}

// SizedReader is a datagram socket that reads a datagram into a buffer
// chosen once its length n is known (get returns at least n bytes), so
// that a reader holds no buffer while it waits; with wait false it fails
// at once when nothing is queued. netstack.UDPConn implements it; kernel
// sockets get it here.
type SizedReader interface {
	ReadSized(get func(n int) []byte, wait bool) (int, error)
}

var errAgain = errors.New("datagram: nothing queued")

func sizedReader(c net.Conn) SizedReader {
	if s, ok := c.(SizedReader); ok {
		return s
	}
	if sc, ok := c.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			return kernelReader{rc}
		}
	}
	return &plainReader{c: c}
}

// kernelReader peeks at the length of the next datagram (MSG_TRUNC), then
// reads it.
type kernelReader struct{ rc syscall.RawConn }

func (k kernelReader) ReadSized(get func(n int) []byte, wait bool) (int, error) {
	var n int
	var rerr error
	err := k.rc.Read(func(fd uintptr) bool {
		var one [1]byte
		sz, _, e := unix.Recvfrom(int(fd), one[:], unix.MSG_PEEK|unix.MSG_TRUNC)
		switch {
		case e == unix.EAGAIN:
			if wait {
				return false
			}
			rerr = errAgain
			return true
		case e == unix.EINTR:
			return false
		case e != nil:
			rerr = e
			return true
		}
		// recvfrom, not read: read(2) of 0 bytes returns at once and
		// would leave an empty datagram queued for ever.
		b := get(sz)
		n, _, e = unix.Recvfrom(int(fd), b[:sz], 0)
		if e != nil {
			rerr = e
		}
		return true
	})
	if err != nil {
		return 0, err
	}
	return n, rerr
}

// plainReader is for other conns (tests): a buffer of its own, held.
type plainReader struct {
	c   net.Conn
	buf []byte
}

func (p *plainReader) ReadSized(get func(n int) []byte, wait bool) (int, error) {
	if !wait {
		return 0, errAgain
	}
	if p.buf == nil {
		p.buf = make([]byte, 1<<16)
	}
	n, err := p.c.Read(p.buf)
	if err != nil {
		return 0, err
	}
	copy(get(n), p.buf[:n])
	return n, nil
}

// pump reads datagrams from c until it fails, and hands them to send in
// messages: a datagram read with nothing else queued goes alone (single
// true, b = hdr bytes of room then the payload); datagrams that queued up
// meanwhile go together (single false, b = hdr bytes of room then the
// entries), so that a burst or a flood costs the channel one message per
// MaxBatch bytes rather than one per datagram, and a busy association's
// datagrams wait up to holdFor for company (see holdAbove). b is valid during the call
// only. allow shapes (nil: none); drop counts a datagram not sent. Buffers
// come from a pool and are held only while a datagram is in hand. pump
// returns c's read error.
func pump(c net.Conn, hdr int, allow *Limiter, drop func(), send func(single bool, b []byte)) error {
	r := sizedReader(c)
	var first, more, batch *[]byte
	take := func(p **[]byte) []byte {
		if *p == nil {
			*p = bufs.Get().(*[]byte)
		}
		return **p
	}
	release := func() {
		for _, p := range []**[]byte{&first, &more, &batch} {
			if *p != nil {
				bufs.Put(*p)
				*p = nil
			}
		}
	}
	defer release()
	var pace pacer
	for {
		n, err := r.ReadSized(func(n int) []byte { return take(&first)[hdr : hdr+n] }, true)
		if err != nil {
			return err
		}
		if n > MaxDatagram || !allow.Allow(n) {
			drop()
			release()
			continue
		}
		now := time.Now()
		pace.add(now, n)
		if d := pace.hold(now); d > 0 {
			time.Sleep(d)
		}
		getMore := func(n int) []byte { return take(&more)[:n] }
		m, err := r.ReadSized(getMore, false)
		if err != nil {
			send(true, (*first)[:hdr+n])
			release()
			continue
		}
		b := AppendEntry(take(&batch)[:hdr], (*first)[hdr:hdr+n])
		for i := 1; ; i++ {
			pace.add(now, m)
			switch {
			case m > MaxDatagram || !allow.Allow(m):
				drop()
			case len(b)-hdr+EntryHeader+m > MaxBatch:
				send(false, b)
				b = AppendEntry(b[:hdr], (*more)[:m])
			default:
				b = AppendEntry(b, (*more)[:m])
			}
			if i == maxBurst {
				break
			}
			if m, err = r.ReadSized(getMore, false); err != nil {
				break
			}
		}
		send(false, b)
		release()
	}
}
