package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
)

// Handler serves c over HTTP at /v1: each endpoint decodes its request
// (bounded, strict), calls one method of c and encodes the reply. It holds
// no logic of its own. Errors are {"error": "one line"} with the status of
// a StatusError, or 500.
func Handler(c Control) *http.ServeMux {
	h := &handler{mux: http.NewServeMux()}
	h.all(c)
	return h.mux
}

// all registers every endpoint.
func (h *handler) all(c Control) {
	serve(h, GetNode, func(ctx context.Context, _ None, _ string) (NodeInfo, error) { return c.Info(ctx) })
	serve(h, PostShutdown, func(ctx context.Context, _ None, _ string) (None, error) { return None{}, c.Shutdown(ctx) })
	serve(h, PostMessages, func(ctx context.Context, r SendMessage, _ string) (MessageReply, error) { return c.Send(ctx, r) })

	serve(h, PostRelays, func(ctx context.Context, r CreateRelay, _ string) (RelayInfo, error) { return c.CreateRelay(ctx, r) })
	serve(h, GetRelays, func(ctx context.Context, _ None, _ string) (Relays, error) { return c.Relays(ctx) })
	serve(h, DeleteRelay, func(ctx context.Context, _ None, a string) (None, error) { return None{}, c.DeleteRelay(ctx, a) })

	serve(h, PostChannels, func(ctx context.Context, r CreateChannel, _ string) (ChannelInfo, error) {
		return c.CreateChannel(ctx, r)
	})
	serve(h, GetChannels, func(ctx context.Context, _ None, _ string) ([]ChannelInfo, error) { return c.Channels(ctx) })
	serve(h, GetChannel, func(ctx context.Context, _ None, a string) (ChannelInfo, error) { return c.Channel(ctx, a) })
	serve(h, DeleteChannel, func(ctx context.Context, _ None, a string) (None, error) { return None{}, c.DeleteChannel(ctx, a) })

	serve(h, PostListeners, func(ctx context.Context, r CreateListener, _ string) (ListenerInfo, error) {
		return c.CreateListener(ctx, r)
	})
	serve(h, GetListeners, func(ctx context.Context, _ None, _ string) ([]ListenerInfo, error) { return c.Listeners(ctx) })
	serve(h, DeleteListener, func(ctx context.Context, _ None, a string) (None, error) { return None{}, c.DeleteListener(ctx, a) })

	serve(h, PostInlets, func(ctx context.Context, r CreateInlet, _ string) (PortalInfo, error) { return c.CreateInlet(ctx, r) })
	serve(h, GetInlets, func(ctx context.Context, _ None, _ string) ([]PortalInfo, error) { return c.Inlets(ctx) })
	serve(h, GetInlet, func(ctx context.Context, _ None, a string) (PortalInfo, error) { return c.Inlet(ctx, a) })
	serve(h, DeleteInlet, func(ctx context.Context, _ None, a string) (None, error) { return None{}, c.DeleteInlet(ctx, a) })

	serve(h, PostOutlets, func(ctx context.Context, r CreateOutlet, _ string) (PortalInfo, error) { return c.CreateOutlet(ctx, r) })
	serve(h, GetOutlets, func(ctx context.Context, _ None, _ string) ([]PortalInfo, error) { return c.Outlets(ctx) })
	serve(h, GetOutlet, func(ctx context.Context, _ None, a string) (PortalInfo, error) { return c.Outlet(ctx, a) })
	serve(h, DeleteOutlet, func(ctx context.Context, _ None, a string) (None, error) { return None{}, c.DeleteOutlet(ctx, a) })

	serve(h, PostTun, func(ctx context.Context, r CreateTun, _ string) (TunInfo, error) { return c.CreateTun(ctx, r) })
	serve(h, GetTun, func(ctx context.Context, _ None, _ string) (TunInfo, error) { return c.Tun(ctx) })
	serve(h, DeleteTun, func(ctx context.Context, _ None, _ string) (None, error) { return None{}, c.DeleteTun(ctx) })
	serve(h, PostMappings, func(ctx context.Context, r CreateMapping, _ string) (Mapping, error) { return c.CreateMapping(ctx, r) })
	serve(h, DeleteMapping, func(ctx context.Context, _ None, a string) (None, error) { return None{}, c.DeleteMapping(ctx, a) })

	serve(h, PostSocks, func(ctx context.Context, r CreateSocks, _ string) (SocksInfo, error) { return c.CreateSocks(ctx, r) })
	serve(h, GetSocks, func(ctx context.Context, _ None, _ string) ([]SocksInfo, error) { return c.SocksListeners(ctx) })
	serve(h, DeleteSocks, func(ctx context.Context, _ None, a string) (None, error) { return None{}, c.DeleteSocks(ctx, a) })
}

type handler struct {
	mux    *http.ServeMux
	routes []Route
}

func serve[Req, Resp any](h *handler, e Endpoint[Req, Resp], f func(ctx context.Context, req Req, arg string) (Resp, error)) {
	h.routes = append(h.routes, e.Route())
	arg := e.arg()
	h.mux.HandleFunc(e.Method+" /"+Version+e.Pattern, func(w http.ResponseWriter, r *http.Request) {
		var req Req
		var err error
		if _, none := any(req).(None); !none {
			err = Decode(r.Body, &req)
			if err != nil {
				err = BadRequest(err)
			}
		}
		var out Resp
		if err == nil {
			var a string
			if arg != "" {
				a = r.PathValue(arg)
			}
			out, err = f(r.Context(), req, a)
		}
		w.Header().Set("Content-Type", "application/json")
		if err != nil {
			code := http.StatusInternalServerError
			var se *StatusError
			if errors.As(err, &se) {
				code = se.Code
			}
			w.WriteHeader(code)
			json.NewEncoder(w).Encode(Error{Error: err.Error()})
			return
		}
		json.NewEncoder(w).Encode(out)
	})
}
