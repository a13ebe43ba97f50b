package netstack

import (
	"encoding/binary"
	"time"
)

// Pure ACKs held back for a moment.
//
// gVisor's TCP acknowledges every segment it takes at once, where Linux
// delays an ACK hoping to carry it on data. Through a tunnel the answer to a
// request comes a tunnel round trip later, so each request costs the TUN
// two writes (the ACK, then the answer) and the client's kernel one more
// packet to take. The writer therefore holds a pure ACK (ACK alone, no
// payload, no options beyond timestamps) for up to ackDelay: the next packet
// of its connection that carries data and acknowledges as much replaces it;
// anything else of that connection (another ACK, a window update, SACK, RST)
// sends it first, so that duplicate ACKs and window updates all go, in
// order. At most one ACK per connection is held, maxHeldAcks in all. A
// connection that sends a second pure ACK while one is held is taking bulk
// data (the sender's ACK clock must not slow down): its ACKs are not held
// for bulkHold after that.
const (
	ackDelay    = time.Millisecond
	maxHeldAcks = 64
	bulkHold    = 100 * time.Millisecond
)

// flowKey names a TCP connection: IP version, source and destination
// addresses, ports.
type flowKey [1 + 32 + 4]byte

type heldAck struct {
	key flowKey
	ack uint32
	bp  *[]byte
	due time.Time
}

const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpACK = 0x10
)

// tcpOf parses the IP and TCP headers of an outgoing packet p: its
// connection, acknowledgement number and flags, and its payload length. ok
// is false for anything but an unfragmented TCP packet with no IPv6
// extension headers.
func tcpOf(p []byte) (k flowKey, ack uint32, flags uint8, payload, optLen int, ok bool) {
	var tcp []byte
	switch {
	case len(p) >= 20 && p[0]>>4 == 4:
		ihl := int(p[0]&0xf) * 4
		if ihl < 20 || len(p) < ihl+20 || p[9] != 6 || binary.BigEndian.Uint16(p[6:])&0x3fff != 0 {
			return
		}
		k[0] = 4
		copy(k[1:], p[12:20])
		tcp = p[ihl:]
	case len(p) >= 60 && p[0]>>4 == 6:
		if p[6] != 6 {
			return
		}
		k[0] = 6
		copy(k[1:], p[8:40])
		tcp = p[40:]
	default:
		return
	}
	off := int(tcp[12]>>4) * 4
	if off < 20 || off > len(tcp) {
		return
	}
	copy(k[33:], tcp[:4])
	return k, binary.BigEndian.Uint32(tcp[8:]), tcp[13], len(tcp) - off, off - 20, true
}

// ackHolder is the writer's set of held ACKs, oldest first. It is owned by
// the writer goroutine.
type ackHolder struct {
	held  []heldAck
	timer *time.Timer
	bulk  map[flowKey]time.Time // until when a connection's ACKs go at once; ≤ maxHeldAcks entries
}

// take decides for the outgoing packet bp: first is a held ACK of its
// connection to write before it (nil: none), write whether to write bp now
// (false: it is held), and dropped a held ACK that bp replaces, for the
// caller to recycle.
func (h *ackHolder) take(bp *[]byte, now time.Time) (first *[]byte, write bool, dropped *[]byte) {
	k, ack, flags, payload, optLen, ok := tcpOf((*bp)[outOffset:])
	if !ok {
		return nil, true, nil
	}
	pure := flags == tcpACK && payload == 0 && optLen <= 12
	for i := range h.held {
		if h.held[i].key != k {
			continue
		}
		old := h.held[i]
		h.held = append(h.held[:i], h.held[i+1:]...)
		if (payload > 0 || flags&(tcpSYN|tcpFIN) != 0) && flags&tcpACK != 0 && int32(ack-old.ack) >= 0 {
			return nil, true, old.bp
		}
		if pure {
			h.markBulk(k, now)
		}
		return old.bp, true, nil
	}
	if !pure || len(h.held) >= maxHeldAcks {
		return nil, true, nil
	}
	// Only a pure ACK looks up the bulk set: data packets stay off it.
	if t, ok := h.bulk[k]; ok {
		if now.Before(t) {
			return nil, true, nil
		}
		delete(h.bulk, k)
	}
	h.held = append(h.held, heldAck{key: k, ack: ack, bp: bp, due: now.Add(ackDelay)})
	if len(h.held) == 1 {
		h.timer.Reset(ackDelay)
	}
	return nil, false, nil
}

// due removes and returns the held ACKs whose time has come (all, with
// all), and re-arms the timer for the next.
func (h *ackHolder) due(now time.Time, all bool) []*[]byte {
	var out []*[]byte
	n := 0
	for n < len(h.held) && (all || !h.held[n].due.After(now)) {
		out = append(out, h.held[n].bp)
		n++
	}
	h.held = append(h.held[:0], h.held[n:]...)
	if len(h.held) > 0 {
		h.timer.Reset(h.held[0].due.Sub(now))
	}
	return out
}

// markBulk exempts connection k from holding for bulkHold. The set stays
// small: beyond maxHeldAcks entries the expired ones go, and if none has,
// all of them (they are held again, until their next pair of ACKs).
func (h *ackHolder) markBulk(k flowKey, now time.Time) {
	if h.bulk == nil {
		h.bulk = make(map[flowKey]time.Time)
	}
	if len(h.bulk) >= maxHeldAcks {
		for x, t := range h.bulk {
			if !now.Before(t) {
				delete(h.bulk, x)
			}
		}
		if len(h.bulk) >= maxHeldAcks {
			clear(h.bulk)
		}
	}
	h.bulk[k] = now.Add(bulkHold)
}
