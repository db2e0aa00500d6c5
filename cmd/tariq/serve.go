package main

import (
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/tariq-vpn/tariq/config"
	"github.com/tariq-vpn/tariq/internal/daemon"
	"github.com/tariq-vpn/tariq/internal/members"
)

// invocation is how a person runs this tariq's CLI against the daemon being
// started: the command (see command), with the --config, --data-dir and
// --admin-socket given to serve (never --set, which may carry a secret).
func (a *app) invocation() string {
	exe, err := os.Executable()
	if err != nil {
		exe = "tariq"
	}
	var flags []string
	for _, f := range []struct{ name, value string }{{"--config", a.configFile}, {"--data-dir", a.dataDir}, {"--admin-socket", a.adminSocket}} {
		if f.value != "" {
			abs, err := filepath.Abs(f.value)
			if err != nil {
				abs = f.value
			}
			flags = append(flags, f.name, abs)
		}
	}
	return command(exe, exec.LookPath, flags)
}

// command returns how to run the executable exe again from a shell: "tariq"
// when that finds exe on $PATH; "go run ./cmd/tariq" for a binary `go run`
// built (it is deleted on exit); else exe's path. flags follow, quoted
// for the shell where needed.
func command(exe string, lookPath func(string) (string, error), flags []string) string {
	cmd := shellQuote(exe)
	if p, err := lookPath("tariq"); err == nil && sameFile(p, exe) {
		cmd = "tariq"
	} else if filepath.Base(filepath.Dir(exe)) == "exe" && strings.Contains(exe, string(filepath.Separator)+"go-build") {
		cmd = "go run ./cmd/tariq"
	}
	for _, f := range flags {
		cmd += " " + shellQuote(f)
	}
	return cmd
}

func sameFile(a, b string) bool {
	fa, err := os.Stat(a)
	if err != nil {
		return false
	}
	fb, err := os.Stat(b)
	return err == nil && os.SameFile(fa, fb)
}

// shellQuote single-quotes s unless it is made only of characters a shell
// leaves alone.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=@+,") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func (a *app) serveCmd() *cobra.Command {
	var limits members.Timings
	serve := &cobra.Command{
		Use:   "serve",
		Short: "Run the daemon in the foreground (systemd runs this)",
		Long: `Run the daemon in the foreground until SIGINT or SIGTERM. SIGHUP rereads the
config file: users, secrets, quotas and peer rules change without dropping
anyone; a bad file is logged and the running configuration kept. Keys that
need a restart (listen addresses, the WireGuard ports every device dials)
are named in the log and keep their running values.`,
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
				Command: a.invocation(),
				Reload:  hup,
				Version: versionString(),
				Limits:  limits,
			})
			if err != nil {
				return &exitError{exitFailure, err} // printed once, by run
			}
			return nil
		},
	}
	// For tests only, and hidden: how often members' usage is counted and
	// stored, so that an end-to-end test of a kill -9 need not wait the
	// minute between stores. Flags rather than the environment: config.Load
	// refuses unknown TARIQ_* variables, and a variable would reach every
	// daemon and CLI the test starts, while a flag is on the one command
	// line it changes, visible in ps.
	f := serve.Flags()
	f.DurationVar(&limits.Tick, "test-usage-tick", 0, "test only: how often usage is counted and limits enforced (default 1s)")
	f.DurationVar(&limits.Flush, "test-usage-flush", 0, "test only: how often counted usage is stored (default 1m)")
	for _, name := range []string{"test-usage-tick", "test-usage-flush"} {
		f.MarkHidden(name)
	}
	serve.PreRunE = func(*cobra.Command, []string) error {
		if limits.Tick < 0 || limits.Flush < 0 {
			return usageErr(errors.New("--test-usage-tick and --test-usage-flush must be positive"))
		}
		return nil
	}
	return serve
}
