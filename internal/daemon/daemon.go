// Package daemon composes tariq's subsystems (state store, certificates,
// WireGuard endpoint, TURN relay, HTTPS page, metrics, admin API) into the
// running daemon, and offers the CLI the same operations when no daemon
// runs. It is the only importer of vpn and relay.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/tariq-vpn/tariq/config"
	"github.com/tariq-vpn/tariq/internal/admin"
	"github.com/tariq-vpn/tariq/internal/certs"
	"github.com/tariq-vpn/tariq/internal/egress"
	"github.com/tariq-vpn/tariq/internal/members"
	"github.com/tariq-vpn/tariq/internal/mux"
	"github.com/tariq-vpn/tariq/internal/sdnotify"
	"github.com/tariq-vpn/tariq/internal/store"
	"github.com/tariq-vpn/tariq/relay"
	"github.com/tariq-vpn/tariq/vpn"
)

// Options configure Run.
type Options struct {
	Config *config.Loaded
	// Load rereads the configuration for a reload.
	Load   func() (*config.Loaded, error)
	Logger *slog.Logger
	// Level is the root logger's level; a reload sets it from server.log_level.
	Level *slog.LevelVar
	// Out receives the start-up summary for a person (URLs, next steps).
	Out io.Writer
	// Command is how that person runs tariq's CLI against this daemon, for
	// the next steps the summary prints: "tariq" when empty.
	Command string
	// Reload delivers SIGHUP.
	Reload <-chan os.Signal
	// Ready, if set, is called once every listener is up.
	Ready   func(*Daemon)
	Version string
	// CertsDeps, if set, adjusts the certificate source's dependencies
	// (tests point ACME's challenge ports at loopback with it).
	CertsDeps func(*certs.Deps)
	// WebLimits bound the connections the shared HTTPS/TURN-TLS port holds
	// in the TLS handshake or before their first bytes; zero fields take
	// mux.DefaultLimits (tests lower them).
	WebLimits mux.Limits
	// Limits are how often members' usage is counted and stored; zero
	// means members.DefaultTimings (tests shorten them).
	Limits members.Timings
	// StoreTimeout bounds each request to etcd (server.store: etcd),
	// including the first read at start, after which a node whose etcd
	// does not answer serves from its cache; zero means 5 seconds (tests
	// shorten it).
	StoreTimeout time.Duration
	// AllowDestinations are let through the VPN paths' destination policy
	// although it refuses them (tests' targets on loopback).
	AllowDestinations []netip.Prefix
}

// subsystem is the shape every part of the daemon shares.
type subsystem interface {
	Serve(ctx context.Context) error
	Close() error
}

// Daemon is a running tariq.
type Daemon struct {
	opts    Options
	log     *slog.Logger
	started time.Time

	mu   sync.Mutex // guards cfg and host
	cfg  *config.Config
	host string

	store   *store.Store  // the data directory: its lock, temporary files, the generated secret's file
	state   store.Backend // the shared state: that store, or etcd shared with other nodes
	members *members.Service
	certs   *certs.Source
	vpn     *vpn.Service
	outline *outlinePath                  // nil unless vpn.outline is on
	egress  atomic.Pointer[egress.Policy] // the Outline path's destination policy, once open
	relay   *relay.Service
	web     *httpsServer
	metrics *metricsServer
	admin   *admin.Server
	parts   []namedPart // opened, in order; closed in reverse
	release func()      // gives up the data directory (store.Claim), after every part closed
	closed  sync.Once
}

type namedPart struct {
	name string
	subsystem
}

// closeTimeout bounds shutdown.
const closeTimeout = 10 * time.Second

