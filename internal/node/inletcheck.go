package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ockam-go/ockam/internal/portal"
	"github.com/ockam-go/ockam/internal/router"
	"github.com/ockam-go/ockam/internal/routing"
)

// inletProbeTimeout bounds how long tcp-inlet create waits for the route
// to answer its probe; without an answer the inlet is created (the far
// side may be starting).
const inletProbeTimeout = 2 * time.Second

// checkInletRoute says what is wrong with an inlet's route before the
// inlet exists, instead of letting every connection be reset: its first
// hop must be a worker of this node (a secure channel, or a local outlet),
// and a route that starts over plain TCP can never reach an outlet, which
// accepts flows only out of a secure channel. Only new inlets are checked:
// a restored one may wait for its channel to come back.
//
// Then it probes the route with an empty message, which an outlet answers
// with a refusal at once: an error reply (a hop missing on the route) or a
// reply that is not a portal message (the route ends at echo, say) is
// refused with what is wrong.
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
	ctx, cancel := context.WithTimeout(context.Background(), inletProbeTimeout)
	defer cancel()
	m, err := d.node.Request(ctx, route, nil)
	if u := (*router.UnreachableError)(nil); errors.As(err, &u) {
		return badRequest(fmt.Errorf("--to %s: no %s on that route (the node there has no such service, or does not let this node reach it; see `ockam tcp-outlet list` there)", to, u.Hop))
	}
	if err != nil {
		return nil // no answer in time: the far side may come later
	}
	if pm, err := portal.Decode(m.Payload); err != nil || pm.Kind != portal.KindRefused {
		return badRequest(fmt.Errorf("--to %s ends at a service that is not a tcp outlet (it answered a probe with %d bytes that are not a portal message)", to, len(m.Payload)))
	}
	return nil
}
