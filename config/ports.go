package config

import (
	"net"
	"net/netip"
	"strconv"
)

// WireGuardPort is one UDP port the WireGuard endpoint listens on.
type WireGuardPort struct {
	Port int
	// Key is the config key that names the port.
	Key string
	// Obfuscated says the port speaks the AmneziaWG form, not stock
	// WireGuard.
	Obfuscated bool
}

// WireGuardPorts returns every port the WireGuard endpoint listens on:
// vpn.listen_port first, then vpn.extra_ports in order, then
// vpn.obfuscation.listen_port when the obfuscated listener is on. It is
// the one place that set is derived from the config.
func (v VPNConfig) WireGuardPorts() []WireGuardPort {
	ports := []WireGuardPort{{Port: v.ListenPort, Key: "vpn.listen_port"}}
	for _, p := range v.ExtraPorts {
		ports = append(ports, WireGuardPort{Port: p, Key: "vpn.extra_ports"})
	}
	if v.Obfuscation.Enabled {
		ports = append(ports, WireGuardPort{Port: v.Obfuscation.ListenPort, Key: "vpn.obfuscation.listen_port", Obfuscated: true})
	}
	return ports
}

// StockPorts returns the ports speaking stock WireGuard: vpn.listen_port,
// then vpn.extra_ports.
func (v VPNConfig) StockPorts() []int {
	var out []int
	for _, p := range v.WireGuardPorts() {
		if !p.Obfuscated {
			out = append(out, p.Port)
		}
	}
	return out
}

// ObfuscatedPort returns vpn.obfuscation.listen_port, or 0 when the
// obfuscated listener is off.
func (v VPNConfig) ObfuscatedPort() int {
	if !v.Obfuscation.Enabled {
		return 0
	}
	return v.Obfuscation.ListenPort
}

// ServicePort is a port, or a range of them, on which tariq serves
// clients.
type ServicePort struct {
	Proto string // "udp" or "tcp"
	Ports PortRange
	Key   string // the config key that names it
}

// ServicePorts returns every port tariq takes clients on under c: the
// WireGuard ports, the relay's listeners and relayed ports, and the HTTPS
// page's (which the relay and the Outline path share), for the parts that
// are enabled. Ports of loopback-only listeners and kernel-chosen ones (0)
// are left out. The tunnel lets members reach these on the server's
// addresses, as anyone on the internet can, and nothing else of it.
func (c *Config) ServicePorts() []ServicePort {
	var out []ServicePort
	add := func(proto, key string, addrs ...string) {
		for _, a := range addrs {
			host, port, err := net.SplitHostPort(a)
			if err != nil {
				continue
			}
			n, err := strconv.ParseUint(port, 10, 16)
			if err != nil || n == 0 {
				continue
			}
			if ip, err := netip.ParseAddr(host); err == nil && ip.Unmap().IsLoopback() {
				continue
			}
			out = append(out, ServicePort{Proto: proto, Ports: PortRange{uint16(n), uint16(n)}, Key: key})
		}
	}
	if c.VPN.Enabled {
		for _, p := range c.VPN.WireGuardPorts() {
			add("udp", p.Key, ":"+strconv.Itoa(p.Port))
		}
	}
	if c.Relay.Enabled {
		add("udp", "relay.listen_udp", c.Relay.ListenUDP...)
		add("tcp", "relay.listen_tcp", c.Relay.ListenTCP...)
		if c.TLS.Mode != TLSOff {
			add("tcp", "relay.listen_tls", c.Relay.ListenTLS...)
		}
		out = append(out, ServicePort{Proto: "udp", Ports: c.Relay.RelayPorts, Key: "relay.relay_ports"})
		if c.Relay.TCPRelay {
			out = append(out, ServicePort{Proto: "tcp", Ports: c.Relay.RelayPorts, Key: "relay.relay_ports"})
		}
	}
	if c.Web.Enabled {
		add("tcp", "web.listen", c.Web.Listen...)
	}
	return out
}
