package node

import (
	"fmt"

	"github.com/ockam-go/ockam/internal/routing"
)

// checkInletRoute says what is wrong with an inlet's route before the
// inlet exists, instead of letting every connection be reset: its first
// hop must be a worker of this node (a secure channel, or a local outlet),
// and a route that starts over plain TCP can never reach an outlet, which
// accepts flows only out of a secure channel. Only new inlets are checked:
// a restored one may wait for its channel to come back.
func (d *Daemon) checkInletRoute(to string) error {
	route, err := d.resolve(to)
	if err != nil {
		return badRequest(err)
	}
	if len(route) == 0 {
		return badRequest(fmt.Errorf("--to %q: empty route", to))
	}
	switch first := route[0]; first.Type {
	case routing.Local:
		if !d.node.HasWorker(first.Value) {
			return badRequest(fmt.Errorf("--to %s: this node has no /service/%s (a secure channel's address comes from `ockam secure-channel create`; see `ockam secure-channel list`)", to, first.Value))
		}
	case routing.TCP:
		return badRequest(fmt.Errorf("--to %s starts over plain TCP: outlets accept flows only through a secure channel; create one with `ockam secure-channel create --to ROUTE/service/api` and give --to /service/<channel>/service/outlet", to))
	}
	return nil
}
