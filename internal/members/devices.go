package members

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/tariq-vpn/tariq/config"
	"github.com/tariq-vpn/tariq/internal/store"
	"github.com/tariq-vpn/tariq/internal/wgconf"
)

// MaxNameLen is the longest device or member name.
const MaxNameLen = 32

// ValidateName checks a device or member name: 1-32 ASCII letters,
// digits, '-', '_' or '.', starting with a letter or digit. Names end up in
// file names, metric labels and command lines, so nothing else is allowed
// (no "..", no leading '-' that reads as a flag, no leading '.' that hides
// a file).
func ValidateName(name string) error {
	ok := len(name) >= 1 && len(name) <= MaxNameLen
	for i := 0; ok && i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case (c == '-' || c == '_' || c == '.') && i > 0:
		default:
			ok = false
		}
	}
	if !ok {
		return fmt.Errorf("peer name %q: %w", name, ErrBadName)
	}
	return nil
}

// AddRequest asks for a new device.
type AddRequest struct {
	// Name names the device, like "mom-phone"; see ValidateName.
	Name string `json:"name"`
	// Member is the person it belongs to: an existing member, or a new
	// one. Empty means a member of the device's own name.
	Member string `json:"member,omitempty"`
	// PublicKey is the device's own public key (base64) when it made its
	// key pair itself; the server then never holds the private key. Empty
	// means tariq generates the pair.
	PublicKey string `json:"public_key,omitempty"`
	// Port is the UDP port the device dials for stock WireGuard: 0 or
	// vpn.listen_port, or one of vpn.extra_ports.
	Port int `json:"port,omitempty"`
	// Obfuscated gives the device the AmneziaWG form of the config, for
	// vpn.obfuscation.listen_port (then Port must be 0).
	Obfuscated bool `json:"obfuscated,omitempty"`
	// Limits change the member's limits (a new member starts with none).
	Limits LimitsChange `json:"limits,omitzero"`
}

// Add adds a device: a new key pair (or the device's own public key), a
// preshared key and the next free IPv4 and IPv6 addresses, and its member
// if new. A bad name or key, a duplicate, or a full pool is an error and
// nothing changes. With paths, the device may connect at once.
func (s *Service) Add(req AddRequest) (store.Peer, error) {
	var p store.Peer
	_, err := s.change(func(st *store.State) (err error) {
		p, err = addLocked(st, s.deps.Config(), req, s.deps.Now())
		return err
	})
	if err != nil {
		return store.Peer{}, err
	}
	s.log.Info("peer added", "peer", p.Name, "member", p.Member, "ipv4", p.IPv4.String(), "ipv6", p.IPv6.String(),
		"own_key", p.PrivateKey == "")
	return p, nil
}

// addLocked is Add's change to st (inside store.Update).
func addLocked(st *store.State, cfg *config.Config, req AddRequest, now time.Time) (p store.Peer, err error) {
	if err := ValidateName(req.Name); err != nil {
		return p, err
	}
	member := req.Member
	if member == "" {
		member = req.Name
	}
	if err := ValidateName(member); err != nil {
		return p, fmt.Errorf("member: %w", err)
	}
	if st.Peer(req.Name) != nil {
		return p, fmt.Errorf("peer %q: %w", req.Name, ErrPeerExists)
	}
	if member != req.Name && st.Member(req.Name) != nil {
		// A device named like another member would make `peer set NAME`
		// ambiguous.
		return p, fmt.Errorf("peer %q: a member of that name %w", req.Name, ErrPeerExists)
	}
	if st.Member(member) == nil && st.Peer(member) != nil && st.Peer(member).Member != member {
		return p, fmt.Errorf("member %q: a device of that name belongs to member %q", member, st.Peer(member).Member)
	}
	srv, err := server(st)
	if err != nil {
		return p, err
	}
	port, err := requestedPort(cfg, req.Name, req.Port, req.Obfuscated)
	if err != nil {
		return p, err
	}
	p = store.Peer{Name: req.Name, Member: member, CreatedAt: now.UTC().Truncate(time.Second), Port: port, Obfuscated: req.Obfuscated}
	var pub wgconf.Key
	if req.PublicKey != "" {
		if pub, err = wgconf.ParseKey(req.PublicKey); err != nil {
			return store.Peer{}, fmt.Errorf("peer %q: public key: %w", req.Name, err)
		}
		if pub == srv.PublicKey {
			return store.Peer{}, fmt.Errorf("peer %q: public key: %w", req.Name, wgconf.ErrServerKey)
		}
	} else {
		priv := wgconf.NewPrivateKey()
		pub = priv.PublicKey()
		p.PrivateKey = store.Secret(priv.String())
	}
	for _, o := range st.Peers {
		if k, err := wgconf.ParseKey(o.PublicKey); err == nil && k == pub {
			return store.Peer{}, fmt.Errorf("peer %q: public key: %w by peer %q", req.Name, ErrKeyInUse, o.Name)
		}
	}
	p.PublicKey = pub.String()
	p.PresharedKey = store.Secret(wgconf.NewPresharedKey().String())

	plan, err := wgconf.PlanFor(cfg, st.VPN.ULA)
	if err != nil {
		return store.Peer{}, err
	}
	if p.IPv4, p.IPv6, err = allocate(plan, st); err != nil {
		return store.Peer{}, fmt.Errorf("peer %q: %w", req.Name, err)
	}
	st.Peers = append(st.Peers, p)
	m := st.Member(member)
	if m == nil {
		st.Members = append(st.Members, store.Member{Name: member, CreatedAt: p.CreatedAt, Outline: newOutlineAccess()})
		m = &st.Members[len(st.Members)-1]
	}
	setLimits(m, req.Limits)
	return p, nil
}

