package tun

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// TestPoliceUDP: the kernel drops UDP into the interface beyond the rate
// before the reader sees it, lets the exempt DNS through whatever the rate,
// counts what it dropped, and leaves no table behind on Close.
func TestPoliceUDP(t *testing.T) {
	inNSNamed(t, fmt.Sprintf("ockpol-%d", os.Getpid()), func() {
		dev, err := Create("ockpol0", 1500)
		if err != nil {
			t.Error(err)
			return
		}
		defer dev.Close()
		if err := Configure("ockpol0", []netip.Prefix{netip.MustParsePrefix("100.64.0.1/10")}, nil); err != nil {
			t.Error(err)
			return
		}
		const (
			rate  = 200_000 // bytes a second
			burst = 20_000
			size  = 1000 // payload; 1028 bytes on the wire
			sent  = 3000
		)
		dns := netip.MustParseAddr("100.127.255.254")
		p, err := PoliceUDP("ockpol0", rate, burst, dns)
		if err != nil {
			t.Error(err)
			return
		}
		defer p.Close()
		// A second policer of the same interface (a node killed and
		// started again) replaces the first's table.
		if p2, err := PoliceUDP("ockpol0", rate, burst, dns); err != nil {
			t.Errorf("second PoliceUDP: %v", err)
			return
		} else {
			p = p2
		}

		var bulk, toDNS atomic.Int64 // UDP datagrams read from the device
		go func() {
			bufs := [][]byte{make([]byte, 65536)}
			sizes := []int{0}
			for {
				n, err := dev.Read(bufs, sizes, 16)
				if err != nil {
					return
				}
				for i := 0; i < n; i++ {
					b := bufs[i][16 : 16+sizes[i]]
					if len(b) < 28 || b[0]>>4 != 4 || b[9] != unix.IPPROTO_UDP {
						continue
					}
					if netip.AddrFrom4([4]byte(b[16:20])) == dns {
						toDNS.Add(1)
					} else {
						bulk.Add(1)
					}
				}
			}
		}()
		send := func(to string, n int) {
			c, err := net.Dial("udp", to)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			b := make([]byte, size)
			for range n {
				c.Write(b) // a policed datagram is dropped silently
			}
		}
		start := time.Now()
		send("100.64.0.9:9", sent)
		send(netip.AddrPortFrom(dns, 53).String(), 20)
		elapsed := time.Since(start)
		var dropped uint64
		for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if dropped, _, err = p.Dropped(); err != nil {
				t.Error(err)
				return
			}
			if int64(dropped)+bulk.Load() >= sent && toDNS.Load() == 20 {
				break
			}
		}
		// nftables' byte limits hold a second of rate besides the burst.
		allowed := int64((rate*(1+elapsed.Seconds())+burst)/(size+28)) + 1
		t.Logf("sent %d datagrams in %v: %d read, %d dropped by the policer (at most %d allowed); %d DNS read",
			sent, elapsed.Round(time.Millisecond), bulk.Load(), dropped, allowed, toDNS.Load())
		if b := bulk.Load(); b == 0 || b > allowed+allowed/10 {
			t.Errorf("%d datagrams passed the policer, want 1 to %d", b, allowed+allowed/10)
		}
		if dropped < sent/2 {
			t.Errorf("policer counted %d drops of %d", dropped, sent)
		}
		if n := toDNS.Load(); n != 20 {
			t.Errorf("%d of 20 exempt DNS datagrams read", n)
		}

		if err := p.Close(); err != nil {
			t.Error(err)
		}
		if err := p.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
		c, err := nftables.New()
		if err != nil {
			t.Fatal(err)
		}
		tables, err := c.ListTables()
		if err != nil {
			t.Fatal(err)
		}
		for _, tb := range tables {
			if tb.Name == TableName("ockpol0") {
				t.Errorf("table %s left after Close", tb.Name)
			}
		}
	})
}
