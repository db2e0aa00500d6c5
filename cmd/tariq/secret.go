package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tariq-vpn/tariq/internal/daemon"
)

// secretCmd is `tariq turn secret`: the REST secrets' two-phase rotation.
func (a *app) secretCmd() *cobra.Command {
	secret := &cobra.Command{
		Use:   "secret",
		Short: "Rotate the TURN REST secrets: add, sign, retire",
		Long: `The REST shared secrets apps sign TURN credentials with. relay.secrets in
the config file come first (the first signs while set, all verify); the
ones below are kept in the state, shared by every node with the etcd
store. Rotate in two phases:

  tariq turn secret add            a new secret: every node verifies it from now on;
                                   put it in your apps' configs
  tariq turn secret sign ID        tariq's own credentials are signed with it
  tariq turn secret retire OLD-ID  once the old credentials have expired
                                   (relay.credential_ttl after the switch)

A change reaches a running daemon, and every node, within seconds.`,
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List the REST secrets by ID: where they come from, which signs",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := a.load()
			if err != nil {
				return err
			}
			secrets, err := daemon.RESTSecrets(ctxOf(cmd), l.Config)
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(a.stdout, 2, 4, 2, ' ', 0)
			defer w.Flush()
			fmt.Fprint(w, "ID\tFROM\tSIGNS\tADDED\n")
			for _, s := range secrets {
				signs, added := "", "-"
				if s.Signing {
					signs = "signs"
				}
				if !s.CreatedAt.IsZero() {
					added = s.CreatedAt.Local().Format("2006-01-02 15:04")
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", s.ID, s.Source, signs, added)
			}
			return nil
		},
	}
	add := &cobra.Command{
		Use:   "add",
		Short: "Add a REST secret that every node verifies (it does not sign yet)",
		Long: `Generate a REST secret and keep it in the state: every node verifies
credentials signed with it from now on. It is printed on stdout, for your
apps' configs; "tariq turn secret sign ID" then makes tariq sign with it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := a.load()
			if err != nil {
				return err
			}
			s, err := daemon.AddRESTSecret(ctxOf(cmd), l.Config)
			if err != nil {
				return err
			}
			fmt.Fprintln(a.stdout, s.Secret.Reveal())
			if s.Signing && len(l.Relay.Secrets) == 0 {
				fmt.Fprintf(a.stderr, "tariq: REST secret %s added; it signs (no stored secret did)\n", s.ID)
			} else {
				fmt.Fprintf(a.stderr, "tariq: REST secret %s added: every node verifies it; put it in your apps, then: tariq turn secret sign %s\n", s.ID, s.ID)
			}
			return nil
		},
	}
	sign := &cobra.Command{
		Use:   "sign ID",
		Short: "Sign tariq's credentials with the stored secret ID",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := a.load()
			if err != nil {
				return err
			}
			if err := daemon.SignWithSecret(ctxOf(cmd), l.Config, args[0]); err != nil {
				return err
			}
			if len(l.Relay.Secrets) > 0 {
				fmt.Fprintf(a.stderr, "tariq: %s signs once relay.secrets is empty: the config file's first secret signs while it is set\n", args[0])
			} else {
				fmt.Fprintf(a.stderr, "tariq: tariq's credentials are signed with %s from now on; retire the old secret once relay.credential_ttl (%s) has passed\n",
					args[0], l.Relay.CredentialTTL)
			}
			return nil
		},
	}
	retire := &cobra.Command{
		Use:   "retire ID",
		Short: "Stop verifying the stored secret ID (not the one that signs)",
		Long: `Remove the stored secret ID: credentials it signed stop working at once,
on every node, allocations in progress included. Retire a secret only once
the apps sign with the new one and relay.credential_ttl has passed since
"tariq turn secret sign".`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := a.load()
			if err != nil {
				return err
			}
			if err := daemon.RetireSecret(ctxOf(cmd), l.Config, args[0]); err != nil {
				return err
			}
			fmt.Fprintf(a.stderr, "tariq: REST secret %s retired at %s\n", args[0], time.Now().Format("15:04:05"))
			return nil
		},
	}
	secret.AddCommand(list, add, sign, retire)
	return secret
}
