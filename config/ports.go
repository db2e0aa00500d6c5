package config

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
