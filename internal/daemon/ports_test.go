package daemon

import (
	"slices"
	"testing"

	"github.com/tariq-vpn/tariq/config"
)

// TestFirewallPortsACME checks that `tariq ports` asks for TCP 80 exactly
// when tls.mode auto resolves to ACME, whose HTTP-01 challenge it answers:
// for a public IP address (no email needed) and for a DNS name with an
// email, not for a private address or a name without one.
func TestFirewallPortsACME(t *testing.T) {
	for _, tc := range []struct {
		host, email string
		want        bool
	}{
		{"193.0.14.129", "", true},
		{"2a00:1450:4001:80e::200e", "", true},
		{"10.0.0.5", "", false},
		{"192.0.2.2", "", false},
		{"vpn.example.org", "ops@example.org", true},
		{"vpn.example.org", "", false},
	} {
		cfg := config.Default()
		cfg.Server.PublicHost, cfg.TLS.Email = tc.host, tc.email
		got := slices.Contains(FirewallPorts(cfg), Port{"tcp", "80", "ACME HTTP-01 challenges"})
		if got != tc.want {
			t.Errorf("%s (email %q): tcp 80 listed %v, want %v", tc.host, tc.email, got, tc.want)
		}
	}
}
