package vpn

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/tariq-vpn/tariq/config"
	"github.com/tariq-vpn/tariq/internal/store"
)

// UAPI text for wireguard-go's IpcSet (https://www.wireguard.com/xplatform/,
// "Configuration Protocol"). It carries private keys and PSKs: never log it.

// peerUAPI is the set for one peer: keys and its two host routes. The
// server sets no keepalive; clients do (PersistentKeepalive in their config).
func peerUAPI(b *strings.Builder, p store.Peer) error {
	if err := checkPeer(p); err != nil {
		return err
	}
	pub, _ := ParseKey(p.PublicKey)
	psk, _ := ParseKey(p.PresharedKey.Reveal())
	fmt.Fprintf(b, "public_key=%s\npreshared_key=%s\nreplace_allowed_ips=true\nallowed_ip=%s\n",
		pub.Hex(), psk.Hex(), netip.PrefixFrom(p.IPv4, 32))
	if p.IPv6.IsValid() {
		fmt.Fprintf(b, "allowed_ip=%s\n", netip.PrefixFrom(p.IPv6, 128))
	}
	return nil
}

// removePeerUAPI takes one peer off the device.
func removePeerUAPI(p store.Peer) (string, error) {
	pub, err := ParseKey(p.PublicKey)
	if err != nil {
		return "", fmt.Errorf("peer %q: public key: %w", p.Name, err)
	}
	return fmt.Sprintf("public_key=%s\nremove=true\n", pub.Hex()), nil
}

// allPeersUAPILocked is the set that makes the device's peers exactly the
// enabled, well-formed stored peers. A damaged entry (a hand-edited state
// file) or a second peer with the same key is logged and skipped: one bad
// peer never keeps the others off.
func (s *Service) allPeersUAPILocked() string {
	var b strings.Builder
	b.WriteString("replace_peers=true\n")
	seen := map[string]string{}
	for _, p := range s.peers {
		if p.Disabled {
			continue
		}
		if other, dup := seen[p.PublicKey]; dup {
			s.log.Error("vpn peer skipped: its public key is also peer "+strconv.Quote(other)+"'s", "peer", p.Name)
			continue
		}
		var pb strings.Builder
		if err := peerUAPI(&pb, p); err != nil {
			s.log.Error("vpn peer skipped: damaged entry in the state", "peer", p.Name, "err", err)
			continue
		}
		seen[p.PublicKey] = p.Name
		b.WriteString(pb.String())
	}
	return b.String()
}

// PeerStatus is one peer as `tariq status` and `tariq peer list` show it.
type PeerStatus struct {
	Name      string     `json:"name"`
	PublicKey string     `json:"public_key"`
	IPv4      netip.Addr `json:"ipv4"`
	IPv6      netip.Addr `json:"ipv6,omitzero"`
	// Endpoint is where the peer's packets last came from; zero before the
	// first handshake.
	Endpoint      netip.AddrPort `json:"endpoint,omitzero"`
	LastHandshake time.Time      `json:"last_handshake,omitzero"`
	RxBytes       uint64         `json:"rx_bytes"`
	TxBytes       uint64         `json:"tx_bytes"`
	Enabled       bool           `json:"enabled"`
	CreatedAt     time.Time      `json:"created_at"`
	// Port is the UDP port the peer's config dials (0 if its port is no
	// longer configured), and Obfuscated whether in the AmneziaWG form.
	Port       int  `json:"port,omitempty"`
	Obfuscated bool `json:"obfuscated,omitempty"`
}

// StoredPeerStatus is p as stored, without the device's view of it.
func StoredPeerStatus(cfg *config.Config, p store.Peer) PeerStatus {
	port, _ := PeerPort(cfg, p)
	return PeerStatus{
		Name: p.Name, PublicKey: p.PublicKey, IPv4: p.IPv4, IPv6: p.IPv6,
		Enabled: !p.Disabled, CreatedAt: p.CreatedAt, Port: port, Obfuscated: p.Obfuscated,
	}
}

// devicePeer is what the device reports about one peer.
type devicePeer struct {
	endpoint      netip.AddrPort
	lastHandshake time.Time
	rx, tx        uint64
}

// parseIpcGet reads the per-peer counters out of an IpcGet dump, keyed by
// public key. It skips the private key and PSK lines without keeping them.
func parseIpcGet(dump string) map[Key]devicePeer {
	out := map[Key]devicePeer{}
	var cur *devicePeer
	var curKey Key
	var sec, nsec int64
	flush := func() {
		if cur != nil {
			if sec != 0 || nsec != 0 {
				cur.lastHandshake = time.Unix(sec, nsec)
			}
			out[curKey] = *cur
		}
	}
	for line := range strings.Lines(dump) {
		k, v, ok := strings.Cut(strings.TrimSpace(line), "=")
		if !ok {
			continue
		}
		switch k {
		case "public_key":
			flush()
			cur, sec, nsec = &devicePeer{}, 0, 0
			curKey = Key{}
			if b, err := parseHexKey(v); err == nil {
				curKey = b
			}
		case "endpoint":
			if cur != nil {
				cur.endpoint, _ = netip.ParseAddrPort(v)
			}
		case "last_handshake_time_sec":
			sec, _ = strconv.ParseInt(v, 10, 64)
		case "last_handshake_time_nsec":
			nsec, _ = strconv.ParseInt(v, 10, 64)
		case "rx_bytes":
			if cur != nil {
				cur.rx, _ = strconv.ParseUint(v, 10, 64)
			}
		case "tx_bytes":
			if cur != nil {
				cur.tx, _ = strconv.ParseUint(v, 10, 64)
			}
		}
	}
	flush()
	return out
}

func parseHexKey(s string) (Key, error) {
	var k Key
	if len(s) != 2*KeyLen {
		return k, ErrBadKey
	}
	for i := range KeyLen {
		n, err := strconv.ParseUint(s[2*i:2*i+2], 16, 8)
		if err != nil {
			return k, ErrBadKey
		}
		k[i] = byte(n)
	}
	return k, nil
}
