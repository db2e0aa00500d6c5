package vpn

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Peer is one device the endpoint accepts, as the members model hands it
// over: the service is given the peers it should have and applies the
// difference, like wireguard-go's own IpcSet, and keeps no state of its own
// about them.
type Peer struct {
	// Name names the device in logs and status.
	Name string
	// Group is the member the device belongs to: a group's devices are
	// counted together and share one rate cap and byte budget (SetLimits).
	Group        string
	PublicKey    Key
	PresharedKey Key
	IPv4, IPv6   netip.Addr
}

func (p Peer) check() error {
	var errs []error
	if p.PublicKey.IsZero() {
		errs = append(errs, errors.New("no public key"))
	}
	if p.PresharedKey.IsZero() {
		errs = append(errs, errors.New("no preshared key"))
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

// SetPeers makes the device's peers exactly peers (before Open: the ones
// Open puts on it). Only peers that are new, gone or changed (another PSK
// or addresses) reach the device, in one UAPI set; every other tunnel
// keeps flowing. A malformed entry, or a second one with the same public
// key, is an error and changes nothing. If the device refuses the set, the
// previous peers are put back and the error returned.
func (s *Service) SetPeers(peers []Peer) error {
	want := make(map[Key]Peer, len(peers))
	for _, p := range peers {
		if err := p.check(); err != nil {
			return fmt.Errorf("vpn: %w", err)
		}
		if o, dup := want[p.PublicKey]; dup {
			return fmt.Errorf("vpn: peer %q: public key %w by peer %q", p.Name, ErrKeyInUse, o.Name)
		}
		want[p.PublicKey] = p
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return fmt.Errorf("vpn: %w", ErrNotRunning)
	}
	if s.dev != nil {
		var b strings.Builder
		for k := range s.peers {
			if _, keep := want[k]; !keep {
				removePeerUAPI(&b, k)
			}
		}
		for k, p := range want {
			if o, had := s.peers[k]; !had || o.PresharedKey != p.PresharedKey || o.IPv4 != p.IPv4 || o.IPv6 != p.IPv6 {
				peerUAPI(&b, p)
			}
		}
		if b.Len() > 0 {
			if err := s.ipcSetLocked(b.String()); err != nil {
				// Put the device back as it was: wireguard-go applies a set
				// line by line, so part of it may have taken.
				if err2 := s.dev.IpcSet(allPeersUAPI(s.peers)); err2 != nil {
					s.log.Error("vpn device and members disagree until restart", "err", err2)
				}
				return fmt.Errorf("vpn: updating the device's peers: %w", err)
			}
		}
	}
	s.peers = want
	s.peersChangedLocked()
	return nil
}

// allPeersUAPI is the set that makes the device's peers exactly peers.
func allPeersUAPI(peers map[Key]Peer) string {
	var b strings.Builder
	b.WriteString("replace_peers=true\n")
	for _, p := range peers {
		peerUAPI(&b, p)
	}
	return b.String()
}

// ipcSetLocked applies a UAPI set to the device.
func (s *Service) ipcSetLocked(set string) error {
	if s.ipcHook != nil {
		return s.ipcHook(set)
	}
	return s.dev.IpcSet(set)
}

// peersChangedLocked tells the log adapter, the AmneziaWG translator and
// the shaper about the peers now in s.peers.
func (s *Service) peersChangedLocked() {
	names := make(map[Key]string, len(s.peers))
	keys := make([]Key, 0, len(s.peers))
	for k, p := range s.peers {
		names[k] = p.Name
		keys = append(keys, k)
	}
	s.wglog.setNames(names)
	if s.awg != nil {
		// Every peer, not only those handed the obfuscated form: a device
		// may be switched to the AmneziaWG app with its keys kept.
		s.awg.setPeers(keys)
	}
	s.applyGroupsLocked()
}

func (s *Service) applyGroupsLocked() {
	if s.shaper == nil {
		return
	}
	addrs := make(map[netip.Addr]string, 2*len(s.peers))
	for _, p := range s.peers {
		if p.Group == "" {
			continue
		}
		addrs[p.IPv4] = p.Group
		if p.IPv6.IsValid() {
			addrs[p.IPv6] = p.Group
		}
	}
	s.shaper.SetGroups(addrs, s.limits)
}

// SetLimits sets each group's rate cap and byte budget; a group not named
// passes freely. It applies at once to packets in flight: a budget that
// runs out drops the group's next packet, before its devices are taken
// off the device.
func (s *Service) SetLimits(limits map[string]GroupLimits) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.limits = maps.Clone(limits)
	s.applyGroupsLocked()
}

// Usage returns each group's byte counts since the service opened: they
// only grow, whatever its devices do.
func (s *Service) Usage() map[string]Traffic {
	s.mu.Lock()
	sh := s.shaper
	s.mu.Unlock()
	if sh == nil {
		return nil
	}
	return sh.Usage()
}

// PeerStatus is the device's view of one peer.
type PeerStatus struct {
	Name      string
	Group     string
	PublicKey Key
	// Endpoint is where the peer's packets last came from; zero before the
	// first handshake.
	Endpoint      netip.AddrPort
	LastHandshake time.Time
	// RxBytes and TxBytes are the device's counters for the peer (wire
	// bytes, since the peer was last put on the device).
	RxBytes, TxBytes uint64
}

// PeerStatus returns every peer on the device with its endpoint, last
// handshake and counters, in name order; nil when not open.
func (s *Service) PeerStatus() []PeerStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.runningLocked() != nil {
		return nil
	}
	var dev map[Key]devicePeer
	if dump, err := s.dev.IpcGet(); err == nil {
		dev = parseIpcGet(dump)
	}
	out := make([]PeerStatus, 0, len(s.peers))
	for k, p := range s.peers {
		ps := PeerStatus{Name: p.Name, Group: p.Group, PublicKey: k}
		if d, ok := dev[k]; ok {
			ps.Endpoint, ps.LastHandshake, ps.RxBytes, ps.TxBytes = d.endpoint, d.lastHandshake, d.rx, d.tx
		}
		out = append(out, ps)
	}
	slices.SortFunc(out, func(a, b PeerStatus) int { return strings.Compare(a.Name, b.Name) })
	return out
}