// Run opens every subsystem, serves until ctx is done or one of them
// fails, and closes everything in reverse order. A start-up failure
// returns the wrapped cause naming the subsystem; cancellation is not an
// error.
func Run(ctx context.Context, opts Options) error {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	d := &Daemon{opts: opts, log: opts.Logger, started: time.Now(), cfg: opts.Config.Config}
	if err := d.open(ctx); err != nil {
		d.close()
		return err
	}
	defer d.close()

	sdnotify.Ready("serving " + d.host)
	d.log.Info("tariq ready", "version", opts.Version, "public_host", d.host, "config", fileOrDefaults(opts.Config.File))
	if opts.Out != nil {
		d.printSummary(opts.Out)
	}
	if opts.Ready != nil {
		opts.Ready(d)
	}

	g, gctx := errgroup.WithContext(ctx)
	for _, p := range d.parts {
		g.Go(func() error {
			if err := p.Serve(gctx); err != nil {
				return fmt.Errorf("%s: %w", p.name, err)
			}
			return nil
		})
	}
	g.Go(func() error {
		for {
			select {
			case <-gctx.Done():
				return nil
			case <-opts.Reload:
				d.reload()
			}
		}
	})
	err := g.Wait()
	sdnotify.Stopping()
	d.log.Info("tariq stopping")
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

func fileOrDefaults(f string) string {
	if f == "" {
		return "(none: defaults)"
	}
	return f
}

func (d *Daemon) add(name string, s subsystem) { d.parts = append(d.parts, namedPart{name, s}) }

// open brings the subsystems up in dependency order; each is added to the
// close list as soon as it exists, so a failure closes what came before.
func (d *Daemon) open(ctx context.Context) error {
	cfg := d.cfg
	d.host = ResolveHost(cfg)
	if cfg.Server.PublicHost == "" {
		d.log.Warn("server.public_host is not set; using the default route's address, which clients behind other networks may not reach",
			"public_host", d.host)
	}
	cfg.Server.PublicHost = d.host

	st, err := store.Open(cfg.Server.DataDir)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	d.store = st
	// One daemon per data directory, for its lifetime; the CLI edits the
	// state under the state lock meanwhile, through the admin socket when
	// it can.
	if d.release, err = st.Claim(); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	removed, err := st.RemoveTemp()
	if len(removed) > 0 {
		d.log.Info("removed temporary files an interrupted write left", "dir", st.Dir(), "files", removed)
	}
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	state, es, err := openState(ctx, cfg, d.log.With("component", "store"), d.opts.StoreTimeout)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	d.state = state
	d.add("store", statePart{d: d, es: es})
	if _, err := state.Load(); err != nil {
		return fmt.Errorf("store: %w", err)
	}

	if certs.ResolveMode(cfg) != config.TLSOff {
		deps := certs.Deps{Logger: d.log.With("component", "certs")}
		d.certStorage(&deps)
		if d.opts.CertsDeps != nil {
			d.opts.CertsDeps(&deps)
		}
		src, err := certs.New(cfg, deps)
		if err != nil {
			return err
		}
		d.certs = src
		d.add("certs", src)
		if err := src.Open(ctx); err != nil {
			return err
		}
	}

	if cfg.VPN.Enabled {
		if err := d.openVPN(ctx, state); err != nil {
			return err
		}
	}

	if cfg.Relay.Enabled {
		deps := relay.Deps{Logger: d.log.With("component", "relay"), Secrets: d.storedSecrets}
		if d.certs != nil {
			deps.TLS = d.certs.TLSConfig("stun.turn")
		}
		r, err := relay.New(cfg, deps)
		if err != nil {
			return err
		}
		d.relay = r
		d.add("relay", r)
		if err := r.Open(ctx); err != nil {
			return err
		}
	}

	if cfg.Web.Enabled {
		w, err := newHTTPSServer(d)
		if err != nil {
			return err
		}
		d.web = w
		d.add("web", w)
		if err := w.Open(ctx); err != nil {
			return err
		}
	}

	if cfg.Server.MetricsListen != "" {
		m := newMetricsServer(d)
		d.metrics = m
		d.add("metrics", m)
		if err := m.Open(ctx); err != nil {
			return err
		}
	}

	a := admin.NewServer(cfg.Server.AdminSocket, backend{d}, d.log.With("component", "admin"))
	d.admin = a
	d.add("admin", a)
	if err := a.Open(ctx); err != nil {
		return err
	}
	return nil
}

// close closes every opened subsystem in reverse order, under a deadline.
func (d *Daemon) close() {
	d.closed.Do(func() {
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := len(d.parts) - 1; i >= 0; i-- {
				if err := d.parts[i].Close(); err != nil {
					d.log.Warn("closing "+d.parts[i].name, "err", err)
				}
			}
			if d.release != nil {
				d.release()
			}
		}()
		select {
		case <-done:
		case <-time.After(closeTimeout):
			d.log.Error("shutdown timed out; exiting anyway", "timeout", closeTimeout)
		}
	})
}

