package cli

import "github.com/spf13/cobra"

func (e *env) extraCmds() []*cobra.Command { return nil }
