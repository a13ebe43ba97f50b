package tun

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// A UDP policer in the kernel, in front of the interface.
//
// UDP has no congestion control: an application can send into the
// interface faster than any tunnel carries. The node sheds what exceeds its
// --udp-rate, but it sheds only what it has read, one datagram per read
// syscall (the TUN batches TCP super-packets, never UDP its sender did not
// segment). Under a flood those reads, and the device's 500-packet queue
// overflowing into the TCP packets queued behind the datagrams, cost the
// TCP flows of the same interface half their speed (integration
// TestUDPTun/flood_vs_tcp). A policer on the device's egress hook drops the
// excess in the sender's own context, silently as a full link would,
// before it is queued for the node.
//
// The policer is state the node owns, as it owns the interface: one
// nftables table, family netdev, named TableName(ifname), whose only chain
// is bound to that interface. It is made after the interface and deleted
// before it; a table left by a node that was killed is replaced on the next
// create. This is how wg-quick and Tailscale keep their own netfilter state
// (a table or chains of their own, nothing else touched).

// policerPrefix begins the name of every policer table.
const policerPrefix = "ockam-"

// TableName is the nftables table of the policer for interface ifname.
func TableName(ifname string) string { return policerPrefix + ifname }

// Policer is the kernel policer of one interface. Its methods are safe for
// concurrent use.
type Policer struct {
	ifname string

	mu     sync.Mutex
	conn   *nftables.Conn
	table  *nftables.Table
	chain  *nftables.Chain
	closed bool
}

// PoliceUDP drops the UDP that the host sends into interface ifname beyond
// rate bytes a second (IP packet bytes, headers included) with burst bytes
// of slack. UDP to exempt on port 53 (the stack's own DNS) always passes;
// an invalid exempt exempts nothing. Other protocols are not looked at. The
// interface must exist.
func PoliceUDP(ifname string, rate uint64, burst uint32, exempt netip.Addr) (*Policer, error) {
	if rate == 0 {
		return nil, errors.New("tun: policer rate must be above 0")
	}
	c, err := nftables.New(nftables.AsLasting())
	if err != nil {
		return nil, fmt.Errorf("tun: nftables: %w", err)
	}
	p := &Policer{ifname: ifname, conn: c}
	p.table = &nftables.Table{Family: nftables.TableFamilyNetdev, Name: TableName(ifname)}
	// A stale table of a killed node: delete it in the same batch (an
	// add-then-delete is how nft flushes a table that may not exist).
	c.AddTable(p.table)
	c.DelTable(p.table)
	c.AddTable(p.table)
	prio := nftables.ChainPriorityFilter
	policy := nftables.ChainPolicyAccept
	p.chain = c.AddChain(&nftables.Chain{
		Name: "udp", Table: p.table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookEgress, Priority: prio, Device: ifname, Policy: &policy,
	})
	if exempt.IsValid() {
		c.AddRule(&nftables.Rule{Table: p.table, Chain: p.chain, Exprs: dnsExempt(exempt.Unmap())})
	}
	c.AddRule(&nftables.Rule{Table: p.table, Chain: p.chain, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},
		&expr.Limit{Type: expr.LimitTypePktBytes, Rate: rate, Unit: expr.LimitTimeSecond, Burst: burst, Over: true},
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}})
	if err := c.Flush(); err != nil {
		c.CloseLasting()
		return nil, fmt.Errorf("tun: adding nftables table %s for %s: %w", p.table.Name, ifname, err)
	}
	return p, nil
}

// dnsExempt accepts UDP to dst port 53.
func dnsExempt(dst netip.Addr) []expr.Any {
	// In the netdev family "meta nfproto" is netdev: the family is the
	// packet's EtherType (skb->protocol), in network order.
	proto, off := uint16(unix.ETH_P_IP), uint32(16) // IPv4 destination address
	if dst.Is6() {
		proto, off = unix.ETH_P_IPV6, 24
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyPROTOCOL, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(proto)},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: uint32(dst.BitLen() / 8)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: dst.AsSlice()},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(53)},
		&expr.Verdict{Kind: expr.VerdictAccept},
	}
}

// Table is the name of the policer's nftables table.
func (p *Policer) Table() string { return p.table.Name }

// Dropped returns the datagrams (and their bytes) the policer dropped.
func (p *Policer) Dropped() (packets, bytes uint64, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return 0, 0, errors.New("tun: policer closed")
	}
	rules, err := p.conn.GetRules(p.table, p.chain)
	if err != nil {
		return 0, 0, fmt.Errorf("tun: reading nftables table %s: %w", p.table.Name, err)
	}
	for _, r := range rules {
		for _, e := range r.Exprs {
			if c, ok := e.(*expr.Counter); ok {
				packets += c.Packets
				bytes += c.Bytes
			}
		}
	}
	return packets, bytes, nil
}

// Close deletes the policer's table. Closing twice is a no-op.
func (p *Policer) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	p.conn.DelTable(p.table)
	err := p.conn.Flush()
	p.conn.CloseLasting()
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("tun: deleting nftables table %s: %w", p.table.Name, err)
	}
	return nil
}
