package main

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tariq-vpn/tariq/internal/daemon"
)

func (a *app) turnCmd() *cobra.Command {
	turn := &cobra.Command{Use: "turn", Short: "TURN relay credentials and app snippets"}

	var ttl time.Duration
	var id string
	var asJSON bool
	creds := &cobra.Command{
		Use:   "credentials",
		Short: "Mint REST credentials (coturn's use-auth-secret format)",
		Long: `Mint a TURN username/password pair: username "<unix-expiry>[:<id>]",
password base64(HMAC-SHA1(secret, username)), exactly as coturn's
use-auth-secret. Valid for --ttl (default relay.credential_ttl).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkTTL(cmd, ttl); err != nil {
				return err
			}
			l, err := a.load()
			if err != nil {
				return err
			}
			c, uris, err := daemon.TURNCredentials(l.Config, id, ttl)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(struct {
					Username string   `json:"username"`
					Password string   `json:"password"`
					TTL      int      `json:"ttl"`
					URIs     []string `json:"uris"`
				}{c.Username, c.Password, c.TTL, uris})
			}
			fmt.Fprintf(a.stdout, "username: %s\npassword: %s\nexpires:  %s\n", c.Username, c.Password, c.Expires.UTC().Format(time.RFC3339))
			if len(uris) > 0 {
				fmt.Fprintf(a.stdout, "uris:     %s\n", strings.Join(uris, "\n          "))
			}
			return nil
		},
	}
	creds.Flags().DurationVar(&ttl, "ttl", 0, "how long the credential is valid (default relay.credential_ttl)")
	creds.Flags().StringVar(&id, "user", "", "optional user id appended to the username (e.g. @alice:example.org)")
	creds.Flags().BoolVar(&asJSON, "json", false, "print JSON like Synapse's /voip/turnServer")

	appCmd := &cobra.Command{
		Use:       "app " + strings.Join(daemon.Apps(), "|"),
		Short:     "Print the config snippet an app needs to use this relay",
		Args:      cobra.ExactArgs(1),
		ValidArgs: daemon.Apps(),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := a.load()
			if err != nil {
				return err
			}
			// A typo is usage; a state the store refuses is a failure.
			if !slices.Contains(daemon.Apps(), args[0]) {
				return usageErr(fmt.Errorf("unknown app %q (one of %s)", args[0], strings.Join(daemon.Apps(), ", ")))
			}
			s, err := daemon.AppSnippet(l.Config, args[0])
			if err != nil {
				return err
			}
			fmt.Fprint(a.stdout, s)
			return nil
		},
	}
	turn.AddCommand(creds, appCmd, a.secretCmd())
	return turn
}
