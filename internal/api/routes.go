package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"strings"
)

// Control is the control API as Go methods. The node runtime (package
// daemon) implements it directly; Client implements it over a node's
// socket; Handler serves any implementation over HTTP. Tests and the
// command drive nodes through it, never through hand-built paths.
type Control interface {
	Info(ctx context.Context) (NodeInfo, error)
	Shutdown(ctx context.Context) error
	Send(ctx context.Context, req SendMessage) (MessageReply, error)

	CreateRelay(ctx context.Context, req CreateRelay) (RelayInfo, error)
	Relays(ctx context.Context) (Relays, error)
	DeleteRelay(ctx context.Context, name string) error

	CreateChannel(ctx context.Context, req CreateChannel) (ChannelInfo, error)
	Channels(ctx context.Context) ([]ChannelInfo, error)
	Channel(ctx context.Context, addr string) (ChannelInfo, error)
	DeleteChannel(ctx context.Context, addr string) error

	CreateListener(ctx context.Context, req CreateListener) (ListenerInfo, error)
	Listeners(ctx context.Context) ([]ListenerInfo, error)
	DeleteListener(ctx context.Context, addr string) error

	CreateInlet(ctx context.Context, req CreateInlet) (PortalInfo, error)
	Inlets(ctx context.Context) ([]PortalInfo, error)
	Inlet(ctx context.Context, name string) (PortalInfo, error)
	DeleteInlet(ctx context.Context, name string) error

	CreateOutlet(ctx context.Context, req CreateOutlet) (PortalInfo, error)
	Outlets(ctx context.Context) ([]PortalInfo, error)
	Outlet(ctx context.Context, name string) (PortalInfo, error)
	DeleteOutlet(ctx context.Context, name string) error

	CreateTun(ctx context.Context, req CreateTun) (TunInfo, error)
	Tun(ctx context.Context) (TunInfo, error)
	DeleteTun(ctx context.Context) error
	CreateMapping(ctx context.Context, req CreateMapping) (Mapping, error)
	DeleteMapping(ctx context.Context, key string) error

	CreateSocks(ctx context.Context, req CreateSocks) (SocksInfo, error)
	SocksListeners(ctx context.Context) ([]SocksInfo, error)
	DeleteSocks(ctx context.Context, from string) error
}

// None is the request or reply of an endpoint that has none.
type None struct{}

// Endpoint is one route of the control API: its method, its path after
// /v1 (a {name} segment is the one path argument, escaped by the client),
// and, as type parameters, its request and reply.
type Endpoint[Req, Resp any] struct {
	Method, Pattern, Doc string
}

// Route is an endpoint without its types: what the table, the docs and
// their test read.
type Route struct {
	Method, Pattern string
	Request, Reply  string // type names; "" for None
	Doc             string
}

// Route describes e.
func (e Endpoint[Req, Resp]) Route() Route {
	return Route{Method: e.Method, Pattern: e.Pattern, Request: typeName[Req](), Reply: typeName[Resp](), Doc: e.Doc}
}

func typeName[T any]() string {
	t := reflect.TypeFor[T]()
	if t == reflect.TypeFor[None]() {
		return ""
	}
	if t.Kind() == reflect.Slice {
		return "[]" + t.Elem().Name()
	}
	return t.Name()
}

