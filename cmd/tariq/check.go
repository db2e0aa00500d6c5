package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/tariq-vpn/tariq/internal/daemon"
)

func (a *app) checkCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "check",
		Short: "Validate the config and the host (TUN, ports, forwarding, DNS)",
		Long: `Validate the configuration, printing every problem rather than the first,
then check the host: data directory, TUN device, free ports, the public
host. Exits 2 on a config problem, 1 on a host problem, 0 when all is well.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := a.load()
			if err != nil {
				return err
			}
			failed := 0
			for _, f := range daemon.Check(ctxOf(cmd), l) {
				fmt.Fprintf(a.stdout, "%-4s  %-22s %s\n", f.Severity, f.What, f.Detail)
				if f.Severity == daemon.Fail {
					failed++
				}
			}
			if failed > 0 {
				return &exitError{exitFailure, fmt.Errorf("%d check(s) failed", failed)}
			}
			return nil
		},
	}
}
