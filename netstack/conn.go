package netstack

import (
	"io"
	"net"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/waiter"
)

// CopyBufferSize is the buffer size Copy uses. gonet conns implement
// neither io.WriterTo nor io.ReaderFrom, and io.Copy would allocate 32 KiB
// per call (or, into a *net.TCPConn, ignore a given buffer and use its
// own); larger buffers mean fewer trips through gVisor per byte.
const CopyBufferSize = 256 << 10

var copyBufs = sync.Pool{New: func() any { b := make([]byte, CopyBufferSize); return &b }}

// Copy copies from src to dst until EOF or an error, like io.Copy, with a
// pooled CopyBufferSize buffer and without consulting io.ReaderFrom or
// io.WriterTo. It returns the bytes written and the first error other than
// io.EOF. It does not half-close dst; call CloseWrite afterwards.
func Copy(dst io.Writer, src io.Reader) (int64, error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	var n int64
	for {
		nr, rerr := src.Read(buf)
		if nr > 0 {
			nw, werr := dst.Write(buf[:nr])
			n += int64(nw)
			if werr != nil {
				return n, werr
			}
			if nw != nr {
				return n, io.ErrShortWrite
			}
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
}

// Conn is a TCP connection terminated in the stack: a net.Conn that also
// supports half-close with CloseWrite (sends FIN) and CloseRead.
// Read and Write may be called concurrently with each other.
type Conn struct {
	*gonet.TCPConn
	st        *Stack
	ep        tcpip.Endpoint
	wq        *waiter.Queue
	closed    chan struct{}
	closeOnce sync.Once
	closeErr  error
}

func newConn(st *Stack, wq *waiter.Queue, ep tcpip.Endpoint) *Conn {
	return &Conn{TCPConn: gonet.NewTCPConn(wq, ep), st: st, ep: ep, wq: wq, closed: make(chan struct{})}
}

// WaitReadable blocks until a Read would not block (data, EOF or an error
// is there) or the conn is closed (net.ErrClosed), holding no buffer, so
// that a reader of many idle conns takes a buffer only when there is
// something to read (a portal flow otherwise holds a 63 KiB chunk per
// idle conn in a blocking Read). It does not honour deadlines.
func (c *Conn) WaitReadable() error {
	const events = waiter.ReadableEvents | waiter.EventHUp | waiter.EventErr
	if c.ep.Readiness(events) != 0 {
		return nil
	}
	entry, ch := waiter.NewChannelEntry(events)
	c.wq.EventRegister(&entry)
	defer c.wq.EventUnregister(&entry)
	for c.ep.Readiness(events) == 0 {
		select {
		case <-ch:
		case <-c.closed:
			return net.ErrClosed
		}
	}
	return nil
}

// Read implements net.Conn.
func (c *Conn) Read(b []byte) (int, error) {
	n, err := c.TCPConn.Read(b)
	c.st.stats.bytesIn.Add(uint64(n))
	return n, err
}

// Write implements net.Conn.
func (c *Conn) Write(b []byte) (int, error) {
	n, err := c.TCPConn.Write(b)
	c.st.stats.bytesOut.Add(uint64(n))
	return n, err
}

// SetLinger is net.TCPConn's: with sec 0, Close answers the application
// with a reset instead of a FIN, so a flow that failed does not look like a
// stream that ended (a download cut short must not read as complete).
func (c *Conn) SetLinger(sec int) error {
	c.ep.SocketOptions().SetLinger(tcpip.LingerOption{Enabled: sec >= 0, Timeout: time.Duration(max(sec, 0)) * time.Second})
	return nil
}

// Close implements net.Conn. It is idempotent.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		close(c.closed)
		c.closeErr = c.TCPConn.Close()
		c.st.untrack(c)
	})
	return c.closeErr
}
