package main

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tariq-vpn/tariq/internal/admin"
	"github.com/tariq-vpn/tariq/internal/members"
	"github.com/tariq-vpn/tariq/internal/store"
)

// TestStatusReach: `tariq status` lists, per member whose invite page ran
// the reachability check, when it ran, the advice it gave, what the page's
// confirmation found (connected; or the stock handshake never arrived and
// the page switched to AmneziaWG, which then connected or not yet), and
// which paths got through; members without a check are not listed there.
func TestStatusReach(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	st := &admin.Status{Version: "test", PublicHost: "vpn.example.org", StartedAt: now.Add(-time.Hour),
		VPN: &admin.VPNStatus{Interface: "tariq0", ListenPort: 51820, Peers: []members.DeviceStatus{
			{Name: "mom", IPv4: netip.MustParseAddr("10.77.0.2"), Enabled: true, Reach: &store.Reachability{CheckedAt: now.Add(-90 * time.Second),
				Verdict: "calls", Reached: []string{"turn-tcp", "turns-443"}, Failed: []string{"wg-51820", "turn-udp"}}},
			{Name: "dad", IPv4: netip.MustParseAddr("10.77.0.3"), Enabled: true},
			{Name: "kid", IPv4: netip.MustParseAddr("10.77.0.4"), Enabled: true, Reach: &store.Reachability{CheckedAt: now.Add(-time.Minute),
				Verdict: "amneziawg", Port: 51821, Reached: []string{"awg-51821"}}},
			{Name: "gran", IPv4: netip.MustParseAddr("10.77.0.5"), Enabled: true, Reach: &store.Reachability{CheckedAt: now.Add(-time.Minute),
				Verdict: "wireguard", Port: 51820, Reached: []string{"wg-51820"}, Confirmed: "connected"}},
			{Name: "aunt", IPv4: netip.MustParseAddr("10.77.0.6"), Enabled: true, Reach: &store.Reachability{CheckedAt: now.Add(-time.Minute),
				Verdict: "amneziawg", Port: 51821, Reached: []string{"wg-51820", "awg-51821"}, Confirmed: "no-handshake", SwitchedFrom: "wireguard"}},
			{Name: "uncle", IPv4: netip.MustParseAddr("10.77.0.7"), Enabled: true, Reach: &store.Reachability{CheckedAt: now.Add(-time.Minute),
				Verdict: "amneziawg", Port: 51821, Reached: []string{"wg-51820", "awg-51821"}, Confirmed: "connected", SwitchedFrom: "wireguard"}},
		}}}
	var out bytes.Buffer
	printStatus(&app{stdout: &out}, st, now)
	lines := strings.Split(out.String(), "\n")
	line := map[string]string{}
	header := false
	for _, l := range lines {
		switch f := strings.Fields(l); {
		case len(f) > 2 && f[0] == "PEER" && f[1] == "LAST" && f[2] == "CHECK":
			header = true
			if !strings.Contains(l, "CONFIRMED") {
				t.Errorf("no CONFIRMED column: %q", l)
			}
		case header && len(f) > 0 && f[0] == "dad":
			t.Errorf("dad ran no check but is listed: %q", l)
		case header && len(f) > 0:
			line[f[0]] = l
		}
	}
	mom, kid := line["mom"], line["kid"]
	if !strings.Contains(mom, "1m30s ago") || !strings.Contains(mom, "VPN blocked; relayed calls work") ||
		!strings.Contains(mom, "turn-tcp turns-443") || !strings.Contains(mom, "wg-51820 turn-udp") {
		t.Errorf("mom's check: %q\n%s", mom, out.String())
	}
	if !strings.Contains(kid, "AmneziaWG app, UDP 51821") || !strings.HasSuffix(strings.TrimSpace(kid), "-") {
		t.Errorf("kid's check: %q\n%s", kid, out.String())
	}
	for name, want := range map[string]string{
		"mom":   "VPN blocked; relayed calls work  -  ",
		"gran":  "WireGuard app, UDP 51820  connected  wg-51820",
		"aunt":  "AmneziaWG app, UDP 51821  stock handshake never arrived, switched to AmneziaWG  wg-51820",
		"uncle": "AmneziaWG app, UDP 51821  connected (stock handshake never arrived, switched to AmneziaWG)  wg-51820",
	} {
		if !strings.Contains(strings.Join(strings.Fields(line[name]), " "), strings.Join(strings.Fields(want), " ")) {
			t.Errorf("%s's confirmation: %q, want %q\n%s", name, line[name], want, out.String())
		}
	}
}
