package cli

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/spf13/cobra"
)

// MaxMetricsBytes bounds what `node metrics` reads from a node.
const MaxMetricsBytes = 8 << 20

func (e *env) nodeMetricsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "metrics [NAME]",
		Short: "Print a node's Prometheus metrics (text format, from its control socket)",
		Args:  optionalArg("NAME"),
		RunE: func(cmd *cobra.Command, a []string) error {
			s := ""
			if len(a) == 1 {
				s = a[0]
			}
			name, err := nodeName("NAME", s)
			if err != nil {
				return err
			}
			if _, err := e.client(name); err != nil {
				return err
			}
			h, err := e.home()
			if err != nil {
				return err
			}
			sock := h.SocketPath(name)
			hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
				DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
					var d net.Dialer
					return d.DialContext(ctx, "unix", sock)
				},
			}}
			resp, err := hc.Get("http://node/metrics")
			if err != nil {
				return fmt.Errorf("node %s: %w", name, err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("node %s: /metrics answered %s", name, resp.Status)
			}
			_, err = io.Copy(e.stdout, io.LimitReader(resp.Body, MaxMetricsBytes))
			return err
		},
	}
}
