package vpn

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/skip2/go-qrcode"

	"github.com/tariq-vpn/tariq/config"
	"github.com/tariq-vpn/tariq/internal/store"
)

// PrivateKeyPlaceholder stands in for the private key in the exported
// config of a peer added with its own public key (AddPeerRequest.PublicKey):
// the server never held that private key, so the user pastes it in on the
// device. The WireGuard apps refuse to import a config that still has it,
// so a forgotten edit fails loudly rather than silently.
const PrivateKeyPlaceholder = "<this device's private key: paste it here>"

// ClientConfig renders the wg-quick config a peer's device imports:
//
//	[Interface] PrivateKey, Address (its /32 and /128), DNS (vpn.dns), MTU (vpn.mtu)
//	[Peer]      PublicKey (the server's), PresharedKey, Endpoint
//	            (server.public_host:vpn.listen_port, an IPv6 literal in
//	            brackets), AllowedIPs (vpn.client_allowed_ips),
//	            PersistentKeepalive (vpn.persistent_keepalive; omitted when 0)
//
// A peer added with its own public key has no private key here: the
// PrivateKey line carries PrivateKeyPlaceholder under a comment saying so
// (callers that print a QR code should refuse such a peer instead, since a
// phone cannot edit a scanned config). The text contains secrets: never log it.
func ClientConfig(cfg *config.Config, serverPublicKey string, p store.Peer) (string, error) {
	if _, err := ParseKey(serverPublicKey); err != nil {
		return "", fmt.Errorf("server public key: %w", err)
	}
	if err := checkPeer(p); err != nil {
		return "", err
	}
	host := strings.TrimSpace(cfg.Server.PublicHost)
	if host == "" {
		return "", ErrNoPublicHost
	}
	if a, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		host = a.Unmap().String()
	}
	endpoint := net.JoinHostPort(host, strconv.Itoa(cfg.VPN.ListenPort))

	var b strings.Builder
	line := func(k, v string) { fmt.Fprintf(&b, "%s = %s\n", k, v) }
	fmt.Fprintf(&b, "# tariq peer %q\n", p.Name)
	b.WriteString("[Interface]\n")
	if p.PrivateKey == "" {
		b.WriteString("# This device made its own key pair; the server never saw the private key.\n")
		b.WriteString("# Replace the placeholder below with it before importing this file.\n")
		line("PrivateKey", PrivateKeyPlaceholder)
	} else {
		if _, err := ParseKey(p.PrivateKey.Reveal()); err != nil {
			return "", fmt.Errorf("peer %q: private key: %w", p.Name, err)
		}
		line("PrivateKey", p.PrivateKey.Reveal())
	}
	addrs := []string{netip.PrefixFrom(p.IPv4, 32).String()}
	if p.IPv6.IsValid() {
		addrs = append(addrs, netip.PrefixFrom(p.IPv6, 128).String())
	}
	line("Address", strings.Join(addrs, ", "))
	if len(cfg.VPN.DNS) > 0 {
		line("DNS", joinStrings(cfg.VPN.DNS))
	}
	if cfg.VPN.MTU > 0 {
		line("MTU", strconv.Itoa(cfg.VPN.MTU))
	}
	b.WriteString("\n[Peer]\n")
	line("PublicKey", serverPublicKey)
	line("PresharedKey", p.PresharedKey.Reveal())
	line("Endpoint", endpoint)
	line("AllowedIPs", joinStrings(cfg.VPN.ClientAllowedIPs))
	if ka := cfg.VPN.PersistentKeepalive / time.Second; ka > 0 {
		line("PersistentKeepalive", strconv.Itoa(int(ka)))
	}
	return b.String(), nil
}

func joinStrings[T fmt.Stringer](xs []T) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = x.String()
	}
	return strings.Join(s, ", ")
}

// qrLevel is the error correction of exported QR codes: L, as qrencode
// (and so the WireGuard docs' `qrencode -t ansiutf8`) uses by default; a
// screen or a print is not a damaged sticker, and L keeps the code small
// enough for an 80-column terminal.
const qrLevel = qrcode.Low

// QRText returns text as a QR code drawn with Unicode half blocks, two
// modules per character cell, with the quiet zone. It is drawn for the
// usual light-on-dark terminal: light modules are printed glyphs and dark
// modules are the terminal's dark background.
func QRText(text string) (string, error) {
	q, err := qrcode.New(text, qrLevel)
	if err != nil {
		return "", fmt.Errorf("making QR code: %w", err)
	}
	return q.ToSmallString(false), nil
}

// QRPNG returns text as a QR code in a size×size PNG (dark on light; a
// size too small for the code is enlarged to fit, as go-qrcode does).
func QRPNG(text string, size int) ([]byte, error) {
	if size <= 0 {
		size = 512
	}
	q, err := qrcode.New(text, qrLevel)
	if err != nil {
		return nil, fmt.Errorf("making QR code: %w", err)
	}
	png, err := q.PNG(size)
	if err != nil {
		return nil, fmt.Errorf("making QR code: %w", err)
	}
	return png, nil
}
