package netstack

import (
	"encoding/binary"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Packets from gVisor to the TUN device. gVisor's goroutines serialise
// packets into pooled buffers (leaving outOffset bytes of headroom); one
// writer goroutine owns the device's write side.

// WritePackets implements stack.LinkEndpoint.
func (e *endpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	n := 0
	for _, pkt := range pkts.AsSlice() {
		if e.closed.Load() {
			if n == 0 {
				return 0, &tcpip.ErrClosedForSend{}
			}
			break
		}
		size := pkt.Size()
		if size > maxPacket {
			e.st.stats.writeErr.Add(1)
			continue
		}
		bp := outBufs.Get().(*[]byte)
		b := (*bp)[:outOffset]
		if e.file != nil {
			putVnetHdr(b[outOffset-virtioNetHdrLen:outOffset], pkt)
		}
		for _, s := range pkt.AsSlices() {
			b = append(b, s...)
		}
		*bp = b
		if !e.enqueue(bp) {
			break
		}
		n++
	}
	return n, nil
}

// putVnetHdr writes the virtio header for pkt. With HostGSO gVisor leaves
// only the pseudo-header checksum in every TCP packet of a GSO-capable
// connection (ACKs included), so NEEDS_CSUM is set whenever asked for, not
// only on GSO segments.
func putVnetHdr(h []byte, pkt *stack.PacketBuffer) {
	clear(h)
	gso := pkt.GSOOptions
	if gso.Type == stack.GSONone || !gso.NeedsCsum {
		return
	}
	h[0] = unix.VIRTIO_NET_HDR_F_NEEDS_CSUM
	l3 := uint16(len(pkt.NetworkHeader().Slice()))
	binary.LittleEndian.PutUint16(h[6:], l3)             // csum_start
	binary.LittleEndian.PutUint16(h[8:], gso.CsumOffset) // csum_offset
	if pkt.Data().Size() > int(gso.MSS) && gso.MSS > 0 {
		switch gso.Type {
		case stack.GSOTCPv4:
			h[1] = unix.VIRTIO_NET_HDR_GSO_TCPV4
		case stack.GSOTCPv6:
			h[1] = unix.VIRTIO_NET_HDR_GSO_TCPV6
		default:
			return
		}
		binary.LittleEndian.PutUint16(h[2:], uint16(pkt.HeaderSize())) // hdr_len
		binary.LittleEndian.PutUint16(h[4:], gso.MSS)                  // gso_size
	}
}

// enqueue hands a serialised packet to the writer, blocking while the
// queue is full. It reports false (and recycles bp) once closed.
func (e *endpoint) enqueue(bp *[]byte) bool {
	select {
	case e.wq <- bp:
		return true
	case <-e.done:
		outBufs.Put(bp)
		return false
	}
}

// writeLoop writes queued packets to the device until close.
func (e *endpoint) writeLoop() {
	batch := make([]*[]byte, 0, maxWriteBatch)
	bufs := make([][]byte, 0, maxWriteBatch)
	acks := ackHolder{timer: time.NewTimer(time.Hour)}
	acks.timer.Stop()
	defer acks.timer.Stop()
	for {
		var bp *[]byte
		if len(acks.held) == 0 {
			select {
			case bp = <-e.wq:
			case <-e.done:
				return
			}
		} else {
			select {
			case bp = <-e.wq:
			case now := <-acks.timer.C:
				for _, a := range acks.due(now, false) {
					e.writeFile(a)
				}
				continue
			case <-e.done:
				return
			}
		}
		if bp == flushMark {
			for _, a := range acks.due(time.Now(), true) {
				e.writeFile(a)
			}
			e.markFlushed()
			continue
		}
		if e.file != nil {
			first, write, dropped := acks.take(bp, time.Now())
			if dropped != nil {
				e.st.stats.acksCarried.Add(1)
				outBufs.Put(dropped)
			}
			if first != nil {
				e.writeFile(first)
			}
			if write {
				e.writeFile(bp)
			}
			continue
		}
		// Plain mode: batch what is queued so that the device can
		// coalesce TCP segments in one Write.
		batch = append(batch[:0], bp)
		mark := false
	fill:
		for len(batch) < maxWriteBatch {
			select {
			case bp = <-e.wq:
				if bp == flushMark {
					mark = true
					break fill
				}
				batch = append(batch, bp)
			default:
				break fill
			}
		}
		bufs = bufs[:0]
		for _, bp := range batch {
			bufs = append(bufs, *bp)
		}
		if _, err := e.dev.Write(bufs, outOffset); err != nil {
			e.writeFailed(err)
		} else {
			e.st.stats.packetsOut.Add(uint64(len(bufs)))
		}
		for i, bp := range batch {
			outBufs.Put(bp)
			batch[i] = nil
		}
		if mark {
			e.markFlushed()
		}
	}
}

// writeFile writes one packet, virtio header first, and recycles it.
func (e *endpoint) writeFile(bp *[]byte) {
	if _, err := e.file.Write((*bp)[outOffset-virtioNetHdrLen:]); err != nil {
		e.writeFailed(err)
	} else {
		e.st.stats.packetsOut.Add(1)
	}
	outBufs.Put(bp)
}

func (e *endpoint) markFlushed() {
	select {
	case e.flushed <- struct{}{}:
	default:
	}
}

func (e *endpoint) writeFailed(err error) {
	e.st.stats.writeErr.Add(1)
	if !isClosed(err) {
		e.st.log.Debug("netstack: writing device", "err", err)
	}
}
