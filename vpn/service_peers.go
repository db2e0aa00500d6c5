package vpn

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/tariq-vpn/tariq/internal/store"
)

// Peer changes on a running service write the store first, atomically
// (store.Update), then apply one UAPI set for that one peer. If the device
// refuses the set, the store change is rolled back, so the store and the
// device agree and the caller sees an error that changed nothing. Should
// the rollback fail too (a full disk), both errors are returned and the
// store stays ahead of the device; Open replaces the device's peers with
// the store's wholesale, so a restart converges.

// AddPeer adds a peer: a new key pair (or the device's own public key),
// a preshared key and the next free IPv4 and IPv6 addresses. A bad name or
// key, a duplicate, or a full pool is an error and nothing changes.
func (s *Service) AddPeer(req AddPeerRequest) (store.Peer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.runningLocked(); err != nil {
		return store.Peer{}, err
	}
	var p store.Peer
	var taken []netip.Addr
	state, err := s.deps.Store.Update(func(st *store.State) (err error) {
		p, taken, err = addPeerLocked(st, s.cfg, req, s.deps.Now())
		return err
	})
	if err != nil {
		return store.Peer{}, err
	}
	s.setPeersLocked(state.Peers)
	var b strings.Builder
	err = peerUAPI(&b, p)
	if err == nil {
		err = s.setPeerOnDeviceLocked(b.String())
	}
	if err != nil {
		err = fmt.Errorf("vpn: peer %q: adding it to the device: %w", p.Name, err)
		return store.Peer{}, s.rollbackLocked(err, func(st *store.State) error {
			if _, _, err := removePeerLocked(st, p.Name); err != nil {
				return err
			}
			st.VPN.Retired = slices.DeleteFunc(st.VPN.Retired, func(a netip.Addr) bool { return a == p.IPv4 || a == p.IPv6 })
			st.VPN.Retired = append(slices.Clone(taken), st.VPN.Retired...)
			return nil
		})
	}
	s.log.Info("peer added", "peer", p.Name, "ipv4", p.IPv4.String(), "ipv6", p.IPv6.String(),
		"own_key", p.PrivateKey == "")
	return p, nil
}

// RemovePeer removes a peer from the store and the device; its addresses
// are retired, to be reused only when the pool has no never-used ones left.
func (s *Service) RemovePeer(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.runningLocked(); err != nil {
		return err
	}
	var p store.Peer
	var idx int
	state, err := s.deps.Store.Update(func(st *store.State) (err error) {
		p, idx, err = removePeerLocked(st, name)
		return err
	})
	if err != nil {
		return err
	}
	s.setPeersLocked(state.Peers)
	set, err := removePeerUAPI(p)
	if err == nil {
		err = s.setPeerOnDeviceLocked(set)
	}
	if err != nil {
		err = fmt.Errorf("vpn: peer %q: removing it from the device: %w", name, err)
		return s.rollbackLocked(err, func(st *store.State) error {
			if st.Peer(p.Name) != nil {
				return fmt.Errorf("peer %q: %w", p.Name, ErrPeerExists)
			}
			st.Peers = slices.Insert(st.Peers, min(idx, len(st.Peers)), p)
			st.VPN.Retired = slices.DeleteFunc(st.VPN.Retired, func(a netip.Addr) bool { return a == p.IPv4 || a == p.IPv6 })
			return nil
		})
	}
	s.log.Info("peer removed", "peer", name)
	return nil
}

// SetPeerEnabled enables or disables a peer. A disabled peer keeps its
// keys and addresses in the store but is taken off the device; enabling
// puts it back. Setting the state it already has is not an error.
func (s *Service) SetPeerEnabled(name string, enabled bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.runningLocked(); err != nil {
		return err
	}
	var p store.Peer
	var was bool
	state, err := s.deps.Store.Update(func(st *store.State) (err error) {
		p, was, err = setEnabledLocked(st, name, enabled)
		return err
	})
	if err != nil {
		return err
	}
	s.setPeersLocked(state.Peers)
	if was != enabled {
		var set string
		if enabled {
			var b strings.Builder
			err = peerUAPI(&b, p)
			set = b.String()
		} else {
			set, err = removePeerUAPI(p)
		}
		if err == nil {
			err = s.setPeerOnDeviceLocked(set)
		}
		if err != nil {
			err = fmt.Errorf("vpn: peer %q: updating the device: %w", name, err)
			return s.rollbackLocked(err, func(st *store.State) error {
				_, _, err := setEnabledLocked(st, name, was)
				return err
			})
		}
	}
	verb := "peer disabled"
	if enabled {
		verb = "peer enabled"
	}
	s.log.Info(verb, "peer", name)
	return nil
}

// rollbackLocked undoes a store change after the device refused it and
// returns cause, joined with the rollback's own failure if any.
func (s *Service) rollbackLocked(cause error, undo func(*store.State) error) error {
	state, err := s.deps.Store.Update(undo)
	if err != nil {
		s.log.Error("vpn store and device disagree until restart", "err", err)
		return errors.Join(cause, fmt.Errorf("rolling back the store: %w", err))
	}
	s.setPeersLocked(state.Peers)
	return cause
}

// ReloadPeers re-reads the stored peers after the daemon changed, in the
// store, only the form of a peer's client config (Port, Obfuscated: the
// invite page handing a member another form of the same keys), so that
// ClientConfig and PeerStatus follow. The device is not touched, and need
// not be: every port accepts every enabled peer, in either form. Keys,
// addresses and the enabled state change through the methods above.
func (s *Service) ReloadPeers() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	state, err := s.deps.Store.Load()
	if err != nil {
		return fmt.Errorf("vpn: reloading peers: %w", err)
	}
	s.setPeersLocked(state.Peers)
	return nil
}

// PeerStatus returns every stored peer, enabled or not, with the device's
// view of it: endpoint, last handshake and byte counters.
func (s *Service) PeerStatus() []PeerStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	var dev map[Key]devicePeer
	if s.runningLocked() == nil {
		if dump, err := s.dev.IpcGet(); err == nil {
			dev = parseIpcGet(dump)
		}
	}
	out := make([]PeerStatus, 0, len(s.peers))
	for _, p := range s.peers {
		ps := StoredPeerStatus(s.cfg, p)
		if k, err := ParseKey(p.PublicKey); err == nil && !p.Disabled {
			if d, ok := dev[k]; ok {
				ps.Endpoint, ps.LastHandshake, ps.RxBytes, ps.TxBytes = d.endpoint, d.lastHandshake, d.rx, d.tx
			}
		}
		out = append(out, ps)
	}
	return out
}

// Peer returns the named peer as stored.
func (s *Service) Peer(name string) (store.Peer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.peers {
		if p.Name == name {
			return p, nil
		}
	}
	return store.Peer{}, fmt.Errorf("peer %q: %w", name, ErrPeerNotFound)
}

// ClientConfig renders the named peer's wg-quick config with the config in
// effect (see the package-level ClientConfig).
func (s *Service) ClientConfig(name string) (string, error) {
	p, err := s.Peer(name)
	if err != nil {
		return "", err
	}
	s.mu.Lock()
	cfg, pub, params := s.cfg, s.pub, s.awgP
	s.mu.Unlock()
	if pub.IsZero() {
		return "", fmt.Errorf("vpn: %w", ErrNotRunning)
	}
	return ClientConfig(cfg, ServerInfo{PublicKey: pub.String(), AmneziaWG: params}, p)
}
