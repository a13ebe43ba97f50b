package socks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"
)

// HandshakeTimeout bounds reading the greeting and the request.
const HandshakeTimeout = 10 * time.Second

// Flow is where a CONNECT goes once Dial has reached the destination.
// *portal.Flow is one.
type Flow interface {
	// Run carries c (which it then owns) and returns at once.
	Run(c net.Conn) error
	// Abort ends a flow that will not Run.
	Abort(reason string)
}

// Error carries the reply a failed Dial wants the client to see.
type Error struct {
	Reply Reply
	Err   error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// ReplyFor returns the reply code for a Dial error: the code of an *Error,
// ConnectionRefused, NetworkUnreachable or HostUnreachable for the errnos,
// TTLExpired for a deadline, GeneralFailure otherwise.
func ReplyFor(err error) Reply {
	var e *Error
	switch {
	case errors.As(err, &e):
		return e.Reply
	case errors.Is(err, syscall.ECONNREFUSED):
		return ConnectionRefused
	case errors.Is(err, syscall.ENETUNREACH):
		return NetworkUnreachable
	case errors.Is(err, syscall.EHOSTUNREACH):
		return HostUnreachable
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return TTLExpired
	}
	return GeneralFailure
}

// Server answers SOCKS5 CONNECT requests with no authentication. The
// reply is sent only once Dial has returned: success after the
// destination accepted, the matching error code otherwise.
type Server struct {
	// Dial reaches dst. Required. It should honour ctx.
	Dial func(ctx context.Context, dst Addr) (Flow, error)
	// UDP, if set, serves UDP ASSOCIATE: it is called once per
	// destination of an association, on its own goroutine, with a
	// datagram conn (each Read one datagram from the client to dst, each
	// Write one to the client from dst; it also has ReadSized), and runs
	// until c fails or ctx ends, which happens when the client's TCP
	// connection closes. nil refuses UDP ASSOCIATE.
	UDP func(ctx context.Context, dst Addr, c net.Conn) error
	// Logger receives one line per failed request; nil discards.
	Logger *slog.Logger
}

// Serve accepts connections on ln until ln is closed or ctx is done, and
// returns once every handshake in progress has ended (flows that Run
// belong to whoever Dial gave them to). It closes ln when ctx is done.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	log := s.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() {
		defer wg.Done()
		<-ctx.Done()
		ln.Close()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				log.Info("socks accept failed", "err", err)
				select {
				case <-time.After(50 * time.Millisecond):
				case <-ctx.Done():
				}
				continue
			}
			return fmt.Errorf("socks: accept: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.ServeConn(ctx, c); err != nil {
				log.Info("socks request failed", "client", c.RemoteAddr().String(), "err", err)
			}
		}()
	}
}

// ServeConn runs one client connection: greeting, request, Dial, reply,
// then hands c to the flow. It owns c: on failure c is closed.
func (s *Server) ServeConn(ctx context.Context, c net.Conn) error {
	ok, replied := false, false
	defer func() {
		if !ok {
			if replied {
				lingerClose(c)
			} else {
				c.Close()
			}
		}
	}()
	reply := func(b []byte) {
		replied = true
		c.Write(b)
	}
	c.SetDeadline(time.Now().Add(HandshakeTimeout))
	var buf [MaxRequest]byte
	// Greeting: two bytes, then NMETHODS bytes.
	if _, err := io.ReadFull(c, buf[:2]); err != nil {
		return fmt.Errorf("socks: reading greeting: %w", err)
	}
	if _, _, err := ParseGreeting(buf[:2]); err != nil && err != ErrShort {
		return err
	}
	m := int(buf[1])
	if _, err := io.ReadFull(c, buf[2:2+m]); err != nil {
		return fmt.Errorf("socks: reading greeting: %w", err)
	}
	methods, _, err := ParseGreeting(buf[:2+m])
	if err != nil {
		return err
	}
	if !slices.Contains(methods, byte(MethodNoAuth)) {
		reply([]byte{Version, byte(MethodNoAcceptable)})
		return errors.New("socks: client offers no method without authentication")
	}
	if _, err := c.Write([]byte{Version, byte(MethodNoAuth)}); err != nil {
		return fmt.Errorf("socks: writing method: %w", err)
	}

	// Request: read the fixed part, learn the length, read the rest.
	have := 0
	need := 4
	var req Request
	for {
		n, err := io.ReadFull(c, buf[have:need])
		have += n
		if err != nil {
			return fmt.Errorf("socks: reading request: %w", err)
		}
		var perr error
		req, _, perr = ParseRequest(buf[:have])
		if perr == nil {
			break
		}
		if perr != ErrShort {
			var ua *UnsupportedAddrError
			if errors.As(perr, &ua) {
				reply(AppendReply(nil, AddressTypeNotSupported, Addr{}))
			}
			return perr
		}
		l, lerr := requestLen(buf[:have])
		switch {
		case lerr == ErrShort:
			need = have + 1 // the domain length byte
		case lerr != nil:
			return lerr
		default:
			need = l
		}
		if need > len(buf) || need <= have {
			return errors.New("socks: bad request length")
		}
	}
	if req.Cmd == CmdAssociate && s.UDP != nil {
		c.SetDeadline(time.Time{})
		ok = true // associate owns c
		return s.associate(ctx, c)
	}
	if req.Cmd != CmdConnect {
		reply(AppendReply(nil, CommandNotSupported, Addr{}))
		return fmt.Errorf("socks: command %d not supported", req.Cmd)
	}
	c.SetDeadline(time.Time{})

	// Stop the dial if the client goes away or the server stops.
	f, err := s.Dial(ctx, req.Dst)
	if err != nil {
		reply(AppendReply(nil, ReplyFor(err), Addr{}))
		return fmt.Errorf("socks: connect %s: %w", req.Dst, err)
	}
	if _, err := c.Write(AppendReply(nil, Succeeded, Addr{})); err != nil {
		f.Abort("socks client went away")
		return fmt.Errorf("socks: writing reply: %w", err)
	}
	ok = true
	return f.Run(c)
}

// lingerClose closes c after an error reply so that the reply arrives: a
// close with unread input would send a reset that may discard it. It
// half-closes, then reads and drops at most MaxRequest bytes for up to a
// second.
func lingerClose(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		c.SetReadDeadline(time.Now().Add(time.Second))
		io.CopyN(io.Discard, c, MaxRequest)
	}
	c.Close()
}
