package datagram

import (
	"net"
	"sync"
	"testing"
	"time"
)

// TestPacer: an association above holdAbove bytes per holdFor waits for the
// end of the window; a quiet one never waits, and one that turns quiet
// stops waiting after a window.
func TestPacer(t *testing.T) {
	t0 := time.Unix(1000, 0)
	var p pacer
	// Request/response: a 64-byte datagram every 100 µs never waits.
	for i := range 100 {
		now := t0.Add(time.Duration(i) * 100 * time.Microsecond)
		p.add(now, 64)
		if d := p.hold(now); d != 0 {
			t.Fatalf("quiet datagram %d holds %v", i, d)
		}
	}
	// A 100 Mbit/s stream: 1400 bytes every 112 µs.
	t1 := t0.Add(time.Second)
	held := 0
	for i := range 100 {
		now := t1.Add(time.Duration(i) * 112 * time.Microsecond)
		p.add(now, 1400)
		d := p.hold(now)
		if d < 0 || d > holdFor {
			t.Fatalf("datagram %d holds %v, want 0 to %v", i, d, holdFor)
		}
		if d > 0 {
			held++
		}
	}
	if held < 80 {
		t.Errorf("%d of 100 datagrams of a 100 Mbit/s stream held, want most", held)
	}
	// Quiet again after two windows: no wait.
	now := t1.Add(time.Second)
	p.add(now, 1400)
	if d := p.hold(now); d != 0 {
		t.Errorf("a datagram after a second of silence holds %v", d)
	}
}

// TestPumpBatchesBusy: a fast stream through a real socket leaves in far
// fewer messages than datagrams, all of them delivered, and a lone datagram
// leaves at once, alone.
func TestPumpBatchesBusy(t *testing.T) {
	rx, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	rx.SetReadBuffer(socketBuffer)
	tx, err := net.DialUDP("udp", nil, rx.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	type msg struct {
		single bool
		n      int // datagrams
		at     time.Time
	}
	var (
		mu   sync.Mutex
		msgs []msg
	)
	done := make(chan error, 1)
	go func() {
		done <- pump(rx, 0, nil, func() { t.Error("dropped") }, func(single bool, b []byte) {
			n := 1
			if !single {
				if err := checkEntries(b); err != nil {
					t.Errorf("batch: %v", err)
				}
				n = 0
				m := Msg{Entries: b}
				m.Each(func([]byte) { n++ })
			}
			mu.Lock()
			msgs = append(msgs, msg{single, n, time.Now()})
			mu.Unlock()
		})
	}()
	count := func() (m, d int) {
		mu.Lock()
		defer mu.Unlock()
		for _, x := range msgs {
			d += x.n
		}
		return len(msgs), d
	}
	waitFor := func(want int) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			if _, d := count(); d >= want {
				return
			}
		}
		_, d := count()
		t.Fatalf("%d of %d datagrams came out of the pump", d, want)
	}

	// A lone datagram on a quiet association goes at once.
	sent := time.Now()
	tx.Write(make([]byte, 100))
	waitFor(1)
	mu.Lock()
	first := msgs[0]
	mu.Unlock()
	if first.at.Sub(sent) > 50*time.Millisecond || !first.single {
		t.Errorf("lone datagram: single %v after %v", first.single, first.at.Sub(sent))
	}
	time.Sleep(3 * holdFor) // the association is quiet again

	const n = 2000
	b := make([]byte, 1400)
	for i := 0; i < n; i++ {
		tx.Write(b)
		if i%4 == 3 {
			// About 400 Mbit/s at most (sleeps are longer than asked):
			// the socket's buffer holds a millisecond of it.
			time.Sleep(100 * time.Microsecond)
		}
	}
	// A loaded machine may leave the pump unscheduled long enough for
	// the socket to overflow: nine in ten must arrive.
	waitFor(1 + n*9/10)
	m, d := count()
	t.Logf("%d datagrams sent, %d came out in %d messages", n, d-1, m-1)
	if m-1 > (d-1)/4 {
		t.Errorf("%d datagrams of a busy association went in %d messages, want at most %d", d-1, m-1, (d-1)/4)
	}
	rx.Close()
	<-done
}