// setLimits applies c to m.
func setLimits(m *store.Member, c LimitsChange) {
	l := c.Apply(Limits{Expires: m.Expires, DataLimit: m.DataLimit, Rate: m.Rate})
	m.Expires, m.DataLimit, m.Rate = l.Expires, l.DataLimit, l.Rate
}

// Remove removes a device for good; its addresses are retired, to be
// reused only when the pool has no never-used ones left, and its invites
// dropped (a new device of the same name must not inherit its links). A
// member left with no device goes too.
func (s *Service) Remove(name string) error {
	_, err := s.change(func(st *store.State) error {
		i := slices.IndexFunc(st.Peers, func(p store.Peer) bool { return p.Name == name })
		if i < 0 {
			return fmt.Errorf("peer %q: %w", name, ErrPeerNotFound)
		}
		p := st.Peers[i]
		st.Peers = slices.Delete(st.Peers, i, i+1)
		for _, a := range []netip.Addr{p.IPv4, p.IPv6} {
			if a.IsValid() && !slices.Contains(st.VPN.Retired, a) {
				st.VPN.Retired = append(st.VPN.Retired, a)
			}
		}
		st.Invites = slices.DeleteFunc(st.Invites, func(inv store.Invite) bool { return inv.Peer == name })
		member := memberOf(st, p)
		if !slices.ContainsFunc(st.Peers, func(o store.Peer) bool { return memberOf(st, o) == member }) {
			if m := st.Member(member); m != nil {
				retireOutline(st, *m)
			}
			st.Members = slices.DeleteFunc(st.Members, func(m store.Member) bool { return m.Name == member })
		}
		return nil
	})
	if err == nil {
		s.log.Info("peer removed", "peer", name)
	}
	return err
}

// SetEnabled enables or disables a device. A disabled device keeps its
// keys and addresses but may not connect; enabling lets it back in.
// Setting the state it already has is not an error.
func (s *Service) SetEnabled(name string, enabled bool) error {
	_, err := s.change(func(st *store.State) error {
		p := st.Peer(name)
		if p == nil {
			return fmt.Errorf("peer %q: %w", name, ErrPeerNotFound)
		}
		p.Disabled = !enabled
		return nil
	})
	if err == nil {
		verb := "peer disabled"
		if enabled {
			verb = "peer enabled"
		}
		s.log.Info(verb, "peer", name)
	}
	return err
}

// SetLimits changes the limits of the member named name, or of the
// member whose device is named name, and returns the member as it now
// is. A member cut off by a limit is let back in at once when the change
// lifts it, with the configs they have.
func (s *Service) SetLimits(name string, c LimitsChange) (MemberStatus, error) {
	var member string
	st, err := s.change(func(st *store.State) error {
		m, p := memberNamed(st, name)
		if m == nil && p != nil { // hand-edited: give the device its member
			st.Members = append(st.Members, store.Member{Name: p.Name, CreatedAt: p.CreatedAt, Outline: newOutlineAccess()})
			m = &st.Members[len(st.Members)-1]
		}
		if m == nil {
			return fmt.Errorf("member or peer %q: %w", name, ErrPeerNotFound)
		}
		setLimits(m, c)
		member = m.Name
		return nil
	})
	if err != nil {
		return MemberStatus{}, err
	}
	s.mu.Lock()
	ms := s.memberStatusLocked(st, *st.Member(member), s.deps.Now())
	s.mu.Unlock()
	s.log.Info("member limits set", "member", member, "expires", ms.Expires, "data_limit", ms.DataLimit, "rate", ms.Rate)
	return ms, nil
}

