// Package api is the control API of a node: the JSON requests and responses
// that the ockam command exchanges with a background node over the node's
// Unix socket, and a client for it.
package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// Version is the version of the control API; it is part of every path.
const Version = "v1"

// MaxBody bounds a request or response body. Checked before decoding.
const MaxBody = 1 << 20

// NodeInfo describes a running node.
type NodeInfo struct {
	Name       string   `json:"name"`
	PID        int      `json:"pid"`
	TCPAddress string   `json:"tcp_address"`
	Route      string   `json:"route"`
	Identity   string   `json:"identity,omitempty"`   // identity name in the vault
	Identifier string   `json:"identifier,omitempty"` // full identifier
	Services   []string `json:"services"`
	Status     string   `json:"status"`
	// RestoreErrors names what `node start` could not bring back (kept
	// in the configuration, tried again at the next start).
	RestoreErrors []string `json:"restore_errors,omitempty"`
}

// SendMessage asks a node to send a message and wait for the reply.
type SendMessage struct {
	To      string        `json:"to"`
	Payload string        `json:"payload"`
	Timeout time.Duration `json:"timeout,omitempty"`
}

// MessageReply is the reply to a SendMessage.
type MessageReply struct {
	Payload string `json:"payload"`
}

// CreateRelay asks a node to keep a name registered at a relay node.
type CreateRelay struct {
	Name    string        `json:"name"`
	At      string        `json:"at"` // route to the relay node
	Timeout time.Duration `json:"timeout,omitempty"`
}

// RelayInfo is one relay, as registered by this node or hosted by it.
type RelayInfo struct {
	Name      string    `json:"name"`
	At        string    `json:"at,omitempty"`
	Address   string    `json:"address,omitempty"`
	Remote    string    `json:"remote,omitempty"`
	Connected bool      `json:"connected"`
	Attempts  uint64    `json:"attempts,omitempty"`
	LastError string    `json:"last_error,omitempty"`
	Since     time.Time `json:"since,omitzero"`
}

// Relays lists both sides: names this node keeps registered elsewhere, and
// names registered at this node's forwarding service.
type Relays struct {
	Registered []RelayInfo `json:"registered"`
	Hosted     []RelayInfo `json:"hosted"`
}

// CreateChannel asks a node to open a secure channel to a listener.
type CreateChannel struct {
	To         string        `json:"to"`
	Authorized []string      `json:"authorized,omitempty"`
	Timeout    time.Duration `json:"timeout,omitempty"`
}

// ChannelInfo describes a secure channel end.
type ChannelInfo struct {
	Address   string    `json:"address"`         // local route: /service/<hex>
	Role      string    `json:"role"`            // initiator or responder
	To        string    `json:"to"`              // routes the channel was made to, comma-separated (initiator)
	Route     string    `json:"route,omitempty"` // the route in use (initiator)
	Peer      string    `json:"peer"`            // peer identifier
	State     string    `json:"state"`
	Epoch     uint64    `json:"epoch"`
	Sent      uint64    `json:"sent"`
	Received  uint64    `json:"received"`
	Rejected  uint64    `json:"rejected"`
	BytesOut  uint64    `json:"bytes_out"`         // channel messages sent, ciphertext bytes
	BytesIn   uint64    `json:"bytes_in"`          // channel messages received, ciphertext bytes
	UpSince   time.Time `json:"up_since,omitzero"` // while up
	LastError string    `json:"last_error,omitempty"`
}

// CreateListener asks a node to run a secure channel listener.
type CreateListener struct {
	Address       string   `json:"address"`
	Authorized    []string `json:"authorized,omitempty"`
	TrustEveryone bool     `json:"trust_everyone,omitempty"`
}

// ListenerInfo describes a secure channel listener.
type ListenerInfo struct {
	Address       string   `json:"address"`
	Authorized    []string `json:"authorized,omitempty"`
	TrustEveryone bool     `json:"trust_everyone,omitempty"`
}

// CreateInlet asks a node to listen on a TCP address and carry each
// connection to an outlet.
type CreateInlet struct {
	Name string `json:"name,omitempty"`
	From string `json:"from"` // host:port to listen on
	To   string `json:"to"`   // route to the outlet
}

