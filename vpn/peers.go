package vpn

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/tariq-vpn/tariq/config"
	"github.com/tariq-vpn/tariq/internal/store"
)

// MaxNameLen is the longest peer name.
const MaxNameLen = 32

// AddPeerRequest asks for a new peer.
type AddPeerRequest struct {
	// Name names the device, like "mom-phone"; see ValidateName.
	Name string
	// PublicKey is the device's own public key (base64) when the device made
	// its key pair itself; the server then never holds the private key.
	// Empty means tariq generates the pair.
	PublicKey string
	// Port is the UDP port the device dials for stock WireGuard: 0 or
	// vpn.listen_port, or one of vpn.extra_ports.
	Port int
	// Obfuscated gives the device the AmneziaWG form of the config, for
	// vpn.obfuscation.listen_port (then Port must be 0).
	Obfuscated bool
}

// ValidateName checks a peer name: 1-32 ASCII letters, digits, '-', '_'
// or '.', starting with a letter or digit. Names end up in file names,
// metric labels and command lines, so nothing else is allowed (no "..",
// no leading '-' that reads as a flag, no leading '.' that hides a file).
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

// ensureServerState generates, once, what the server keeps between runs:
// its private key, and the ULA /64 when vpn.address has no IPv6 prefix.
// It reports whether it changed st.
func ensureServerState(st *store.State, cfg *config.Config) (changed bool, err error) {
	if st.VPN.PrivateKey == "" {
		st.VPN.PrivateKey = store.Secret(NewPrivateKey().String())
		changed = true
	} else if _, err := ParseKey(st.VPN.PrivateKey.Reveal()); err != nil {
		return false, fmt.Errorf("server private key in the state: %w", err)
	}
	if !hasIPv6(cfg) && !st.VPN.ULA.IsValid() {
		st.VPN.ULA = newULA()
		changed = true
	}
	// Generated whether or not vpn.obfuscation is on, so that turning it
	// on later changes no config already handed out.
	if st.VPN.AmneziaWG == nil {
		p := newAmneziaWGRandom()
		st.VPN.AmneziaWG = &p
		changed = true
	} else if err := checkAmneziaWG(*st.VPN.AmneziaWG); err != nil {
		return false, err
	}
	return changed, nil
}

// peerPort checks how a new peer connects (AddPeerRequest.Port and
// Obfuscated) against cfg and returns the Port to store: 0 for
// vpn.listen_port, so the peer follows a later change of it.
func peerPort(cfg *config.Config, req AddPeerRequest) (int, error) {
	n := cfg.VPN
	switch {
	case req.Obfuscated && !n.Obfuscation.Enabled:
		return 0, fmt.Errorf("peer %q: %w", req.Name, ErrObfuscationOff)
	case req.Obfuscated && req.Port != 0:
		return 0, fmt.Errorf("peer %q: port %d %w for an obfuscated device, which always dials vpn.obfuscation.listen_port (%d)",
			req.Name, req.Port, ErrBadPort, n.Obfuscation.ListenPort)
	case req.Port == 0 || req.Port == n.ListenPort:
		return 0, nil
	case slices.Contains(n.ExtraPorts, req.Port):
		return req.Port, nil
	}
	return 0, fmt.Errorf("peer %q: port %d %w (vpn.listen_port %d, vpn.extra_ports %v)", req.Name, req.Port, ErrBadPort, n.ListenPort, n.ExtraPorts)
}

// PeerPort returns the UDP port peer p dials under cfg: its own stock port,
// or vpn.obfuscation.listen_port for an obfuscated peer. A peer whose port
// is no longer configured (the config changed since it was added) is an
// error naming the key to fix.
func PeerPort(cfg *config.Config, p store.Peer) (int, error) {
	n := cfg.VPN
	switch {
	case p.Obfuscated && !n.Obfuscation.Enabled:
		return 0, fmt.Errorf("peer %q uses the obfuscated listener: %w", p.Name, ErrObfuscationOff)
	case p.Obfuscated:
		return n.Obfuscation.ListenPort, nil
	case p.Port == 0 || p.Port == n.ListenPort:
		return n.ListenPort, nil
	case slices.Contains(n.ExtraPorts, p.Port):
		return p.Port, nil
	}
	return 0, fmt.Errorf("peer %q: port %d %w any more (it was in vpn.extra_ports when the peer was added)", p.Name, p.Port, ErrBadPort)
}

