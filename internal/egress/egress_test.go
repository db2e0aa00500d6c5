package egress

import (
	"context"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/tariq-vpn/tariq/config"
	"github.com/tariq-vpn/tariq/internal/addrpolicy"
	"github.com/tariq-vpn/tariq/internal/testutil"
)

// Allow has the signature internal/outline's Deps.Allow takes.
var _ func(netip.Addr) (bool, string) = (*Policy)(nil).Allow

var ula = netip.MustParsePrefix("fd1e:77:1::/64")

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func wantAllow(t *testing.T, p *Policy, a string, ok bool, rule string) {
	t.Helper()
	if gotOK, gotRule := p.Allow(addr(a)); gotOK != ok || gotRule != rule {
		t.Errorf("Allow(%s) = %v %q, want %v %q", a, gotOK, gotRule, ok, rule)
	}
}

// TestPolicyFollowsConfigAndAddresses runs a Policy in a namespace of its
// own: nothing is allowed before Open; then the interfaces' addresses and
// the config's public addresses are the server's and refused, the tunnel
// subnets are other members; an address added to an interface is refused
// as soon as it appears (and OnChange tells), and freed when it goes; a
// reload changes the lists.
func TestPolicyFollowsConfigAndAddresses(t *testing.T) {
	testutil.LeakCheck(t)
	ns := testutil.NewNetNS(t)
	ns.Run("ip", "link", "add", "tqa0", "type", "veth", "peer", "name", "tqb0")
	ns.Run("ip", "addr", "add", "198.20.0.1/24", "dev", "tqa0")
	ns.Run("ip", "link", "set", "tqa0", "up")

	cfg := config.Default()
	cfg.Server.PublicHost = "198.20.9.9" // 1:1 NAT: on no interface here
	cfg.Relay.RelayIP = []netip.Addr{addr("2a0e:8f02:f017::9")}
	changes := make(chan *addrpolicy.Destinations, 16)
	p, err := New(cfg, Deps{Logger: slog.New(slog.DiscardHandler), ULA: ula, OnChange: func(d *addrpolicy.Destinations) { changes <- d }})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	wantAllow(t, p, "8.8.8.8", false, RuleNotOpen)
	if err := ns.Do(func() error { return p.Open(context.Background()) }); err != nil {
		t.Fatal(err)
	}

	t.Run("open", func(t *testing.T) {
		wantAllow(t, p, "8.8.8.8", true, "")
		wantAllow(t, p, "198.20.0.2", true, "")
		wantAllow(t, p, "198.20.0.1", false, addrpolicy.RuleOwn)
		wantAllow(t, p, "198.20.9.9", false, addrpolicy.RuleOwn)
		wantAllow(t, p, "2a0e:8f02:f017::9", false, addrpolicy.RuleOwn)
		wantAllow(t, p, "127.0.0.1", false, addrpolicy.RuleOwn) // on lo
		wantAllow(t, p, "127.0.0.2", false, "loopback")
		wantAllow(t, p, "169.254.169.254", false, "link-local")
		wantAllow(t, p, "10.77.0.5", false, addrpolicy.RuleMember)
		wantAllow(t, p, "fd1e:77:1::5", false, addrpolicy.RuleMember)
	})

	t.Run("address added and removed", func(t *testing.T) {
		for _, step := range []struct {
			args []string
			ok   bool
			rule string
		}{
			{[]string{"addr", "add", "198.20.0.7/32", "dev", "tqa0"}, false, addrpolicy.RuleOwn},
			{[]string{"addr", "del", "198.20.0.7/32", "dev", "tqa0"}, true, ""},
		} {
			ns.Run(append([]string{"ip"}, step.args...)...)
			// Wait for OnChange with a policy that has it right; Allow
			// answers the same from then on.
			deadline := time.After(5 * time.Second)
			for done := false; !done; {
				select {
				case d := <-changes:
					ok, rule := d.Allow(addr("198.20.0.7"))
					done = ok == step.ok && rule == step.rule
				case <-deadline:
					t.Fatalf("after ip %v: no OnChange with 198.20.0.7 allowed %v", step.args, step.ok)
				}
			}
			wantAllow(t, p, "198.20.0.7", step.ok, step.rule)
		}
	})

	t.Run("reload", func(t *testing.T) {
		next := *cfg
		next.VPN.AllowDestinations = []netip.Prefix{netip.MustParsePrefix("192.168.50.0/24")}
		next.VPN.DenyDestinations = []netip.Prefix{netip.MustParsePrefix("8.8.8.0/24")}
		next.VPN.MemberToMember = true
		next.Server.PublicHost = "vpn.example.org"
		if err := p.Reload(&next); err != nil {
			t.Fatal(err)
		}
		wantAllow(t, p, "192.168.50.9", true, "")
		wantAllow(t, p, "192.168.51.9", false, "private")
		wantAllow(t, p, "8.8.8.8", false, addrpolicy.RuleDeny)
		wantAllow(t, p, "10.77.0.5", true, "")
		wantAllow(t, p, "10.77.0.1", true, "") // the tunnel address is on no interface in this namespace
		wantAllow(t, p, "198.20.9.9", true, "")
		wantAllow(t, p, "198.20.0.1", false, addrpolicy.RuleOwn)
	})

	t.Run("WireGuard off: no members", func(t *testing.T) {
		next := *cfg
		next.VPN.Enabled = false
		if err := p.Reload(&next); err != nil {
			t.Fatal(err)
		}
		wantAllow(t, p, "10.77.0.5", false, "private")
	})

	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := p.Reload(cfg); err == nil {
		t.Error("Reload after Close succeeded")
	}
}

func TestNewRefusesAPlanlessConfig(t *testing.T) {
	cfg := config.Default()
	if _, err := New(cfg, Deps{}); err == nil {
		t.Error("no ULA and no IPv6 in vpn.address: accepted")
	}
	cfg.VPN.Enabled = false
	if _, err := New(cfg, Deps{}); err != nil {
		t.Errorf("with WireGuard off the ULA is not needed: %v", err)
	}
}
