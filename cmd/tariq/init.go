package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/tariq-vpn/tariq/config"
	"github.com/tariq-vpn/tariq/internal/certs"
	"github.com/tariq-vpn/tariq/internal/store"
)

// shareWithDaemon lets the daemon's group read the config when the system
// user the systemd unit runs as exists (root:tariq 0640); otherwise the
// file stays 0600.
func shareWithDaemon(path string) error {
	g, err := user.LookupGroup("tariq")
	if err != nil || os.Geteuid() != 0 {
		return nil
	}
	gid, err := strconv.Atoi(g.Gid)
	if err != nil {
		return nil
	}
	if err := os.Chown(path, 0, gid); err != nil {
		return err
	}
	return os.Chmod(path, 0o640)
}

func (a *app) initCmd() *cobra.Command {
	var host, email string
	var force bool
	cmd := &cobra.Command{
		Use:   "init --host NAME [--email E]",
		Short: "Write a commented config with a fresh REST secret",
		Long: `Write a commented configuration file (--config, default ` + config.DefaultFile + `)
naming every key, with server.public_host set to --host and a freshly
generated relay shared secret. With a public IP address, or a DNS name and
--email, TLS certificates come from Let's Encrypt automatically, and the
Outline path (vpn.outline), which needs such a certificate, is on. The file is written 0600 (0640 with
group tariq when that system user exists); an existing file is kept unless
--force.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !config.ValidHost(host) {
				return usageErr(fmt.Errorf("--host %q is neither an IP address nor a DNS name", host))
			}
			path := a.configFile
			if path == "" {
				path = config.DefaultFile
			}
			if _, err := os.Stat(path); err == nil && !force {
				return usageErr(fmt.Errorf("%s exists; keeping it (use --force to overwrite)", path))
			} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
			// The Outline path goes on where the certificate will be one
			// the Outline app trusts: tls.mode auto resolving to ACME.
			probe := config.Default()
			probe.Server.PublicHost, probe.TLS.Email = host, email
			outline := certs.ResolveMode(probe) == config.TLSACME
			text := config.Template(config.TemplateData{Host: host, Email: email, Secret: store.NewSecret(32).Reveal(), Outline: outline})
			if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
				return err
			}
			if err := store.WriteFile(path, []byte(text), 0o600); err != nil {
				return fmt.Errorf("writing %s: %w", path, err)
			}
			if err := shareWithDaemon(path); err != nil {
				return err
			}
			if _, err := config.Load(config.Options{File: path}); err != nil {
				return fmt.Errorf("the written config does not load (a bug): %w", err)
			}
			fmt.Fprintf(a.stdout, "wrote %s\nnext: tariq check --config %s && tariq serve --config %s\n", path, path, path)
			return nil
		},
	}
	cmd.Flags().StringVar(&host, "host", "", "public DNS name or IP address clients dial (required)")
	cmd.Flags().StringVar(&email, "email", "", "contact for Let's Encrypt (turns on ACME with a DNS name; a public IP address needs none)")
	cmd.Flags().BoolVar(&force, "force", false, "overwrite an existing file")
	cmd.MarkFlagRequired("host")
	return cmd
}
