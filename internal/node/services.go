package node

import (
	"bytes"
	"context"

	"github.com/ockam-go/ockam/internal/router"
	"github.com/ockam-go/ockam/internal/routing"
)

// Addresses of the services every node runs besides echo, as Ockam's did.
const (
	UppercaseAddress = "uppercase"
	HopAddress       = "hop"
)

// startDefaultServices registers uppercase and hop.
//
// Both are Public, like echo. uppercase only answers along the return
// route, as echo does. hop passes a message on to the next hop of its
// onward route unchanged otherwise: it keeps the message's origin (Via,
// Peer), so the router judges the next hop exactly as if the sender had
// named it directly: a message that came over TCP still reaches only
// Public workers and return paths, and never makes the node open a TCP
// connection. hop therefore gives a remote sender nothing it did not have;
// it does not put itself on the return route, so replies never pass
// through it as locally originated messages.
func (d *Daemon) startDefaultServices() error {
	n := d.node
	if err := n.Register(UppercaseAddress, router.Public, func(m *routing.Message) error {
		return n.Reply(m, UppercaseAddress, bytes.ToUpper(m.Payload))
	}); err != nil {
		return err
	}
	return n.Register(HopAddress, router.Public, func(m *routing.Message) error {
		onward := m.Onward
		m.Onward = onward[1:]
		defer func() { m.Onward = onward }()
		if len(m.Onward) == 0 {
			n.Dropped.Add(1)
			return nil
		}
		return n.Send(context.Background(), m)
	})
}
