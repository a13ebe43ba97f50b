package netstack

import (
	"errors"
	"net/netip"
	"sync"

	"golang.org/x/sys/unix"
	wgtun "golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/stack/gro"
)

// Packets from the TUN device into gVisor. One reader goroutine.

// readVnet reads packets with their virtio header straight from the TUN
// file. TSO super-packets are passed to gVisor whole: they are valid IP
// packets of up to 64 KiB whose TCP checksum the kernel left partial.
func (e *endpoint) readVnet() {
	buf := make([]byte, virtioNetHdrLen+maxPacket)
	for {
		n, err := e.file.Read(buf)
		if err != nil {
			if !isClosed(err) {
				e.st.log.Error("netstack: reading device", "err", err)
			}
			return
		}
		if n <= virtioNetHdrLen {
			continue
		}
		flags, gsoType := buf[0], buf[1]
		pkt := buf[virtioNetHdrLen:n]
		switch gsoType {
		case unix.VIRTIO_NET_HDR_GSO_NONE, unix.VIRTIO_NET_HDR_GSO_TCPV4, unix.VIRTIO_NET_HDR_GSO_TCPV6:
		default:
			// Not enabled by our TUNSETOFFLOAD; never expected.
			e.st.stats.inDropped.Add(1)
			continue
		}
		// A partial checksum comes from the local kernel's own memory,
		// which never computed it: there is nothing to verify.
		e.deliver(pkt, flags&unix.VIRTIO_NET_HDR_F_NEEDS_CSUM != 0, nil)
	}
}

// readPlain reads batches through the wgtun.Device interface, which splits
// super-packets; gVisor's GRO coalesces them again.
func (e *endpoint) readPlain() {
	batch := e.dev.BatchSize()
	bufs := make([][]byte, batch)
	for i := range bufs {
		bufs[i] = make([]byte, outOffset+maxPacket)
	}
	sizes := make([]int, batch)
	g := e.newGRO()
	for {
		n, err := e.dev.Read(bufs, sizes, outOffset)
		for i := 0; i < n; i++ {
			// wireguard-go completed any partial checksum, but cannot
			// tell us which were: verify them all.
			e.deliver(bufs[i][outOffset:outOffset+sizes[i]], false, g)
		}
		g.Flush()
		if err != nil {
			if errors.Is(err, wgtun.ErrTooManySegments) {
				continue
			}
			if !isClosed(err) {
				e.st.log.Error("netstack: reading device", "err", err)
			}
			return
		}
	}
}

// deliver hands one IP packet (copied) to gVisor, through g if non-nil.
// The NIC declares RX checksum offload (gVisor would otherwise verify, and
// fail, the partial checksums of packets from the kernel), so checksums
// are verified here unless partial is set.
func (e *endpoint) deliver(b []byte, partial bool, g *gro.GRO) {
	e.st.stats.packetsIn.Add(1)
	var proto tcpip.NetworkProtocolNumber
	switch b[0] >> 4 {
	case 4:
		proto = header.IPv4ProtocolNumber
	case 6:
		proto = header.IPv6ProtocolNumber
	default:
		e.st.stats.inDropped.Add(1)
		return
	}
	if !checksumOK(b, partial) {
		e.st.stats.inDropped.Add(1)
		return
	}
	if e.answerEcho(b) {
		return
	}
	if e.st.cfg.UDPAdmit != nil && !e.admitUDP(b) {
		e.st.stats.udpDropped.Add(1)
		return
	}
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(b)})
	pkt.NetworkProtocolNumber = proto
	pkt.RXChecksumValidated = true
	if g != nil {
		g.Enqueue(pkt)
	} else {
		dispatcher{e}.DeliverNetworkPacket(proto, pkt)
	}
	pkt.DecRef()
}

