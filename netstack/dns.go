package netstack

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"golang.org/x/net/dns/dnsmessage"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

const (
	// maxDNSQuery bounds an accepted query. Plain DNS over UDP is at most
	// 512 bytes; EDNS(0) clients may send more, never near this.
	maxDNSQuery = 4096
	// dnsTTL is the TTL of answers, in seconds: short, since SetNames may
	// change the mapping at any time.
	dnsTTL = 10
)

// SetNames replaces the DNS names the stack answers for. Names are
// case-insensitive, with or without the trailing dot (e.g. "api.ockam").
// An IPv4 address answers A queries, an IPv6 address AAAA queries; a
// query for a known name of the other family gets an empty answer, and an
// unknown name NXDOMAIN. The map is copied.
func (st *Stack) SetNames(names map[string]netip.Addr) {
	m := make(map[string]netip.Addr, len(names))
	for n, a := range names {
		m[canonicalName(n)] = a.Unmap()
	}
	st.names.Store(&m)
}

func canonicalName(n string) string {
	return strings.ToLower(strings.TrimSuffix(n, "."))
}

func (st *Stack) lookup(name string) (netip.Addr, bool) {
	a, ok := (*st.names.Load())[canonicalName(name)]
	return a, ok
}

// startDNS binds UDP port 53 at addr (adding it to the NIC, since UDP
// has no forwarder here) and serves queries on one goroutine.
func (st *Stack) startDNS(addr netip.Addr) error {
	fa, proto := fullAddr(netip.AddrPortFrom(addr, 53))
	pa := tcpip.ProtocolAddress{Protocol: proto, AddressWithPrefix: fa.Addr.WithPrefix()}
	if err := st.s.AddProtocolAddress(nicID, pa, stack.AddressProperties{}); err != nil {
		return fmt.Errorf("netstack: adding dns address %s: %s", addr, err)
	}
	c, err := gonet.DialUDP(st.s, &fa, nil, proto)
	if err != nil {
		return fmt.Errorf("netstack: listening for dns on %s: %w", addr, err)
	}
	st.dns = c
	st.wg.Add(1)
	go func() {
		defer st.wg.Done()
		st.serveDNS(c)
	}()
	return nil
}

func (st *Stack) serveDNS(c *gonet.UDPConn) {
	buf := make([]byte, maxDNSQuery+1)
	out := make([]byte, 0, 512)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				st.log.Debug("netstack: dns read", "err", err)
			}
			return
		}
		if n > maxDNSQuery {
			continue
		}
		resp, ok := answerDNS(out[:0], buf[:n], st.lookup)
		if !ok {
			continue
		}
		st.stats.dnsQueries.Add(1)
		if _, err := c.WriteTo(resp, from); err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
		}
	}
}

// answerDNS appends to dst the response to query, resolving names with
// lookup. It reports false when query is not a DNS query to answer (a
// response, or too short to carry an ID). Malformed queries get FORMERR,
// other opcodes NOTIMP.
func answerDNS(dst, query []byte, lookup func(string) (netip.Addr, bool)) ([]byte, bool) {
	if len(query) > maxDNSQuery {
		return nil, false
	}
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil {
		return nil, false
	}
	if h.Response {
		return nil, false
	}
	rh := dnsmessage.Header{
		ID:                 h.ID,
		Response:           true,
		OpCode:             h.OpCode,
		Authoritative:      true,
		RecursionDesired:   h.RecursionDesired,
		RecursionAvailable: false,
	}
	if h.OpCode != 0 {
		rh.RCode = dnsmessage.RCodeNotImplemented
		return finishDNS(dst, rh, nil, netip.Addr{})
	}
	q, err := p.Question()
	if err != nil {
		rh.RCode = dnsmessage.RCodeFormatError
		return finishDNS(dst, rh, nil, netip.Addr{})
	}
	// Exactly one question: anything else is not a query we understand.
	if _, err := p.Question(); !errors.Is(err, dnsmessage.ErrSectionDone) {
		rh.RCode = dnsmessage.RCodeFormatError
		return finishDNS(dst, rh, nil, netip.Addr{})
	}
	if q.Class != dnsmessage.ClassINET {
		rh.RCode = dnsmessage.RCodeNotImplemented
		return finishDNS(dst, rh, &q, netip.Addr{})
	}
	a, ok := lookup(q.Name.String())
	if !ok {
		rh.RCode = dnsmessage.RCodeNameError
		return finishDNS(dst, rh, &q, netip.Addr{})
	}
	if (q.Type == dnsmessage.TypeA && a.Is4()) || (q.Type == dnsmessage.TypeAAAA && a.Is6()) {
		return finishDNS(dst, rh, &q, a)
	}
	return finishDNS(dst, rh, &q, netip.Addr{}) // NODATA
}

func finishDNS(dst []byte, h dnsmessage.Header, q *dnsmessage.Question, a netip.Addr) ([]byte, bool) {
	b := dnsmessage.NewBuilder(dst, h)
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, false
	}
	if q != nil {
		if err := b.Question(*q); err != nil {
			return nil, false
		}
	}
	if q != nil && a.IsValid() {
		if err := b.StartAnswers(); err != nil {
			return nil, false
		}
		rh := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: dnsTTL}
		var err error
		if a.Is4() {
			err = b.AResource(rh, dnsmessage.AResource{A: a.As4()})
		} else {
			err = b.AAAAResource(rh, dnsmessage.AAAAResource{AAAA: a.As16()})
		}
		if err != nil {
			return nil, false
		}
	}
	out, err := b.Finish()
	if err != nil {
		return nil, false
	}
	return out, true
}
