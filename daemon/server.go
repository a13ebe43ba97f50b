package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/ockam-go/ockam/api"
	"github.com/ockam-go/ockam/home"
	"github.com/ockam-go/ockam/relay"
	"github.com/ockam-go/ockam/routing"
)

// DefaultTimeout bounds requests that wait on the network when the caller
// gives no timeout.
const DefaultTimeout = 10 * time.Second

// errStatus carries an HTTP status with an error.
type errStatus struct {
	code int
	err  error
}

func (e *errStatus) Error() string { return e.err.Error() }
func (e *errStatus) Unwrap() error { return e.err }

func badRequest(err error) error { return &errStatus{http.StatusBadRequest, err} }
func notFound(err error) error   { return &errStatus{http.StatusNotFound, err} }
func conflict(err error) error   { return &errStatus{http.StatusConflict, err} }

type handlerFunc func(r *http.Request) (any, error)

func (d *Daemon) handle(mux *http.ServeMux, pattern string, f handlerFunc) {
	mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		out, err := f(r)
		w.Header().Set("Content-Type", "application/json")
		if err != nil {
			code := http.StatusInternalServerError
			var es *errStatus
			if errors.As(err, &es) {
				code = es.code
			}
			w.WriteHeader(code)
			json.NewEncoder(w).Encode(api.Error{Error: err.Error()})
			return
		}
		if out == nil {
			out = struct{}{}
		}
		json.NewEncoder(w).Encode(out)
	})
}

func decode[T any](r *http.Request) (T, error) {
	var v T
	if err := api.Decode(r.Body, &v); err != nil {
		return v, badRequest(err)
	}
	return v, nil
}

func timeout(t time.Duration) time.Duration {
	if t <= 0 || t > 5*time.Minute {
		return DefaultTimeout
	}
	return t
}

func (d *Daemon) serveAPI() error {
	ln, err := d.socket()
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	v := "/" + api.Version
	d.handle(mux, "GET "+v+"/node", func(r *http.Request) (any, error) { return d.info(), nil })
	d.handle(mux, "POST "+v+"/shutdown", func(r *http.Request) (any, error) {
		d.requestShutdown()
		return nil, nil
	})
	d.handle(mux, "POST "+v+"/messages", d.sendMessage)
	d.handle(mux, "POST "+v+"/relays", d.createRelay)
	d.handle(mux, "GET "+v+"/relays", d.listRelays)
	d.handle(mux, "DELETE "+v+"/relays/{name}", d.deleteRelay)
	d.secureRoutes(mux, v)
	d.portalRoutes(mux, v)
	d.tunRoutes(mux, v)
	// Profiles, for `curl --unix-socket $OCKAM_HOME/run/NAME.sock
	// http://node/debug/pprof/profile?seconds=10`: the socket is the
	// node owner's only (mode 0700 directory).
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	d.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	d.ln = ln
	go d.srv.Serve(ln)
	return nil
}

// requestShutdown closes Done, once.
func (d *Daemon) requestShutdown() {
	d.mu.Lock()
	defer d.mu.Unlock()
	select {
	case <-d.shutdown:
	default:
		close(d.shutdown)
	}
}

func (d *Daemon) info() api.NodeInfo {
	return api.NodeInfo{
		Name:       d.cfg.Name,
		PID:        d.state.PID,
		TCPAddress: d.addr.String(),
		Route:      routing.Route{routing.TCPAddr(d.addr.String())}.String(),
		Identity:   d.cfg.Identity,
		Identifier: d.me.Identifier().String(),
		Services:   d.services(),
		Status:     "running",
	}
}

func (d *Daemon) sendMessage(r *http.Request) (any, error) {
	req, err := decode[api.SendMessage](r)
	if err != nil {
		return nil, err
	}
	route, err := d.resolve(req.To)
	if err != nil {
		return nil, badRequest(err)
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout(req.Timeout))
	defer cancel()
	m, err := d.node.Request(ctx, route, []byte(req.Payload))
	if err != nil {
		return nil, err
	}
	return api.MessageReply{Payload: string(m.Payload)}, nil
}

func (d *Daemon) createRelay(r *http.Request) (any, error) {
	req, err := decode[api.CreateRelay](r)
	if err != nil {
		return nil, err
	}
	at, err := d.resolve(req.At)
	if err != nil {
		return nil, badRequest(err)
	}
	d.mu.Lock()
	if d.regs == nil {
		d.mu.Unlock()
		return nil, errors.New("node is shutting down")
	}
	if _, ok := d.regs[req.Name]; ok {
		d.mu.Unlock()
		return nil, conflict(fmt.Errorf("relay %s already exists on this node", req.Name))
	}
	reg, err := relay.Register(d.node, at, req.Name, d.me, d.log)
	if err != nil {
		d.mu.Unlock()
		return nil, badRequest(err)
	}
	d.regs[req.Name] = reg
	d.mu.Unlock()

	ctx, cancel := context.WithTimeout(r.Context(), timeout(req.Timeout))
	defer cancel()
	if err := reg.WaitReady(ctx); err != nil {
		d.mu.Lock()
		delete(d.regs, req.Name)
		d.mu.Unlock()
		reg.Close()
		return nil, fmt.Errorf("relay %s at %s: %w", req.Name, req.At, err)
	}
	d.record(func(c *home.NodeConfig) {
		c.Relays = append(without(c.Relays, req.Name, func(r api.CreateRelay) string { return r.Name }),
			raw(api.CreateRelay{Name: req.Name, At: at.String()}))
	})
	return regInfo(reg.Status()), nil
}

func regInfo(s relay.Status) api.RelayInfo {
	return api.RelayInfo{Name: s.Name, At: s.At, Address: s.Address, Connected: s.Connected,
		Attempts: s.Attempts, LastError: s.LastError, Since: s.Since}
}

func (d *Daemon) listRelays(r *http.Request) (any, error) {
	out := api.Relays{Registered: []api.RelayInfo{}, Hosted: []api.RelayInfo{}}
	d.mu.Lock()
	for _, reg := range d.regs {
		out.Registered = append(out.Registered, regInfo(reg.Status()))
	}
	d.mu.Unlock()
	for _, h := range d.fwd.List() {
		out.Hosted = append(out.Hosted, api.RelayInfo{Name: h.Name, Address: "/service/" + h.Address, Remote: h.Remote, Connected: true, Since: h.Since})
	}
	return out, nil
}

func (d *Daemon) deleteRelay(r *http.Request) (any, error) {
	name := r.PathValue("name")
	d.mu.Lock()
	reg := d.regs[name]
	delete(d.regs, name)
	d.mu.Unlock()
	if reg == nil {
		return nil, notFound(fmt.Errorf("no relay %s on this node", name))
	}
	reg.Close()
	d.record(func(c *home.NodeConfig) {
		c.Relays = without(c.Relays, name, func(r api.CreateRelay) string { return r.Name })
	})
	return nil, nil
}