// answerEcho replies to an ICMP or ICMPv6 echo request for any
// destination, and reports whether b was one. gVisor answers echo only for
// addresses assigned to the NIC, not for the promiscuously captured ones.
func (e *endpoint) answerEcho(b []byte) bool {
	switch b[0] >> 4 {
	case 4:
		ip := header.IPv4(b)
		if !ip.IsValid(len(b)) || ip.Protocol() != uint8(header.ICMPv4ProtocolNumber) ||
			ip.More() || ip.FragmentOffset() != 0 || header.IsV4MulticastAddress(ip.DestinationAddress()) {
			return false
		}
		hl := int(ip.HeaderLength())
		tl := int(ip.TotalLength())
		if tl-hl < header.ICMPv4MinimumSize || header.ICMPv4(b[hl:]).Type() != header.ICMPv4Echo {
			return false
		}
		bp := outBufs.Get().(*[]byte)
		r := append((*bp)[:outOffset], b[:tl]...)
		clear(r[:outOffset]) // no stale virtio header from the pool
		rip := header.IPv4(r[outOffset:])
		src, dst := ip.SourceAddress(), ip.DestinationAddress()
		rip.SetSourceAddress(dst)
		rip.SetDestinationAddress(src)
		rip.SetTTL(64)
		rip.SetChecksum(0)
		rip.SetChecksum(^rip.CalculateChecksum())
		icmp := header.ICMPv4(r[outOffset+hl:])
		icmp.SetType(header.ICMPv4EchoReply)
		icmp.SetChecksum(0)
		icmp.SetChecksum(^checksum.Checksum(icmp, 0))
		*bp = r
		e.reply(bp, netip.AddrFrom4(dst.As4()))
		return true
	case 6:
		ip := header.IPv6(b)
		if !ip.IsValid(len(b)) || ip.TransportProtocol() != header.ICMPv6ProtocolNumber ||
			header.IsV6MulticastAddress(ip.DestinationAddress()) {
			return false
		}
		pl := int(ip.PayloadLength())
		if pl < header.ICMPv6EchoMinimumSize || header.ICMPv6(b[header.IPv6MinimumSize:]).Type() != header.ICMPv6EchoRequest {
			return false
		}
		bp := outBufs.Get().(*[]byte)
		r := append((*bp)[:outOffset], b[:header.IPv6MinimumSize+pl]...)
		clear(r[:outOffset]) // no stale virtio header from the pool
		rip := header.IPv6(r[outOffset:])
		src, dst := ip.SourceAddress(), ip.DestinationAddress()
		rip.SetSourceAddress(dst)
		rip.SetDestinationAddress(src)
		rip.SetHopLimit(64)
		icmp := header.ICMPv6(r[outOffset+header.IPv6MinimumSize:])
		icmp.SetType(header.ICMPv6EchoReply)
		icmp.SetChecksum(0)
		icmp.SetChecksum(header.ICMPv6Checksum(header.ICMPv6ChecksumParams{
			Header: icmp, Src: dst, Dst: src,
		}))
		*bp = r
		e.reply(bp, netip.AddrFrom16(dst.As16()))
		return true
	}
	return false
}

// reply sends a prepared echo reply, at once or when Config.Echo answers.
func (e *endpoint) reply(bp *[]byte, dst netip.Addr) {
	if e.st.cfg.Echo == nil {
		e.st.stats.echoReplies.Add(1)
		e.enqueue(bp)
		return
	}
	var once sync.Once
	e.st.cfg.Echo(dst, func(ok bool) {
		once.Do(func() {
			if !ok {
				e.st.stats.echoDropped.Add(1)
				outBufs.Put(bp)
				return
			}
			e.st.stats.echoReplies.Add(1)
			e.enqueue(bp)
		})
	})
}

// admitUDP asks Config.UDPAdmit about a UDP datagram; other packets, and
// DNS queries to the stack itself, pass.
func (e *endpoint) admitUDP(b []byte) bool {
	var (
		dst tcpip.Address
		n   int
	)
	switch b[0] >> 4 {
	case 4:
		ip := header.IPv4(b)
		if !ip.IsValid(len(b)) || ip.TransportProtocol() != header.UDPProtocolNumber {
			return true
		}
		dst, n = ip.DestinationAddress(), int(ip.TotalLength())-int(ip.HeaderLength())-header.UDPMinimumSize
	case 6:
		ip := header.IPv6(b)
		if !ip.IsValid(len(b)) || ip.TransportProtocol() != header.UDPProtocolNumber {
			return true
		}
		dst, n = ip.DestinationAddress(), int(ip.PayloadLength())-header.UDPMinimumSize
	default:
		return true
	}
	if d := e.st.cfg.DNSAddr; d.IsValid() && addrFrom(dst) == d.Unmap() {
		return true
	}
	return e.st.cfg.UDPAdmit(max(n, 0))
}

// checksumOK verifies the IPv4 header checksum and, unless partial, the
// TCP or UDP checksum of an IP packet. Packets it cannot parse are left to
// gVisor, which counts and drops them.
func checksumOK(b []byte, partial bool) bool {
	var (
		proto    tcpip.TransportProtocolNumber
		src, dst tcpip.Address
		l4       []byte
	)
	switch b[0] >> 4 {
	case 4:
		ip := header.IPv4(b)
		if !ip.IsValid(len(b)) {
			return true
		}
		if !ip.IsChecksumValid() {
			return false
		}
		if partial || ip.More() || ip.FragmentOffset() != 0 {
			return true
		}
		proto, src, dst = ip.TransportProtocol(), ip.SourceAddress(), ip.DestinationAddress()
		l4 = b[ip.HeaderLength():ip.TotalLength()]
	case 6:
		ip := header.IPv6(b)
		if partial || !ip.IsValid(len(b)) {
			return true
		}
		proto, src, dst = ip.TransportProtocol(), ip.SourceAddress(), ip.DestinationAddress()
		l4 = b[header.IPv6MinimumSize : header.IPv6MinimumSize+int(ip.PayloadLength())]
	default:
		return true
	}
	switch proto {
	case header.TCPProtocolNumber:
		if len(l4) < header.TCPMinimumSize {
			return true
		}
	case header.UDPProtocolNumber:
		if len(l4) < header.UDPMinimumSize {
			return true
		}
		if header.UDP(l4).Checksum() == 0 && b[0]>>4 == 4 {
			return true // no checksum (IPv4 only)
		}
	default:
		return true // ICMP is verified by gVisor or by answerEcho's sender
	}
	sum := header.PseudoHeaderChecksum(proto, src, dst, uint16(len(l4)))
	return checksum.Checksum(l4, sum) == 0xffff
}
