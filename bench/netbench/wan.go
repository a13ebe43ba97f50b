package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The packet line: the Internet path of the WAN profile at the IP layer, so
// that every path's kernel TCP (socat, ssh, wireguard's UDP, our transport
// connections) sees the real round trip and the real loss. This kernel has
// no sch_netem; the line is a TUN device owned by this process.
//
// How packets get there (bench/bench.sh, setup_wan_line): in the relay
// namespace, policy rules placed above the `local` rule send the packets of
// the WAN addresses that arrive from a veth, and the relay's own packets to
// the far ends, to a TUN device (`ip rule ... iif VETH lookup T`, table T:
// `default dev TUN`). This process reads each packet, holds it for -delay and
// writes it back into the same TUN, where the kernel takes it as received
// on the TUN and routes it on (delivers it locally, or forwards it out of
// the other veth, or into the next leg's TUN). rp_filter is off and
// accept_local on for the TUN, as the packets carry the relay's own
// addresses.
//
// Speed: the TUN has IFF_VNET_HDR and TSO/checksum offload (TUNSETOFFLOAD),
// so TCP's 64 KiB super-packets pass whole, with their virtio header, and
// the line copies each byte once in and once out; no packet is parsed.
// Packets sit in one byte ring in arrival order (the delay is constant, so
// the queue is FIFO); the writer goroutine sleeps on its own OS thread
// (nanosleep: timer slack of tens of µs, not the Go netpoller's
// millisecond) until the head is due, then writes every due packet.
//
// Loss: -loss P drops each packet with probability P. A super-packet is many
// segments, so with loss > 0 the line turns the offloads off and the kernel
// hands it MTU-sized packets (segmenting and checksumming in software): each
// dropped packet is one segment on the wire, as on a real path. The ring
// (-queue-mib) and the queue of packets (-max-packets) are bounded; a full
// one drops the packet, as a router's queue does. There is no bandwidth cap:
// the line adds delay and loss, nothing else.
//
// Control (-control SOCK, a Unix socket, one command a line, answered "ok"
// or a JSON object): `loss P` sets the loss (and the offloads) at run time;
// `offloads off` turns them off without loss (a lossy measure's baseline),
// `offloads on` back on; `stats` returns the counters. `netbench wanctl -control SOCK loss 0.01`.

// Sizes of the packet line.
const (
	// wanMaxPacket is the largest read from the TUN: a 64 KiB GSO packet
	// and its virtio header.
	wanMaxPacket = 64<<10 + 64
	// wanDefaultQueueMiB holds 12.5 ms of 40 Gbit/s.
	wanDefaultQueueMiB = 64
	// wanDefaultMaxPackets bounds the queue in packets.
	wanDefaultMaxPackets = 1 << 17
	// wanOffloads: checksum offload and TSO both ways, as wireguard-go asks.
	wanOffloads = unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO6
)

// wanStats are the line's counters.
type wanStats struct {
	Packets    uint64  `json:"packets"`     // read from the TUN
	Bytes      uint64  `json:"bytes"`       // of those, with their virtio headers
	Written    uint64  `json:"written"`     // written back
	LossDrops  uint64  `json:"loss_drops"`  // dropped by -loss
	QueueDrops uint64  `json:"queue_drops"` // dropped on a full queue
	WriteErrs  uint64  `json:"write_errs"`  // refused by the TUN on the way back
	Loss       float64 `json:"loss"`        // the loss now asked
	Offloads   bool    `json:"offloads"`    // TSO on
	LateMaxUs  uint64  `json:"late_max_us"` // most a packet went out after its due time
	Late1ms    uint64  `json:"late_1ms"`    // packets out more than 1 ms after their due time
}

type wanPacket struct {
	start uint64 // ring position (monotonic; modulo len(ring) indexes it)
	n     int
	at    int64 // due, monotonic nanoseconds (wanNow)
}

// wanLine is one TUN device and its delay queue.
type wanLine struct {
	f     *os.File
	rc    syscall.RawConn
	delay time.Duration
	ring  []byte
	q     chan wanPacket
	freed atomic.Uint64 // ring bytes before this position are free again
	loss  atomic.Uint64 // math.Float64bits of the loss probability
	mu    sync.Mutex    // serialises offload changes

	packets, bytes, written, lossDrops, queueDrops, writeErrs, lateMax, late1ms atomic.Uint64
	offloads                                                                    atomic.Bool

	done chan struct{}
	wg   sync.WaitGroup
}

var wanEpoch = time.Now()

// wanNow is monotonic nanoseconds since the process started.
func wanNow() int64 { return int64(time.Since(wanEpoch)) }

// openTUN creates the TUN device name (IFF_TUN, no packet information,
// virtio headers) in the calling thread's network namespace.
func openTUN(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tun name %q: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("TUNSETIFF %s: %w", name, err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), "/dev/net/tun"), nil
}