// DeviceStatus is one device as `tariq peer list`, `peer show` and
// `status` show it.
type DeviceStatus struct {
	Name      string     `json:"name"`
	Member    string     `json:"member"`
	PublicKey string     `json:"public_key"`
	IPv4      netip.Addr `json:"ipv4"`
	IPv6      netip.Addr `json:"ipv6,omitzero"`
	Enabled   bool       `json:"enabled"`
	CreatedAt time.Time  `json:"created_at"`
	// Port is the UDP port the device's config dials (0 if its port is no
	// longer configured), and Obfuscated whether in the AmneziaWG form.
	Port       int  `json:"port,omitempty"`
	Obfuscated bool `json:"obfuscated,omitempty"`
	// OwnKey says the device made its own key pair (no private key here,
	// so no QR code or invite).
	OwnKey bool `json:"own_key,omitempty"`
	// Blocked is why the device's member is cut off (expired, over-limit),
	// or "".
	Blocked string `json:"blocked,omitempty"`
	// Live: where the device's packets last came from, its last handshake
	// and the device's counters; zero without a running daemon.
	Endpoint      netip.AddrPort `json:"endpoint,omitzero"`
	LastHandshake time.Time      `json:"last_handshake,omitzero"`
	RxBytes       uint64         `json:"rx_bytes"`
	TxBytes       uint64         `json:"tx_bytes"`
	// Reach is the last reachability check from the device's invite page.
	Reach *store.Reachability `json:"reach,omitempty"`
}

// MemberStatus is one member with their limits and this month's usage.
type MemberStatus struct {
	Name      string    `json:"name"`
	Devices   []string  `json:"devices"`
	Expires   time.Time `json:"expires,omitzero"`
	DataLimit uint64    `json:"data_limit,omitempty"`
	Rate      uint64    `json:"rate,omitempty"`
	// Usage is this month's, counted up to now.
	Usage store.Usage `json:"usage"`
	// Blocked is why the member's devices are cut off (expired,
	// over-limit), or "".
	Blocked string `json:"blocked,omitempty"`
	// Outline is the member's activity on the Outline path since the
	// daemon started; nil without a running Outline path.
	Outline *MemberLive `json:"outline,omitempty"`
	// Seen lists the paths seen working for the member: live
	// ("wireguard" or "amneziawg": a device's handshake; "outline": a
	// connection with their key), then what the last checks of their
	// invite pages reached, marked "(check)": "wireguard (check)",
	// "outline (check)", "relayed calls (check)".
	Seen []string `json:"seen,omitempty"`
}

func (s *Service) memberStatusLocked(st *store.State, m store.Member, now time.Time) MemberStatus {
	u := s.usageNowLocked(&m, now)
	ms := MemberStatus{Name: m.Name, Expires: m.Expires, DataLimit: m.DataLimit, Rate: m.Rate, Usage: u,
		Blocked: blockReason(&m, u, now), Devices: []string{}}
	for _, p := range st.Peers {
		if memberOf(st, p) == m.Name {
			ms.Devices = append(ms.Devices, p.Name)
		}
	}
	return ms
}

// Members returns every member with their limits and usage.
func (s *Service) Members() ([]MemberStatus, error) {
	st, err := s.deps.Store.Load()
	if err != nil {
		return nil, err
	}
	live := s.live()
	mlive, hasMemberPath := s.memberLive()
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.deps.Now()
	out := make([]MemberStatus, 0, len(st.Members))
	for _, m := range st.Members {
		ms := s.memberStatusLocked(st, m, now)
		if hasMemberPath {
			ml := mlive[m.Name]
			ms.Outline = &ml
		}
		ms.Seen = seen(st, m.Name, live, mlive[m.Name])
		out = append(out, ms)
	}
	return out, nil
}

