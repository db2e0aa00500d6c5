package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"runtime/debug"
	"slices"
	"strconv"
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

	closers []func() // run when the command is done, last first (onExit)
}

// onExit runs f when the command is done: what a command opened (an etcd
// connection) is closed before run returns.
func (a *app) onExit(f func()) { a.closers = append(a.closers, f) }

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr}
	root := a.rootCmd()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteContextC(ctx)
	for i := len(a.closers) - 1; i >= 0; i-- {
		a.closers[i]()
	}
	if err == nil {
		return exitOK
	}
	code := exitFailure
	var ee *exitError
	if errors.As(err, &ee) {
		code = ee.code
	}
	if cmd != nil && os.Geteuid() != 0 {
		err = permissionAdvice(cmd, err)
	}
	if strings.Contains(err.Error(), "required flag") { // cobra's MarkFlagRequired check has no hook
		code = exitUsage
	}
	for _, line := range errorLines(err) {
		fmt.Fprintf(stderr, "tariq: %s\n", line)
	}
	return code
}

// permissionAdvice adds what to do to a permission error that a user other
// than root met: the daemon's config, data directory and admin socket
// belong to root and the service user, and ports below 1024 need a
// capability. A refused admin socket is named without the HTTP request and
// dial around it. Other errors (a TUN device's, which says what to do
// itself) are returned as they are.
func permissionAdvice(cmd *cobra.Command, err error) error {
	if !errors.Is(err, fs.ErrPermission) {
		return err
	}
	path := cmd.CommandPath()
	serve := cmd.Name() == "serve"
	asUser := "sudo -u tariq " + path
	if serve {
		asUser = "systemctl start tariq" // the unit grants the capabilities sudo -u would not
	}
	other := "give --data-dir and --admin-socket paths you own"
	var fe *config.FileError
	var oe *net.OpError
	var pe *fs.PathError
	switch {
	case errors.As(err, &fe):
		other = "give --config a file you can read"
	case errors.As(err, &oe) && oe.Net == "unix" && !serve && oe.Addr != nil:
		cause := oe.Err
		for errors.Unwrap(cause) != nil {
			cause = errors.Unwrap(cause)
		}
		err = fmt.Errorf("admin socket %s: %w", oe.Addr, cause)
		other = "give --admin-socket the socket of a daemon you run"
	case errors.As(err, &oe) && oe.Net == "unix":
	case errors.As(err, &oe) && oe.Op == "listen":
		return fmt.Errorf("%w; ports below 1024 need root or CAP_NET_BIND_SERVICE: run %s as root or as the service user (%s), "+
			"or choose ports above 1023 (web.listen, relay.listen_udp, relay.listen_tcp, relay.listen_tls)", err, path, asUser)
	case errors.As(err, &pe):
	default:
		return err
	}
	return fmt.Errorf("%w; run %s as root or as the service user (%s), or %s", err, path, asUser, other)
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
	root.AddCommand(a.serveCmd(), a.initCmd(), a.checkCmd(), a.peerCmd(), a.turnCmd(), a.statusCmd(), a.portsCmd(), a.nodeCmd(), a.storeCmd(), a.versionCmd())
	root.SetHelpCommand(helpCmd(root))
	root.InitDefaultCompletionCmd()
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageErr(err) })
	strictArgs(root)
	return root
}

// strictArgs makes every argument error under c a usage error, and every
// command that only groups others refuse a word that is not one of them:
// cobra checks that only at the root and otherwise prints the group's help
// with exit 0, so `tariq peer ad mom` looked like success.
func strictArgs(c *cobra.Command) {
	if c.HasSubCommands() && c.Run == nil && c.RunE == nil {
		c.Args = unknownSubcommand
		c.RunE = func(c *cobra.Command, _ []string) error { return c.Help() }
		c.SuggestionsMinimumDistance = 2
	} else if check := c.Args; check != nil {
		c.Args = func(c *cobra.Command, args []string) error {
			if err := check(c, args); err != nil {
				return usageErr(err)
			}
			return nil
		}
	}
	for _, sub := range c.Commands() {
		strictArgs(sub)
	}
}

// unknownSubcommand refuses any argument to a group command, in one line
// that suggests the nearest subcommands.
func unknownSubcommand(c *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], c.CommandPath())
	if s := nearest(args[0], c.SuggestionsFor(args[0])); len(s) > 0 {
		for i := range s {
			s[i] = strconv.Quote(s[i])
		}
		msg += "; did you mean " + strings.Join(s, " or ") + "?"
	}
	return usageErr(errors.New(msg))
}

// nearest keeps the candidates closest to typed: those it is a prefix of,
// else those fewest edits away.
func nearest(typed string, candidates []string) []string {
	best, out := -1, []string(nil)
	for _, c := range candidates {
		d := 0
		if !strings.HasPrefix(c, typed) {
			d = 1 + editDistance(typed, c)
		}
		switch {
		case best < 0 || d < best:
			best, out = d, []string{c}
		case d == best && !slices.Contains(out, c):
			out = append(out, c)
		}
	}
	return out
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			sub := prev[j-1]
			if a[i-1] != b[j-1] {
				sub++
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, sub)
		}
		prev = cur
	}
	return prev[len(b)]
}

// helpCmd replaces cobra's help command, which prints the root's usage and
// exits 0 for a topic it does not know.
func helpCmd(root *cobra.Command) *cobra.Command {
	return &cobra.Command{
		Use:   "help [command]",
		Short: "Help about any command",
		RunE: func(_ *cobra.Command, args []string) error {
			c, rest, err := root.Find(args)
			if err != nil {
				return usageErr(err)
			}
			if len(rest) > 0 && c.HasSubCommands() {
				return unknownSubcommand(c, rest)
			}
			return c.Help()
		},
	}
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
