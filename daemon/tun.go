package daemon

import "net/http"

// The virtual interface (TUN + netstack) and SOCKS5 listeners of a node.
// Filled in by the TUN work; these hooks are what the rest of the daemon calls.

func (d *Daemon) tunRoutes(mux *http.ServeMux, v string) {}

func (d *Daemon) stopTun() {}

func (d *Daemon) tunServices() []string { return nil }
