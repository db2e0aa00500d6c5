// Package relay is tariq's TURN relay: pion/turn v5 servers on UDP, TCP and
// TLS listeners, with static and REST (coturn use-auth-secret) credentials,
// allocation quotas, and a peer filter that keeps the relay from becoming an
// open proxy into the server's own network.
package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/turn/v5"

	"github.com/tariq-vpn/tariq/config"
)

// Deps is what the relay uses but does not create.
type Deps struct {
	Logger *slog.Logger
	// Secrets returns the REST secrets kept in the state store (tariq turn
	// secret), the signing one first; they verify after relay.secrets.
	// generate asks for one to be generated and kept if none is stored (the
	// relay has no relay.secrets). Nil: none but relay.secrets.
	Secrets func(generate bool) ([]config.Secret, error)
	// TLS serves relay.listen_tls and connections pushed by the HTTPS port;
	// nil when tls.mode is off.
	TLS *tls.Config
	// OwnAddrs lists the server's own addresses; nil means the addresses of
	// its interfaces, tracked live: on Linux through the kernel's address
	// events (an address added later, such as a floating IP, is guarded at
	// once), and listed again every minute everywhere.
	OwnAddrs func() ([]netip.Addr, error)
	// Now is the clock for credential expiry; nil means time.Now.
	Now func() time.Time
	// Streams bounds TCP and TLS control connections; zero fields take
	// the defaults.
	Streams StreamLimits
	// Lifetimes shortens pion's lifetimes of allocations, permissions and
	// channel bindings; zero fields keep RFC 8656's. Tests set it.
	Lifetimes Lifetimes
	// PionData leaves relaying the data to pion, as it was before tariq had
	// its own data path (datapath.go): the reference the data path is
	// tested against. Off Linux pion always relays the data.
	PionData bool
}

// Lifetimes are pion's lifetimes for what a client makes. Zero fields keep
// the defaults: allocations 10 minutes unless the client asks (RFC 8656
// §7.2), permissions 5 minutes (§9), channel bindings 10 minutes (§12).
type Lifetimes struct {
	Allocation time.Duration
	Permission time.Duration
	Channel    time.Duration
}

// Service is the TURN relay.
type Service struct {
	cfg    *config.Config
	deps   Deps
	log    *slog.Logger
	realm  string
	now    func() time.Time
	limits StreamLimits // deps.Streams with the defaults filled in

	policyMu  sync.Mutex // serialises building and storing policy (Open, Reload, own-address changes)
	policyGen uint64     // guarded by policyMu: the generation of the last policy stored
	policy    atomic.Pointer[policy]
	stats     *Stats
	hints     hints

	liveOwn   bool          // OwnAddrs lists the interfaces: follow their changes
	watchStop chan struct{} // closed by Close to stop the address watch
	watchDone chan struct{} // closed when the address watch has stopped

	fam4, fam6 relayFamily      // fixed at Open
	tcpRelay   bool             // relay.tcp_relay, fixed for the process
	ports      config.PortRange // relay.relay_ports, fixed for the process

	allocMu     sync.Mutex // guards allocTotal and allocByUser
	allocTotal  int
	allocByUser map[string]int

	relayMu    sync.Mutex // guards relayConns
	relayConns map[net.PacketConn]struct{}
	// portLive counts the live relayed sockets and listeners per protocol,
	// family and port (portIndex), read per packet by the own-address rule.
	portLive []atomic.Int32

	// fast is set when tariq's data path relays the data (datapath.go);
	// fixed at New.
	fast          bool
	loops         []*dataLoop
	bufs          sync.Pool // *[slotSize]byte for datagrams handed to pion
	streamBatches sync.Pool // *streamBatch

	entryMu sync.Mutex                // guards entries
	entries map[relayPort]*allocEntry // the data path's allocations by relayed port

	fdStreams, fdAllocs int         // caps from the open-file limit (fdBudget), fixed at Open; 0 = none
	slots               streamSlots // open stream connections, in total and per source

	streamMu    sync.Mutex // guards streamConns
	streamConns map[streamTuple]*gateStreamConn

	server      *turn.Server
	packetConns []net.PacketConn
	streams     []*streamListener
	shared      *streamListener // fed by the HTTPS port, if any
	closeOnce   sync.Once
}

