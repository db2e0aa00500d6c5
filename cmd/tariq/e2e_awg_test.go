package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tariq-vpn/tariq/internal/testutil"
)

// The obfuscation end-to-end test: family devices reach the server through
// the lab's ISP, which masquerades them (a carrier-grade NAT) and, for part
// of the test, applies censor profile 2, WireGuard's fingerprint dropped
// (testutil.CensorWireGuardFingerprint). tariq listens for stock WireGuard
// on 51820 and 443 and for AmneziaWG on 51821 (set through the
// environment, TARIQ_VPN_EXTRA_PORTS and TARIQ_VPN_OBFUSCATION_ENABLED).
// The AmneziaWG client is amneziawg-go v0.2.12, the engine of the
// AmneziaWG apps, configured through its UAPI from `tariq peer add
// --obfuscated`.

// stunMapped asks the server's UDP port for this device's address with
// coturn's turnutils_stunclient and returns what it reports.
func (d *device) stunMapped(port int) string {
	d.l.t.Helper()
	out, _ := d.ns.TryRun("timeout", "10", "turnutils_stunclient", "-p", fmt.Sprint(port), labServer)
	for _, line := range strings.Split(out, "\n") {
		if _, v, ok := strings.Cut(line, "UDP reflexive addr: "); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// TestObfuscatedWireGuardEndToEnd: under the WireGuard-fingerprint censor,
// the AmneziaWG client (amneziawg-go) handshakes with tariq's obfuscated
// port and carries ping, HTTP over IPv4 and IPv6, and a TCP transfer, and
// the censor matches none of its packets; upstream wireguard-go cannot
// handshake at all (the censor drops its initiations). Without the censor,
// stock clients get through on 51820 and 443, answered from the port they
// dialled. Every WireGuard port answers STUN, censored or not, with the
// address the ISP's NAT gave the device.
func TestObfuscatedWireGuardEndToEnd(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireBinary(t, "turnutils_stunclient")
	testutil.RequireBinary(t, "timeout")
	t.Setenv("TARIQ_VPN_EXTRA_PORTS", "443")
	t.Setenv("TARIQ_VPN_OBFUSCATION_ENABLED", "true")
	l := newLab(t, labOptions{ISP: true})

	awg := l.addDevice("awg", "--obfuscated")
	c := confValues(awg.conf)
	if c["Peer.Endpoint"] != labServer+":51821" || c["Interface.Jc"] == "" || !strings.Contains(awg.added, "AmneziaWG") {
		t.Fatalf("obfuscated peer's export (stderr %q):\n%s", awg.added, awg.conf)
	}
	if code, out, _ := tariq(t, "peer", "show", "awg", "--config", l.conf); code != 0 || out != awg.conf {
		t.Errorf("peer show awg differs from peer add's output:\n%s", out)
	}
	stock := l.addDevice("stock")
	alt := l.addDevice("alt", "--port", "443")
	if ep := confValues(alt.conf)["Peer.Endpoint"]; ep != labServer+":443" || !strings.Contains(alt.added, "UDP port 443") {
		t.Errorf("--port 443: endpoint %s, stderr %q", ep, alt.added)
	}
	if code, _, errOut := tariq(t, "peer", "add", "nope", "--port", "444", "--config", l.conf); code == 0 || !strings.Contains(errOut, "port 444 is not a WireGuard port of this server") {
		t.Errorf("--port 444: exit %d, %q", code, errOut)
	}

	testutil.Censor(t, l.isp, testutil.CensorWireGuardFingerprint)

	t.Run("stun", func(t *testing.T) {
		for _, port := range []int{51820, 443, 51821} {
			if got := stock.stunMapped(port); !strings.HasPrefix(got, "10.10.1.2:") {
				t.Errorf("STUN on UDP %d: reflexive address %q, want the ISP NAT's 10.10.1.2:…", port, got)
			}
		}
	})

	t.Run("obfuscated through the censor", func(t *testing.T) {
		awg.up()
		awg.mustReach("AmneziaWG under the WireGuard censor")
		const size = 8 << 20
		got, err := awg.transfer("10.10.2.2:5001", size, 20*time.Second)
		if err != nil || !strings.HasPrefix(got, fmt.Sprintf("%d 10.10.2.1:", size)) {
			t.Fatalf("TCP transfer through the obfuscated tunnel: %q %v", got, err)
		}
		if n := testutil.CensorDrops(t, l.isp, "wg_fingerprint"); n != 0 {
			t.Errorf("the censor matched %d AmneziaWG packets", n)
		}
		if dump := testutil.AmneziaWGGet(t, awg.sock); awg.handshake().IsZero() {
			t.Errorf("amneziawg-go reports no handshake:\n%s", dump)
		}
	})

	t.Run("stock blocked by the censor", func(t *testing.T) {
		stock.up()
		stock.mustNotReach("stock WireGuard under the WireGuard censor")
		if hs := stock.handshake(); !hs.IsZero() {
			t.Errorf("stock client handshook through the censor at %s", hs)
		}
		if n := testutil.CensorDrops(t, l.isp, "wg_fingerprint"); n == 0 {
			t.Error("the censor dropped nothing: the stock client failed for another reason")
		}
	})

	testutil.Uncensor(t, l.isp)

	t.Run("stock without the censor", func(t *testing.T) {
		stock.mustReach("stock WireGuard, censor lifted")
		alt.up()
		alt.mustReach("stock WireGuard on 443")
		if ep := alt.ns.Run("wg", "show", "wgalt", "endpoints"); !strings.Contains(ep, labServer+":443") {
			t.Errorf("the server answered port 443's client from elsewhere: %q", ep)
		}
		awg.mustReach("AmneziaWG, censor lifted")
	})

	out := l.server.Run("wg", "show", l.iface)
	if !strings.Contains(out, "listening port: 51820") || strings.Count(out, "latest handshake") != 3 {
		t.Errorf("wg show %s on the server:\n%s", l.iface, out)
	}
}