// newWANLine runs a line on the TUN f: reads, delays by d, writes back.
func newWANLine(f *os.File, d time.Duration, loss float64, queueBytes, maxPackets int) (*wanLine, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	l := &wanLine{
		f: f, rc: rc, delay: d,
		ring: make([]byte, queueBytes),
		q:    make(chan wanPacket, maxPackets),
		done: make(chan struct{}),
	}
	if err := l.setLoss(loss); err != nil {
		return nil, err
	}
	l.wg.Add(2)
	go l.reader()
	go l.writer()
	return l, nil
}

// setLoss sets the drop probability; offloads are on only without loss.
func (l *wanLine) setLoss(p float64) error {
	if p < 0 || p >= 1 || math.IsNaN(p) {
		return errors.New("loss must be in [0, 1)")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.setOffloadsLocked(p == 0); err != nil {
		return err
	}
	l.loss.Store(math.Float64bits(p))
	return nil
}

// setOffloads turns the offloads off (or back on) without loss: the
// baseline of a lossy measure, which runs without them (MTU-sized packets,
// segmented in software), so that a loss figure is compared with the same
// line doing the same work. They stay off while the loss is above 0.
func (l *wanLine) setOffloads(on bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if on && math.Float64frombits(l.loss.Load()) > 0 {
		return errors.New("offloads stay off while the line drops packets")
	}
	return l.setOffloadsLocked(on)
}

func (l *wanLine) setOffloadsLocked(on bool) error {
	var off uintptr
	if on {
		off = wanOffloads
	}
	var serr error
	err := l.rc.Control(func(fd uintptr) {
		_, _, e := unix.Syscall(unix.SYS_IOCTL, fd, unix.TUNSETOFFLOAD, off)
		if e != 0 {
			serr = e
		}
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("TUNSETOFFLOAD: %w", err)
	}
	l.offloads.Store(on)
	return nil
}

func (l *wanLine) stats() wanStats {
	return wanStats{
		Packets: l.packets.Load(), Bytes: l.bytes.Load(), Written: l.written.Load(),
		LossDrops: l.lossDrops.Load(), QueueDrops: l.queueDrops.Load(), WriteErrs: l.writeErrs.Load(),
		Loss: math.Float64frombits(l.loss.Load()), Offloads: l.offloads.Load(),
		LateMaxUs: l.lateMax.Load() / 1000, Late1ms: l.late1ms.Load(),
	}
}

// Close stops the line and closes the TUN (which deletes the device).
func (l *wanLine) Close() error {
	select {
	case <-l.done:
		return nil
	default:
	}
	close(l.done)
	err := l.f.Close() // ends the reader's wait
	l.wg.Wait()
	return err
}

// reader takes every packet the kernel routes into the TUN, in a loop of
// non-blocking reads straight into the ring, waiting on the poller only
// when the TUN is empty.
func (l *wanLine) reader() {
	defer l.wg.Done()
	defer close(l.q)
	var scratch [wanMaxPacket]byte
	size := uint64(len(l.ring))
	w := uint64(0) // next ring position
	for {
		var rerr error
		err := l.rc.Read(func(fd uintptr) bool {
			for {
				off := w % size
				if size-off < wanMaxPacket {
					w += size - off // skip the tail: packets are contiguous
					off = 0
				}
				buf := l.ring[off : off+wanMaxPacket]
				full := w+wanMaxPacket > l.freed.Load()+size
				if full {
					buf = scratch[:]
				}
				n, err := unix.Read(int(fd), buf)
				if err == unix.EINTR {
					continue
				}
				if err == unix.EAGAIN {
					return false // empty: wait for the poller
				}
				if err != nil || n <= 0 {
					rerr = fmt.Errorf("read: %v (%d)", err, n)
					return true
				}
				l.packets.Add(1)
				l.bytes.Add(uint64(n))
				if full {
					l.queueDrops.Add(1)
					continue
				}
				if p := math.Float64frombits(l.loss.Load()); p > 0 && rand.Float64() < p {
					l.lossDrops.Add(1)
					continue
				}
				select {
				case l.q <- wanPacket{start: w, n: n, at: wanNow() + int64(l.delay)}:
					w += uint64(n)
				default:
					l.queueDrops.Add(1)
				}
			}
		})
		if err != nil || rerr != nil {
			return // closed, or the device is gone
		}
	}
}

// writer writes each packet back when it is due. It owns an OS thread, so
// that its sleeps are nanosleeps with the kernel's timer precision.
func (l *wanLine) writer() {
	defer l.wg.Done()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	size := uint64(len(l.ring))
	for p := range l.q {
		if wait := p.at - wanNow(); wait > 0 {
			ts := unix.NsecToTimespec(wait)
			for unix.Nanosleep(&ts, &ts) == unix.EINTR {
			}
		}
		if late := wanNow() - p.at; late > int64(time.Millisecond) {
			l.late1ms.Add(1)
			if uint64(late) > l.lateMax.Load() {
				l.lateMax.Store(uint64(late))
			}
		}
		b := l.ring[p.start%size:][:p.n]
		var werr error
		// A TUN write does not wait for room; RawConn.Write keeps the fd
		// from being closed under it.
		if err := l.rc.Write(func(fd uintptr) bool {
			_, werr = unix.Write(int(fd), b)
			return werr != unix.EAGAIN
		}); err != nil {
			return // closed
		}
		if werr != nil {
			l.writeErrs.Add(1)
		} else {
			l.written.Add(1)
		}
		l.freed.Store(p.start + uint64(p.n))
	}
}

// wanLineCmd is `netbench wan`: one packet line per -tun, until SIGTERM.
func wanLineCmd(args []string) error {
	fs := flag.NewFlagSet("wan", flag.ExitOnError)
	name := fs.String("tun", "", "TUN device to create and carry (in the current network namespace)")
	d := fs.Duration("delay", 0, "delay added to every packet")
	loss := fs.Float64("loss", 0, "share of packets dropped (0..1); > 0 turns TSO off")
	queueMiB := fs.Int("queue-mib", wanDefaultQueueMiB, "bytes the line holds, MiB (a full line drops)")
	maxPackets := fs.Int("max-packets", wanDefaultMaxPackets, "packets the line holds (a full line drops)")
	control := fs.String("control", "", "Unix socket for `netbench wanctl` (loss, stats)")
	fs.Parse(args)
	switch {
	case *name == "":
		return errors.New("need -tun NAME")
	case *d < 0 || *d > time.Minute:
		return errors.New("-delay must be in [0, 1m]")
	case *queueMiB < 1 || *queueMiB > 4096:
		return errors.New("-queue-mib must be in [1, 4096]")
	case *maxPackets < 1 || *maxPackets > 1<<24:
		return errors.New("-max-packets must be in [1, 16777216]")
	}
	f, err := openTUN(*name)
	if err != nil {
		return err
	}
	l, err := newWANLine(f, *d, *loss, *queueMiB<<20, *maxPackets)
	if err != nil {
		f.Close()
		return err
	}
	defer l.Close()
	if *control != "" {
		os.Remove(*control)
		ln, err := net.Listen("unix", *control)
		if err != nil {
			return err
		}
		defer os.Remove(*control)
		defer ln.Close()
		go serveWANControl(ln, l)
	}
	fmt.Fprintf(os.Stderr, "wan line on %s: %v, loss %g\n", *name, *d, *loss)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	st, _ := json.Marshal(l.stats())
	fmt.Fprintf(os.Stderr, "wan line on %s: %s\n", *name, st)
	return nil
}

// wanMaxCommand bounds a control line.
const wanMaxCommand = 256

func serveWANControl(ln net.Listener, l *wanLine) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			sc := bufio.NewScanner(c)
			sc.Buffer(make([]byte, wanMaxCommand), wanMaxCommand)
			for sc.Scan() {
				fmt.Fprintln(c, wanCommand(l, sc.Text()))
			}
		}()
	}
}