// reload rereads the configuration. If it is invalid, every problem is
// logged and the running configuration stays; otherwise each subsystem
// applies what it can live and says which keys need a restart.
func (d *Daemon) reload() {
	d.log.Info("reloading configuration")
	loaded, err := d.opts.Load()
	if err != nil {
		for _, e := range unjoin(err) {
			d.log.Error("config rejected; keeping the running one", "err", e)
		}
		return
	}
	sdnotify.Reloading()
	defer sdnotify.Ready("serving " + d.host)
	cfg := loaded.Config
	if cfg.Server.PublicHost == "" {
		cfg.Server.PublicHost = ResolveHost(cfg)
	}
	if d.opts.Level != nil {
		d.opts.Level.Set(cfg.Server.LogLevel.Slog())
	}
	refused := d.restartOnly(cfg)
	if d.certs != nil {
		refused = append(refused, d.certs.Reload(cfg))
	}
	if d.vpn != nil {
		refused = append(refused, d.vpn.Reload(cfg))
		if eg := d.egress.Load(); eg != nil {
			refused = append(refused, eg.Reload(cfg))
		}
		// What the device applied: a refused key (its ports, say) keeps
		// its running value for everything that reads the daemon's config
		// (status, the invite page's checks and forms).
		cfg.VPN = d.vpn.Config().VPN
	}
	if d.relay != nil {
		refused = append(refused, d.relay.Reload(cfg))
	}
	for _, e := range unjoin(errors.Join(refused...)) {
		d.log.Warn("config change not applied", "err", e)
	}
	d.mu.Lock()
	d.cfg = cfg
	d.mu.Unlock()
	d.log.Info("configuration reloaded")
}

// restartOnly names the keys outside any subsystem's Reload that changed
// and can only take effect on a restart: where the daemon keeps its state
// and sockets, and subsystems switched on that were not running. It sets
// them back to their running values in cfg, so the config in force says
// what runs.
func (d *Daemon) restartOnly(cfg *config.Config) []error {
	old := d.config()
	var out []error
	need := func(key string, changed bool, keep func()) {
		if changed {
			out = append(out, &config.FieldError{Key: key, Msg: "changing it needs a restart"})
			keep()
		}
	}
	need("server.data_dir", old.Server.DataDir != cfg.Server.DataDir, func() { cfg.Server.DataDir = old.Server.DataDir })
	need("server.store", old.Server.Store != cfg.Server.Store, func() { cfg.Server.Store = old.Server.Store })
	need("server.node_name", old.Server.NodeName != cfg.Server.NodeName, func() { cfg.Server.NodeName = old.Server.NodeName })
	need("server.etcd", !reflect.DeepEqual(old.Server.Etcd, cfg.Server.Etcd), func() { cfg.Server.Etcd = old.Server.Etcd })
	need("server.admin_socket", old.Server.AdminSocket != cfg.Server.AdminSocket, func() { cfg.Server.AdminSocket = old.Server.AdminSocket })
	need("server.metrics_listen", old.Server.MetricsListen != cfg.Server.MetricsListen,
		func() { cfg.Server.MetricsListen = old.Server.MetricsListen })
	need("web.enabled", old.Web.Enabled != cfg.Web.Enabled, func() { cfg.Web.Enabled = old.Web.Enabled })
	need("web.listen", cfg.Web.Enabled && !slices.Equal(old.Web.Listen, cfg.Web.Listen), func() { cfg.Web.Listen = old.Web.Listen })
	need("vpn.enabled", d.vpn == nil && cfg.VPN.Enabled, func() { cfg.VPN.Enabled = false })
	need("vpn.outline.enabled", old.VPN.Outline.Enabled != cfg.VPN.Outline.Enabled,
		func() { cfg.VPN.Outline.Enabled = old.VPN.Outline.Enabled })
	need("relay.enabled", d.relay == nil && cfg.Relay.Enabled, func() { cfg.Relay.Enabled = false })
	need("tls.mode", d.certs == nil && certs.ResolveMode(cfg) != config.TLSOff, func() { cfg.TLS.Mode = old.TLS.Mode })
	return out
}

// unjoin flattens errors.Join trees into their leaves.
func unjoin(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, unjoin(e)...)
		}
		return out
	}
	return []error{err}
}

// config returns the configuration in force.
func (d *Daemon) config() *config.Config {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cfg
}

// ResolveHost returns server.public_host, or when it is empty the source
// address of the default route (IPv4 first), or "localhost".
func ResolveHost(cfg *config.Config) string {
	if cfg.Server.PublicHost != "" {
		return cfg.Server.PublicHost
	}
	for _, probe := range []struct{ network, dst string }{{"udp4", "192.0.2.1:9"}, {"udp6", "[2001:db8::1]:9"}} {
		c, err := net.Dial(probe.network, probe.dst) // a connected UDP socket sends nothing
		if err != nil {
			continue
		}
		ap, err := netip.ParseAddrPort(c.LocalAddr().String())
		c.Close()
		if err == nil && !ap.Addr().IsUnspecified() {
			return ap.Addr().Unmap().String()
		}
	}
	return "localhost"
}

// MetricsAddr returns the metrics endpoint's bound address, or nil.
func (d *Daemon) MetricsAddr() net.Addr {
	if d.metrics == nil {
		return nil
	}
	return d.metrics.Addrs()[0]
}

// WebAddrs returns the HTTPS port(s) actually bound.
func (d *Daemon) WebAddrs() []net.Addr {
	if d.web == nil {
		return nil
	}
	return d.web.Addrs()
}

