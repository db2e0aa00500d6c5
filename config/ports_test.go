package config

import (
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestServicePorts(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*Config)
		want   []string
	}{
		{"defaults", func(*Config) {}, []string{
			"udp 51820-51820 vpn.listen_port",
			"udp 3478-3478 relay.listen_udp", "tcp 3478-3478 relay.listen_tcp", "tcp 5349-5349 relay.listen_tls",
			"udp 49152-65535 relay.relay_ports",
			"tcp 443-443 web.listen",
		}},
		{"every WireGuard port, TCP relays", func(c *Config) {
			c.VPN.ExtraPorts = []int{443}
			c.VPN.Obfuscation.Enabled = true
			c.Relay.TCPRelay = true
			c.Web.Enabled = false
		}, []string{
			"udp 51820-51820 vpn.listen_port", "udp 443-443 vpn.extra_ports", "udp 51821-51821 vpn.obfuscation.listen_port",
			"udp 3478-3478 relay.listen_udp", "tcp 3478-3478 relay.listen_tcp", "tcp 5349-5349 relay.listen_tls",
			"udp 49152-65535 relay.relay_ports", "tcp 49152-65535 relay.relay_ports",
		}},
		{"loopback, kernel-chosen and TLS off left out", func(c *Config) {
			c.VPN.Enabled = false
			c.TLS.Mode = TLSOff
			c.Web.Enabled = false
			c.Relay.ListenUDP = []string{"127.0.0.1:3478", "[::1]:3478", "203.0.113.5:3479", ":0"}
			c.Relay.ListenTCP = nil
		}, []string{"udp 3479-3479 relay.listen_udp", "udp 49152-65535 relay.relay_ports"}},
		{"relay off", func(c *Config) { c.Relay.Enabled = false }, []string{"udp 51820-51820 vpn.listen_port", "tcp 443-443 web.listen"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			tc.change(c)
			var got []string
			for _, p := range c.ServicePorts() {
				got = append(got, fmt.Sprintf("%s %s %s", p.Proto, p.Ports, p.Key))
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("ServicePorts (-want +got):\n%s", diff)
			}
		})
	}
}
