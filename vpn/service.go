// Package vpn is tariq's WireGuard endpoint: a wireguard-go device over a
// kernel TUN interface, forwarding and NAT out of the server's uplink, the
// UAPI socket that wg(8) talks to, and per-member counting, budgets and
// rate caps around the unmodified engine (shape.go).
//
// The device listens on vpn.listen_port, on any vpn.extra_ports, and, when
// vpn.obfuscation is on, on a port of its own speaking AmneziaWG 1.x; every
// one of them answers STUN Binding requests (bind.go, awg.go, stun.go).
//
// Like wireguard-go's Device, the service is told what to be: its identity
// (Deps.Identity) and the peers it should have (SetPeers), which it applies
// as one UAPI set of the peers that changed, so every other tunnel keeps
// flowing. Who the peers are, and why, is the members package's business.
package vpn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/tariq-vpn/tariq/config"
	"github.com/tariq-vpn/tariq/internal/accept"
	"github.com/tariq-vpn/tariq/internal/addrpolicy"
	"github.com/tariq-vpn/tariq/internal/egress"
	"github.com/tariq-vpn/tariq/internal/wgconf"
)

// Deps is what the VPN uses but does not create.
type Deps struct {
	Logger *slog.Logger
	// Identity is what the server keeps between runs. Required.
	Identity Identity
	// TUN is the packet device. Nil means a kernel TUN named vpn.interface
	// (Linux). When set (tests inject tuntest or netstack devices), the
	// caller owns the interface: Open sets no addresses, forwarding, NAT or
	// destination filter on it. Either way Close closes it.
	TUN tun.Device
	// NewBind makes the UDP side of one port: vpn.listen_port, each of
	// vpn.extra_ports and vpn.obfuscation.listen_port get one each, which
	// the service wraps (bind.go) to answer STUN, speak AmneziaWG on the
	// obfuscated port and send replies out of the port a peer talks to.
	// Nil means conn.NewDefaultBind, which keeps UDP GSO/GRO and batching.
	NewBind func() conn.Bind
	// DisableUAPI leaves out the UAPI socket (/var/run/wireguard/IFACE.sock,
	// root only), for tests and embedding without root.
	DisableUAPI bool
	// Now is the clock of the rate caps; nil means time.Now.
	Now func() time.Time
}

// Identity is what makes the endpoint the same server to its devices
// across restarts (and, with several nodes, across servers).
type Identity struct {
	// PrivateKey is the server's WireGuard private key.
	PrivateKey Key
	// ULA is the IPv6 /64 used when vpn.address has no IPv6 prefix.
	ULA netip.Prefix
	// AmneziaWG are the obfuscation parameters of vpn.obfuscation.
	AmneziaWG wgconf.AmneziaWG
}

// Service is the WireGuard endpoint.
type Service struct {
	deps  Deps
	log   *slog.Logger
	wglog *wgLog

	mu      sync.Mutex             // guards everything below
	cfg     *config.Config         // the config in effect (after Reload)
	opened  bool                   // Open was called
	plan    wgconf.Plan            // set by Open
	pub     Key                    // server public key
	peers   map[Key]Peer           // as last set (SetPeers)
	limits  map[string]GroupLimits // as last set (SetLimits)
	awg     *awg                   // the obfuscated socket's translator; nil when off
	tun     tun.Device             // nil until created or adopted
	shaper  *shapedTUN             // around tun, once the device is built
	dev     *device.Device         // nil until built
	host    *host                  // nil with an injected TUN
	egress  *egress.Policy         // where members may go, the server's addresses followed live; nil with an injected TUN
	uapi    net.Listener           // nil when disabled or not yet open
	conns   map[net.Conn]struct{}
	serving bool        // the UAPI accept loop runs
	closed  atomic.Bool // set (under mu) when Close starts

	// ipcHook, when set (tests), replaces the device's IpcSet for peer
	// changes, to make the device refuse one.
	ipcHook func(string) error

	uapiWG    sync.WaitGroup // the accept loop and its handlers
	closeOnce sync.Once
	closeErr  error

	// tableMu serialises writes to the nftables table: from Open and
	// Reload, which hold mu, and from address changes, which do not (they
	// arrive on egress's goroutine). Lock order: mu, then tableMu.
	tableMu     sync.Mutex
	table       tableSpec // guarded by tableMu: as last written
	tableSet    bool      // guarded by tableMu: table was written
	tableClosed bool      // guarded by tableMu: Close has begun; write nothing more
}

