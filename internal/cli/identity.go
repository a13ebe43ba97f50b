package cli

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/spf13/cobra"

	"github.com/ockam-go/ockam/internal/vault"
)

func (e *env) vault() (*vault.Vault, error) {
	h, err := e.home()
	if err != nil {
		return nil, err
	}
	pass, err := e.passphrase()
	if err != nil {
		return nil, err
	}
	return vault.Open(h.VaultDir(), pass)
}

type identityInfo struct {
	Name       string `json:"name"`
	Identifier string `json:"identifier"`
	Created    string `json:"created,omitempty"`
	Default    bool   `json:"default,omitempty"`
}

func (e *env) identityCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "identity", Short: "Create and inspect identities (kept in the vault)"}
	var full bool
	create := &cobra.Command{
		Use: "create [NAME]", Short: "Create an identity (default name: default)", Args: optionalArg("NAME"),
		RunE: func(cmd *cobra.Command, a []string) error {
			v, err := e.vault()
			if err != nil {
				return err
			}
			name := "default"
			if len(a) == 1 {
				name = a[0]
			} else if _, err := v.PublicIdentity(name); err == nil {
				// Like Ockam: a nameless create after the first gets a
				// generated name.
				name = "identity-" + randomHex(3)
			}
			s, err := v.Create(name)
			if errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("identity %s already exists (see `ockam identity show %s`)", name, name)
			}
			if err != nil {
				return err
			}
			id := s.Identifier().String()
			return e.printCreated(id, fmt.Sprintf("Created identity %s\n  Identifier: %s", name, id),
				identityInfo{Name: name, Identifier: id})
		},
	}
	list := &cobra.Command{
		Use: "list", Short: "List identities", Args: args(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			v, err := e.vault()
			if err != nil {
				return err
			}
			names, err := v.List()
			if err != nil {
				return err
			}
			infos := []identityInfo{}
			var rows [][]string
			for _, n := range names {
				id, err := v.PublicIdentity(n)
				if err != nil {
					rows = append(rows, []string{n, "error: " + err.Error()})
					continue
				}
				infos = append(infos, identityInfo{Name: n, Identifier: id.Identifier().String(), Created: id.Created().UTC().Format("2006-01-02T15:04:05Z"), Default: n == "default"})
				rows = append(rows, []string{n, id.Identifier().Short()})
			}
			if e.output == "json" {
				return e.printJSON(infos)
			}
			e.table("NAME\tIDENTIFIER", rows)
			return nil
		},
	}
	show := &cobra.Command{
		Use: "show [NAME]", Short: "Show an identity's full identifier", Args: optionalArg("NAME"),
		RunE: func(cmd *cobra.Command, a []string) error {
			name := "default"
			if len(a) == 1 {
				name = a[0]
			}
			v, err := e.vault()
			if err != nil {
				return err
			}
			id, err := v.PublicIdentity(name)
			if errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("no identity named %s (see `ockam identity list`)", name)
			}
			if err != nil {
				return err
			}
			info := identityInfo{Name: name, Identifier: id.Identifier().String(), Created: id.Created().UTC().Format("2006-01-02T15:04:05Z")}
			if e.output == "json" {
				return e.printJSON(info)
			}
			if full {
				fmt.Fprintf(e.stdout, "Name:       %s\nIdentifier: %s\nCreated:    %s\n", info.Name, info.Identifier, info.Created)
				return nil
			}
			fmt.Fprintln(e.stdout, info.Identifier)
			return nil
		},
	}
	show.Flags().BoolVar(&full, "full", false, "print the name and creation time too")
	del := &cobra.Command{
		Use: "delete NAME", Short: "Delete an identity and its keys (refused while a node uses it)", Args: args("NAME"),
		RunE: func(cmd *cobra.Command, a []string) error {
			h, err := e.home()
			if err != nil {
				return err
			}
			names, _ := h.Nodes()
			for _, n := range names {
				if st, err := h.ReadState(n); err == nil && st.Identity == a[0] {
					return fmt.Errorf("node %s uses identity %s: delete the node first", n, a[0])
				}
			}
			v, err := e.vault()
			if err != nil {
				return err
			}
			if err := v.Delete(a[0]); errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("no identity named %s (see `ockam identity list`)", a[0])
			} else if err != nil {
				return err
			}
			if e.tty && !e.quiet {
				fmt.Fprintf(e.stdout, "Deleted identity %s\n", a[0])
			}
			return nil
		},
	}
	cmd.AddCommand(create, list, show, del)
	return cmd
}
