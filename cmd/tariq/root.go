package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tariq-vpn/tariq/config"
)

// version is set at build time with -ldflags "-X main.version=…"; otherwise
// the module version or VCS revision from the build info is used.
var version = ""

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v := bi.Main.Version; v != "" && v != "(devel)" {
			return v
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				return "devel-" + s.Value[:12]
			}
		}
	}
	return "devel"
}

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // the command ran and failed
	exitUsage   = 2 // bad flags, arguments or configuration
)

// exitError carries an exit code through cobra.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func usageErr(err error) error { return &exitError{exitUsage, err} }

// app is one invocation's state: streams and the global flags. The command
// tree is built fresh per call, so tests run the CLI in-process.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer

	configFile  string
	dataDir     string
	adminSocket string
	sets        []string
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr}
	root := a.rootCmd()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	code := exitFailure
	var ee *exitError
	if errors.As(err, &ee) {
		code = ee.code
	}
	if strings.HasPrefix(err.Error(), "unknown command") || strings.HasPrefix(err.Error(), "unknown flag") ||
		strings.Contains(err.Error(), "accepts ") || strings.Contains(err.Error(), "required flag") {
		code = exitUsage
	}
	for _, line := range errorLines(err) {
		fmt.Fprintf(stderr, "tariq: %s\n", line)
	}
	return code
}

// errorLines splits joined errors (every config problem) into one line each.
func errorLines(err error) []string {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []string
		for _, e := range j.Unwrap() {
			out = append(out, errorLines(e)...)
		}
		return out
	}
	if ee, ok := err.(*exitError); ok {
		return errorLines(ee.err)
	}
	return []string{err.Error()}
}

func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "tariq",
		Short: "A WireGuard endpoint and a TURN relay in one daemon",
		Long: `tariq runs a WireGuard VPN endpoint and a TURN relay side by side, with
automatic TLS, so a family can route calls through a server they trust.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	pf := root.PersistentFlags()
	pf.StringVarP(&a.configFile, "config", "c", "", "config file (default $TARIQ_CONFIG or "+config.DefaultFile+" if it exists)")
	pf.StringVar(&a.dataDir, "data-dir", "", "data directory (server.data_dir)")
	pf.StringVar(&a.adminSocket, "admin-socket", "", "admin socket (server.admin_socket)")
	pf.StringArrayVar(&a.sets, "set", nil, "set any config key, e.g. --set relay.realm=example.org (repeatable)")
	root.AddCommand(a.serveCmd(), a.initCmd(), a.checkCmd(), a.peerCmd(), a.turnCmd(), a.statusCmd(), a.portsCmd(), a.versionCmd())
	return root
}

// options turns the global flags into config.Load options.
func (a *app) options() (config.Options, error) {
	opts := config.Options{File: a.configFile, Set: map[string]string{}}
	for _, kv := range a.sets {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return opts, usageErr(fmt.Errorf("--set %q: want key=value", kv))
		}
		opts.Set[strings.TrimSpace(k)] = v
	}
	if a.dataDir != "" {
		opts.Set["server.data_dir"] = a.dataDir
	}
	if a.adminSocket != "" {
		opts.Set["server.admin_socket"] = a.adminSocket
	}
	return opts, nil
}

// load reads and validates the configuration; problems are a usage error.
func (a *app) load() (*config.Loaded, error) {
	opts, err := a.options()
	if err != nil {
		return nil, err
	}
	l, err := config.Load(opts)
	if err != nil {
		return nil, usageErr(err)
	}
	return l, nil
}

func (a *app) versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintf(a.stdout, "tariq %s\n", versionString())
			return nil
		},
	}
}

func ctxOf(cmd *cobra.Command) context.Context {
	if ctx := cmd.Context(); ctx != nil {
		return ctx
	}
	return context.Background()
}
