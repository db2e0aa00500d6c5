package main

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/tariq-vpn/tariq/internal/daemon"
)

func (a *app) portsCmd() *cobra.Command {
	var ufw bool
	cmd := &cobra.Command{
		Use:   "ports",
		Short: "List the ports to open in the server's firewall",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := a.load()
			if err != nil {
				return err
			}
			ports := daemon.FirewallPorts(l.Config)
			if ufw {
				for _, p := range ports {
					fmt.Fprintf(a.stdout, "ufw allow %s/%s comment 'tariq: %s'\n", strings.ReplaceAll(p.Ports, "-", ":"), p.Proto, p.What)
				}
				return nil
			}
			w := tabwriter.NewWriter(a.stdout, 2, 4, 2, ' ', 0)
			fmt.Fprintln(w, "PROTO\tPORTS\tFOR")
			for _, p := range ports {
				fmt.Fprintf(w, "%s\t%s\t%s\n", p.Proto, p.Ports, p.What)
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVar(&ufw, "ufw", false, "print ufw commands instead of a table")
	return cmd
}