// New checks cfg and builds the relay; it opens nothing.
func New(cfg *config.Config, deps Deps) (*Service, error) {
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	liveOwn := deps.OwnAddrs == nil
	if liveOwn {
		deps.OwnAddrs = interfaceAddrs
	}
	if len(cfg.Relay.ListenTLS) > 0 && deps.TLS == nil {
		return nil, errors.New("relay: relay.listen_tls is set but TLS is off")
	}
	realm := cfg.RealmOrHost(cfg.Server.PublicHost)
	if realm == "" {
		realm = "tariq"
	}
	s := &Service{
		cfg:         cfg,
		deps:        deps,
		log:         deps.Logger,
		realm:       realm,
		now:         deps.Now,
		limits:      deps.Streams.withDefaults(),
		stats:       newStats(),
		allocByUser: map[string]int{},
		relayConns:  map[net.PacketConn]struct{}{},
		portLive:    make([]atomic.Int32, 4*portSpan(cfg.Relay.RelayPorts)),
		streamConns: map[streamTuple]*gateStreamConn{},
		entries:     map[relayPort]*allocEntry{},
		tcpRelay:    cfg.Relay.TCPRelay,
		ports:       cfg.Relay.RelayPorts,
		liveOwn:     liveOwn,
		fast:        fastPathSupported && !deps.PionData,
	}
	s.bufs.New = func() any { return new([slotSize]byte) }
	s.streamBatches.New = func() any { return newStreamBatch() }
	return s, nil
}

// Realm returns the realm the relay authenticates in.
func (s *Service) Realm() string { return s.realm }

// Stats returns the relay's counters.
func (s *Service) Stats() *Stats { return s.stats }

// Open binds every listener and starts pion on them. It returns the first
// failure, naming the listener; whatever was opened is closed again.
func (s *Service) Open(ctx context.Context) (err error) {
	defer func() {
		if err != nil {
			s.Close()
			err = fmt.Errorf("relay: %w", err)
		}
	}()
	if s.liveOwn {
		// Subscribe before listing, so no change falls in between.
		if err := s.startAddrWatch(); err != nil {
			s.log.Warn("relay cannot follow address changes; listing them every minute instead", "err", err)
		}
	}
	s.policyMu.Lock()
	p, err := s.buildPolicy(s.cfg)
	if err == nil {
		s.storePolicyLocked(p)
	}
	s.policyMu.Unlock()
	if err != nil {
		return err
	}
	if err := s.resolveFamilies(); err != nil {
		return err
	}
	s.sizeFromOpenFiles()

	cores := udpSocketsPerListener(runtime.GOMAXPROCS(0))
	if s.fast {
		if err := s.openDataPath(cores); err != nil {
			return err
		}
	} else {
		for _, addr := range s.cfg.Relay.ListenUDP {
			conns, err := listenUDP(ctx, addr, cores)
			if err != nil {
				return err
			}
			s.packetConns = append(s.packetConns, conns...)
		}
	}
	var lc net.ListenConfig
	for _, addr := range s.cfg.Relay.ListenTCP {
		ln, err := lc.Listen(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		s.streams = append(s.streams, newStreamListener(s, ln, nil, ln.Addr()))
	}
	for _, addr := range s.cfg.Relay.ListenTLS {
		ln, err := lc.Listen(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		s.streams = append(s.streams, newStreamListener(s, ln, s.deps.TLS, ln.Addr()))
	}
	s.shared = newStreamListener(s, nil, nil, &net.TCPAddr{})
	s.streams = append(s.streams, s.shared)

	lt := s.deps.Lifetimes
	sc := turn.ServerConfig{
		Realm:              s.realm,
		AuthHandler:        s.authenticate,
		QuotaHandler:       s.quotaOK,
		LoggerFactory:      pionLogs{s.log},
		AllocationLifetime: lt.Allocation,
		PermissionTimeout:  lt.Permission,
		ChannelBindTimeout: lt.Channel,
		EventHandler: turn.EventHandler{
			OnAuth:              s.onAuth,
			OnAllocationCreated: s.onAllocationCreated,
			OnAllocationDeleted: s.onAllocationDeleted,
		},
	}
	if s.fast {
		sc.EventHandler.OnPermissionCreated = s.onPermissionCreated
		sc.EventHandler.OnPermissionDeleted = s.onPermissionDeleted
		sc.EventHandler.OnChannelCreated = s.onChannelCreated
		sc.EventHandler.OnChannelDeleted = s.onChannelDeleted
	}
	for _, pc := range s.packetConns {
		conf := turn.PacketConnConfig{RelayAddressGenerator: allocator{s: s}, PermissionHandler: s.permit}
		if ls, ok := pc.(*loopListener); ok {
			conf.PacketConn, conf.RelayAddressGenerator = ls, allocator{s: s, lis: ls}
		} else {
			conf.PacketConn = newGatePacketConn(s, pc)
		}
		sc.PacketConnConfigs = append(sc.PacketConnConfigs, conf)
	}
	for _, l := range s.streams {
		sc.ListenerConfigs = append(sc.ListenerConfigs, turn.ListenerConfig{
			Listener:              l,
			RelayAddressGenerator: allocator{s: s, stream: s.fast},
			PermissionHandler:     s.permit,
		})
	}
	srv, err := turn.NewServer(sc)
	if err != nil {
		return err
	}
	s.server = srv
	s.log.Info("relay listening", "udp", s.cfg.Relay.ListenUDP, "tcp", s.cfg.Relay.ListenTCP,
		"tls", s.cfg.Relay.ListenTLS, "realm", s.realm, "relay_ipv4", addrOrNone(s.fam4.adv),
		"relay_ipv6", addrOrNone(s.fam6.adv), "relay_bind_ipv4", addrOrNone(s.fam4.bind),
		"relay_bind_ipv6", addrOrNone(s.fam6.bind), "udp_sockets_per_listener", cores, "data_path", s.dataPathName())
	return nil
}

// sizeFromOpenFiles caps streams and allocations so that TURN clients
// never take the file descriptors the rest of the daemon needs (fdBudget).
func (s *Service) sizeFromOpenFiles() {
	n, err := openFileLimit()
	if err != nil {
		s.log.Warn("relay cannot read the open-file limit; streams and allocations are capped by relay.max_allocations only", "err", err)
		return
	}
	var reserve int
	s.fdStreams, s.fdAllocs, reserve = fdBudget(n)
	limit, perSource := s.streamCap()
	s.log.Info("relay limits", "open_files", n, "reserved_files", reserve, "max_streams", limit,
		"max_streams_per_source", perSource, "max_allocations", min(s.policy.Load().maxAllocs, s.fdAllocs))
	if s.cfg.Relay.MaxAllocations > s.fdAllocs {
		s.log.Warn("relay.max_allocations is more than the open-file limit allows; raise LimitNOFILE to use it",
			"max_allocations", s.cfg.Relay.MaxAllocations, "allowed", s.fdAllocs, "open_files", n)
	}
}

func addrOrNone(a netip.Addr) string {
	if !a.IsValid() {
		return "none"
	}
	return a.String()
}

// Serve runs until ctx is done, sweeping stale state once a minute; the
// pion servers started by Open do the work.
func (s *Service) Serve(ctx context.Context) error {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			s.hints.sweep(s.now(), time.Minute)
			if s.liveOwn {
				s.refreshOwnAddrs() // in case an address event was missed
			}
		}
	}
}

