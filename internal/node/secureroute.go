package node

import (
	"context"
	"fmt"
	"strings"

	"github.com/ockam-go/ockam/internal/routing"
	"github.com/ockam-go/ockam/internal/secure"
)

// maxSecureSegments bounds the channels one route may ask for.
const maxSecureSegments = 4

// secureRoute resolves a route that may hold Ockam's `/secure/NAME`
// segment: the route before it, ending at /service/NAME, is a secure
// channel listener, and what follows goes through a channel to it, e.g.
// /node/n1/secure/api/service/echo. A channel this node already has to
// that listener (an initiator that is up) carries the message; otherwise
// one is made for it, and done closes it. Segments nest: each later one's
// listener is reached through the channels before it.
func (d *Daemon) secureRoute(ctx context.Context, s string) (route routing.Route, done func(), err error) {
	var made []*secure.Channel
	done = func() {
		for i := len(made) - 1; i >= 0; i-- {
			made[i].Close()
		}
	}
	defer func() {
		if err != nil {
			done()
		}
	}()
	for range maxSecureSegments + 1 {
		before, name, after, ok := splitSecure(s)
		if !ok {
			route, err = d.resolve(s)
			if err != nil {
				return nil, done, badRequest(err)
			}
			return route, done, nil
		}
		if len(made) == maxSecureSegments {
			return nil, done, badRequest(fmt.Errorf("route %q: more than %d /secure/ segments", s, maxSecureSegments))
		}
		listener, err := d.resolve(before + "/service/" + name)
		if err != nil {
			return nil, done, badRequest(err)
		}
		c := d.upChannelTo(listener)
		if c == nil {
			if c, err = d.sc.Create(ctx, listener, nil); err != nil {
				return nil, done, err
			}
			made = append(made, c)
		}
		s = c.Route().String() + after
	}
	return nil, done, badRequest(fmt.Errorf("route %q: more than %d /secure/ segments", s, maxSecureSegments))
}

// splitSecure finds the first /secure/NAME pair of a route's text (every
// segment of the route grammar is a key and a value).
func splitSecure(s string) (before, name, after string, ok bool) {
	if !strings.HasPrefix(s, "/") {
		return "", "", "", false // not a route: ParseRoute says why
	}
	parts := strings.Split(s[1:], "/")
	for i := 0; i+1 < len(parts); i += 2 {
		if parts[i] == "secure" {
			before = ""
			if i > 0 {
				before = "/" + strings.Join(parts[:i], "/")
			}
			if i+2 < len(parts) {
				after = "/" + strings.Join(parts[i+2:], "/")
			}
			return before, parts[i+1], after, parts[i+1] != ""
		}
	}
	return "", "", "", false
}

// upChannelTo returns an initiator channel that is up to listener, or nil.
func (d *Daemon) upChannelTo(listener routing.Route) *secure.Channel {
	want := listener.String()
	for _, c := range d.sc.Channels() {
		if c.Role() == "initiator" && c.State() == "up" && c.ListenerRoute().String() == want {
			return c
		}
	}
	return nil
}