func hasIPv6(cfg *config.Config) bool {
	return slices.ContainsFunc(cfg.VPN.Address, func(p netip.Prefix) bool { return p.Addr().Is6() })
}

// serverKeys returns the server's private and public key from the state.
func serverKeys(st *store.State) (priv, pub Key, err error) {
	priv, err = ParseKey(st.VPN.PrivateKey.Reveal())
	if err != nil {
		return priv, pub, fmt.Errorf("server private key in the state: %w", err)
	}
	return priv, priv.PublicKey(), nil
}

// addPeerLocked adds a peer to st (inside a store.Update): validates the
// name and key, makes keys, allocates addresses. On error st is unchanged.
// takenRetired lists the retired addresses it reused, for a rollback.
func addPeerLocked(st *store.State, cfg *config.Config, req AddPeerRequest, now time.Time) (p store.Peer, takenRetired []netip.Addr, err error) {
	if err := ValidateName(req.Name); err != nil {
		return p, nil, err
	}
	if st.Peer(req.Name) != nil {
		return p, nil, fmt.Errorf("peer %q: %w", req.Name, ErrPeerExists)
	}
	if _, err := ensureServerState(st, cfg); err != nil {
		return p, nil, err
	}
	_, serverPub, err := serverKeys(st)
	if err != nil {
		return p, nil, err
	}
	port, err := peerPort(cfg, req)
	if err != nil {
		return p, nil, err
	}
	p = store.Peer{Name: req.Name, CreatedAt: now.UTC().Truncate(time.Second), Port: port, Obfuscated: req.Obfuscated}
	var pub Key
	if req.PublicKey != "" {
		if pub, err = ParseKey(req.PublicKey); err != nil {
			return store.Peer{}, nil, fmt.Errorf("peer %q: public key: %w", req.Name, err)
		}
		if pub == serverPub {
			return store.Peer{}, nil, fmt.Errorf("peer %q: public key: %w", req.Name, errServerKey)
		}
	} else {
		priv := NewPrivateKey()
		pub = priv.PublicKey()
		p.PrivateKey = store.Secret(priv.String())
	}
	for _, o := range st.Peers {
		if k, err := ParseKey(o.PublicKey); err == nil && k == pub {
			return store.Peer{}, nil, fmt.Errorf("peer %q: public key: %w by peer %q", req.Name, ErrKeyInUse, o.Name)
		}
	}
	p.PublicKey = pub.String()
	p.PresharedKey = store.Secret(NewPresharedKey().String())

	plan, err := addressingFor(cfg, st)
	if err != nil {
		return store.Peer{}, nil, err
	}
	before := slices.Clone(st.VPN.Retired)
	if p.IPv4, p.IPv6, err = plan.allocate(st); err != nil {
		return store.Peer{}, nil, fmt.Errorf("peer %q: %w", req.Name, err)
	}
	for _, r := range before {
		if r == p.IPv4 || r == p.IPv6 {
			takenRetired = append(takenRetired, r)
		}
	}
	st.Peers = append(st.Peers, p)
	return p, takenRetired, nil
}

// removePeerLocked removes the named peer from st and retires its
// addresses. It returns the peer and its index, for a rollback.
func removePeerLocked(st *store.State, name string) (store.Peer, int, error) {
	i := slices.IndexFunc(st.Peers, func(p store.Peer) bool { return p.Name == name })
	if i < 0 {
		return store.Peer{}, -1, fmt.Errorf("peer %q: %w", name, ErrPeerNotFound)
	}
	p := st.Peers[i]
	st.Peers = slices.Delete(st.Peers, i, i+1)
	for _, a := range []netip.Addr{p.IPv4, p.IPv6} {
		if a.IsValid() && !slices.Contains(st.VPN.Retired, a) {
			st.VPN.Retired = append(st.VPN.Retired, a)
		}
	}
	return p, i, nil
}

// setEnabledLocked sets the named peer's Disabled flag; it reports the
// flag's old value.
func setEnabledLocked(st *store.State, name string, enabled bool) (store.Peer, bool, error) {
	p := st.Peer(name)
	if p == nil {
		return store.Peer{}, false, fmt.Errorf("peer %q: %w", name, ErrPeerNotFound)
	}
	wasEnabled := !p.Disabled
	p.Disabled = !enabled
	return *p, wasEnabled, nil
}