// The endpoints. Adding a resource adds its endpoints here, to Routes, to
// Control, to Client and to Handler (the compiler and TestRoutesServed
// point at whatever is missing), and one kind to the node's registry.
var (
	GetNode      = Endpoint[None, NodeInfo]{"GET", "/node", "the node's name, addresses, identity and services"}
	PostShutdown = Endpoint[None, None]{"POST", "/shutdown", "stops the node (its configuration is kept)"}
	PostMessages = Endpoint[SendMessage, MessageReply]{"POST", "/messages", "sends a message and waits for the reply"}

	PostRelays  = Endpoint[CreateRelay, RelayInfo]{"POST", "/relays", "keeps a name registered at a relay node"}
	GetRelays   = Endpoint[None, Relays]{"GET", "/relays", "names registered elsewhere and names hosted here"}
	DeleteRelay = Endpoint[None, None]{"DELETE", "/relays/{name}", "stops keeping a name registered"}

	PostChannels  = Endpoint[CreateChannel, ChannelInfo]{"POST", "/secure-channels", "opens a secure channel to a listener"}
	GetChannels   = Endpoint[None, []ChannelInfo]{"GET", "/secure-channels", "the secure channels"}
	GetChannel    = Endpoint[None, ChannelInfo]{"GET", "/secure-channels/{addr}", "one secure channel"}
	DeleteChannel = Endpoint[None, None]{"DELETE", "/secure-channels/{addr}", "closes a secure channel, telling the peer"}

	PostListeners  = Endpoint[CreateListener, ListenerInfo]{"POST", "/secure-channel-listeners", "accepts secure channels at an address"}
	GetListeners   = Endpoint[None, []ListenerInfo]{"GET", "/secure-channel-listeners", "the secure channel listeners"}
	DeleteListener = Endpoint[None, None]{"DELETE", "/secure-channel-listeners/{addr}", "stops a listener"}

	PostInlets  = Endpoint[CreateInlet, PortalInfo]{"POST", "/tcp-inlets", "listens on a TCP address and carries connections to an outlet"}
	GetInlets   = Endpoint[None, []PortalInfo]{"GET", "/tcp-inlets", "the inlets"}
	GetInlet    = Endpoint[None, PortalInfo]{"GET", "/tcp-inlets/{name}", "one inlet with its flows"}
	DeleteInlet = Endpoint[None, None]{"DELETE", "/tcp-inlets/{name}", "closes an inlet and its flows"}

	PostOutlets  = Endpoint[CreateOutlet, PortalInfo]{"POST", "/tcp-outlets", "connects flows arriving at an address to a TCP target"}
	GetOutlets   = Endpoint[None, []PortalInfo]{"GET", "/tcp-outlets", "the outlets"}
	GetOutlet    = Endpoint[None, PortalInfo]{"GET", "/tcp-outlets/{name}", "one outlet with its flows"}
	DeleteOutlet = Endpoint[None, None]{"DELETE", "/tcp-outlets/{name}", "closes an outlet and its flows"}

	PostTun       = Endpoint[CreateTun, TunInfo]{"POST", "/tun", "creates the node's virtual interface (root)"}
	GetTun        = Endpoint[None, TunInfo]{"GET", "/tun", "the interface, its mappings and flows"}
	DeleteTun     = Endpoint[None, None]{"DELETE", "/tun", "removes the interface (mappings stay)"}
	PostMappings  = Endpoint[CreateMapping, Mapping]{"POST", "/tun/mappings", "gives an outlet a virtual address and a name"}
	DeleteMapping = Endpoint[None, None]{"DELETE", "/tun/mappings/{key}", "removes the mapping of an address or a name"}

	PostSocks   = Endpoint[CreateSocks, SocksInfo]{"POST", "/socks", "runs a SOCKS5 listener"}
	GetSocks    = Endpoint[None, []SocksInfo]{"GET", "/socks", "the SOCKS5 listeners"}
	DeleteSocks = Endpoint[None, None]{"DELETE", "/socks/{from}", "stops a SOCKS5 listener and its flows"}
)

// Routes is the route table, in the order of docs/PROTOCOL.md section 6.
var Routes = []Route{
	GetNode.Route(), PostShutdown.Route(), PostMessages.Route(),
	PostRelays.Route(), GetRelays.Route(), DeleteRelay.Route(),
	PostChannels.Route(), GetChannels.Route(), GetChannel.Route(), DeleteChannel.Route(),
	PostListeners.Route(), GetListeners.Route(), DeleteListener.Route(),
	PostInlets.Route(), GetInlets.Route(), GetInlet.Route(), DeleteInlet.Route(),
	PostOutlets.Route(), GetOutlets.Route(), GetOutlet.Route(), DeleteOutlet.Route(),
	PostTun.Route(), GetTun.Route(), DeleteTun.Route(), PostMappings.Route(), DeleteMapping.Route(),
	PostSocks.Route(), GetSocks.Route(), DeleteSocks.Route(),
}

// path fills the pattern's argument, escaped.
func (e Endpoint[Req, Resp]) path(args []string) (string, error) {
	i := strings.IndexByte(e.Pattern, '{')
	if i < 0 {
		return e.Pattern, nil
	}
	j := strings.IndexByte(e.Pattern[i:], '}') + i
	if len(args) != 1 || args[0] == "" {
		return "", fmt.Errorf("missing %s", e.Pattern[i+1:j])
	}
	return e.Pattern[:i] + url.PathEscape(args[0]) + e.Pattern[j+1:], nil
}

// arg is the name of the pattern's argument, or "".
func (e Endpoint[Req, Resp]) arg() string {
	i := strings.IndexByte(e.Pattern, '{')
	if i < 0 {
		return ""
	}
	return e.Pattern[i+1 : i+strings.IndexByte(e.Pattern[i:], '}')]
}

// StatusError is an error with the HTTP status the adapter answers it
// with; the client returns one for every non-2xx reply.
type StatusError struct {
	Code int
	Err  error
}

func (e *StatusError) Error() string { return e.Err.Error() }
func (e *StatusError) Unwrap() error { return e.Err }

// BadRequest, NotFound and Conflict wrap err with their status.
func BadRequest(err error) error { return &StatusError{http.StatusBadRequest, err} }
func NotFound(err error) error   { return &StatusError{http.StatusNotFound, err} }
func Conflict(err error) error   { return &StatusError{http.StatusConflict, err} }

// IsNotFound reports whether err is a NotFound.
func IsNotFound(err error) bool {
	var se *StatusError
	return errors.As(err, &se) && se.Code == http.StatusNotFound
}

