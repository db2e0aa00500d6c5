package members

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/tariq-vpn/tariq/config"
	"github.com/tariq-vpn/tariq/internal/store"
	"github.com/tariq-vpn/tariq/internal/wgconf"
)

// Deps is what the members model uses but does not create.
type Deps struct {
	Logger *slog.Logger
	// Store keeps the members, their devices and invites: the state file,
	// or etcd shared with other nodes. Required.
	Store store.Backend
	// Config returns the configuration in force; it changes on reload.
	// Required.
	Config func() *config.Config
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Paths are the live paths members' devices use (the WireGuard
	// endpoint, in the running daemon). Nil offline: changes are only
	// stored, and apply when the daemon starts.
	Paths []Path
	// WebAddr, when set, returns the HTTPS port actually bound, for
	// invite links (a configured port 0 is the kernel's choice).
	WebAddr func() net.Addr
	// TrustedCert returns nil when the HTTPS certificate is one the
	// Outline app accepts (publicly trusted), else why not (wrapping
	// ErrUntrustedCert). Nil: no Outline key is handed out.
	TrustedCert func() error
}

// Path is one way members' devices reach the internet through the server
// (the WireGuard endpoint). The members model tells it what to be and
// reads what it counted.
type Path interface {
	// Apply makes the path's state d: exactly these devices, these
	// limits. An error means it refused (and kept what it had).
	Apply(d Desired) error
	// Usage returns each member's bytes on this path since it started;
	// they only grow.
	Usage() map[string]Traffic
	// Live returns the path's view of each device by name: last
	// handshake, endpoint, counters. Nil if the path has none.
	Live() map[string]Live
}

// Traffic is a member's bytes on one path: In from their devices, Out to
// them.
type Traffic struct{ In, Out uint64 }

// Live is a path's view of one device.
type Live struct {
	Endpoint         netip.AddrPort
	LastHandshake    time.Time
	RxBytes, TxBytes uint64
}

// MemberPath is a Path whose clients are members rather than devices (the
// Outline path: one key per member).
type MemberPath interface {
	Path
	// MemberLive returns the path's view of each member by name.
	MemberLive() map[string]MemberLive
}

// MemberLive is a member's activity on a MemberPath since it started.
type MemberLive struct {
	// Open counts the member's open connections; Total those that
	// authenticated.
	Open  int    `json:"open"`
	Total uint64 `json:"total"`
	// LastSeen is the last connection's start; zero: none yet.
	LastSeen time.Time `json:"last_seen,omitzero"`
	// In is what the member sent, Out what they received.
	In  uint64 `json:"in"`
	Out uint64 `json:"out"`
}

// Desired is what the paths should be: the devices that may connect and
// each member's limits.
type Desired struct {
	Devices []WireGuardDevice
	// Limits has an entry for every member with a device in Devices, and
	// every member whose Outline key is on.
	Limits map[string]PathLimits
	// Outline is every member's Outline key, on (Off "") or off and why.
	Outline []OutlineAccess
	// OutlineRetired are the hex SHA-256 of removed members' Outline
	// document tokens.
	OutlineRetired []string
}

// WireGuardDevice is one device as the WireGuard endpoint needs it.
type WireGuardDevice struct {
	Name, Member string
	PublicKey    wgconf.Key
	PresharedKey wgconf.Key
	IPv4, IPv6   netip.Addr
}

// PathLimits is what one member may still pass.
type PathLimits struct {
	// Rate caps each direction, in bytes per second; 0: none.
	Rate uint64
	// Budgeted says Remaining applies: the bytes (both directions) the
	// member may still pass this month, counted from the path's Usage as
	// last read.
	Budgeted  bool
	Remaining uint64
}

// Service is the members model over one state store.
//
// Lock order: mu, then the store's lock (store.Update); a Path's own locks
// come after both (Apply is called with mu held, so paths see changes in
// the order the store does).
type Service struct {
	deps Deps
	log  *slog.Logger

	mu      sync.Mutex             // guards everything below, and serialises changes with their Apply
	pending map[pendingKey]Traffic // usage counted but not yet stored, by member and month
	seen    []map[string]Traffic   // per path: its Usage as last read
	blocked map[string]string      // member → why their devices are off (expired, over-limit), as last applied
	used    map[string]store.Usage // member → this month's stored usage plus pending, as last computed
}