// wanCommand runs one control command and returns its one-line answer.
func wanCommand(l *wanLine, line string) string {
	f := strings.Fields(line)
	switch {
	case len(f) == 2 && f[0] == "loss":
		p, err := strconv.ParseFloat(f[1], 64)
		if err == nil {
			err = l.setLoss(p)
		}
		if err != nil {
			return "error: " + err.Error()
		}
		return "ok"
	case len(f) == 2 && f[0] == "offloads" && (f[1] == "on" || f[1] == "off"):
		if err := l.setOffloads(f[1] == "on"); err != nil {
			return "error: " + err.Error()
		}
		return "ok"
	case len(f) == 1 && f[0] == "stats":
		b, _ := json.Marshal(l.stats())
		return string(b)
	}
	return "error: commands are `loss P`, `offloads on|off` and `stats`"
}

// wanCtlCmd is `netbench wanctl -control SOCK COMMAND...`: prints the answer,
// fails on an error answer.
func wanCtlCmd(args []string) error {
	fs := flag.NewFlagSet("wanctl", flag.ExitOnError)
	control := fs.String("control", "", "the line's control socket")
	fs.Parse(args)
	if *control == "" || fs.NArg() == 0 {
		return errors.New("usage: wanctl -control SOCK loss P | offloads on|off | stats")
	}
	c, err := net.DialTimeout("unix", *control, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintln(c, strings.Join(fs.Args(), " ")); err != nil {
		return err
	}
	ans, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	ans = strings.TrimSpace(ans)
	if strings.HasPrefix(ans, "error") {
		return errors.New(ans)
	}
	fmt.Println(ans)
	return nil
}