// VPN returns the WireGuard endpoint, or nil when it is disabled (for tests).
func (d *Daemon) VPN() *vpn.Service { return d.vpn }

// Relay returns the relay, or nil when it is disabled (for tests).
func (d *Daemon) Relay() *relay.Service { return d.relay }

// Endpoints lists the relay's client-facing endpoints, with the ports
// actually bound (a configured port 0 is the kernel's choice).
func (d *Daemon) Endpoints() []relay.Endpoint {
	cfg := *d.config()
	if d.relay != nil {
		udp, tcp, tlsAddrs := d.relay.Addrs()
		cfg.Relay.ListenUDP, cfg.Relay.ListenTCP, cfg.Relay.ListenTLS = addrStrings(udp), addrStrings(tcp), addrStrings(tlsAddrs)
	}
	if d.web != nil {
		cfg.Web.Listen = addrStrings(d.web.Addrs())
	}
	return relay.Endpoints(&cfg, d.host, d.web != nil)
}

func addrStrings(addrs []net.Addr) []string {
	out := make([]string, len(addrs))
	for i, a := range addrs {
		out[i] = a.String()
	}
	return out
}

func (d *Daemon) printSummary(w io.Writer) {
	cfg := d.config()
	tariq := d.opts.Command
	if tariq == "" {
		tariq = "tariq"
	}
	fmt.Fprintf(w, "\ntariq is serving %s\n", d.host)
	if d.relay != nil {
		fmt.Fprintf(w, "\n  TURN relay (paste into your apps; `%s turn app synapse|nextcloud|jitsi|galene|livekit` prints full snippets):\n", tariq)
		for _, e := range d.Endpoints() {
			fmt.Fprintf(w, "    %s\n", e.URI())
		}
		switch {
		case len(cfg.Relay.Secrets) > 0:
			fmt.Fprintln(w, "  REST shared secret: relay.secrets in the config file")
		case cfg.Server.Store == config.StoreEtcd:
			fmt.Fprintf(w, "  REST shared secret: kept in etcd, shared by every node (%s turn secret list)\n", tariq)
		default:
			fmt.Fprintf(w, "  REST shared secret: generated and kept in %s (0600)\n", d.store.Path("state.json"))
		}
		fmt.Fprintf(w, "  Try it: %s turn credentials   (a username/password pair valid for relay.credential_ttl)\n", tariq)
	}
	if d.vpn != nil {
		ports := fmt.Sprint(d.vpn.ListenPort())
		for _, p := range cfg.VPN.WireGuardPorts()[1:] {
			ports += fmt.Sprintf(", %d", p.Port)
			if p.Obfuscated {
				ports += " (AmneziaWG form)"
			}
		}
		fmt.Fprintf(w, "\n  WireGuard: UDP %s on %s, server key %s\n", ports, cfg.VPN.Interface, d.vpn.ServerPublicKey())
		fmt.Fprintf(w, "  Add a family member's device: %s peer add mom --qr   (or --output mom.conf for a file, --invite for a one-time link)\n", tariq)
	}
	if d.web != nil {
		for _, a := range d.web.Addrs() {
			fmt.Fprintf(w, "\n  Web page: https://%s/\n", hostPort(d.host, a))
		}
	}
	if d.certs != nil {
		info := d.certs.Info()
		switch info.Source {
		case certs.SourceFallback:
			fmt.Fprintf(w, "  Certificate: self-signed for now, until %s issues one for %s (status shows progress)\n", info.CA, d.host)
		case certs.SourceACME:
			fmt.Fprintf(w, "  Certificate: %s for %v from %s until %s, renewed automatically\n", info.Source, info.Names, info.CA,
				info.NotAfter.UTC().Format("2006-01-02 15:04 MST"))
		default:
			fmt.Fprintf(w, "  Certificate: %s for %v until %s\n", info.Source, info.Names, info.NotAfter.Format(time.DateOnly))
		}
	}
	if d.outline != nil {
		if err := d.trustedCert(); err != nil {
			fmt.Fprintf(w, "  Outline: on the web port, but no key works yet: %v\n", err)
		} else {
			fmt.Fprintf(w, "  Outline: on the web port; a member's key for the Outline app: %s peer show mom --outline\n", tariq)
		}
	}
	fmt.Fprintf(w, "  Status: %s status   (admin socket %s)\n\n", tariq, cfg.Server.AdminSocket)
}

func hostPort(host string, a net.Addr) string {
	_, port, _ := net.SplitHostPort(a.String())
	if port == "443" {
		if ip, err := netip.ParseAddr(host); err == nil && ip.Is6() {
			return "[" + host + "]"
		}
		return host
	}
	return net.JoinHostPort(host, port)
}
