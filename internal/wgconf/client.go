package wgconf

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/skip2/go-qrcode"

	"github.com/tariq-vpn/tariq/config"
)

// PrivateKeyPlaceholder stands in for the private key in the exported
// config of a device that made its own key pair (tariq peer add
// --public-key): the server never held that private key, so the user
// pastes it in on the device. The WireGuard apps refuse to import a config
// that still has it, so a forgotten edit fails loudly rather than silently.
const PrivateKeyPlaceholder = "<this device's private key: paste it here>"

// ErrNoPublicHost means a client config cannot be exported because
// server.public_host is empty.
var ErrNoPublicHost = errors.New("server.public_host is empty: clients need a name or address to dial")

// Server is what a client config says about the server, besides the
// config file's settings.
type Server struct {
	// PublicKey is the server's WireGuard public key.
	PublicKey Key
	// AmneziaWG are the obfuscation parameters, for obfuscated devices.
	AmneziaWG AmneziaWG
}

// Device is a device's side of its client config.
type Device struct {
	Name string
	// PrivateKey is the device's private key (base64); empty when the
	// device made its own pair.
	PrivateKey   string
	PresharedKey string
	IPv4, IPv6   netip.Addr
	// Port is the UDP port the device dials.
	Port int
	// Obfuscated gives the AmneziaWG form of the config.
	Obfuscated bool
}

// ClientConfig renders the wg-quick config a device imports:
//
//	[Interface] PrivateKey, Address (its /32 and /128), DNS (vpn.dns), MTU (vpn.mtu)
//	[Peer]      PublicKey (the server's), PresharedKey, Endpoint
//	            (server.public_host and the device's port, an IPv6 literal in
//	            brackets), AllowedIPs (vpn.client_allowed_ips),
//	            PersistentKeepalive (vpn.persistent_keepalive; omitted when 0)
//
// An obfuscated device gets the AmneziaWG form: Jc, Jmin, Jmax, S1, S2 and
// H1-H4 in [Interface] (as the AmneziaWG and AmneziaVPN apps import them,
// amneziawg-tools' config keys).
//
// A device that made its own key pair has no private key here: the
// PrivateKey line carries PrivateKeyPlaceholder under a comment saying so
// (callers that print a QR code should refuse such a device instead, since a
// phone cannot edit a scanned config). The text contains secrets: never log it.
func ClientConfig(cfg *config.Config, srv Server, d Device) (string, error) {
	if srv.PublicKey.IsZero() {
		return "", fmt.Errorf("server public key: %w", ErrBadKey)
	}
	if err := d.check(); err != nil {
		return "", err
	}
	if d.Obfuscated {
		if err := CheckAmneziaWG(srv.AmneziaWG); err != nil {
			return "", err
		}
	}
	host := strings.TrimSpace(cfg.Server.PublicHost)
	if host == "" {
		return "", ErrNoPublicHost
	}
	if a, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		host = a.Unmap().String()
	}
	endpoint := net.JoinHostPort(host, strconv.Itoa(d.Port))

	var b strings.Builder
	line := func(k, v string) { fmt.Fprintf(&b, "%s = %s\n", k, v) }
	fmt.Fprintf(&b, "# tariq peer %q\n", d.Name)
	if d.Obfuscated {
		b.WriteString("# AmneziaWG: import this in the AmneziaWG or AmneziaVPN app; the WireGuard app cannot use it.\n")
	}
	b.WriteString("[Interface]\n")
	if d.PrivateKey == "" {
		b.WriteString("# This device made its own key pair; the server never saw the private key.\n")
		b.WriteString("# Replace the placeholder below with it before importing this file.\n")
		line("PrivateKey", PrivateKeyPlaceholder)
	} else {
		line("PrivateKey", d.PrivateKey)
	}
	addrs := []string{netip.PrefixFrom(d.IPv4, 32).String()}
	if d.IPv6.IsValid() {
		addrs = append(addrs, netip.PrefixFrom(d.IPv6, 128).String())
	}
	line("Address", strings.Join(addrs, ", "))
	if len(cfg.VPN.DNS) > 0 {
		line("DNS", joinStrings(cfg.VPN.DNS))
	}
	if cfg.VPN.MTU > 0 {
		line("MTU", strconv.Itoa(cfg.VPN.MTU))
	}
	if d.Obfuscated {
		a := srv.AmneziaWG
		for _, kv := range []struct {
			k string
			v uint64
		}{
			{"Jc", uint64(a.Jc)}, {"Jmin", uint64(a.Jmin)}, {"Jmax", uint64(a.Jmax)},
			{"S1", uint64(a.S1)}, {"S2", uint64(a.S2)},
			{"H1", uint64(a.H1)}, {"H2", uint64(a.H2)}, {"H3", uint64(a.H3)}, {"H4", uint64(a.H4)},
		} {
			line(kv.k, strconv.FormatUint(kv.v, 10))
		}
	}
	b.WriteString("\n[Peer]\n")
	line("PublicKey", srv.PublicKey.String())
	line("PresharedKey", d.PresharedKey)
	line("Endpoint", endpoint)
	line("AllowedIPs", joinStrings(cfg.VPN.ClientAllowedIPs))
	if ka := cfg.VPN.PersistentKeepalive / time.Second; ka > 0 {
		line("PersistentKeepalive", strconv.Itoa(int(ka)))
	}
	return b.String(), nil
}

// check reports why d cannot be exported (a hand-edited or damaged state
// entry), or nil.
func (d Device) check() error {
	var errs []error
	if d.PrivateKey != "" {
		if _, err := ParseKey(d.PrivateKey); err != nil {
			errs = append(errs, fmt.Errorf("private key: %w", err))
		}
	}
	if _, err := ParseKey(d.PresharedKey); err != nil {
		errs = append(errs, fmt.Errorf("preshared key: %w", err))
	}
	if !d.IPv4.Is4() {
		errs = append(errs, fmt.Errorf("ipv4: %q is not an IPv4 address", d.IPv4))
	}
	if d.IPv6.IsValid() && !d.IPv6.Is6() {
		errs = append(errs, fmt.Errorf("ipv6: %q is not an IPv6 address", d.IPv6))
	}
	if d.Port < 1 || d.Port > 65535 {
		errs = append(errs, fmt.Errorf("port %d is not a port", d.Port))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("peer %q: %w", d.Name, err)
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