// Close stops every listener and releases every allocation. It is
// idempotent and safe after a partial Open.
func (s *Service) Close() error {
	s.closeOnce.Do(func() {
		if s.watchStop != nil {
			close(s.watchStop)
			<-s.watchDone
		}
		if s.server != nil {
			s.server.Close() // closes the packet conns and stream listeners it was given
		} else {
			for _, pc := range s.packetConns {
				pc.Close()
			}
			for _, l := range s.streams {
				l.Close()
			}
		}
		for _, l := range s.streams {
			l.wait()
		}
		// pion closes allocations from its read loops as they exit; wait for
		// their relayed sockets so nothing outlives Close.
		deadline := time.Now().Add(5 * time.Second)
		for s.liveRelays() > 0 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		for _, l := range s.loops {
			l.stop()
		}
	})
	return nil
}

// PushTLS hands the relay a TLS connection, its handshake done, that the
// shared HTTPS port identified as TURN. raw is the underlying socket.
func (s *Service) PushTLS(raw, conn net.Conn) {
	if s.shared == nil {
		conn.Close()
		return
	}
	s.shared.PushReady(raw, conn)
}

// Reload applies what can change live (users, secrets, quotas, peer rules)
// by swapping the policy, and refuses, by key, what cannot. Live
// allocations are untouched.
func (s *Service) Reload(cfg *config.Config) error {
	var refused []error
	restart := func(key string, same bool) {
		if !same {
			refused = append(refused, &config.FieldError{Key: key, Msg: "changing it needs a restart"})
		}
	}
	o, n := s.cfg.Relay, cfg.Relay
	restart("relay.enabled", o.Enabled == n.Enabled)
	restart("relay.realm", s.realm == cfg.RealmOrHost(cfg.Server.PublicHost) || (s.realm == "tariq" && cfg.RealmOrHost(cfg.Server.PublicHost) == ""))
	restart("relay.listen_udp", slices.Equal(o.ListenUDP, n.ListenUDP))
	restart("relay.listen_tcp", slices.Equal(o.ListenTCP, n.ListenTCP))
	restart("relay.listen_tls", slices.Equal(o.ListenTLS, n.ListenTLS))
	restart("relay.relay_ip", slices.Equal(o.RelayIP, n.RelayIP))
	restart("relay.relay_bind", o.RelayBind == n.RelayBind)
	restart("relay.relay_ports", o.RelayPorts == n.RelayPorts)
	restart("relay.tcp_relay", o.TCPRelay == n.TCPRelay)
	s.policyMu.Lock()
	p, err := s.buildPolicy(cfg)
	if err == nil {
		s.storePolicyLocked(p)
	}
	s.policyMu.Unlock()
	if err != nil {
		return errors.Join(append(refused, err)...)
	}
	s.log.Info("relay policy reloaded", "users", len(n.Users), "secrets", len(p.secrets),
		"allow_peers", len(n.AllowPeers), "deny_peers", len(n.DenyPeers))
	return errors.Join(refused...)
}