// CreateOutlet asks a node to open connections to a TCP target for flows
// arriving at an address.
type CreateOutlet struct {
	Name  string   `json:"name,omitempty"`
	From  string   `json:"from"` // local address of the outlet, e.g. "outlet"
	To    string   `json:"to"`   // host:port, or host with Ports
	Ports []string `json:"ports,omitempty"`
	Allow []string `json:"allow,omitempty"` // identifiers allowed; empty means the node's trust
	// Netstack: connect from a virtual source address per client identity,
	// through a TUN and a userspace stack of the node's own (needs
	// CAP_NET_ADMIN), so the server tells clients apart.
	Netstack bool `json:"netstack,omitempty"`
	// NetstackPrefix and NetstackPrefix6 choose the node's virtual source
	// ranges (default 198.18.0.0/15 and fd7a:6f63:6b6f::/48) when this
	// outlet creates the node's outlet netstack; later outlets must agree.
	NetstackPrefix  string `json:"netstack_prefix,omitempty"`
	NetstackPrefix6 string `json:"netstack_prefix6,omitempty"`
	// UDP also carries UDP to the same host and ports (the same identities
	// allowed), at the outlet's address + ".udp" (package datagram).
	UDP bool `json:"udp,omitempty"`
}

// FlowInfo is one carried TCP connection.
type FlowInfo struct {
	ID       string    `json:"id"`
	Client   string    `json:"client,omitempty"`
	Target   string    `json:"target,omitempty"`
	BytesIn  uint64    `json:"bytes_in"`  // from the network side into the local socket
	BytesOut uint64    `json:"bytes_out"` // read from the local socket and sent
	Opened   time.Time `json:"opened"`
}

// PortalInfo describes an inlet or an outlet.
type PortalInfo struct {
	Name      string     `json:"name"`
	Kind      string     `json:"kind"` // inlet or outlet
	From      string     `json:"from"`
	To        string     `json:"to"`
	Allow     []string   `json:"allow,omitempty"`
	Flows     []FlowInfo `json:"flows"`
	Total     uint64     `json:"total_flows"`
	LastError string     `json:"last_error,omitempty"`
	// UDP is set on outlets that also carry UDP (see CreateOutlet.UDP).
	UDP *UDPInfo `json:"udp,omitempty"`
}

// UDPInfo counts an outlet's UDP associations and datagrams.
type UDPInfo struct {
	Open      int64  `json:"associations_open"`
	Total     uint64 `json:"associations_total"`
	Sent      uint64 `json:"datagrams_sent"`     // to the clients
	Received  uint64 `json:"datagrams_received"` // from the clients, written to the target
	Dropped   uint64 `json:"datagrams_dropped"`
	LastError string `json:"last_error,omitempty"`
}

// Error is the body of every non-2xx response.
type Error struct {
	Error string `json:"error"`
}

// Client talks to one node's control socket.
type Client struct {
	hc   *http.Client
	node string
}

// ErrNotRunning is returned when nothing answers on the node's socket.
var ErrNotRunning = errors.New("node is not running")

// NewClient returns a client for the node whose socket is at path.
func NewClient(node, socketPath string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socketPath)
		},
		MaxIdleConns: 1,
	}
	return &Client{hc: &http.Client{Transport: tr}, node: node}
}

// do sends a request with an optional JSON body and decodes the response
// into out (which may be nil). The typed methods (routes.go) are built on
// it; callers use those.
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://node/"+Version+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return fmt.Errorf("node %s did not answer in time", c.node)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("node %s: %w", c.node, ErrNotRunning)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxBody+1))
	if err != nil {
		return fmt.Errorf("node %s: reading reply: %w", c.node, err)
	}
	if len(b) > MaxBody {
		return fmt.Errorf("node %s: reply over %d bytes", c.node, MaxBody)
	}
	if resp.StatusCode/100 != 2 {
		var e Error
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return &StatusError{Code: resp.StatusCode, Err: errors.New(e.Error)}
		}
		return &StatusError{Code: resp.StatusCode, Err: fmt.Errorf("node %s: %s", c.node, strings.TrimSpace(resp.Status))}
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("node %s: bad reply: %w", c.node, err)
		}
	}
	return nil
}

// Decode reads a JSON request body of at most MaxBody bytes into v,
// refusing unknown fields and trailing data.
func Decode(r io.Reader, v any) error {
	b, err := io.ReadAll(io.LimitReader(r, MaxBody+1))
	if err != nil {
		return fmt.Errorf("reading request: %w", err)
	}
	return DecodeBytes(b, v)
}

// DecodeBytes is Decode on a byte slice.
func DecodeBytes(b []byte, v any) error {
	if len(b) > MaxBody {
		return fmt.Errorf("request body over %d bytes", MaxBody)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("bad request: %w", err)
	}
	if dec.More() {
		return errors.New("bad request: trailing data after the JSON value")
	}
	return nil
}
