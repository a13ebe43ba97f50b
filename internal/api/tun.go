package api

import "time"

// CreateTun asks a node (running as root) to create its virtual interface.
// Zero values take the defaults of package tun (ockam0, 100.64.0.0/10,
// MTU 65000).
type CreateTun struct {
	Name   string `json:"name,omitempty"`
	Prefix string `json:"prefix,omitempty"` // IPv4 range routed into the interface
	MTU    int    `json:"mtu,omitempty"`
	// UDPRate shapes UDP from the interface to the outlets, in bytes per
	// second: 0 takes datagram.DefaultRate, a negative value none.
	UDPRate int64 `json:"udp_rate,omitempty"`
}

// CreateMapping asks a node to give a remote service (the route to its
// outlet) a virtual address and a DNS name.
type CreateMapping struct {
	To   string `json:"to"`             // route to the outlet
	IP   string `json:"ip,omitempty"`   // virtual IPv4 address; empty allocates one
	Name string `json:"name,omitempty"` // DNS name; empty: none
}

// Mapping is one virtual address and the outlet it leads to.
type Mapping struct {
	IP    string `json:"ip"`
	IP6   string `json:"ip6,omitempty"`
	Name  string `json:"name,omitempty"`
	To    string `json:"to"`
	Flows int    `json:"open_flows"`
	Total uint64 `json:"total_flows"`
	// LastError is the last failure to open a flow (refusal, no answer).
	LastError string `json:"last_error,omitempty"`
}

// TunStats are counters of the userspace stack behind the interface.
type TunStats struct {
	FlowsOpen   int64  `json:"flows_open"`
	FlowsTotal  uint64 `json:"flows_total"`
	SYNsRefused uint64 `json:"syns_refused"`
	BytesIn     uint64 `json:"bytes_in"`
	BytesOut    uint64 `json:"bytes_out"`
	DNSQueries  uint64 `json:"dns_queries"`
	EchoReplies uint64 `json:"echo_replies"`
	// UDP associations (one per application 5-tuple) and datagrams
	// dropped (queues full, too big, no mapping, refused by the outlet).
	UDPAssocsOpen  int64  `json:"udp_associations_open"`
	UDPAssocsTotal uint64 `json:"udp_associations_total"`
	UDPDropped     uint64 `json:"udp_dropped"`
	// UDPPoliced counts datagrams the kernel dropped beyond the UDP rate
	// before the node read them (see TunInfo.UDPPolicer).
	UDPPoliced uint64 `json:"udp_policed,omitempty"`
}

// TunInfo describes a node's virtual interface (absent when Name is empty),
// its mappings and its live flows.
type TunInfo struct {
	Name     string `json:"name,omitempty"`
	Address  string `json:"address,omitempty"`  // interface address with prefix length
	Address6 string `json:"address6,omitempty"` // IPv6 interface address with prefix length
	DNS      string `json:"dns,omitempty"`      // where the interface answers DNS
	// Families are the address families the interface carries ("ipv4",
	// "ipv6"); LeftOut says why one is missing (e.g. IPv6 disabled).
	Families []string `json:"families,omitempty"`
	LeftOut  string   `json:"left_out,omitempty"`
	MTU      int      `json:"mtu,omitempty"`
	UDPRate  int64    `json:"udp_rate,omitempty"` // bytes per second; 0: no limit
	// UDPPolicer says who sheds UDP beyond UDPRate: the kernel (and the
	// node), or the node only, and why.
	UDPPolicer string     `json:"udp_policer,omitempty"`
	Created    time.Time  `json:"created,omitzero"`
	Mappings   []Mapping  `json:"mappings"`
	Flows      []FlowInfo `json:"flows"`
	Stats      *TunStats  `json:"stats,omitempty"`
}

// CreateSocks asks a node to run a SOCKS5 listener. With To, every CONNECT
// goes to that outlet with the requested port; without it, the requested
// host must be a mapped name or virtual address.
type CreateSocks struct {
	From string `json:"from"` // host:port to listen on
	To   string `json:"to,omitempty"`
}

// SocksInfo describes a SOCKS5 listener.
type SocksInfo struct {
	From      string     `json:"from"`
	To        string     `json:"to,omitempty"`
	Flows     []FlowInfo `json:"flows"`
	Total     uint64     `json:"total_connects"`
	LastError string     `json:"last_error,omitempty"`
}
