// Command ockam creates and drives nodes: secure channels, relays, portals
// and virtual interfaces. See `ockam --help`.
package main

import (
	"os"

	"github.com/ockam-go/ockam/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
