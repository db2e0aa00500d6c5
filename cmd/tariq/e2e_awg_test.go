package main

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tariq-vpn/tariq/internal/testutil"
)

// The obfuscation end-to-end test: family devices reach the server through
// an "ISP" namespace that masquerades them (a carrier-grade NAT) and, for
// part of the test, applies censor profile 2, WireGuard's fingerprint
// dropped (testutil.CensorWireGuardFingerprint):
//
//	device (10.10.N.2) --- ISP (NAT, censor) 10.10.1.2 --- 10.10.1.1 server (tariq) --- internet
//
// tariq listens for stock WireGuard on 51820 and 443 and for AmneziaWG on
// 51821 (set through the environment, TARIQ_VPN_EXTRA_PORTS and
// TARIQ_VPN_OBFUSCATION_ENABLED). The AmneziaWG client is amneziawg-go
// v0.2.12, the engine of the AmneziaWG apps, configured through its UAPI
// from `tariq peer add --obfuscated`.

// isp is the namespace between family devices and the server.
type isp struct {
	l  *vpnLab
	ns *testutil.NetNS
}

func (l *vpnLab) newISP() *isp {
	i := &isp{l: l, ns: testutil.NewNetNS(l.t)}
	testutil.Veth(l.t, testutil.VethEnd{NS: i.ns, Name: "srv0", Addrs: []netip.Prefix{pfx("10.10.1.2/24")}},
		testutil.VethEnd{NS: l.server, Name: "isp0", Addrs: []netip.Prefix{pfx("10.10.1.1/24")}})
	if err := i.ns.Do(func() error { return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644) }); err != nil {
		l.t.Fatal(err)
	}
	nat := `table ip isp_nat {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "srv0" masquerade
	}
}
`
	cmd := i.ns.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(nat)
	if out, err := cmd.CombinedOutput(); err != nil {
		l.t.Fatalf("ISP NAT: %v: %s", err, out)
	}
	return i
}

// addDevice adds peer name with `tariq peer add name flags…` and puts a
// device namespace for it behind the ISP on 10.10.<subnet>.0/24. It does
// not bring a tunnel up.
func (i *isp) addDevice(name string, subnet int, flags ...string) (d *device, stderr string) {
	l := i.l
	code, out, errOut := tariq(l.t, append([]string{"peer", "add", name, "--config", l.conf}, flags...)...)
	if code != 0 {
		l.t.Fatalf("peer add %s %v: %s", name, flags, errOut)
	}
	d = &device{l: l, ns: testutil.NewNetNS(l.t), name: name, conf: out}
	gw, addr := fmt.Sprintf("10.10.%d.1", subnet), fmt.Sprintf("10.10.%d.2", subnet)
	testutil.Veth(l.t, testutil.VethEnd{NS: d.ns, Name: "eth0", Addrs: []netip.Prefix{pfx(addr + "/24")}},
		testutil.VethEnd{NS: i.ns, Name: "dev" + name, Addrs: []netip.Prefix{pfx(gw + "/24")}})
	d.ns.Run("ip", "route", "add", "default", "via", gw)
	return d, errOut
}

