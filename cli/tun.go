package cli

import "github.com/spf13/cobra"

// tunCmds returns the commands of the virtual interface (tun, socks).
func (e *env) tunCmds() []*cobra.Command { return nil }