// seen lists the paths seen working for member (MemberStatus.Seen).
func seen(st *store.State, member string, live map[string]Live, ml MemberLive) []string {
	var out []string
	add := func(s string) {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	for _, p := range st.Peers {
		if memberOf(st, p) == member && !live[p.Name].LastHandshake.IsZero() {
			if p.Obfuscated {
				add(VerdictAmneziaWG)
			} else {
				add(VerdictWireGuard)
			}
		}
	}
	if !ml.LastSeen.IsZero() {
		add(VerdictOutline)
	}
	for _, p := range st.Peers {
		if memberOf(st, p) != member || p.Reach == nil {
			continue
		}
		udp := !slices.Contains(p.Reach.Failed, "udp-sustained")
		for _, id := range p.Reach.Reached {
			kind, _, _ := strings.Cut(id, "-")
			switch {
			case kind == "wg" && udp:
				add(VerdictWireGuard + " (check)")
			case kind == "awg" && udp:
				add(VerdictAmneziaWG + " (check)")
			case kind == VerdictOutline:
				add(VerdictOutline + " (check)")
			case kind == "turns", id == "turn-tcp", id == "turn-udp" && udp:
				add("relayed calls (check)")
			}
		}
	}
	return out
}

// Devices returns every device, enabled or not, with the paths' live view
// of it.
func (s *Service) Devices() ([]DeviceStatus, error) {
	st, err := s.deps.Store.Load()
	if err != nil {
		return nil, err
	}
	live := s.live()
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.deps.Now()
	out := make([]DeviceStatus, 0, len(st.Peers))
	for _, p := range st.Peers {
		out = append(out, s.deviceStatusLocked(st, p, live[p.Name], now))
	}
	return out, nil
}

// Device returns one device.
func (s *Service) Device(name string) (DeviceStatus, error) {
	devs, err := s.Devices()
	if err != nil {
		return DeviceStatus{}, err
	}
	for _, d := range devs {
		if d.Name == name {
			return d, nil
		}
	}
	return DeviceStatus{}, fmt.Errorf("peer %q: %w", name, ErrPeerNotFound)
}

func (s *Service) deviceStatusLocked(st *store.State, p store.Peer, l Live, now time.Time) DeviceStatus {
	form, _ := ownForm(s.deps.Config(), p)
	d := DeviceStatus{
		Name: p.Name, Member: memberOf(st, p), PublicKey: p.PublicKey, IPv4: p.IPv4, IPv6: p.IPv6,
		Enabled: !p.Disabled, CreatedAt: p.CreatedAt, Port: form.Port, Obfuscated: p.Obfuscated,
		OwnKey: p.PrivateKey == "", Reach: p.Reach,
		Endpoint: l.Endpoint, LastHandshake: l.LastHandshake, RxBytes: l.RxBytes, TxBytes: l.TxBytes,
	}
	if m := st.Member(d.Member); m != nil {
		d.Blocked = blockReason(m, s.usageNowLocked(m, now), now)
	}
	return d
}

// live merges the paths' live views.
func (s *Service) live() map[string]Live {
	out := map[string]Live{}
	for _, p := range s.deps.Paths {
		for name, l := range p.Live() {
			if o, ok := out[name]; !ok || l.LastHandshake.After(o.LastHandshake) {
				out[name] = l
			}
		}
	}
	return out
}

// Config returns device name's client config (wg-quick text) in its own
// form, and the device.
func (s *Service) Config(name string) (string, DeviceStatus, error) {
	d, err := s.Device(name)
	if err != nil {
		return "", d, err
	}
	st, err := s.deps.Store.Load()
	if err != nil {
		return "", d, err
	}
	if st.VPN.PrivateKey == "" { // nothing stored the identity yet
		if _, err := s.Identity(); err != nil {
			return "", d, err
		}
		if st, err = s.deps.Store.Load(); err != nil {
			return "", d, err
		}
	}
	p := st.Peer(name)
	if p == nil {
		return "", d, fmt.Errorf("peer %q: %w", name, ErrPeerNotFound)
	}
	form, err := ownForm(s.deps.Config(), *p)
	if err != nil {
		return "", d, err
	}
	text, err := clientConfig(s.deps.Config(), st, *p, form)
	return text, d, err
}

// clientConfig renders p's config in form f.
func clientConfig(cfg *config.Config, st *store.State, p store.Peer, f Form) (string, error) {
	srv, err := server(st)
	if err != nil {
		return "", err
	}
	return wgconf.ClientConfig(cfg, srv, wgconf.Device{
		Name: p.Name, PrivateKey: p.PrivateKey.Reveal(), PresharedKey: p.PresharedKey.Reveal(),
		IPv4: p.IPv4, IPv6: p.IPv6, Port: f.Port, Obfuscated: f.AmneziaWG,
	})
}