// storePolicyLocked makes p the policy, with the next generation (which
// the data path's cached verdicts are checked against); policyMu is held.
func (s *Service) storePolicyLocked(p *policy) {
	s.policyGen++
	p.gen = s.policyGen
	s.policy.Store(p)
}

// buildPolicy builds the policy for cfg, listing the server's own
// addresses; the caller holds policyMu until it has stored the result.
func (s *Service) buildPolicy(cfg *config.Config) (*policy, error) {
	secrets := slices.Clone(cfg.Relay.Secrets)
	if s.deps.Secrets != nil {
		stored, err := s.deps.Secrets(len(secrets) == 0)
		if err != nil {
			return nil, err
		}
		secrets = append(secrets, stored...)
	}
	own, err := s.deps.OwnAddrs()
	if err != nil {
		return nil, fmt.Errorf("listing own addresses: %w", err)
	}
	own = append(own, cfg.Relay.RelayIP...)
	var vpnNets []netip.Prefix
	if cfg.VPN.Enabled {
		vpnNets = cfg.VPN.Address
	}
	f := NewFilter(cfg.Relay.AllowPeers, cfg.Relay.DenyPeers, vpnNets, own)
	p := newPolicy(cfg, s.realm, secrets, f)
	p.configured = len(cfg.Relay.Secrets)
	return p, nil
}

// SecretsChanged rereads the REST secrets kept in the state store (another
// node or the CLI added, switched or retired one) and swaps in a policy
// with them, after relay.secrets as before. Allocations are untouched.
func (s *Service) SecretsChanged() error {
	if s.deps.Secrets == nil {
		return nil
	}
	s.policyMu.Lock()
	defer s.policyMu.Unlock()
	p := s.policy.Load()
	if p == nil {
		return nil // Open has yet to build it
	}
	stored, err := s.deps.Secrets(p.configured == 0)
	if err != nil {
		return err
	}
	next := *p
	next.secrets = slices.Clone(p.secrets[:p.configured])
	for _, sec := range stored {
		next.secrets = append(next.secrets, sec.Reveal())
	}
	if slices.Equal(next.secrets, p.secrets) {
		return nil
	}
	s.storePolicyLocked(&next)
	s.log.Info("relay secrets changed", "secrets", len(next.secrets))
	return nil
}

// refreshOwnAddrs lists the server's own addresses again and, if they
// changed, swaps in a policy whose filter has the new list. Relayed sockets
// see it on their next packet (their verdict caches are per policy).
func (s *Service) refreshOwnAddrs() {
	// Listing under the lock keeps a slower, older listing from replacing
	// a newer one.
	s.policyMu.Lock()
	defer s.policyMu.Unlock()
	own, err := s.deps.OwnAddrs()
	if err != nil {
		s.log.Warn("listing own addresses failed; keeping the last list", "err", err)
		return
	}
	own = append(own, s.cfg.Relay.RelayIP...) // relay.relay_ip needs a restart to change
	p := s.policy.Load()
	if p == nil {
		return // Open has yet to list them
	}
	f, changed := p.filter.WithOwn(own)
	if !changed {
		return
	}
	next := *p
	next.filter = f
	s.storePolicyLocked(&next)
	s.log.Info("relay own addresses changed", "own", fmt.Sprint(f.Own()))
}

