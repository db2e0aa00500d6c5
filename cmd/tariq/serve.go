package main

import (
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/tariq-vpn/tariq/config"
	"github.com/tariq-vpn/tariq/internal/daemon"
)

func (a *app) serveCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "serve",
		Short: "Run the daemon in the foreground (systemd runs this)",
		Long: `Run the daemon in the foreground until SIGINT or SIGTERM. SIGHUP rereads the
config file: users, secrets, quotas and peer rules change without dropping
anyone; a bad file is logged and the running configuration kept.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			loaded, err := a.load()
			if err != nil {
				return err
			}
			level := new(slog.LevelVar)
			level.Set(loaded.Server.LogLevel.Slog())
			log := slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: level}))

			ctx, stop := signal.NotifyContext(ctxOf(cmd), os.Interrupt, syscall.SIGTERM)
			defer stop()
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)

			opts, err := a.options()
			if err != nil {
				return err
			}
			err = daemon.Run(ctx, daemon.Options{
				Config:  loaded,
				Load:    func() (*config.Loaded, error) { return config.Load(opts) },
				Logger:  log,
				Level:   level,
				Out:     a.stdout,
				Reload:  hup,
				Version: versionString(),
			})
			if err != nil {
				return &exitError{exitFailure, err} // printed once, by run
			}
			return nil
		},
	}
}