// AddPeerToStore adds a peer to the state store only, for when no daemon
// runs; the daemon's Open puts it on the device. The rules are those of
// Service.AddPeer: a bad name or key, a duplicate or a full pool is an
// error and the store is not written. The server key and ULA are
// generated here if this is the first thing ever stored.
func AddPeerToStore(st *store.Store, cfg *config.Config, req AddPeerRequest) (store.Peer, error) {
	var p store.Peer
	_, err := st.Update(func(s *store.State) (err error) {
		p, _, err = addPeerLocked(s, cfg, req, time.Now())
		return err
	})
	if err != nil {
		return store.Peer{}, err
	}
	return p, nil
}

// RemovePeerFromStore removes a peer from the state store only and retires
// its addresses; see Service.RemovePeer.
func RemovePeerFromStore(st *store.Store, name string) error {
	_, err := st.Update(func(s *store.State) error {
		_, _, err := removePeerLocked(s, name)
		return err
	})
	return err
}

// SetPeerEnabledInStore enables or disables a peer in the state store only;
// see Service.SetPeerEnabled. A disabled peer keeps its keys and addresses
// but is not put on the device.
func SetPeerEnabledInStore(st *store.Store, name string, enabled bool) error {
	_, err := st.Update(func(s *store.State) error {
		_, _, err := setEnabledLocked(s, name, enabled)
		return err
	})
	return err
}

// ServerPublicKeyFromStore returns the server's public key (base64), for
// exporting client configs when no daemon runs. Like the daemon's first
// start it generates and keeps the key pair (and the ULA and obfuscation
// parameters) if there is none yet, so a config exported before the first
// start stays valid.
func ServerPublicKeyFromStore(st *store.Store, cfg *config.Config) (string, error) {
	srv, err := ServerFromStore(st, cfg)
	return srv.PublicKey, err
}

// ServerFromStore returns what client configs need to know about the
// server, generating and keeping it on first use as ServerPublicKeyFromStore
// does.
func ServerFromStore(st *store.Store, cfg *config.Config) (ServerInfo, error) {
	state, err := st.Update(func(s *store.State) error {
		_, err := ensureServerState(s, cfg)
		return err
	})
	if err != nil {
		return ServerInfo{}, err
	}
	_, pub, err := serverKeys(state)
	if err != nil {
		return ServerInfo{}, err
	}
	return ServerInfo{PublicKey: pub.String(), AmneziaWG: *state.VPN.AmneziaWG}, nil
}

// ClientConfigFromStore renders peer p's client config from the state
// store, for when no daemon runs; see ClientConfig.
func ClientConfigFromStore(st *store.Store, cfg *config.Config, p store.Peer) (string, error) {
	srv, err := ServerFromStore(st, cfg)
	if err != nil {
		return "", err
	}
	return ClientConfig(cfg, srv, p)
}

// PeerFromStore returns the named peer from the state store.
func PeerFromStore(st *store.Store, name string) (store.Peer, error) {
	state, err := st.Load()
	if err != nil {
		return store.Peer{}, err
	}
	p := state.Peer(name)
	if p == nil {
		return store.Peer{}, fmt.Errorf("peer %q: %w", name, ErrPeerNotFound)
	}
	return *p, nil
}

// checkPeer reports why a stored peer cannot go on the device (a
// hand-edited or damaged entry), or nil.
func checkPeer(p store.Peer) error {
	var errs []error
	if _, err := ParseKey(p.PublicKey); err != nil {
		errs = append(errs, fmt.Errorf("public key: %w", err))
	}
	if _, err := ParseKey(p.PresharedKey.Reveal()); err != nil {
		errs = append(errs, fmt.Errorf("preshared key: %w", err))
	}
	if !p.IPv4.Is4() {
		errs = append(errs, fmt.Errorf("ipv4: %q is not an IPv4 address", p.IPv4))
	}
	if p.IPv6.IsValid() && !p.IPv6.Is6() {
		errs = append(errs, fmt.Errorf("ipv6: %q is not an IPv6 address", p.IPv6))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("peer %q: %w", p.Name, err)
	}
	return nil
}
