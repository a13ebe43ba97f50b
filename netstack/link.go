package netstack

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
	wgtun "golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/stack/gro"
)

// The link endpoint between gVisor and the TUN device has two modes:
//
//   - vnet: the device is a Linux TUN opened with IFF_VNET_HDR (what
//     wireguard-go's CreateTUN does). We read and write its file directly
//     with the 10-byte virtio header: the kernel hands us 64 KiB TCP
//     super-packets with partial checksums, and gVisor's 64 KiB GSO
//     segments go to the kernel in one write. Per-packet cost dominates in
//     gVisor, so this is the fast path.
//   - plain: any other wgtun.Device, through its batched Read and Write.
//     gVisor's GRO re-coalesces what the device splits, and wireguard-go's
//     Write coalesces what gVisor sends.
//
// Outbound packets are serialised by the caller into pooled buffers and
// written by one dedicated writer goroutine, which batches in plain mode.

const (
	// outOffset is the headroom left in front of each outbound packet: room
	// for the virtio header (wireguard-go's Write needs offset >= 10).
	outOffset = 16
	// virtioNetHdrLen is the size of struct virtio_net_hdr.
	virtioNetHdrLen = 10
	// maxPacket is the largest IP packet (or TSO super-packet) handled.
	maxPacket = 65535
	// gsoMaxSize bounds gVisor's GSO segments, headers included, under the
	// 64 KiB limit of an IPv4 total length.
	gsoMaxSize = maxPacket - 2*header.IPv6MinimumSize
	// writeQueueLen bounds packets queued for the writer goroutine; a full
	// queue blocks gVisor's sender (backpressure, never a drop).
	writeQueueLen = 512
	// maxWriteBatch bounds packets per device Write in plain mode.
	maxWriteBatch = 64
)

// forcePlain makes every device use the plain mode (tests and benchmarks).
var forcePlain bool

var outBufs = sync.Pool{New: func() any { b := make([]byte, outOffset+maxPacket); return &b }}

type endpoint struct {
	st   *Stack
	dev  wgtun.Device
	file *os.File // non-nil in vnet mode
	mtu  atomic.Uint32

	disp atomic.Pointer[stack.NetworkDispatcher]

	wq      chan *[]byte  // outbound packets, outOffset bytes of headroom
	flushed chan struct{} // the writer met flushMark
	done    chan struct{}
	closed  atomic.Bool
	once    sync.Once
}

func newEndpoint(st *Stack, dev wgtun.Device, mtu uint32) (*endpoint, error) {
	e := &endpoint{
		st:      st,
		dev:     dev,
		wq:      make(chan *[]byte, writeQueueLen),
		flushed: make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
	e.mtu.Store(mtu)
	f, err := vnetFile(dev)
	if err != nil {
		return nil, err
	}
	e.file = f
	return e, nil
}

// vnetFile returns the device's file if it carries virtio headers with TCP
// offloads, or nil for the plain mode.
func vnetFile(dev wgtun.Device) (*os.File, error) {
	if _, ok := dev.(*wgtun.NativeTun); !ok || forcePlain {
		return nil, nil
	}
	f := dev.File()
	if f == nil {
		return nil, nil
	}
	// Not f.Fd(): it would switch the file to blocking mode.
	sc, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("netstack: device file: %w", err)
	}
	var flags uint16
	var ierr error
	if err := sc.Control(func(fd uintptr) {
		var ifr *unix.Ifreq
		if ifr, ierr = unix.NewIfreq(""); ierr != nil {
			return
		}
		if ierr = unix.IoctlIfreq(int(fd), unix.TUNGETIFF, ifr); ierr != nil {
			return
		}
		flags = ifr.Uint16()
		if flags&unix.IFF_VNET_HDR == 0 {
			return
		}
		// TCP offloads only: no UDP segmentation offload, which we would
		// have to split ourselves.
		ierr = unix.IoctlSetInt(int(fd), unix.TUNSETOFFLOAD, unix.TUN_F_CSUM|unix.TUN_F_TSO4|unix.TUN_F_TSO6)
	}); err != nil {
		return nil, fmt.Errorf("netstack: device file: %w", err)
	}
	if ierr != nil {
		return nil, fmt.Errorf("netstack: reading device flags: %w", ierr)
	}
	if flags&unix.IFF_VNET_HDR == 0 {
		return nil, nil
	}
	return f, nil
}

// start launches the reader, writer and device-event goroutines.
func (e *endpoint) start() {
	e.st.wg.Add(3)
	go func() {
		defer e.st.wg.Done()
		if e.file != nil {
			e.readVnet()
		} else {
			e.readPlain()
		}
	}()
	go func() {
		defer e.st.wg.Done()
		e.writeLoop()
	}()
	go func() {
		defer e.st.wg.Done()
		// wireguard-go's device blocks its status goroutines until events
		// are taken; the channel closes when the device closes.
		for range e.dev.Events() {
		}
	}()
}

