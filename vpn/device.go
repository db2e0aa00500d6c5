package vpn

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/tariq-vpn/tariq/internal/wgconf"
)

// UAPI text for wireguard-go's IpcSet (https://www.wireguard.com/xplatform/,
// "Configuration Protocol"). It carries private keys and PSKs: never log it.

// peerUAPI is the set for one peer: keys and its two host routes. The
// server sets no keepalive; clients do (PersistentKeepalive in their config).
func peerUAPI(b *strings.Builder, p Peer) {
	fmt.Fprintf(b, "public_key=%s\npreshared_key=%s\nreplace_allowed_ips=true\nallowed_ip=%s\n",
		p.PublicKey.Hex(), p.PresharedKey.Hex(), netip.PrefixFrom(p.IPv4, 32))
	if p.IPv6.IsValid() {
		fmt.Fprintf(b, "allowed_ip=%s\n", netip.PrefixFrom(p.IPv6, 128))
	}
}

// removePeerUAPI takes one peer off the device.
func removePeerUAPI(b *strings.Builder, k Key) {
	fmt.Fprintf(b, "public_key=%s\nremove=true\n", k.Hex())
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
	if len(s) != 2*wgconf.KeyLen {
		return k, ErrBadKey
	}
	for i := range wgconf.KeyLen {
		n, err := strconv.ParseUint(s[2*i:2*i+2], 16, 8)
		if err != nil {
			return k, ErrBadKey
		}
		k[i] = byte(n)
	}
	return k, nil
}