// New checks cfg and builds the service; it opens nothing.
func New(cfg *config.Config, deps Deps) (*Service, error) {
	if deps.Identity.PrivateKey.IsZero() {
		return nil, errors.New("vpn: no server private key")
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	log := deps.Logger
	return &Service{
		deps:  deps,
		log:   log,
		wglog: newWGLog(log),
		cfg:   cfg,
		pub:   deps.Identity.PrivateKey.PublicKey(),
		peers: map[Key]Peer{},
		conns: map[net.Conn]struct{}{},
	}, nil
}

// Open loads (or on first start generates and keeps) the server key and
// ULA, creates the TUN and the device, puts every enabled peer on it, and,
// for a kernel TUN, sets the addresses and brings the link up, switches IP
// forwarding on, lists the server's addresses and starts following them,
// writes the nftables table (destination filter and NAT) and opens the
// UAPI socket. It returns
// the first failure, named (`vpn: opening TUN tariq0: …`); whatever was
// created is closed again.
//
// The netlink and nftables sockets are opened here, in the caller's
// network namespace, and serve every later change.
func (s *Service) Open(ctx context.Context) (err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.opened {
		return errors.New("vpn: already opened")
	}
	s.opened = true
	defer func() {
		if err != nil {
			err = fmt.Errorf("vpn: %w", err)
			s.closeOnce.Do(s.closeLocked)
		}
	}()
	s.tun = s.deps.TUN // adopted: closed by Close even if Open fails early
	if err := ctx.Err(); err != nil {
		return err
	}
	cfg := s.cfg
	name := cfg.VPN.Interface

	id := s.deps.Identity
	if s.plan, err = wgconf.PlanFor(cfg, id.ULA); err != nil {
		return err
	}
	if cfg.VPN.Obfuscation.Enabled {
		if err := wgconf.CheckAmneziaWG(id.AmneziaWG); err != nil {
			return err
		}
		s.awg = newAWG(id.AmneziaWG, s.pub, nil)
	}

	if s.tun == nil {
		if s.tun, err = createTUN(name, cfg.VPN.MTU); err != nil {
			if errors.Is(err, os.ErrPermission) {
				return fmt.Errorf("opening TUN %s: %w (run as root, or with CAP_NET_ADMIN as the systemd unit does)", name, err)
			}
			return fmt.Errorf("opening TUN %s: %w", name, err)
		}
	}
	s.shaper = newShapedTUN(s.tun, s.deps.Now)
	s.tun = s.shaper // the device closes it, and it the TUN
	s.dev = device.NewDevice(s.tun, s.newBindLocked(cfg), s.wglog.deviceLogger())

	if err := s.dev.IpcSet(fmt.Sprintf("private_key=%s\nlisten_port=%d\n", id.PrivateKey.Hex(), cfg.VPN.ListenPort)); err != nil {
		return listenError(cfg.VPN.ListenPort, err)
	}
	if err := s.dev.Up(); err != nil {
		return listenError(cfg.VPN.ListenPort, err)
	}
	if err := s.dev.IpcSet(allPeersUAPI(s.peers)); err != nil {
		return fmt.Errorf("configuring peers: %w", err)
	}
	s.peersChangedLocked()

	var natDesc, fwd []string
	if s.deps.TUN == nil {
		if s.host, err = openHost(name); err != nil {
			return err
		}
		if err := s.host.configure(s.plan.Prefixes()); err != nil {
			return err
		}
		up4, up6 := s.host.uplinks(cfg.VPN.Uplink)
		if fwd, err = s.host.enableForwarding(true, true, up6); err != nil {
			return err
		}
		s.egress, err = egress.New(cfg, egress.Deps{Logger: s.log, ULA: id.ULA,
			OnChange: func(*addrpolicy.Destinations) { s.serverAddrsChanged() }})
		if err != nil {
			return err
		}
		if err := s.egress.Open(ctx); err != nil {
			return err
		}
		if natDesc, err = s.applyTableLocked(cfg, up4, up6); err != nil {
			return err
		}
	}
	if !s.deps.DisableUAPI {
		if s.uapi, err = openUAPI(name); err != nil {
			return fmt.Errorf("opening UAPI socket %s: %w", uapiSocketPath(name), err)
		}
	}
	if len(fwd) > 0 {
		s.log.Info("vpn changed kernel settings", "sysctl", fwd)
	}
	s.log.Info("vpn listening", "interface", name, "listen", s.listenPortLocked(), "extra_ports", cfg.VPN.ExtraPorts,
		"obfuscated_port", cfg.VPN.ObfuscatedPort(),
		"address", joinStrings(s.plan.Prefixes()), "peers", len(s.peers), "nat", natSummary(cfg, natDesc),
		"public_key", s.pub.String())
	return nil
}

// newBindLocked builds the UDP side: one socket per configured port.
func (s *Service) newBindLocked(cfg *config.Config) conn.Bind {
	newInner := s.deps.NewBind
	if newInner == nil {
		newInner = conn.NewDefaultBind
	}
	var socks []*socket
	for i, p := range cfg.VPN.WireGuardPorts() {
		sock := &socket{key: p.Key, port: uint16(p.Port), inner: newInner()}
		if i == 0 {
			sock.port = 0 // vpn.listen_port: the device's own, set by UAPI
		}
		if p.Obfuscated {
			sock.awg = s.awg
		}
		socks = append(socks, sock)
	}
	return newBind(socks, s.log)
}

// listenError names the port that could not be opened: the bind's own
// error says which one when it was not vpn.listen_port.
func listenError(port int, err error) error {
	if pe, ok := errors.AsType[*portError](err); ok {
		return pe
	}
	return fmt.Errorf("listening on UDP port %d: %w", port, err)
}

func natSummary(cfg *config.Config, desc []string) string {
	switch {
	case !cfg.VPN.NAT:
		return "off"
	case len(desc) == 0:
		return "none"
	}
	return strings.Join(desc, ", ")
}

// applyTableLocked writes the nftables table for cfg, if it would say
// anything else than it does: the destination filter, and with vpn.nat the
// masquerade rules for both families out of their uplinks. A family
// without an uplink (no default route, as on an IPv6-only VPS) gets no
// rule and a warning rather than an error: the tunnel itself still works,
// and the other family still gets out.
func (s *Service) applyTableLocked(cfg *config.Config, up4, up6 string) (natDesc []string, err error) {
	var nat []natRule
	var noUplink []netip.Prefix
	if cfg.VPN.NAT {
		for _, r := range []natRule{{s.plan.V4.Masked(), up4}, {s.plan.V6.Masked(), up6}} {
			if r.out == "" {
				noUplink = append(noUplink, r.src)
				continue
			}
			nat = append(nat, r)
			natDesc = append(natDesc, r.src.String()+" via "+r.out)
		}
	}
	s.tableMu.Lock()
	defer s.tableMu.Unlock()
	d := s.egress.Current()
	spec := tableSpec{
		tunnel:      cfg.VPN.Interface,
		tunnelAddrs: []netip.Addr{s.plan.V4.Addr(), s.plan.V6.Addr()},
		dest:        d.Rules(),
		host:        hostPrefixes(d),
		services:    cfg.ServicePorts(),
		nat:         nat,
	}
	if s.tableSet && spec.equal(s.table) {
		return natDesc, nil
	}
	if err := s.host.applyTable(spec); err != nil {
		return nil, err
	}
	s.table, s.tableSet = spec, true
	for _, src := range noUplink {
		fam := "IPv4"
		if src.Addr().Is6() {
			fam = "IPv6"
		}
		s.log.Warn("vpn has no uplink for this family: its traffic through the tunnel will not reach the internet (set vpn.uplink)",
			"family", fam, "subnet", src.String())
	}
	return natDesc, nil
}

// serverAddrsChanged rewrites the table's sets of the server itself after
// its addresses changed. It runs on egress's goroutine.
func (s *Service) serverAddrsChanged() {
	s.tableMu.Lock()
	defer s.tableMu.Unlock()
	if s.tableClosed || !s.tableSet {
		return
	}
	host := hostPrefixes(s.egress.Current())
	if slices.Equal(host, s.table.host) {
		return
	}
	if err := s.host.setHost(host); err != nil {
		s.log.Error("the server's new addresses are not in the nftables table; members may reach them until the next change or reload", "err", err)
		return
	}
	s.table.host = host
}

// Serve serves the UAPI socket until ctx is done (nil) or the device stops
// on its own (an error: the TUN interface was removed).
func (s *Service) Serve(ctx context.Context) error {
	s.mu.Lock()
	dev, uapi := s.dev, s.uapi
	if dev == nil || s.closed.Load() {
		s.mu.Unlock()
		return fmt.Errorf("vpn: %w", ErrNotRunning)
	}
	if uapi != nil && !s.serving {
		s.serving = true
		s.uapiWG.Add(1)
		go s.acceptUAPI(uapi, dev)
	}
	s.mu.Unlock()
	select {
	case <-ctx.Done():
		return nil
	case <-dev.Wait():
		if s.closed.Load() {
			return nil
		}
		return fmt.Errorf("vpn: device %s stopped (was the interface removed?)", s.cfg.VPN.Interface)
	}
}

func (s *Service) acceptUAPI(l net.Listener, dev *device.Device) {
	defer s.uapiWG.Done()
	accept.Loop(l, nil, s.log, "vpn UAPI socket", func(c net.Conn) {
		s.mu.Lock()
		if s.closed.Load() {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.uapiWG.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.uapiWG.Done()
			dev.IpcHandle(c) // closes c
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	})
}

// Close removes the nftables table, closes the UAPI socket and the device (and
// with it the TUN interface and UDP sockets). It is idempotent and safe
// after a partial Open. IP forwarding is left on: other software may rely
// on it, and wg-quick leaves it too.
func (s *Service) Close() error {
	s.mu.Lock()
	s.closeOnce.Do(s.closeLocked)
	err := s.closeErr
	s.mu.Unlock()
	s.uapiWG.Wait()
	return err
}

func (s *Service) closeLocked() {
	s.closed.Store(true)
	var errs []error
	if s.uapi != nil {
		s.uapi.Close()
	}
	for c := range s.conns {
		c.Close()
	}
	if s.egress != nil {
		s.egress.Close() // no address change writes to the table after this
	}
	if s.host != nil {
		s.tableMu.Lock()
		s.tableClosed = true
		s.tableMu.Unlock()
		if err := s.host.removeTable(); err != nil {
			errs = append(errs, err)
		}
	}
	if s.dev != nil {
		s.dev.Close()
	} else if s.tun != nil {
		s.tun.Close()
	}
	if s.host != nil {
		if err := s.host.close(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		s.closeErr = fmt.Errorf("vpn: %w", err)
	}
	if s.dev != nil {
		s.log.Info("vpn stopped", "interface", s.cfg.VPN.Interface)
	}
}

// Reload applies what can change live and refuses, by key, what cannot.
// Live: vpn.dns, vpn.client_allowed_ips, vpn.persistent_keepalive and
// server.public_host (they shape exported client configs only), vpn.mtu,
// vpn.nat, vpn.uplink, vpn.allow_destinations, vpn.deny_destinations and
// vpn.member_to_member (kernel TUN only: the nftables table is rewritten
// in one transaction, and the server's addresses listed again). Needing a
// restart:
// vpn.enabled, vpn.mode, vpn.interface, vpn.address, and every port:
// vpn.listen_port, vpn.extra_ports, vpn.obfuscation.enabled and
// vpn.obfuscation.listen_port (the sockets are built once, in Open, and
// every device handed a config keeps dialling the port it names, so a
// reload never moves one). Refused keys keep their old values, in Config
// too; everything else is applied.
func (s *Service) Reload(cfg *config.Config) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return fmt.Errorf("vpn: %w", ErrNotRunning)
	}
	if s.dev == nil { // not open yet: nothing is live
		s.cfg = cfg
		return nil
	}
	o, n := s.cfg.VPN, cfg.VPN
	eff := *cfg
	var errs []error
	refuse := func(key string) {
		errs = append(errs, &config.FieldError{Key: key, Msg: "changing it needs a restart"})
	}
	if o.Enabled != n.Enabled {
		refuse("vpn.enabled")
		eff.VPN.Enabled = o.Enabled
	}
	if o.Mode != n.Mode {
		refuse("vpn.mode")
		eff.VPN.Mode = o.Mode
	}
	if o.Interface != n.Interface {
		refuse("vpn.interface")
		eff.VPN.Interface = o.Interface
	}
	if !slices.Equal(o.Address, n.Address) {
		refuse("vpn.address")
		eff.VPN.Address = o.Address
	}
	if !slices.Equal(o.ExtraPorts, n.ExtraPorts) {
		refuse("vpn.extra_ports")
		eff.VPN.ExtraPorts = o.ExtraPorts
	}
	if o.Obfuscation.Enabled != n.Obfuscation.Enabled {
		refuse("vpn.obfuscation.enabled")
		eff.VPN.Obfuscation.Enabled = o.Obfuscation.Enabled
	}
	if o.Obfuscation.ListenPort != n.Obfuscation.ListenPort && (o.Obfuscation.Enabled || n.Obfuscation.Enabled) {
		refuse("vpn.obfuscation.listen_port")
		eff.VPN.Obfuscation.ListenPort = o.Obfuscation.ListenPort
	}
	if o.ListenPort != n.ListenPort {
		// Every device was given the old port and keeps dialling it:
		// rebinding would cut them all until each got a new config.
		refuse("vpn.listen_port")
		eff.VPN.ListenPort = o.ListenPort
	}
	if n.MTU != o.MTU {
		switch {
		case s.host == nil:
			refuse("vpn.mtu")
			eff.VPN.MTU = o.MTU
		default:
			if err := s.host.setMTU(n.MTU); err != nil {
				errs = append(errs, &config.FieldError{Key: "vpn.mtu", Msg: err.Error()})
				eff.VPN.MTU = o.MTU
			}
		}
	}
	if s.host != nil {
		if err := s.reloadTableLocked(&eff); err != nil {
			key := "vpn.nat"
			switch {
			case !slices.Equal(o.AllowDestinations, n.AllowDestinations):
				key = "vpn.allow_destinations"
			case !slices.Equal(o.DenyDestinations, n.DenyDestinations):
				key = "vpn.deny_destinations"
			case o.MemberToMember != n.MemberToMember:
				key = "vpn.member_to_member"
			}
			errs = append(errs, &config.FieldError{Key: key, Msg: err.Error()})
			// The table is as it was (one transaction): so is the policy.
			eff.VPN.NAT, eff.VPN.Uplink = o.NAT, o.Uplink
			eff.VPN.AllowDestinations, eff.VPN.DenyDestinations, eff.VPN.MemberToMember = o.AllowDestinations, o.DenyDestinations, o.MemberToMember
			if err := s.egress.Reload(&eff); err != nil {
				s.log.Error("vpn destination policy not restored", "err", err)
			}
		}
	}
	s.cfg = &eff
	s.log.Info("vpn config reloaded", "listen", eff.VPN.ListenPort, "mtu", eff.VPN.MTU, "nat", eff.VPN.NAT,
		"dns", joinStrings(eff.VPN.DNS), "client_allowed_ips", joinStrings(eff.VPN.ClientAllowedIPs),
		"allow_destinations", joinStrings(eff.VPN.AllowDestinations), "deny_destinations", joinStrings(eff.VPN.DenyDestinations),
		"member_to_member", eff.VPN.MemberToMember)
	return errors.Join(errs...)
}

// reloadTableLocked applies cfg's destination policy and NAT: the server's
// addresses listed again, the uplinks found again, the table rewritten if
// it would say anything new.
func (s *Service) reloadTableLocked(cfg *config.Config) error {
	if err := s.egress.Reload(cfg); err != nil {
		return err
	}
	up4, up6 := s.host.uplinks(cfg.VPN.Uplink)
	_, err := s.applyTableLocked(cfg, up4, up6)
	return err
}

// Config returns the configuration in effect: after a Reload, the new one
// with every refused key at its running value.
func (s *Service) Config() *config.Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg
}

// ServerPublicKey returns the server's public key (base64); "" before Open.
func (s *Service) ServerPublicKey() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pub.IsZero() {
		return ""
	}
	return s.pub.String()
}

// ListenPort returns the UDP port the device listens on (the kernel's pick
// when vpn.listen_port is 0), or 0 when not open.
func (s *Service) ListenPort() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.listenPortLocked()
}

func (s *Service) listenPortLocked() int {
	if s.dev == nil {
		return 0
	}
	out, err := s.dev.IpcGet()
	if err != nil {
		return 0
	}
	for line := range strings.Lines(out) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "listen_port="); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	return 0
}

// Addresses returns the server's own tunnel addresses with their prefixes
// (10.77.0.1/24 and the IPv6 one); nil before Open.
func (s *Service) Addresses() []netip.Prefix {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.plan.V4.IsValid() {
		return nil
	}
	return s.plan.Prefixes()
}

func (s *Service) runningLocked() error {
	if s.dev == nil || s.closed.Load() {
		return fmt.Errorf("vpn: %w", ErrNotRunning)
	}
	return nil
}

func joinStrings[T fmt.Stringer](xs []T) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = x.String()
	}
	return strings.Join(s, ", ")
}
