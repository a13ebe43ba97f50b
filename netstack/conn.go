package netstack

import (
	"errors"
	"io"
	"net"
	"os"
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
//
// A read past the read deadline fails with an error that matches
// os.ErrDeadlineExceeded, as a *net.TCPConn's does (gonet's own does not).
type Conn struct {
	*gonet.TCPConn
	st        *Stack
	ep        tcpip.Endpoint
	wq        *waiter.Queue
	closed    chan struct{}
	closeOnce sync.Once
	closeErr  error

	dmu       sync.Mutex
	rdeadline time.Time     // the read deadline, for WaitReadable
	rdMoved   chan struct{} // closed when rdeadline changes (nil: no waiter)
}

func newConn(st *Stack, wq *waiter.Queue, ep tcpip.Endpoint) *Conn {
	return &Conn{TCPConn: gonet.NewTCPConn(wq, ep), st: st, ep: ep, wq: wq, closed: make(chan struct{})}
}

// errDeadline is what Read and WaitReadable return past the read deadline.
type errDeadline struct{ error }

func (errDeadline) Unwrap() error   { return os.ErrDeadlineExceeded }
func (errDeadline) Timeout() bool   { return true }
func (errDeadline) Temporary() bool { return true }

// WaitReadable blocks until a Read would not block (data, EOF or an error
// is there), the read deadline passes (an error matching
// os.ErrDeadlineExceeded) or the conn is closed (net.ErrClosed), holding no
// buffer, so that a reader of many idle conns takes a buffer only when
// there is something to read (a portal flow otherwise holds a 63 KiB chunk
// per idle conn in a blocking Read). A deadline set while it waits applies
// at once.
func (c *Conn) WaitReadable() error {
	const events = waiter.ReadableEvents | waiter.EventHUp | waiter.EventErr
	if c.ep.Readiness(events) != 0 {
		return nil
	}
	entry, ch := waiter.NewChannelEntry(events)
	c.wq.EventRegister(&entry)
	defer c.wq.EventUnregister(&entry)
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for c.ep.Readiness(events) == 0 {
		c.dmu.Lock()
		d := c.rdeadline
		if c.rdMoved == nil {
			c.rdMoved = make(chan struct{})
		}
		moved := c.rdMoved
		c.dmu.Unlock()
		var expired <-chan time.Time
		if !d.IsZero() {
			left := time.Until(d)
			if left <= 0 {
				return c.deadlineErr()
			}
			if timer == nil {
				timer = time.NewTimer(left)
			} else {
				timer.Reset(left)
			}
			expired = timer.C
		}
		select {
		case <-ch:
		case <-moved:
		case <-expired:
		case <-c.closed:
			return net.ErrClosed
		}
	}
	return nil
}

func (c *Conn) deadlineErr() error {
	return &net.OpError{Op: "read", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: errDeadline{errors.New("i/o timeout")}}
}

// SetReadDeadline implements net.Conn.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.setRead(t)
	return c.TCPConn.SetReadDeadline(t)
}

// SetDeadline implements net.Conn.
func (c *Conn) SetDeadline(t time.Time) error {
	c.setRead(t)
	return c.TCPConn.SetDeadline(t)
}

func (c *Conn) setRead(t time.Time) {
	c.dmu.Lock()
	c.rdeadline = t
	if c.rdMoved != nil {
		close(c.rdMoved)
		c.rdMoved = nil
	}
	c.dmu.Unlock()
}

// Read implements net.Conn.
func (c *Conn) Read(b []byte) (int, error) {
	n, err := c.TCPConn.Read(b)
	c.st.stats.bytesIn.Add(uint64(n))
	if err != nil {
		if ne, ok := err.(net.Error); ok && ne.Timeout() && !errors.Is(err, os.ErrDeadlineExceeded) {
			err = c.deadlineErr()
		}
	}
	return n, err
}

// Write implements net.Conn.
func (c *Conn) Write(b []byte) (int, error) {
	n, err := c.TCPConn.Write(b)
	c.st.stats.bytesOut.Add(uint64(n))
	if err != nil {
		if ne, ok := err.(net.Error); ok && ne.Timeout() && !errors.Is(err, os.ErrDeadlineExceeded) {
			err = &net.OpError{Op: "write", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: errDeadline{errors.New("i/o timeout")}}
		}
	}
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