// New builds the members model; it touches nothing until used.
func New(deps Deps) (*Service, error) {
	if deps.Store == nil || deps.Config == nil {
		return nil, errors.New("members: no state store or config")
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	return &Service{
		deps:    deps,
		log:     deps.Logger,
		pending: map[pendingKey]Traffic{},
		seen:    make([]map[string]Traffic, len(deps.Paths)),
		blocked: map[string]string{},
		used:    map[string]store.Usage{},
	}, nil
}

// Identity is what makes the server the same WireGuard server to every
// device across restarts.
type Identity struct {
	PrivateKey wgconf.Key
	ULA        netip.Prefix
	AmneziaWG  wgconf.AmneziaWG
	// OutlinePrefix is the first segment of the Outline WebSocket paths.
	OutlinePrefix string
}

// Identity returns the server's identity, generating and keeping it on
// first use: the private key, the ULA /64 when vpn.address has no IPv6
// prefix, and the AmneziaWG parameters (generated whether or not
// vpn.obfuscation is on, so that turning it on later changes no config
// already handed out).
func (s *Service) Identity() (Identity, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, err := s.identityStateLocked()
	if err != nil {
		return Identity{}, err
	}
	return identityOf(st)
}

// identityStateLocked returns the state with the server's identity,
// generating what is missing. It writes only then: a node starting while
// a shared store is away serves the identity it last saw.
func (s *Service) identityStateLocked() (*store.State, error) {
	cfg := s.deps.Config()
	st, err := s.deps.Store.Load()
	if err != nil {
		return nil, err
	}
	c := store.Clone(st)
	if err := ensureIdentity(c, cfg); err != nil {
		return nil, err
	}
	if store.Equal(c, st) {
		return st, nil
	}
	return s.deps.Store.Update(func(st *store.State) error { return ensureIdentity(st, cfg) })
}

func ensureIdentity(st *store.State, cfg *config.Config) error {
	if st.VPN.PrivateKey == "" {
		st.VPN.PrivateKey = store.Secret(wgconf.NewPrivateKey().String())
	}
	if wgconf.NeedsULA(cfg) && !st.VPN.ULA.IsValid() {
		st.VPN.ULA = wgconf.NewULA()
	}
	if st.VPN.AmneziaWG == nil {
		p := wgconf.NewAmneziaWG()
		st.VPN.AmneziaWG = &p
	}
	ensureOutline(st)
	_, err := identityOf(st)
	return err
}

func identityOf(st *store.State) (Identity, error) {
	k, err := wgconf.ParseKey(st.VPN.PrivateKey.Reveal())
	if err != nil {
		return Identity{}, fmt.Errorf("server private key in the state: %w", err)
	}
	id := Identity{PrivateKey: k, ULA: st.VPN.ULA, OutlinePrefix: st.Outline.Prefix.Reveal()}
	if st.VPN.AmneziaWG != nil {
		if err := wgconf.CheckAmneziaWG(*st.VPN.AmneziaWG); err != nil {
			return Identity{}, err
		}
		id.AmneziaWG = *st.VPN.AmneziaWG
	}
	return id, nil
}

// server returns what client configs say about the server.
func server(st *store.State) (wgconf.Server, error) {
	id, err := identityOf(st)
	if err != nil {
		return wgconf.Server{}, err
	}
	return wgconf.Server{PublicKey: id.PrivateKey.PublicKey(), AmneziaWG: id.AmneziaWG}, nil
}

// change applies fn to the state and, with paths, the result to them. If
// a path refuses, the members' part of the state goes back to what it
// was, so the store and the paths agree and the caller sees an error that
// changed nothing.
func (s *Service) change(fn func(st *store.State) error) (*store.State, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changeLocked(fn)
}

func (s *Service) changeLocked(fn func(st *store.State) error) (*store.State, error) {
	var before store.State
	st, err := s.deps.Store.Update(func(st *store.State) error {
		before = snapshot(st)
		if err := ensureIdentity(st, s.deps.Config()); err != nil {
			return err
		}
		return fn(st)
	})
	if err != nil || len(s.deps.Paths) == 0 {
		return st, err
	}
	if err := s.applyLocked(st); err != nil {
		_, err2 := s.deps.Store.Update(func(cur *store.State) error {
			cur.Members, cur.Peers, cur.Invites, cur.VPN.Retired = before.Members, before.Peers, before.Invites, before.VPN.Retired
			cur.Outline.Retired = before.Outline.Retired
			return nil
		})
		if err2 != nil {
			s.log.Error("members and the live paths disagree until restart", "err", err2)
			return nil, errors.Join(err, fmt.Errorf("rolling back the store: %w", err2))
		}
		if st, err2 := s.deps.Store.Load(); err2 == nil {
			s.applyLocked(st) // as it was
		}
		return nil, err
	}
	return st, nil
}

// snapshot copies the members' part of st deeply enough to restore it.
func snapshot(st *store.State) store.State {
	out := store.State{
		Members: slices.Clone(st.Members),
		Peers:   slices.Clone(st.Peers),
		Invites: slices.Clone(st.Invites),
	}
	out.VPN.Retired = slices.Clone(st.VPN.Retired)
	out.Outline.Retired = slices.Clone(st.Outline.Retired)
	for i := range out.Peers {
		if r := out.Peers[i].Reach; r != nil {
			c := *r
			out.Peers[i].Reach = &c
		}
	}
	return out
}

// Start puts the stored members on the paths: call it once the paths are
// open, before serving.
func (s *Service) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, err := s.identityStateLocked()
	if err != nil {
		return err
	}
	return s.applyLocked(st)
}

// memberLive merges the member paths' views of each member, and reports
// whether there is a member path at all.
func (s *Service) memberLive() (map[string]MemberLive, bool) {
	out := map[string]MemberLive{}
	found := false
	for _, p := range s.deps.Paths {
		mp, ok := p.(MemberPath)
		if !ok {
			continue
		}
		found = true
		for name, l := range mp.MemberLive() {
			o := out[name]
			o.Open += l.Open
			o.Total += l.Total
			o.In += l.In
			o.Out += l.Out
			if l.LastSeen.After(o.LastSeen) {
				o.LastSeen = l.LastSeen
			}
			out[name] = o
		}
	}
	return out, found
}
