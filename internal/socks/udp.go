package socks

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"
)

// UDP ASSOCIATE (RFC 1928 §7). The server opens a UDP socket next to the
// client's TCP connection, replies with its address, and relays each
// datagram the client sends there (with the SOCKS UDP header) to its
// destination through Server.UDP; one call of UDP per destination, with a
// conn whose Read returns the client's datagrams to that destination and
// whose Write sends one to the client as coming from it. The association
// ends, and every UDP call with it, when the TCP connection closes.

const (
	// MaxUDPDestinations bounds the destinations of one association.
	MaxUDPDestinations = 256
	// udpQueue is the datagrams queued towards one destination.
	udpQueue = 512
)

// associate serves a UDP ASSOCIATE on the control connection c.
func (s *Server) associate(ctx context.Context, c net.Conn) error {
	tcpLocal, ok1 := c.LocalAddr().(*net.TCPAddr)
	tcpPeer, ok2 := c.RemoteAddr().(*net.TCPAddr)
	if !ok1 || !ok2 {
		c.Write(AppendReply(nil, GeneralFailure, Addr{}))
		return errors.New("socks: udp associate needs a TCP control connection")
	}
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: tcpLocal.IP})
	if err != nil {
		c.Write(AppendReply(nil, GeneralFailure, Addr{}))
		return fmt.Errorf("socks: udp associate: %w", err)
	}
	bnd := pc.LocalAddr().(*net.UDPAddr).AddrPort()
	if _, err := c.Write(AppendReply(nil, Succeeded, Addr{IP: bnd.Addr().Unmap(), Port: bnd.Port()})); err != nil {
		pc.Close()
		return fmt.Errorf("socks: writing reply: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The server stopping (or the listener deleted) ends the association.
	stop := context.AfterFunc(ctx, func() { pc.Close(); c.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() { // the association lives as long as the control connection
		defer wg.Done()
		var b [64]byte
		for {
			if _, err := c.Read(b[:]); err != nil {
				break
			}
		}
		cancel()
		pc.Close()
	}()
	defer c.Close()

	clientIP, _ := netip.AddrFromSlice(tcpPeer.IP)
	clientIP = clientIP.Unmap()
	var client netip.AddrPort // the client's UDP address, from its first datagram
	dsts := map[Addr]*udpDest{}
	defer func() {
		for _, d := range dsts {
			d.close()
		}
	}()
	buf := make([]byte, 1<<16)
	for {
		n, from, err := pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			return nil // the control connection closed, or ctx ended
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		if from.Addr() != clientIP || client.IsValid() && from != client {
			continue // only the client's host, and one socket of it
		}
		client = from
		dst, data, err := ParseUDP(buf[:n])
		if err != nil {
			continue
		}
		d := dsts[dst]
		if d == nil {
			if len(dsts) >= MaxUDPDestinations {
				continue
			}
			d = &udpDest{dst: dst, pc: pc, client: client, in: make(chan []byte, udpQueue), done: make(chan struct{})}
			dsts[dst] = d
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer d.close()
				if err := s.UDP(ctx, dst, d); err != nil && ctx.Err() == nil && s.Logger != nil {
					s.Logger.Info("socks udp failed", "dst", dst.String(), "err", err)
				}
			}()
		}
		select {
		case d.in <- append([]byte(nil), data...):
		default: // full: dropped, as UDP may be
		}
	}
}

// udpDest is the conn handed to Server.UDP for one destination.
type udpDest struct {
	dst    Addr
	pc     *net.UDPConn
	client netip.AddrPort
	in     chan []byte
	done   chan struct{}
	once   sync.Once
}

func (d *udpDest) close() { d.once.Do(func() { close(d.done) }) }

// ReadSized is Read without a buffer held while waiting (see package
// datagram).
func (d *udpDest) ReadSized(get func(n int) []byte, wait bool) (int, error) {
	if !wait {
		select {
		case b := <-d.in:
			return copy(get(len(b)), b), nil
		default:
			return 0, errors.New("socks: nothing queued")
		}
	}
	select {
	case b := <-d.in:
		return copy(get(len(b)), b), nil
	case <-d.done:
		return 0, net.ErrClosed
	}
}

func (d *udpDest) Read(b []byte) (int, error) {
	select {
	case p := <-d.in:
		return copy(b, p), nil
	case <-d.done:
		return 0, net.ErrClosed
	}
}

// Write sends b to the client as a datagram from the destination.
func (d *udpDest) Write(b []byte) (int, error) {
	select {
	case <-d.done:
		return 0, net.ErrClosed
	default:
	}
	if _, err := d.pc.WriteToUDPAddrPort(AppendUDP(nil, d.dst, b), d.client); err != nil {
		return 0, err
	}
	return len(b), nil
}

func (d *udpDest) Close() error                       { d.close(); return nil }
func (d *udpDest) LocalAddr() net.Addr                { return d.pc.LocalAddr() }
func (d *udpDest) RemoteAddr() net.Addr               { return net.UDPAddrFromAddrPort(d.client) }
func (d *udpDest) SetDeadline(t time.Time) error      { return nil }
func (d *udpDest) SetReadDeadline(t time.Time) error  { return nil }
func (d *udpDest) SetWriteDeadline(t time.Time) error { return nil }