// resolveFamilies decides, per address family, where relayed sockets bind
// and which address XOR-RELAYED-ADDRESS carries: relay.relay_ip if given,
// else the bound address, else (for a wildcard bind) the source address of
// the default route. A family with none of these gets 440.
func (s *Service) resolveFamilies() error {
	bind := s.cfg.Relay.RelayBind.Unmap()
	for _, fam := range []int{4, 6} {
		var f relayFamily
		switch {
		case bind.IsUnspecified() && fam == 4:
			f.bind = netip.IPv4Unspecified()
		case bind.IsUnspecified():
			f.bind = netip.IPv6Unspecified()
		case family(bind) == fam:
			f.bind, f.adv = bind, bind
		}
		for _, a := range s.cfg.Relay.RelayIP {
			if family(a) == fam {
				f.adv = a.Unmap()
			}
		}
		if f.bind.IsValid() && !f.adv.IsValid() {
			if a, err := routeSource(fam); err == nil {
				f.adv = a
			} else {
				f.bind = netip.Addr{}
				s.log.Info("relay has no address of this family; such allocations get 440", "family", fmt.Sprintf("ipv%d", fam), "err", err)
			}
		}
		if f.bind.IsUnspecified() && f.adv.IsValid() && isLocalAddr(f.adv) {
			// Bound to the wildcard, a relayed socket would send from the
			// address the kernel picks by route, not the advertised one (a
			// floating IP, a second address): peers, and the NATs and
			// firewalls in front of them, would see a stranger. Bind where
			// peers are told to send; behind 1:1 NAT (relay_ip on no
			// interface) the wildcard stays.
			f.bind = f.adv
		}
		if fam == 4 {
			s.fam4 = f
		} else {
			s.fam6 = f
		}
	}
	if !s.fam4.bind.IsValid() && !s.fam6.bind.IsValid() {
		return errors.New("no relay address: set relay.relay_ip or relay.relay_bind")
	}
	return nil
}

func (s *Service) canRelay(fam int) bool {
	switch fam {
	case 4:
		return s.fam4.bind.IsValid()
	case 6:
		return s.fam6.bind.IsValid()
	}
	return false
}

// isLocalAddr reports whether a is an address of this host (one a socket
// can bind).
func isLocalAddr(a netip.Addr) bool {
	c, err := net.ListenPacket("udp", net.JoinHostPort(a.String(), "0"))
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// routeSource returns the source address the kernel would use towards the
// internet for family fam. Connecting a UDP socket sends no packet.
func routeSource(fam int) (netip.Addr, error) {
	network, dst := "udp4", "192.0.2.1:9"
	if fam == 6 {
		network, dst = "udp6", "[2001:db8::1]:9"
	}
	c, err := net.Dial(network, dst)
	if err != nil {
		return netip.Addr{}, err
	}
	defer c.Close()
	ap, ok := addrPort(c.LocalAddr())
	if !ok || !ap.Addr().IsValid() || ap.Addr().IsUnspecified() {
		return netip.Addr{}, errors.New("no route")
	}
	return ap.Addr(), nil
}

func interfaceAddrs() ([]netip.Addr, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok {
			if ip, ok := netipFromIP(ipn.IP); ok && !ip.IsLoopback() && !ip.IsLinkLocalUnicast() {
				out = append(out, ip)
			}
		}
	}
	return out, nil
}

// trackRelay counts the relayed socket c, on key, in or out.
func (s *Service) trackRelay(c net.PacketConn, key relayPort, live bool) {
	s.relayMu.Lock()
	_, was := s.relayConns[c]
	if live {
		s.relayConns[c] = struct{}{}
	} else {
		delete(s.relayConns, c)
	}
	s.relayMu.Unlock()
	if live != was {
		s.trackPort(key, live)
	}
}

// relayPort names where one relayed socket or listener listens: its
// protocol (protoUDP or protoTCP), address family (4 or 6) and port.
type relayPort struct {
	proto uint8
	fam   uint8
	port  uint16
}

// portSpan is how many ports r holds.
func portSpan(r config.PortRange) int {
	if r.Max < r.Min {
		return 0
	}
	return int(r.Max) - int(r.Min) + 1
}