// confValues reads a wg-quick file into "Section.Key" → value.
func confValues(conf string) map[string]string {
	out := map[string]string{}
	section := ""
	for _, line := range strings.Split(conf, "\n") {
		line, _, _ = strings.Cut(line, "#")
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "[") {
			section = strings.Trim(line, "[]")
			continue
		}
		if k, v, ok := strings.Cut(line, "="); ok {
			out[section+"."+strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return out
}

func hexKey(t *testing.T, b64 string) string {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(b) != 32 {
		t.Fatalf("key %q: %v", b64, err)
	}
	return hex.EncodeToString(b)
}

// upAWG brings amneziawg-go up the way awg-quick would: the UAPI set that
// awg(8) sends for the config (wg(8)'s keys plus jc, jmin, jmax, s1, s2,
// h1-h4: amneziawg-go device/uapi.go), then addresses, MTU and the same
// policy routing as up.
func (d *device) upAWG() {
	t := d.l.t
	bin := testutil.BuildAmneziaWGGo(t)
	ifname := "wg" + d.name
	sock := d.ns.AmneziaWGSocket(ifname)
	os.Remove(sock)
	d.ns.Start(bin, "-f", ifname)
	if err := testutil.WaitListening(sock, 10*time.Second); err != nil {
		t.Fatalf("amneziawg-go did not open its UAPI socket: %v", err)
	}
	c := confValues(d.conf)
	var set strings.Builder
	fmt.Fprintf(&set, "private_key=%s\nfwmark=51820\n", hexKey(t, c["Interface.PrivateKey"]))
	for _, k := range []string{"Jc", "Jmin", "Jmax", "S1", "S2", "H1", "H2", "H3", "H4"} {
		if c["Interface."+k] == "" {
			t.Fatalf("exported config lacks %s:\n%s", k, d.conf)
		}
		fmt.Fprintf(&set, "%s=%s\n", strings.ToLower(k), c["Interface."+k])
	}
	fmt.Fprintf(&set, "replace_peers=true\npublic_key=%s\npreshared_key=%s\nendpoint=%s\npersistent_keepalive_interval=%s\n",
		hexKey(t, c["Peer.PublicKey"]), hexKey(t, c["Peer.PresharedKey"]), c["Peer.Endpoint"], c["Peer.PersistentKeepalive"])
	for _, a := range strings.Split(c["Peer.AllowedIPs"], ",") {
		fmt.Fprintf(&set, "allowed_ip=%s\n", strings.TrimSpace(a))
	}
	testutil.AmneziaWGSet(t, sock, set.String())
	d.routeAll(ifname, strings.Split(c["Interface.Address"], ","))
}

// stunMapped asks the server's UDP port for this device's address with
// coturn's turnutils_stunclient and returns what it reports.
func (d *device) stunMapped(port int) string {
	d.l.t.Helper()
	out, _ := d.ns.TryRun("timeout", "10", "turnutils_stunclient", "-p", fmt.Sprint(port), "10.10.1.1")
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
	l := newVPNLab(t)
	i := l.newISP()

	awg, errOut := i.addDevice("awg", 5, "--obfuscated")
	c := confValues(awg.conf)
	if c["Peer.Endpoint"] != "10.10.1.1:51821" || c["Interface.Jc"] == "" || !strings.Contains(errOut, "AmneziaWG") {
		t.Fatalf("obfuscated peer's export (stderr %q):\n%s", errOut, awg.conf)
	}
	if code, out, _ := tariq(t, "peer", "show", "awg", "--config", l.conf); code != 0 || out != awg.conf {
		t.Errorf("peer show awg differs from peer add's output:\n%s", out)
	}
	stock, _ := i.addDevice("stock", 6)
	alt, errOut := i.addDevice("alt", 7, "--port", "443")
	if ep := confValues(alt.conf)["Peer.Endpoint"]; ep != "10.10.1.1:443" || !strings.Contains(errOut, "UDP port 443") {
		t.Errorf("--port 443: endpoint %s, stderr %q", ep, errOut)
	}
	if code, _, errOut := tariq(t, "peer", "add", "nope", "--port", "444", "--config", l.conf); code == 0 || !strings.Contains(errOut, "port 444 is not a WireGuard port of this server") {
		t.Errorf("--port 444: exit %d, %q", code, errOut)
	}

	testutil.Censor(t, i.ns, testutil.CensorWireGuardFingerprint)

	t.Run("stun", func(t *testing.T) {
		for _, port := range []int{51820, 443, 51821} {
			if got := stock.stunMapped(port); !strings.HasPrefix(got, "10.10.1.2:") {
				t.Errorf("STUN on UDP %d: reflexive address %q, want the ISP NAT's 10.10.1.2:…", port, got)
			}
		}
	})

	t.Run("obfuscated through the censor", func(t *testing.T) {
		awg.upAWG()
		awg.mustReach("AmneziaWG under the WireGuard censor")
		const size = 8 << 20
		got, err := awg.transfer("10.10.2.2:5001", size)
		if err != nil || !strings.HasPrefix(got, fmt.Sprintf("%d 10.10.2.1:", size)) {
			t.Fatalf("TCP transfer through the obfuscated tunnel: %q %v", got, err)
		}
		if n := testutil.CensorDrops(t, i.ns, "wg_fingerprint"); n != 0 {
			t.Errorf("the censor matched %d AmneziaWG packets", n)
		}
		dump := testutil.AmneziaWGGet(t, awg.ns.AmneziaWGSocket("wgawg"))
		if !strings.Contains(dump, "last_handshake_time_sec=") || strings.Contains(dump, "last_handshake_time_sec=0\n") {
			t.Errorf("amneziawg-go reports no handshake:\n%s", dump)
		}
	})

	t.Run("stock blocked by the censor", func(t *testing.T) {
		stock.up()
		stock.mustNotReach("stock WireGuard under the WireGuard censor")
		if hs := stock.ns.Run("wg", "show", "wgstock", "latest-handshakes"); !strings.HasSuffix(strings.TrimSpace(hs), "\t0") {
			t.Errorf("stock client handshook through the censor: %q", hs)
		}
		if n := testutil.CensorDrops(t, i.ns, "wg_fingerprint"); n == 0 {
			t.Error("the censor dropped nothing: the stock client failed for another reason")
		}
	})

	testutil.Uncensor(t, i.ns)

	t.Run("stock without the censor", func(t *testing.T) {
		stock.mustReach("stock WireGuard, censor lifted")
		alt.up()
		alt.mustReach("stock WireGuard on 443")
		if ep := alt.ns.Run("wg", "show", "wgalt", "endpoints"); !strings.Contains(ep, "10.10.1.1:443") {
			t.Errorf("the server answered port 443's client from elsewhere: %q", ep)
		}
		awg.mustReach("AmneziaWG, censor lifted")
	})

	out := l.server.Run("wg", "show", l.iface)
	if !strings.Contains(out, "listening port: 51820") || strings.Count(out, "latest handshake") != 3 {
		t.Errorf("wg show %s on the server:\n%s", l.iface, out)
	}
}
