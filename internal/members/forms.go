package members

import (
	"fmt"
	"slices"

	"github.com/tariq-vpn/tariq/config"
	"github.com/tariq-vpn/tariq/internal/store"
)

// Form is one shape of a device's client config: stock WireGuard dialling
// a UDP port, or the AmneziaWG form (which dials the obfuscated port).
// Every port accepts every device in either form: a form is only what the
// device's config says. The Outline form is the device's member's Outline
// key instead (no WireGuard config, no port: it rides the HTTPS port).
type Form struct {
	AmneziaWG bool
	Port      int
	Outline   bool
}

// Key names f in the invite page and its reveal: wireguard-<port>,
// amneziawg-<port> or outline.
func (f Form) Key() string {
	if f.Outline {
		return "outline"
	}
	if f.AmneziaWG {
		return fmt.Sprintf("amneziawg-%d", f.Port)
	}
	return fmt.Sprintf("wireguard-%d", f.Port)
}

// What an invite page's reachability check advises (store.Reachability's
// Verdict).
const (
	VerdictWireGuard = "wireguard" // the stock WireGuard app, stock config
	VerdictAmneziaWG = "amneziawg" // the AmneziaWG app, the obfuscated config
	VerdictOutline   = "outline"   // no UDP path; the Outline app, the member's Outline key
	VerdictCalls     = "calls"     // no VPN path; relayed calls in apps work
	VerdictNone      = "none"      // nothing got through: try another network
)

// requestedPort checks how a new device connects (port and obfuscated, as
// asked) against cfg and returns the Port to store: 0 for vpn.listen_port,
// so the device follows a later change of it.
func requestedPort(cfg *config.Config, name string, port int, obfuscated bool) (int, error) {
	n := cfg.VPN
	switch {
	case obfuscated && !n.Obfuscation.Enabled:
		return 0, fmt.Errorf("peer %q: %w", name, ErrObfuscationOff)
	case obfuscated && port != 0:
		return 0, fmt.Errorf("peer %q: port %d %w for an obfuscated device, which always dials vpn.obfuscation.listen_port (%d)",
			name, port, ErrBadPort, n.Obfuscation.ListenPort)
	case port == 0 || port == n.ListenPort:
		return 0, nil
	case slices.Contains(n.StockPorts(), port):
		return port, nil
	}
	return 0, fmt.Errorf("peer %q: port %d %w (vpn.listen_port %d, vpn.extra_ports %v)", name, port, ErrBadPort, n.ListenPort, n.ExtraPorts)
}

// ownForm is the form a device's stored choice gives its config under
// cfg. A device whose port is no longer configured (the config changed
// since it was added) is an error naming the key to fix.
func ownForm(cfg *config.Config, p store.Peer) (Form, error) {
	n := cfg.VPN
	switch {
	case p.Obfuscated && !n.Obfuscation.Enabled:
		return Form{}, fmt.Errorf("peer %q uses the obfuscated listener: %w", p.Name, ErrObfuscationOff)
	case p.Obfuscated:
		return Form{AmneziaWG: true, Port: n.Obfuscation.ListenPort}, nil
	case p.Port == 0 || p.Port == n.ListenPort:
		return Form{Port: n.ListenPort}, nil
	case slices.Contains(n.ExtraPorts, p.Port):
		return Form{Port: p.Port}, nil
	}
	return Form{}, fmt.Errorf("peer %q: port %d %w any more (it was in vpn.extra_ports when the peer was added)", p.Name, p.Port, ErrBadPort)
}

// setForm makes f device p's stored form.
func setForm(p *store.Peer, cfg *config.Config, f Form) {
	p.Obfuscated, p.Port = f.AmneziaWG, 0
	if !f.AmneziaWG && f.Port != cfg.VPN.ListenPort {
		p.Port = f.Port
	}
}

// offeredForms lists the forms of a config the server hands out: stock
// WireGuard on each of its ports, and the AmneziaWG form if on.
func offeredForms(cfg *config.Config) []Form {
	var out []Form
	for _, p := range cfg.VPN.WireGuardPorts() {
		out = append(out, Form{AmneziaWG: p.Obfuscated, Port: p.Port})
	}
	return out
}

// resolveForm fills in f (a stock form without a port means the device's
// own stock port, else the listen port) and checks the server offers it.
func resolveForm(cfg *config.Config, p store.Peer, f Form) (Form, error) {
	switch {
	case f.AmneziaWG:
		f.Port = cfg.VPN.Obfuscation.ListenPort
	case f.Port == 0:
		f.Port = cfg.VPN.ListenPort
		if own, err := ownForm(cfg, p); err == nil && !own.AmneziaWG {
			f.Port = own.Port
		}
	}
	if !slices.Contains(offeredForms(cfg), f) {
		return Form{}, ErrFormNotOffered
	}
	return f, nil
}