// portIndex is k's counter in portLive, or -1 outside relay.relay_ports.
func (s *Service) portIndex(k relayPort) int {
	if !s.ports.Contains(int(k.port)) {
		return -1
	}
	i := int(k.port - s.ports.Min)
	if k.proto == protoTCP {
		i += 2 * portSpan(s.ports)
	}
	if k.fam == 6 {
		i += portSpan(s.ports)
	}
	return i
}

// trackPort counts a relayed socket or listener in or out.
func (s *Service) trackPort(k relayPort, live bool) {
	i := s.portIndex(k)
	if i < 0 {
		return
	}
	if live {
		s.portLive[i].Add(1)
	} else {
		s.portLive[i].Add(-1)
	}
}

// liveRelayPort reports whether one of the relay's allocations holds k.
// It takes no lock: the data path asks per packet.
func (s *Service) liveRelayPort(k relayPort) bool {
	i := s.portIndex(k)
	return i >= 0 && s.portLive[i].Load() > 0
}

func (s *Service) dataPathName() string {
	if s.fast {
		return "tariq"
	}
	return "pion"
}

func (s *Service) liveRelays() int {
	s.relayMu.Lock()
	defer s.relayMu.Unlock()
	return len(s.relayConns)
}

func (s *Service) onAuth(src, dst net.Addr, protocol, username, realm, method string, verdict bool) {
	if !verdict {
		s.stats.authFailed("bad-integrity")
		s.log.Debug("turn auth refused", "user", username, "remote", src.String(), "reason", "bad-integrity")
	}
}

func (s *Service) onAllocationCreated(src, dst net.Addr, protocol, userID, realm string, relayAddr net.Addr, requestedPort int) {
	if e := s.entryFor(relayAddr); e != nil {
		s.goLive(e, src, dst)
	}
	s.allocMu.Lock()
	s.allocTotal++
	s.allocByUser[userID]++
	s.allocMu.Unlock()
	s.streamAllocation(src, dst, +1)
	s.stats.AllocationsCreated.Add(1)
	s.log.Debug("turn allocation created", "user", userID, "remote", src.String(), "relay", relayAddr.String(), "transport", protocol)
}

func (s *Service) onAllocationDeleted(src, dst net.Addr, protocol, userID, realm string) {
	s.allocMu.Lock()
	s.allocTotal--
	if s.allocByUser[userID]--; s.allocByUser[userID] <= 0 {
		delete(s.allocByUser, userID)
	}
	s.allocMu.Unlock()
	s.streamAllocation(src, dst, -1)
	s.stats.AllocationsDeleted.Add(1)
	s.log.Debug("turn allocation deleted", "user", userID, "remote", src.String())
}

// Status is a point-in-time view of the relay for `tariq status`.
type Status struct {
	Realm       string         `json:"realm"`
	Allocations int            `json:"allocations"`
	ByUser      map[string]int `json:"by_user"`
	RelayIPv4   string         `json:"relay_ipv4,omitempty"`
	RelayIPv6   string         `json:"relay_ipv6,omitempty"`
}

// Status returns the relay's current state.
func (s *Service) Status() Status {
	s.allocMu.Lock()
	defer s.allocMu.Unlock()
	by := make(map[string]int, len(s.allocByUser))
	for k, v := range s.allocByUser {
		by[k] = v
	}
	st := Status{Realm: s.realm, Allocations: s.allocTotal, ByUser: by}
	if s.fam4.bind.IsValid() {
		st.RelayIPv4 = s.fam4.adv.String()
	}
	if s.fam6.bind.IsValid() {
		st.RelayIPv6 = s.fam6.adv.String()
	}
	return st
}

// Allocations returns the number of live allocations.
func (s *Service) Allocations() int {
	s.allocMu.Lock()
	defer s.allocMu.Unlock()
	return s.allocTotal
}

// Addrs returns the bound listen addresses by transport (for tests and
// logs, where ports may have been chosen by the kernel).
func (s *Service) Addrs() (udp, tcp, tlsAddrs []net.Addr) {
	seen := map[string]bool{}
	for _, pc := range s.packetConns {
		if a := pc.LocalAddr(); !seen[a.String()] {
			seen[a.String()] = true
			udp = append(udp, a)
		}
	}
	for _, l := range s.streams {
		switch {
		case l.ln == nil:
		case l.tls == nil:
			tcp = append(tcp, l.Addr())
		default:
			tlsAddrs = append(tlsAddrs, l.Addr())
		}
	}
	return udp, tcp, tlsAddrs
}