// flushMark, queued by flush, tells the writer to report that every packet
// before it has been written.
var flushMark = new([]byte)

// flush waits, up to d, until the writer has written every packet queued
// before the call: Close uses it so that the resets and FINs of the
// connections it ends reach the applications before the device goes.
func (e *endpoint) flush(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case e.wq <- flushMark:
	case <-t.C:
		return
	case <-e.done:
		return
	}
	select {
	case <-e.flushed:
	case <-t.C:
	case <-e.done:
	}
}

// close stops the writer; the device must be closed already.
func (e *endpoint) close() {
	e.once.Do(func() {
		e.closed.Store(true)
		close(e.done)
	})
}

// MTU implements stack.LinkEndpoint.
func (e *endpoint) MTU() uint32 { return e.mtu.Load() }

// SetMTU implements stack.LinkEndpoint.
func (e *endpoint) SetMTU(mtu uint32) { e.mtu.Store(mtu) }

// MaxHeaderLength implements stack.LinkEndpoint.
func (*endpoint) MaxHeaderLength() uint16 { return 0 }

// LinkAddress implements stack.LinkEndpoint.
func (*endpoint) LinkAddress() tcpip.LinkAddress { return "" }

// SetLinkAddress implements stack.LinkEndpoint.
func (*endpoint) SetLinkAddress(tcpip.LinkAddress) {}

// Capabilities implements stack.LinkEndpoint.
//
// RX checksum offload is declared because gVisor's NIC applies it to every
// packet (a per-packet RXChecksumValidated is overwritten), and TSO packets
// from the kernel carry partial checksums; deliver verifies the others
// itself. TX checksum offload is not declared: in vnet mode checksums are
// offloaded per packet through the GSO options (NEEDS_CSUM), and declaring
// it without a virtio header would make the kernel drop packets.
func (*endpoint) Capabilities() stack.LinkEndpointCapabilities {
	return stack.CapabilityRXChecksumOffload
}

// GSOMaxSize implements stack.GSOEndpoint.
func (e *endpoint) GSOMaxSize() uint32 {
	if e.file == nil {
		return 0
	}
	return gsoMaxSize
}

// SupportedGSO implements stack.GSOEndpoint.
func (e *endpoint) SupportedGSO() stack.SupportedGSO {
	if e.file == nil {
		return stack.GSONotSupported
	}
	return stack.HostGSOSupported
}

// Attach implements stack.LinkEndpoint.
func (e *endpoint) Attach(d stack.NetworkDispatcher) {
	if d == nil {
		e.disp.Store(nil)
		return
	}
	e.disp.Store(&d)
}

// IsAttached implements stack.LinkEndpoint.
func (e *endpoint) IsAttached() bool { return e.disp.Load() != nil }

// Wait implements stack.LinkEndpoint. The Stack joins our goroutines.
func (*endpoint) Wait() {}

// ARPHardwareType implements stack.LinkEndpoint.
func (*endpoint) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareNone }

// AddHeader implements stack.LinkEndpoint.
func (*endpoint) AddHeader(*stack.PacketBuffer) {}

// ParseHeader implements stack.LinkEndpoint.
func (*endpoint) ParseHeader(*stack.PacketBuffer) bool { return true }

// Close implements stack.LinkEndpoint. The Stack closes the device.
func (*endpoint) Close() {}

// SetOnCloseAction implements stack.LinkEndpoint.
func (*endpoint) SetOnCloseAction(func()) {}

// dispatcher forwards to the attached stack, dropping packets after the
// NIC is removed; it lets GRO hold a fixed Dispatcher.
type dispatcher struct{ e *endpoint }

func (d dispatcher) DeliverNetworkPacket(p tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	if dp := d.e.disp.Load(); dp != nil {
		(*dp).DeliverNetworkPacket(p, pkt)
	}
}

func (d dispatcher) DeliverLinkPacket(p tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	if dp := d.e.disp.Load(); dp != nil {
		(*dp).DeliverLinkPacket(p, pkt)
	}
}

var _ stack.GSOEndpoint = (*endpoint)(nil)
var _ stack.LinkEndpoint = (*endpoint)(nil)

// newGRO returns a GRO stage feeding the stack.
func (e *endpoint) newGRO() *gro.GRO {
	g := &gro.GRO{}
	g.Init(true)
	g.Dispatcher = dispatcher{e}
	return g
}

func isClosed(err error) bool {
	return errors.Is(err, os.ErrClosed) || errors.Is(err, unix.EBADFD)
}
