package daemon

import "net/http"

func (d *Daemon) startSecure() error                        { return nil }
func (d *Daemon) stopSecure()                               {}
func (d *Daemon) secureServices() []string                  { return nil }
func (d *Daemon) secureRoutes(mux *http.ServeMux, v string) {}
func (d *Daemon) stopPortals()                              {}
func (d *Daemon) portalServices() []string                  { return nil }
func (d *Daemon) portalRoutes(mux *http.ServeMux, v string) {}
