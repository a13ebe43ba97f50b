package netstack

import (
	"encoding/binary"
	"testing"
	"time"
)

// seg builds an outgoing IPv4 TCP packet in a pool-shaped buffer (outOffset
// of headroom): from port sport, acknowledging ack, with flags, options of
// optLen bytes and payload bytes of data.
func seg(sport uint16, ack uint32, flags uint8, optLen, payload int) *[]byte {
	tcpLen := 20 + optLen
	b := make([]byte, outOffset+20+tcpLen+payload)
	p := b[outOffset:]
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	p[9] = 6
	copy(p[12:], []byte{10, 0, 0, 1, 10, 0, 0, 2})
	tcp := p[20:]
	binary.BigEndian.PutUint16(tcp[0:], sport)
	binary.BigEndian.PutUint16(tcp[2:], 80)
	binary.BigEndian.PutUint32(tcp[8:], ack)
	tcp[12] = uint8(tcpLen/4) << 4
	tcp[13] = flags
	return &b
}

func newHolder() *ackHolder {
	h := &ackHolder{timer: time.NewTimer(time.Hour)}
	h.timer.Stop()
	return h
}

// TestAckHolder: a pure ACK waits for its connection's next packet; data
// that acknowledges as much replaces it, anything else sends it first, a
// second pure ACK marks the connection bulk (its ACKs then go at once), and
// ACKs with SACK blocks, SYNs and other connections' packets are never
// held or replaced.
func TestAckHolder(t *testing.T) {
	now := time.Now()
	check := func(name string, h *ackHolder, bp *[]byte, wantFirst *[]byte, wantWrite bool, wantDropped *[]byte) {
		t.Helper()
		first, write, dropped := h.take(bp, now)
		if first != wantFirst || write != wantWrite || dropped != wantDropped {
			t.Errorf("%s: first %p write %v dropped %p; want %p %v %p", name, first, write, dropped, wantFirst, wantWrite, wantDropped)
		}
	}

	h := newHolder()
	a := seg(1000, 500, tcpACK, 12, 0) // with timestamps
	check("a pure ACK", h, a, nil, false, nil)
	d := seg(1000, 500, tcpACK|0x08, 12, 64) // PSH|ACK with the answer
	check("the answer after it", h, d, nil, true, a)

	a = seg(1000, 600, tcpACK, 0, 0)
	check("a pure ACK again", h, a, nil, false, nil)
	old := seg(1000, 599, tcpACK, 0, 10) // acknowledges less: not a replacement
	check("data acknowledging less", h, old, a, true, nil)

	a = seg(1000, 700, tcpACK, 0, 0)
	check("an ACK", h, a, nil, false, nil)
	a2 := seg(1000, 700, tcpACK, 0, 0) // a duplicate ACK or window update
	check("a second ACK, as the first goes", h, a2, a, true, nil)
	a3 := seg(1000, 800, tcpACK, 0, 0)
	check("an ACK of a bulk connection", h, a3, nil, true, nil)
	if later := now.Add(bulkHold); !h.bulk[mustKey(t, a3)].Equal(later) {
		t.Errorf("bulk until %v, want %v", h.bulk[mustKey(t, a3)], later)
	}

	h = newHolder()
	check("a SACK", h, seg(1001, 1, tcpACK, 20, 0), nil, true, nil)
	check("a SYN-ACK", h, seg(1001, 1, tcpACK|tcpSYN, 0, 0), nil, true, nil)
	check("an RST", h, seg(1001, 1, 0x04, 0, 0), nil, true, nil)
	x := seg(1002, 1, tcpACK, 0, 0)
	check("one connection's ACK", h, x, nil, false, nil)
	check("another's data", h, seg(1003, 1, tcpACK, 0, 100), nil, true, nil)
	fin := seg(1002, 1, tcpACK|tcpFIN, 0, 0)
	check("its FIN", h, fin, nil, true, x)

	// At most maxHeldAcks at once; due hands them back oldest first.
	h = newHolder()
	var held []*[]byte
	for i := range maxHeldAcks + 1 {
		bp := seg(uint16(2000+i), 1, tcpACK, 0, 0)
		first, write, _ := h.take(bp, now.Add(time.Duration(i)*time.Microsecond))
		if first != nil || write != (i == maxHeldAcks) {
			t.Fatalf("ACK %d of %d: write %v", i, maxHeldAcks+1, write)
		}
		held = append(held, bp)
	}
	got := h.due(now.Add(ackDelay+time.Microsecond), false)
	if len(got) != 2 || got[0] != held[0] || got[1] != held[1] {
		t.Fatalf("due after %v: %d ACKs, want the 2 oldest", ackDelay, len(got))
	}
	if rest := h.due(now, true); len(rest) != maxHeldAcks-2 || len(h.held) != 0 {
		t.Fatalf("all: %d ACKs, %d left; want %d, 0", len(rest), len(h.held), maxHeldAcks-2)
	}
}

func mustKey(t *testing.T, bp *[]byte) flowKey {
	t.Helper()
	k, _, _, _, _, ok := tcpOf((*bp)[outOffset:])
	if !ok {
		t.Fatal("not TCP")
	}
	return k
}

// TestTCPOf: what is not an unfragmented TCP packet is not parsed; IPv6
// keys carry both addresses and ports.
func TestTCPOf(t *testing.T) {
	bp := seg(7, 9, tcpACK, 12, 5)
	p := (*bp)[outOffset:]
	if _, ack, flags, payload, optLen, ok := tcpOf(p); !ok || ack != 9 || flags != tcpACK || payload != 5 || optLen != 12 {
		t.Fatalf("tcpOf: ack %d flags %#x payload %d opts %d ok %v", ack, flags, payload, optLen, ok)
	}
	frag := append([]byte(nil), p...)
	frag[6] = 0x20 // more fragments
	udp := append([]byte(nil), p...)
	udp[9] = 17
	for name, q := range map[string][]byte{"a fragment": frag, "UDP": udp, "short": p[:30], "empty": nil} {
		if _, _, _, _, _, ok := tcpOf(q); ok {
			t.Errorf("%s parsed as TCP", name)
		}
	}
	v6 := make([]byte, 60)
	v6[0], v6[6] = 0x60, 6
	v6[8], v6[39] = 0xfd, 1
	binary.BigEndian.PutUint16(v6[40:], 443)
	v6[52] = 5 << 4
	k, _, _, _, _, ok := tcpOf(v6)
	if !ok || k[0] != 6 || k[1] != 0xfd || k[32] != 1 || binary.BigEndian.Uint16(k[33:]) != 443 {
		t.Fatalf("IPv6: key %x ok %v", k, ok)
	}
}

func FuzzTCPOf(f *testing.F) {
	f.Add((*seg(1, 2, tcpACK, 12, 3))[outOffset:])
	f.Add(make([]byte, 60))
	f.Fuzz(func(t *testing.T, p []byte) {
		_, _, _, payload, optLen, ok := tcpOf(p)
		if ok && (payload < 0 || optLen < 0 || optLen > 40 || payload > len(p)) {
			t.Fatalf("payload %d, options %d of a %d-byte packet", payload, optLen, len(p))
		}
	})
}
