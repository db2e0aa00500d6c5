package daemon

import (
	"net"
	"slices"
	"strconv"

	"github.com/tariq-vpn/tariq/config"
	"github.com/tariq-vpn/tariq/internal/certs"
)

// Port is one port (or range) to open in the server's firewall.
type Port struct {
	Proto string // udp or tcp
	Ports string // "3478" or "49152-65535"
	What  string
}

// FirewallPorts lists what clients must reach, from the configuration.
// Loopback-only listeners are left out.
func FirewallPorts(cfg *config.Config) []Port {
	var out []Port
	add := func(proto, what string, addrs []string) {
		for _, a := range addrs {
			host, port, err := net.SplitHostPort(a)
			if err != nil || port == "0" {
				continue
			}
			if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
				continue
			}
			p := Port{proto, port, what}
			if i := slices.IndexFunc(out, func(q Port) bool { return q.Proto == p.Proto && q.Ports == p.Ports }); i >= 0 {
				out[i].What += ", " + what
				continue
			}
			out = append(out, p)
		}
	}
	if cfg.VPN.Enabled {
		for _, p := range cfg.VPN.WireGuardPorts() {
			what := "WireGuard"
			if p.Obfuscated {
				what += ", obfuscated (AmneziaWG)"
			}
			add("udp", what, []string{":" + strconv.Itoa(p.Port)})
		}
	}
	if cfg.Relay.Enabled {
		add("udp", "TURN", cfg.Relay.ListenUDP)
		add("tcp", "TURN", cfg.Relay.ListenTCP)
		if cfg.TLS.Mode != config.TLSOff {
			add("tcp", "TURN over TLS", cfg.Relay.ListenTLS)
		}
		out = append(out, Port{"udp", cfg.Relay.RelayPorts.String(), "TURN relayed media"})
		if cfg.Relay.TCPRelay {
			out = append(out, Port{"tcp", cfg.Relay.RelayPorts.String(), "TURN TCP relays"})
		}
	}
	if cfg.Web.Enabled {
		what := "HTTPS page"
		if cfg.Relay.Enabled {
			what += " and TURN over TLS"
		}
		add("tcp", what, cfg.Web.Listen)
		// As the daemon decides: with public_host empty, for the detected address.
		resolved := *cfg
		resolved.Server.PublicHost = ResolveHost(cfg)
		if certs.ResolveMode(&resolved) == config.TLSACME {
			out = append(out, Port{"tcp", "80", "ACME HTTP-01 challenges"})
		}
	}
	return out
}