// call runs one endpoint through the client.
func call[Req, Resp any](ctx context.Context, c *Client, e Endpoint[Req, Resp], req Req, args ...string) (Resp, error) {
	var out Resp
	p, err := e.path(args)
	if err != nil {
		return out, err
	}
	var in any
	if _, none := any(req).(None); !none {
		in = req
	}
	if _, none := any(out).(None); none {
		return out, c.do(ctx, e.Method, p, in, nil)
	}
	return out, c.do(ctx, e.Method, p, in, &out)
}

func (c *Client) Info(ctx context.Context) (NodeInfo, error) { return call(ctx, c, GetNode, None{}) }
func (c *Client) Shutdown(ctx context.Context) error {
	_, err := call(ctx, c, PostShutdown, None{})
	return err
}
func (c *Client) Send(ctx context.Context, req SendMessage) (MessageReply, error) {
	return call(ctx, c, PostMessages, req)
}
func (c *Client) CreateRelay(ctx context.Context, req CreateRelay) (RelayInfo, error) {
	return call(ctx, c, PostRelays, req)
}
func (c *Client) Relays(ctx context.Context) (Relays, error) { return call(ctx, c, GetRelays, None{}) }
func (c *Client) DeleteRelay(ctx context.Context, name string) error {
	_, err := call(ctx, c, DeleteRelay, None{}, name)
	return err
}
func (c *Client) CreateChannel(ctx context.Context, req CreateChannel) (ChannelInfo, error) {
	return call(ctx, c, PostChannels, req)
}
func (c *Client) Channels(ctx context.Context) ([]ChannelInfo, error) {
	return call(ctx, c, GetChannels, None{})
}
func (c *Client) Channel(ctx context.Context, addr string) (ChannelInfo, error) {
	return call(ctx, c, GetChannel, None{}, strings.TrimPrefix(addr, "/service/"))
}
func (c *Client) DeleteChannel(ctx context.Context, addr string) error {
	_, err := call(ctx, c, DeleteChannel, None{}, strings.TrimPrefix(addr, "/service/"))
	return err
}
func (c *Client) CreateListener(ctx context.Context, req CreateListener) (ListenerInfo, error) {
	return call(ctx, c, PostListeners, req)
}
func (c *Client) Listeners(ctx context.Context) ([]ListenerInfo, error) {
	return call(ctx, c, GetListeners, None{})
}
func (c *Client) DeleteListener(ctx context.Context, addr string) error {
	_, err := call(ctx, c, DeleteListener, None{}, strings.TrimPrefix(addr, "/service/"))
	return err
}
func (c *Client) CreateInlet(ctx context.Context, req CreateInlet) (PortalInfo, error) {
	return call(ctx, c, PostInlets, req)
}
func (c *Client) Inlets(ctx context.Context) ([]PortalInfo, error) {
	return call(ctx, c, GetInlets, None{})
}
func (c *Client) Inlet(ctx context.Context, name string) (PortalInfo, error) {
	return call(ctx, c, GetInlet, None{}, name)
}
func (c *Client) DeleteInlet(ctx context.Context, name string) error {
	_, err := call(ctx, c, DeleteInlet, None{}, name)
	return err
}
func (c *Client) CreateOutlet(ctx context.Context, req CreateOutlet) (PortalInfo, error) {
	return call(ctx, c, PostOutlets, req)
}
func (c *Client) Outlets(ctx context.Context) ([]PortalInfo, error) {
	return call(ctx, c, GetOutlets, None{})
}
func (c *Client) Outlet(ctx context.Context, name string) (PortalInfo, error) {
	return call(ctx, c, GetOutlet, None{}, name)
}
func (c *Client) DeleteOutlet(ctx context.Context, name string) error {
	_, err := call(ctx, c, DeleteOutlet, None{}, name)
	return err
}
func (c *Client) CreateTun(ctx context.Context, req CreateTun) (TunInfo, error) {
	return call(ctx, c, PostTun, req)
}
func (c *Client) Tun(ctx context.Context) (TunInfo, error) { return call(ctx, c, GetTun, None{}) }
func (c *Client) DeleteTun(ctx context.Context) error {
	_, err := call(ctx, c, DeleteTun, None{})
	return err
}
func (c *Client) CreateMapping(ctx context.Context, req CreateMapping) (Mapping, error) {
	return call(ctx, c, PostMappings, req)
}
func (c *Client) DeleteMapping(ctx context.Context, key string) error {
	_, err := call(ctx, c, DeleteMapping, None{}, key)
	return err
}
func (c *Client) CreateSocks(ctx context.Context, req CreateSocks) (SocksInfo, error) {
	return call(ctx, c, PostSocks, req)
}
func (c *Client) SocksListeners(ctx context.Context) ([]SocksInfo, error) {
	return call(ctx, c, GetSocks, None{})
}
func (c *Client) DeleteSocks(ctx context.Context, from string) error {
	_, err := call(ctx, c, DeleteSocks, None{}, from)
	return err
}

var _ Control = (*Client)(nil)
