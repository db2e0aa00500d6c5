//go:build linux

package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"

	"github.com/tariq-vpn/tariq/internal/certs"
	"github.com/tariq-vpn/tariq/internal/testutil"
)

// The censor lab (issue 6): which of tariq's paths still carry traffic
// under each kind of blocking, measured with real clients.
//
// The lab's topology with its ISP (lab_test.go):
//
//	device namespaces ── ISP (routes, NATs, applies one censor profile) ── server (tariq) ── internet
//	  awg    10.10.3.2   amneziawg-go, the obfuscated config (UDP 51821)
//	  stock  10.10.4.2   upstream wireguard-go, the stock config (UDP 51820)
//	  web    10.10.5.2   headless Chromium: relay-only WebRTC calls; the invite page;
//	                     the member's own client, either WireGuard form or Outline
//	  ol     10.10.6.2   an Outline client (outline-sdk, the Outline app's code path)
//	ISP 10.10.1.2 ── 10.10.1.1 server tariq.test: WireGuard on UDP 51820 and 443 (stock)
//	                 and 51821 (AmneziaWG), TURN on UDP+TCP 3478 and TLS 5349, the HTTPS
//	                 page, TURN over TLS and Outline (Shadowsocks over WebSocket) on 443;
//	                 NAT out of 10.10.2.1 ── 10.10.2.2 internet (HTTP, a TCP sink, a UDP echo)
//
// The server is a DNS name, tariq.test, with a certificate from Pebble
// (ACME: tls.mode acme, the real HTTP-01 or TLS-ALPN-01 challenge answered
// by the daemon; see lab_test.go), as the Outline app needs a certificate
// it trusts.
//
// The profiles are nftables rulesets in internal/testutil/censor/, loaded
// one at a time in the ISP namespace (table inet tariq_censor, never the
// host's). Under each, every path must carry real traffic to count:
//
//	stock / obfuscated WireGuard  a fresh client (new source port, new
//	        handshake) dials the internet host's TCP sink through the tunnel
//	        and sends it 2 MiB, which the sink acknowledges as received from
//	        the server's uplink address (NAT);
//	TURN over UDP, TCP, TLS 5349, TLS 443  headless Chromium in the device
//	        network places a call between two relay-only peer connections
//	        (both relayed through tariq, so the call's other end is the same
//	        server), exchanges a message each way on a data channel, and
//	        sends a voice-like stream (50 packets of 160 bytes a second for
//	        4 s, unordered and unretransmitted) of which 80 % must arrive;
//	        getStats() must show a relay-to-relay pair over that protocol on
//	        both sides. Chromium cannot be given a test root: it pins the
//	        daemon's certificate from Pebble by its SPKI hash;
//	Outline an independent client following the Outline app's own code
//	        path (outline-sdk's x/websocket endpoints under transport/
//	        shadowsocks dialers, testutil.NewOutlineClient) fetches the
//	        member's config document from their ssconf:// key over HTTPS,
//	        trusting Pebble's root alone (the app refetches it on every
//	        connect: so does the lab, under each profile), sends the sink
//	        2 MiB over TCP as above, and carries a voice-like UDP stream to
//	        the internet host's echo (160 bytes, 50 packets a second for
//	        5 s) with at most 2 % lost; the table gives its round trips'
//	        median and 99th percentile.
//
// In the same run the invite page's reachability check runs from the same
// device network under each profile (a second browser tab), and its advice
// and ticked paths must match the table; `tariq status` must show them.
// Where the page advises a VPN app, the member then goes on: downloads the
// settings with the page's button, switches the client on in the browser's
// own namespace (a full tunnel, which takes the page's requests too, as on
// a phone) and keeps the page open, whose confirmation must end on the
// path the table finds working: under profile 2, after its countdown finds
// no stock handshake, by switching her to the AmneziaWG form. Where it
// advises the Outline app (no UDP path: profiles 1, 3 and 4), she shows
// her key on the page, her Outline client connects with it from the
// browser's namespace, and the page must say connected.
//
// -censor-lab.table FILE writes the table as Markdown (scripts/censor-lab.sh
// uses it).

var censorTableFile = flag.String("censor-lab.table", "", "write the censor lab's table (Markdown) to this file")

// censorProfile is one row of the lab: a ruleset and what it must leave.
type censorProfile struct {
	name    string // as the table shows it
	file    string // in internal/testutil/censor; "" for no censor
	counter string // the ruleset's drop counter
	// want is the paths expected to work, in censorPaths order.
	want [7]bool
	// page is the invite page's expected first advice, from its check.
	// Under profile 2 the check advises stock WireGuard although the lab
	// finds it blocked: a browser can only send STUN, which a censor keyed
	// on WireGuard's handshake lets through (see the README).
	page string
	// final is the advice the member ends with once the page's
	// confirmation has run (only where the check advises a VPN app): under
	// profile 2, AmneziaWG, switched to when no stock handshake arrived;
	// where no UDP path works, Outline.
	final string
}

var censorPaths = [7]string{"Stock WireGuard", "Obfuscated WireGuard", "TURN UDP", "TURN TCP", "TURN TLS 5349", "TURN TLS 443", "Outline"}

// outlinePath is Outline's index in censorPaths.
const outlinePath = 6

var censorProfiles = []censorProfile{
	{"none", "", "", [7]bool{true, true, true, true, true, true, true}, "wireguard", "wireguard"},
	{"1. all UDP dropped except DNS", "udp-blocked.nft", "udp_dropped", [7]bool{false, false, false, true, true, true, true}, "outline", "outline"},
	{"2. WireGuard fingerprint dropped", "wg-fingerprint.nft", "wg_fingerprint", [7]bool{false, true, true, true, true, true, true}, "wireguard", "amneziawg"},
	{"3. only TCP 80 and 443", "tcp-web-only.nft", "blocked", [7]bool{false, false, false, false, false, true, true}, "outline", "outline"},
	{"4. UDP throttled after 3 s / 150 packets", "udp-throttle.nft", "throttled", [7]bool{false, false, false, true, true, true, true}, "outline", "outline"},
}

// censorLab is the topology, brought up once for every profile.
type censorLab struct {
	*lab
	stock, awg *device
	member     *device // the family member's client, in the browser's namespace (interface wgweb)
	memberName string  // the member's peer, whose one-time link invite is
	outline    *device // the Outline column's client's namespace (no WireGuard client)
	outlineKey string  // its member's ssconf:// key
	browser    *testutil.Browser
	callTab    context.Context // the lab's calls
	pageTab    context.Context // the invite page
	callPage   string
	turnUser   string
	turnPass   string
	invite     string // the member's one-time link
	roots      *x509.CertPool
}

func newCensorLab(t *testing.T) *censorLab {
	testutil.RequireRoot(t)
	testutil.RequireBinary(t, "chromium")
	l := newLab(t, labOptions{ISP: true, ACME: true, Config: map[string]string{
		"server.metrics_listen":       `""`,
		"vpn.outline.enabled":         "true",
		"vpn.extra_ports":             "[443]",
		"vpn.obfuscation.enabled":     "true",
		"vpn.obfuscation.listen_port": "51821",
		"relay.enabled":               "true",
		"relay.relay_ip":              "[" + labServer + "]",
		"web.enabled":                 "true",
		"web.listen":                  `[":443"]`,
	}})
	c := &censorLab{lab: l}
	// ct packets (profile 4) needs conntrack accounting where the ISP forwards.
	l.isp.Run("sysctl", "-qw", "net.netfilter.nf_conntrack_acct=1")
	c.awg = l.addDevice("awg", "--obfuscated")
	c.stock = l.addDevice("stock")
	// The member's client runs beside the browser, so while it is on it
	// takes the browser's traffic too, as the WireGuard app does a phone's.
	c.member = l.newDevice("web")
	// The Outline column's member, whose key prints in one line.
	c.outline = l.newDevice("ol")
	c.outlineKey = strings.TrimSpace(l.cli("peer", "add", "ol", "--outline"))
	// veth carries GSO superpackets (wireguard-go and tariq send UDP GSO):
	// a router on a real link sees every datagram, so have the senders
	// segment before the ISP does (a packet-counting censor, profile 4,
	// would otherwise count 64 KB as one).
	for _, d := range []*device{c.awg, c.stock, c.member, c.outline} {
		d.ns.Run("ip", "link", "set", "dev", "eth0", "gso_max_segs", "1")
	}
	l.server.Run("ip", "link", "set", "dev", "isp0", "gso_max_segs", "1")

	// A family member with a one-time link, whose page runs the check.
	c.newMember("mom", true)
	code, out, errOut := tariq(t, "turn", "credentials", "--json", "--user", "lab", "--ttl", "1h", "--config", l.conf)
	var cred struct{ Username, Password string }
	if code != 0 || json.Unmarshal([]byte(out), &cred) != nil {
		t.Fatalf("turn credentials: %d %s %s", code, out, errOut)
	}
	c.turnUser, c.turnPass = cred.Username, cred.Password
	c.roots = l.roots

	// The calls' page, served inside the device network on its loopback
	// (a secure context for WebRTC, and no path through the censor).
	var ln net.Listener
	if err := c.member.ns.Do(func() (err error) { ln, err = net.Listen("tcp", "127.0.0.1:0"); return err }); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		io.WriteString(w, labCallPage)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	c.callPage = "http://" + ln.Addr().String() + "/"

	c.browser = browserIn(t, c.member.ns, testutil.BrowserOptions{
		Timeout: 5 * time.Minute,
		// The offline resolver rules catch IP literals too, and Chromium
		// resolves the TURN server of a TCP or TLS allocation. WebRTC asks
		// for a STUN or TURN server's name over UDP as a fully qualified
		// one, with the final dot.
		HostMap: map[string]string{labServer: labServer, labName: labServer, labName + ".": labServer},
		Flags: map[string]any{
			"ignore-certificate-errors-spki-list": certs.SPKIHash(l.cert),
			// Two tabs run at once: keep the one in the background from
			// having its timers (the stream's 20 ms ticks) throttled.
			"disable-background-timer-throttling":    true,
			"disable-renderer-backgrounding":         true,
			"disable-backgrounding-occluded-windows": true,
		},
	})
	c.callTab = c.browser.Context()
	tab, cancel := chromedp.NewContext(c.browser.Context())
	t.Cleanup(cancel)
	if err := chromedp.Run(tab); err != nil { // opens the second tab
		t.Fatalf("opening a second tab: %v", err)
	}
	c.pageTab = tab
	if err := c.browser.RunTimeout(20*time.Second, chromedp.Navigate(c.callPage)); err != nil {
		t.Fatalf("loading the call page: %v", err)
	}
	return c
}

// newMember gives the lab's family member a fresh one-time link: to a new
// peer called name (add), or a new link to the same peer, whose last one is
// used up.
func (c *censorLab) newMember(name string, add bool) {
	t := c.t
	t.Helper()
	verb := "show"
	if add {
		verb = "add"
	}
	code, out, errOut := tariq(t, "peer", verb, name, "--invite", "--config", c.conf)
	if code != 0 {
		t.Fatalf("peer %s %s --invite: %s", verb, name, errOut)
	}
	c.invite, c.memberName = strings.TrimSpace(out), name
}

// peerShow is `tariq peer show name`: the peer's config in its stored form.
func (c *censorLab) peerShow(name string) string {
	c.t.Helper()
	code, out, errOut := tariq(c.t, "peer", "show", name, "--config", c.conf)
	if code != 0 {
		c.t.Fatalf("peer show %s: %s", name, errOut)
	}
	return out
}

// tunnelWorks brings a fresh client up on d and reports whether a 2 MiB
// TCP transfer crossed the tunnel to the internet host, NATed out of the
// server, within bounded time.
func (c *censorLab) tunnelWorks(d *device) (bool, string) {
	d.up()
	defer d.down()
	const size = 2 << 20
	got, err := d.transfer("10.10.2.2:5001", size, 10*time.Second)
	if err != nil {
		return false, err.Error()
	}
	if !strings.HasPrefix(got, fmt.Sprintf("%d 10.10.2.1:", size)) {
		return false, fmt.Sprintf("the sink answered %q", got)
	}
	return true, got
}

// outlineWorks measures the Outline path from the Outline column's
// namespace, as the app would connect there: it fetches the config
// document from the member's key, builds the client from it, sends the
// internet host's sink 2 MiB over TCP (which must see the server's uplink
// address), then a voice-like UDP stream to its echo, of which at most
// 2 % may be lost. It reports whether both got through, why not, and the
// stream's measurements.
func (c *censorLab) outlineWorks() (bool, string, testutil.VoiceResult) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := c.outlineClient(ctx, c.outline.ns, c.outlineKey)
	if err != nil {
		return false, err.Error(), testutil.VoiceResult{}
	}
	const size = 2 << 20
	conn, err := cl.Stream.DialStream(ctx, "10.10.2.2:5001")
	if err != nil {
		return false, fmt.Sprintf("no TCP stream through Outline: %v", err), testutil.VoiceResult{}
	}
	got, err := sinkTransfer(conn, size, 10*time.Second)
	if err != nil || !strings.HasPrefix(got, fmt.Sprintf("%d 10.10.2.1:", size)) {
		return false, fmt.Sprintf("TCP through Outline: the sink answered %q (%v)", got, err), testutil.VoiceResult{}
	}
	pc, err := cl.Packet.ListenPacket(ctx)
	if err != nil {
		return false, fmt.Sprintf("no UDP association through Outline: %v", err), testutil.VoiceResult{}
	}
	defer pc.Close()
	v, err := testutil.Voice(pc, &net.UDPAddr{IP: net.IPv4(10, 10, 2, 2), Port: 5003}, testutil.CallVoice(5*time.Second))
	switch {
	case err != nil:
		return false, fmt.Sprintf("UDP through Outline: %v (%v)", err, v), v
	case v.LossPercent() > 2:
		return false, fmt.Sprintf("UDP through Outline: %v, want at most 2 %% lost", v), v
	}
	return true, fmt.Sprintf("TCP: %s; UDP: %v", got, v), v
}

// outlineClient fetches key's config document from ns as the Outline app
// does on every connect (HTTPS, trusting Pebble's root alone; the lab's
// names resolved by the lab) and builds the client from it, dialling from
// ns.
func (c *censorLab) outlineClient(ctx context.Context, ns *testutil.NetNS, key string) (*testutil.OutlineClient, error) {
	dial := c.dialer(ns)
	f, err := testutil.FetchOutlineConfig(ctx, key, c.roots, dial)
	if err != nil {
		return nil, fmt.Errorf("fetching the Outline config document of %s: %w", key, err)
	}
	cl, err := testutil.NewOutlineClient(f.Config, c.roots, dial)
	if err != nil {
		return nil, fmt.Errorf("building the Outline client: %w", err)
	}
	return cl, nil
}

// labCall is one relay-only call's outcome, from labCallPage.
type labCall struct {
	Error     string                  `json:"error"`
	Received1 string                  `json:"received1"`
	Received2 string                  `json:"received2"`
	Sent      int                     `json:"sent"`
	Got       int                     `json:"got"`
	PC1       *testutil.CandidatePair `json:"pc1"`
	PC2       *testutil.CandidatePair `json:"pc2"`
	Log       []string                `json:"log"`
}

// works reports whether the call carried its messages and most of its
// stream over relay-to-relay pairs using protocol on both sides.
func (r labCall) works(protocol string) (bool, string) {
	switch {
	case r.Error != "":
		return false, r.Error
	case r.Received2 != "ping from pc1" || r.Received1 != "pong from pc2":
		return false, fmt.Sprintf("messages %q %q", r.Received2, r.Received1)
	case r.PC1 == nil || r.PC2 == nil:
		return false, "no selected candidate pair"
	}
	for _, p := range []*testutil.CandidatePair{r.PC1, r.PC2} {
		if p.LocalType != "relay" || p.RemoteType != "relay" || p.RelayProtocol != protocol {
			return false, fmt.Sprintf("pair %s → %s over %q, want relay → relay over %s", p.LocalType, p.RemoteType, p.RelayProtocol, protocol)
		}
	}
	if r.Sent == 0 || r.Got*5 < r.Sent*4 {
		return false, fmt.Sprintf("stream: %d of %d packets arrived", r.Got, r.Sent)
	}
	return true, fmt.Sprintf("%d/%d packets, %s → %s", r.Got, r.Sent, r.PC1.LocalAddress, r.PC1.RemoteAddress)
}

// turnWorks places the four calls at once and reports each path.
func (c *censorLab) turnWorks() (map[string]bool, map[string]string) {
	servers := map[string]map[string]string{}
	proto := map[string]string{"TURN UDP": "udp", "TURN TCP": "tcp", "TURN TLS 5349": "tls", "TURN TLS 443": "tls"}
	for name, url := range map[string]string{
		"TURN UDP":      "turn:" + c.host + ":3478?transport=udp",
		"TURN TCP":      "turn:" + c.host + ":3478?transport=tcp",
		"TURN TLS 5349": "turns:" + c.host + ":5349?transport=tcp",
		"TURN TLS 443":  "turns:" + c.host + ":443?transport=tcp",
	} {
		servers[name] = map[string]string{"urls": url, "username": c.turnUser, "credential": c.turnPass}
	}
	arg, _ := json.Marshal(servers)
	var calls map[string]labCall
	ok, why := map[string]bool{}, map[string]string{}
	ctx, cancel := context.WithTimeout(c.callTab, 40*time.Second)
	defer cancel()
	if err := chromedp.Run(ctx, chromedp.Navigate(c.callPage), testutil.EvalJSON(fmt.Sprintf("labCalls(%s, 8000, 4000)", arg), &calls)); err != nil {
		c.t.Errorf("running the calls: %v", err) // not Fatal: this runs on a goroutine of its own
	}
	for name, p := range proto {
		ok[name], why[name] = calls[name].works(p)
		if !ok[name] {
			why[name] += "\n\t\t" + strings.Join(calls[name].Log, "\n\t\t")
		}
	}
	return ok, why
}

// pageResult is what the invite page showed once its check finished.
type pageResult struct {
	State   string          `json:"state"`
	Verdict string          `json:"verdict"`
	Form    string          `json:"form"`
	Paths   map[string]bool `json:"paths"`  // ticked (true) or crossed (false); untested paths absent
	Shown   []string        `json:"shown"`  // ids of the verdict paragraphs shown
	Text    string          `json:"text"`   // their text
	Reveal  string          `json:"reveal"` // the form the reveal asks for: "" (the peer's own), amneziawg, wireguard-PORT, outline
	Steps   []string        `json:"steps"`  // the steps shown: steps (WireGuard's), outline-steps
	Secret  bool            `json:"secret"` // the page carries a download or a QR code
	Dir     string          `json:"dir"`
	Confirm string          `json:"confirm"` // the confirmation's state
}

const readCheck = `(() => {
	const s = document.getElementById('reach');
	if (!s || s.hidden || s.dataset.state === 'checking') return null;
	const shown = [...s.querySelectorAll('p[id^="verdict-"]')].filter((e) => !e.hidden);
	return {
		state: s.dataset.state, verdict: s.dataset.verdict || '', form: s.dataset.form || '',
		paths: Object.fromEntries([...s.querySelectorAll('#reach-list li')].filter((li) => li.dataset.ok)
			.map((li) => [li.dataset.path, li.dataset.ok === 'true'])),
		shown: shown.map((e) => e.id), text: shown.map((e) => e.innerText.trim()).join('\n'),
		reveal: ((f) => f.elements.form.value + (f.elements.port.value ? '-' + f.elements.port.value : ''))(document.getElementById('reveal')),
		secret: /data:/.test(document.documentElement.outerHTML),
		dir: getComputedStyle(s).direction,
		confirm: (document.getElementById('confirm') || {dataset: {}}).dataset.state || '',
		steps: ['steps', 'outline-steps'].filter((id) => { const e = document.getElementById(id); return e && !e.hidden; }),
	};
})()`

// runPage opens the invite link (with query q) in the page tab and waits
// for the check's advice.
func (c *censorLab) runPage(q string) (pageResult, error) {
	ctx, cancel := context.WithTimeout(c.pageTab, 40*time.Second)
	defer cancel()
	if err := chromedp.Run(ctx, chromedp.Navigate(c.invite+q)); err != nil {
		return pageResult{}, err
	}
	for {
		var raw []byte
		if err := chromedp.Run(ctx, testutil.EvalJSON(readCheck, &raw)); err != nil {
			return pageResult{}, err
		}
		if string(raw) != "null" {
			var r pageResult
			return r, json.Unmarshal(raw, &r)
		}
		select {
		case <-ctx.Done():
			return pageResult{}, fmt.Errorf("no advice within 40 s")
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// labRow is one profile's measurements.
type labRow struct {
	profile censorProfile
	works   [7]bool
	why     [7]string
	voice   testutil.VoiceResult // the Outline column's stream
	page    pageResult
	pageErr error
	// final is the advice the page's confirmation ended on ("" if it did
	// not run), switched whether it got there by switching to AmneziaWG.
	final    string
	switched bool
	drops    int
	took     time.Duration
}

// TestCensorLab measures every path under every censor profile, checks
// the expected table (at least one path works under each), and checks the
// invite page's reachability check gives the matching advice from the
// same network, which `tariq status` then shows. Where the check advises
// a VPN app, the member follows it through the page and the confirmation
// must end on a path the table finds working: stock WireGuard connects
// with no profile; under profile 2 the page finds no stock handshake,
// switches her to the AmneziaWG form (the link's one second download) and
// then says connected; where no UDP path works (profiles 1, 3 and 4) the
// page advises the Outline app, shows her key, and says connected once
// her Outline client used it. A network blocking only the stock ports
// gets the AmneziaWG advice and download from the start; the results
// survive a restart.
//
// Each profile is a subtest on the one lab (named by profile.key:
// `-run 'TestCensorLab/2'` reruns profile 2 alone, its row the table's
// only one), and so is the stock-ports network with the restart.
func TestCensorLab(t *testing.T) {
	start := time.Now()
	c := newCensorLab(t)
	t.Logf("lab up in %s", time.Since(start).Round(100*time.Millisecond))
	en, ar := inviteStrings(t, "en"), inviteStrings(t, "ar")

	var rows []labRow
	ran := map[string]bool{}
	for _, prof := range censorProfiles {
		t.Run(prof.key(), func(t *testing.T) {
			defer c.reportTo(t)()
			ran[prof.key()] = true
			rows = append(rows, c.runProfile(t, prof, en, ar))
		})
	}

	table := censorTable(rows)
	t.Logf("censor lab:\n%s", table)
	if *censorTableFile != "" {
		if err := os.WriteFile(*censorTableFile, []byte(table), 0o644); err != nil {
			t.Error(err)
		}
	}

	t.Run("stock-ports-blocked", func(t *testing.T) {
		defer c.reportTo(t)()
		// A network that blocks only the stock WireGuard ports: the page
		// advises AmneziaWG and its download serves that form, same keys.
		testutil.Censor(t, c.isp, `table inet tariq_censor {
	chain forward {
		type filter hook forward priority filter; policy accept;
		udp dport { 51820, 443 } drop
	}
}
`)
		r, err := c.runPage("")
		testutil.Uncensor(t, c.isp)
		if err != nil || r.Verdict != "amneziawg" || r.Form != "amneziawg-51821" || !slices.Equal(r.Shown, []string{"verdict-amneziawg"}) ||
			r.Paths["wg-51820"] || r.Paths["wg-443"] || !r.Paths["awg-51821"] || r.Reveal != "amneziawg" || r.Secret {
			t.Fatalf("stock ports blocked: page %+v %v", r, err)
		}
		stockConf := c.peerShow(c.memberName)
		got, err := c.revealDownload()
		if err != nil {
			t.Fatalf("stock ports blocked: %v", err)
		}
		v, own := confValues(got), confValues(stockConf)
		if v["Peer.Endpoint"] != c.host+":51821" || v["Interface.Jc"] == "" || v["Interface.PrivateKey"] != own["Interface.PrivateKey"] ||
			v["Interface.Address"] != own["Interface.Address"] || v["Peer.PresharedKey"] != own["Peer.PresharedKey"] {
			t.Errorf("the AmneziaWG download:\n%s\nthe peer's own config:\n%s", got, stockConf)
		}
		if shown := c.peerShow(c.memberName); shown != got {
			t.Errorf("after the AmneziaWG download, peer show %s prints\n%s\nwant what was downloaded:\n%s", c.memberName, shown, got)
		}
		if resp := c.reveal("form=amneziawg"); resp.StatusCode != http.StatusGone {
			t.Errorf("a second reveal: %d, want 410 (used; no switch from AmneziaWG)", resp.StatusCode)
		}
		c.checkStatus(c.memberName, "AmneziaWG app, UDP 51821", "-")

		// Kept in the store: a restart still shows the last checks, and the
		// switch under profile 2 with its confirmation.
		c.stopDaemon()
		c.startDaemon()
		c.checkStatus(c.memberName, "AmneziaWG app, UDP 51821", "-")
		if ran[censorProfiles[2].key()] {
			c.checkStatus("mom", "AmneziaWG app, UDP 51821", "connected (stock handshake never arrived, switched to AmneziaWG)")
		}
		if out := c.cli("status"); testing.Verbose() {
			t.Logf("tariq status after a restart:\n%s", out)
		}
		c.stopDaemon() // a clean exit, which removes its UAPI socket and nftables table
	})
	t.Logf("whole lab: %s", time.Since(start).Round(100*time.Millisecond))
}

// key names prof's subtest: "none", or its number and ruleset
// ("2-wg-fingerprint").
func (prof censorProfile) key() string {
	if prof.file == "" {
		return "none"
	}
	n, _, _ := strings.Cut(prof.name, ".")
	return n + "-" + strings.TrimSuffix(prof.file, ".nft")
}

// runProfile measures every path under prof, runs the invite page's check
// and, where it advises a VPN app, the member's confirmation, and checks
// the row against prof.
func (c *censorLab) runProfile(t *testing.T, prof censorProfile, en, ar map[string]string) labRow {
	t0 := time.Now()
	row := labRow{profile: prof}
	if prof.file != "" {
		rules, err := os.ReadFile(filepath.Join("..", "..", "internal", "testutil", "censor", prof.file))
		if err != nil {
			t.Fatal(err)
		}
		testutil.Censor(t, c.isp, string(rules))
	}
	lang, tr, dir := "", en, "ltr"
	if prof.file == "wg-fingerprint.nft" {
		// One profile read in Arabic, right to left: the one whose
		// confirmation switches.
		lang, tr, dir = "?lang=ar", ar, "rtl"
	}
	var wg sync.WaitGroup
	var took [6]time.Duration
	timed := func(i int, fn func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			fn()
			took[i] = time.Since(t0).Round(100 * time.Millisecond)
		}()
	}
	timed(0, func() { row.works[0], row.why[0] = c.tunnelWorks(c.stock) })
	timed(1, func() { row.works[1], row.why[1] = c.tunnelWorks(c.awg) })
	timed(2, func() {
		ok, why := c.turnWorks()
		for i := 2; i < 6; i++ {
			row.works[i], row.why[i] = ok[censorPaths[i]], why[censorPaths[i]]
		}
	})
	timed(3, func() { row.page, row.pageErr = c.runPage(lang) })
	timed(5, func() { row.works[outlinePath], row.why[outlinePath], row.voice = c.outlineWorks() })
	wg.Wait()

	// The page's check, from the same network, under the same profile.
	c.checkPage(row, tr, dir)
	// The member follows the advice, under the same profile; then she
	// (or, once switched, a new member) gets a new link.
	if prof.final != "" && row.pageErr == nil && row.page.Verdict == prof.page {
		t1 := time.Now()
		if prof.page == "outline" {
			row.final = c.confirmOutline(prof, tr, dir)
		} else {
			row.final, row.switched = c.confirmPage(prof, tr, dir)
		}
		took[4] = time.Since(t1).Round(100 * time.Millisecond)
		if row.switched {
			c.newMember("dad", true)
		} else {
			c.newMember(c.memberName, false)
		}
	}
	if prof.file != "" {
		row.drops = testutil.CensorDrops(t, c.isp, prof.counter)
		testutil.Uncensor(t, c.isp)
	}
	row.took = time.Since(t0)
	n := 0
	for _, ok := range row.works {
		if ok {
			n++
		}
	}
	t.Logf("%s: %d of %d paths work, in %s (stock %s, obfuscated %s, calls %s, page %s, Outline %s, confirmation %s; censor dropped %d packets)", prof.name,
		n, len(row.works), row.took.Round(100*time.Millisecond), took[0], took[1], took[2], took[3], took[5], took[4], row.drops)
	if row.works[outlinePath] {
		t.Logf("\tOutline: %s", row.why[outlinePath])
	}

	for i, ok := range row.works {
		if !ok {
			first, _, _ := strings.Cut(row.why[i], "\n")
			t.Logf("\t%s blocked: %s", censorPaths[i], first)
		}
	}

	// The table.
	for i, want := range prof.want {
		if row.works[i] != want {
			t.Errorf("%s: %s works=%v, want %v: %s", prof.name, censorPaths[i], row.works[i], want, row.why[i])
		}
	}
	if !slices.Contains(row.works[:], true) {
		t.Errorf("%s: no path works", prof.name)
	}
	if prof.file != "" && row.drops == 0 {
		t.Errorf("%s: the censor dropped nothing", prof.name)
	}
	// The advice the member ends with is a path the table finds working.
	if row.final != prof.final || (row.final == "wireguard" && !row.works[0]) || (row.final == "amneziawg" && !row.works[1]) ||
		(row.final == "outline" && !row.works[outlinePath]) || row.switched != (row.final == "amneziawg" && row.page.Verdict == "wireguard") {
		t.Errorf("%s: the page ends on %q (switched %v), want %q; stock works %v, obfuscated %v, Outline %v", prof.name,
			row.final, row.switched, prof.final, row.works[0], row.works[1], row.works[outlinePath])
	}
	return row
}

// pageExpect maps a lab row to what the page must tick: its probes test
// UDP to each WireGuard port, TURN over UDP (with a sustained stream), TCP
// and TLS on 443, and a WebSocket on 443 (the Outline app's path).
func pageExpect(row labRow) map[string]bool {
	stockUDP := row.works[0]
	if row.profile.file == "wg-fingerprint.nft" {
		stockUDP = true // the port answers STUN; only WireGuard's handshake is dropped
	}
	want := map[string]bool{
		"wg-51820": stockUDP, "wg-443": stockUDP, "awg-51821": row.works[1],
		"turn-udp": row.works[2], "turn-tcp": row.works[3], "turns-443": row.works[5],
		"outline-443": row.works[outlinePath],
	}
	if row.works[2] || row.profile.file == "udp-throttle.nft" { // the stream runs once a relay is allocated
		want["udp-sustained"] = row.works[2]
	}
	return want
}

func (c *censorLab) checkPage(row labRow, tr map[string]string, dir string) {
	t := c.t
	t.Helper()
	r, name := row.page, row.profile.name
	if row.pageErr != nil {
		t.Errorf("%s: the invite page: %v", name, row.pageErr)
		return
	}
	if diff := mapDiff(pageExpect(row), r.Paths); diff != "" || r.Verdict != row.profile.page || r.State != "done" {
		t.Errorf("%s: the page advises %q (state %s), ticks %v; want %q and %v%s", name, r.Verdict, r.State, r.Paths, row.profile.page, pageExpect(row), diff)
	}
	if want := tr["verdict_"+row.profile.page]; r.Text != want || r.Dir != dir {
		t.Errorf("%s: the page says (%s)\n%s\nwant (%s)\n%s", name, r.Dir, r.Text, dir, want)
	}
	// The reveal: the member's own form, or her Outline key where that is
	// the advice, with Outline's steps instead of WireGuard's.
	wantForm, wantSteps := "", []string{"steps"}
	if row.profile.page == "outline" {
		wantForm, wantSteps = "outline", []string{"outline-steps"}
	}
	if r.Form != wantForm || r.Reveal != wantForm || !slices.Equal(r.Steps, wantSteps) {
		t.Errorf("%s: the page points the reveal at %q (%s), shows steps %v; want %q and %v", name, r.Form, r.Reveal, r.Steps, wantForm, wantSteps)
	}
	// Nothing is revealed before the member asks: no settings, and no
	// confirmation yet.
	if r.Secret || r.Confirm != "idle" {
		t.Errorf("%s: after the check, settings on the page %v, the confirmation %q", name, r.Secret, r.Confirm)
	}
	advice := map[string]string{"wireguard": "WireGuard app, UDP 51820", "calls": "VPN blocked; relayed calls work",
		"outline": "Outline app (no UDP path)"}[row.profile.page]
	c.checkStatus(c.memberName, advice, "-")
}

// confirmView is what the page's confirmation shows.
type confirmView struct {
	State     string `json:"state"`
	Text      string `json:"text"`      // its paragraphs shown
	Button    bool   `json:"button"`    // "I have switched it on"
	AWGReveal bool   `json:"awgReveal"` // "Show AmneziaWG settings"
	AWGAction string `json:"awgAction"` // where it posts
	AWGHref   string `json:"awgHref"`
	AWGQR     string `json:"awgQR"`
	MainShown bool   `json:"mainShown"` // the first download button
	Dir       string `json:"dir"`
	Align     string `json:"align"` // start: right in Arabic
}

const readConfirm = `(() => {
	const s = document.getElementById('confirm');
	if (!s) return null;
	const seen = (e) => !!e && e.offsetParent !== null;
	const shown = [...s.querySelectorAll('p[id^="confirm-"]')].filter(seen);
	const a = document.getElementById('download-amneziawg'), qr = document.getElementById('qr-amneziawg');
	return {
		state: s.dataset.state, text: shown.map((e) => e.innerText.trim()).join('\n'),
		button: seen(document.getElementById('confirm-button')),
		awgReveal: seen(document.getElementById('reveal-amneziawg-button')),
		awgAction: (document.getElementById('reveal-amneziawg') || {}).action || '',
		awgHref: seen(a) ? a.href : '', awgQR: seen(qr) && qr.complete && qr.naturalWidth > 0 ? qr.src : '',
		mainShown: seen(document.getElementById('download')),
		dir: getComputedStyle(s).direction, align: shown.length ? getComputedStyle(shown[0]).textAlign : '',
	};
})()`

// waitConfirm waits until the confirmation reaches state, or says why not.
func (c *censorLab) waitConfirm(state string, within time.Duration) (confirmView, error) {
	v, err := c.waitConfirmView(within, func(v confirmView) bool { return v.State == state })
	if err != nil {
		return v, fmt.Errorf("the confirmation is %q (%q), not %q: %w", v.State, v.Text, state, err)
	}
	return v, nil
}

// waitConfirmView waits until the confirmation shows what ok wants.
func (c *censorLab) waitConfirmView(within time.Duration, ok func(confirmView) bool) (confirmView, error) {
	ctx, cancel := context.WithTimeout(c.pageTab, within)
	defer cancel()
	var v confirmView
	for {
		if err := chromedp.Run(ctx, testutil.EvalJSON(readConfirm, &v)); err != nil {
			return v, fmt.Errorf("reading the confirmation (state %q): %w", v.State, err)
		}
		if ok(v) {
			return v, nil
		}
		select {
		case <-ctx.Done():
			return v, fmt.Errorf("not within %s", within)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// confirmPage is the member's way on from the page's advice of stock
// WireGuard, under the current profile: she reveals the settings and
// downloads them with the page's buttons, switches the client on
// (upstream wireguard-go, a full tunnel beside the browser) and keeps the
// page open. If the table says stock WireGuard works, the page must say
// connected without being told. Else she presses "I have switched it on";
// the countdown must end in the AmneziaWG offer (the stock QR code and
// download gone); she switches WireGuard off, reveals that form (the
// link's switch) and downloads it, switches amneziawg-go on, presses the
// button again, and the page must say connected. It returns the form she ends on and whether it switched;
// `tariq status` and `tariq peer show` must agree at every step.
func (c *censorLab) confirmPage(prof censorProfile, tr map[string]string, dir string) (final string, switched bool) {
	t := c.t
	t.Helper()
	name, ownConf := prof.name, c.peerShow(c.memberName)
	conf, err := c.revealDownload()
	if err != nil || conf != ownConf {
		t.Errorf("%s: the page's download (%v):\n%s\nwant what peer show prints:\n%s", name, err, conf, ownConf)
		return "", false
	}
	c.member.conf = conf
	c.member.up()
	if prof.want[0] {
		v, err := c.waitConfirm("connected", 20*time.Second)
		c.member.down()
		if err != nil || v.Text != tr["confirm_connected"] || v.Dir != dir || v.Button {
			t.Errorf("%s: a stock tunnel that works: %+v %v", name, v, err)
			return "", false
		}
		c.checkStatus(c.memberName, "WireGuard app, UDP 51820", "connected")
		return "wireguard", false
	}

	// Blocked: she says it is on, and the countdown finds no handshake.
	if err := chromedp.Run(c.pageTab, chromedp.Click("#confirm-button", chromedp.ByID)); err != nil {
		c.member.down()
		t.Errorf("%s: pressing %q: %v", name, tr["confirm_button"], err)
		return "", false
	}
	if v, err := c.waitConfirm("waiting", 5*time.Second); err != nil || !strings.HasPrefix(v.Text, tr["confirm_waiting"]) {
		t.Errorf("%s: the countdown: %+v %v", name, v, err)
	}
	v, err := c.waitConfirm("switch", 45*time.Second)
	c.member.down() // she switches WireGuard off, as the page says
	if err != nil {
		t.Errorf("%s: no switch to AmneziaWG: %v", name, err)
		return "", false
	}
	want := c.invite
	if dir == "rtl" {
		want += "?lang=ar"
	}
	if v.Text != tr["confirm_switch"] || v.Dir != dir || v.Align != "start" || !v.AWGReveal || v.AWGAction != want ||
		v.AWGHref != "" || v.AWGQR != "" || v.MainShown || v.Button {
		t.Errorf("%s: the switch shows %+v; want (%s) %q, its reveal posting to %s, no settings before it, the stock download gone", name, v, dir, tr["confirm_switch"], want)
	}
	c.checkStatus(c.memberName, "WireGuard app, UDP 51820", "-") // nothing changes before she takes it

	// The switched reveal: the same keys, in the AmneziaWG form, which is
	// now the peer's.
	err = chromedp.Run(c.pageTab, chromedp.Click("#reveal-amneziawg-button", chromedp.ByID))
	if err == nil {
		v, err = c.waitConfirmView(5*time.Second, func(v confirmView) bool { return v.AWGQR != "" })
	}
	if err != nil || !strings.HasPrefix(v.AWGHref, "data:") || !strings.HasPrefix(v.AWGQR, "data:image/png") || v.AWGReveal || !v.Button || v.State != "switch" {
		t.Errorf("%s: the switched reveal shows %+v (%v); want its download, its QR code and the button", name, v, err)
		return "", false
	}
	awgConf, err := c.clickDownload("#download-amneziawg")
	av, sv := confValues(awgConf), confValues(conf)
	if err != nil || av["Peer.Endpoint"] != c.host+":51821" || av["Interface.Jc"] == "" || av["Interface.PrivateKey"] != sv["Interface.PrivateKey"] ||
		av["Interface.Address"] != sv["Interface.Address"] || av["Peer.PresharedKey"] != sv["Peer.PresharedKey"] {
		t.Errorf("%s: the switched download (%v):\n%s\nthe stock one:\n%s", name, err, awgConf, conf)
		return "", false
	}
	if shown := c.peerShow(c.memberName); shown != awgConf {
		t.Errorf("%s: after the switch, peer show %s prints\n%s\nwant the AmneziaWG form handed out:\n%s", name, c.memberName, shown, awgConf)
	}
	c.checkStatus(c.memberName, "AmneziaWG app, UDP 51821", "stock handshake never arrived, switched to AmneziaWG")
	c.member.conf = awgConf
	c.member.up()
	err = chromedp.Run(c.pageTab, chromedp.Click("#confirm-button", chromedp.ByID))
	if err == nil {
		v, err = c.waitConfirm("connected", 20*time.Second)
	}
	c.member.down()
	if err != nil || v.Text != tr["confirm_connected"] || v.Dir != dir {
		t.Errorf("%s: AmneziaWG after the switch: %+v %v", name, v, err)
		return "", true
	}
	c.checkStatus(c.memberName, "AmneziaWG app, UDP 51821", "connected (stock handshake never arrived, switched to AmneziaWG)")
	// Switched once: the link hands out nothing more, in any form.
	for _, f := range []string{"form=amneziawg", "form="} {
		if resp := c.reveal(f); resp.StatusCode != http.StatusGone {
			t.Errorf("%s: after the switch, a reveal of %s: %d, want 410 (used)", name, f, resp.StatusCode)
		}
	}
	return "amneziawg", true
}

// confirmOutline is the member's way on from the page's advice of the
// Outline app, under the current profile: she presses "Show my settings";
// the page must show her member's key, as `tariq peer show --outline`
// prints it, as the "Add to Outline" link and in the copy field, no
// WireGuard download, and ask her to switch it on. Her Outline app
// connects with the key the page showed, from the browser's namespace,
// and fetches a page from the internet host through it; the page must
// then say connected without being told, and `tariq status` agree. It
// returns the form she ends on.
func (c *censorLab) confirmOutline(prof censorProfile, tr map[string]string, dir string) string {
	t := c.t
	t.Helper()
	name := prof.name
	want := strings.TrimSpace(c.cli("peer", "show", c.memberName, "--outline"))
	var got struct {
		Href, Value, State string
		Download           bool
	}
	ctx, cancel := context.WithTimeout(c.pageTab, 10*time.Second)
	err := chromedp.Run(ctx, chromedp.Click("#reveal-button", chromedp.ByID), chromedp.WaitVisible("#outline-box", chromedp.ByID),
		testutil.EvalJSON(`(() => {
			const el = (id) => document.getElementById(id);
			return {Href: el('outline-add').getAttribute('href') || '', Value: el('outline-key').value,
				State: el('confirm').dataset.state || '', Download: !!el('download') && !el('download').hidden};
		})()`, &got))
	cancel()
	if err != nil || want == "" || got.Href != want || got.Value != want || got.Download || got.State != "ask" {
		t.Errorf("%s: the reveal shows %+v (%v); want the key %q as the link and in the copy field, no download, the confirmation asking", name, got, err, want)
		return ""
	}
	c.checkStatus(c.memberName, "Outline app (no UDP path)", "-")

	// Her Outline app: the key the page showed, from the page's network.
	ctx, cancel = context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cl, err := c.outlineClient(ctx, c.member.ns, got.Value)
	if err != nil {
		t.Errorf("%s: the member's Outline app: %v", name, err)
		return ""
	}
	conn, err := cl.Stream.DialStream(ctx, "10.10.2.2:80")
	if err != nil {
		t.Errorf("%s: the member's Outline app connects: %v", name, err)
		return ""
	}
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "GET / HTTP/1.0\r\nHost: 10.10.2.2\r\n\r\n")
	body, err := io.ReadAll(conn)
	conn.Close()
	if !strings.Contains(string(body), "you are 10.10.2.1:") {
		t.Errorf("%s: HTTP through the member's Outline app: %q %v (want the server's uplink address as source)", name, body, err)
		return ""
	}
	v, err := c.waitConfirm("connected", 15*time.Second)
	if err != nil || v.Text != tr["confirm_connected"] || v.Dir != dir || v.Button {
		t.Errorf("%s: once her Outline app connected, the confirmation shows %+v (%v); want (%s) %q", name, v, err, dir, tr["confirm_connected"])
		return ""
	}
	c.checkStatus(c.memberName, "Outline app (no UDP path)", "connected")
	return "outline"
}

// revealDownload presses the page's "Show my settings", as the member
// would, and once the settings are shown, downloads them.
func (c *censorLab) revealDownload() (string, error) {
	ctx, cancel := context.WithTimeout(c.pageTab, 10*time.Second)
	err := chromedp.Run(ctx, chromedp.Click("#reveal-button", chromedp.ByID), chromedp.WaitVisible("#download", chromedp.ByID))
	cancel()
	if err != nil {
		return "", fmt.Errorf("revealing the settings: %w", err)
	}
	return c.clickDownload("#download")
}

// clickDownload clicks the page's download button sel, as the member
// would, and returns the file the browser saved.
func (c *censorLab) clickDownload(sel string) (string, error) {
	dir := c.t.TempDir()
	ctx, cancel := context.WithTimeout(c.pageTab, 20*time.Second)
	defer cancel()
	done := make(chan *browser.EventDownloadProgress, 1)
	chromedp.ListenTarget(ctx, func(ev any) {
		if ev, ok := ev.(*browser.EventDownloadProgress); ok &&
			(ev.State == browser.DownloadProgressStateCompleted || ev.State == browser.DownloadProgressStateCanceled) {
			select {
			case done <- ev:
			default:
			}
		}
	})
	err := chromedp.Run(ctx,
		browser.SetDownloadBehavior(browser.SetDownloadBehaviorBehaviorAllowAndName).WithDownloadPath(dir).WithEventsEnabled(true),
		chromedp.Click(sel, chromedp.ByQuery))
	if err != nil {
		return "", fmt.Errorf("clicking %s: %w", sel, err)
	}
	select {
	case ev := <-done:
		if ev.State != browser.DownloadProgressStateCompleted {
			return "", fmt.Errorf("download %s", ev.State)
		}
		b, err := os.ReadFile(filepath.Join(dir, ev.GUID))
		return string(b), err
	case <-ctx.Done():
		return "", fmt.Errorf("no download from %s within 20 s", sel)
	}
}

// checkStatus asserts `tariq status` shows peer's last check with advice
// and, unless "", the confirmation.
func (c *censorLab) checkStatus(peer, advice, confirmed string) {
	t := c.t
	t.Helper()
	code, out, errOut := tariq(t, "status", "--config", c.conf)
	var line string
	inReach := false
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "PEER") && strings.Contains(l, "LAST CHECK") {
			inReach = true
		}
		if inReach && strings.TrimSpace(l) == "" {
			break // the members table follows
		}
		if inReach && strings.HasPrefix(l, peer+" ") {
			line = strings.Join(strings.Fields(l), " ")
		}
	}
	if code != 0 || !strings.Contains(line, advice+" "+confirmed+" ") || !strings.Contains(line, " ago ") {
		t.Errorf("status does not show %s's check with %q, confirmation %q:\n%s%s", peer, advice, confirmed, out, errOut)
	}
}

func mapDiff(want, got map[string]bool) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if g, ok := got[k]; !ok || g != want[k] {
			fmt.Fprintf(&b, "\n\t%s: got %v (shown %v), want %v", k, g, ok, want[k])
		}
	}
	for _, k := range slices.Sorted(maps.Keys(got)) {
		if _, ok := want[k]; !ok {
			fmt.Fprintf(&b, "\n\t%s: got %v, want not tested", k, got[k])
		}
	}
	return b.String()
}

// reveal posts the member's link's reveal form with fields from the
// device network, as the page does, trusting only Pebble's root.
func (c *censorLab) reveal(fields string) *http.Response {
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: c.roots},
		DialContext:     c.dialer(c.member.ns),
	}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest("POST", c.invite, strings.NewReader(fields))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		c.t.Fatalf("POST %s: %v", c.invite, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(strings.NewReader(string(body)))
	return resp
}

// censorTable renders the rows as the README's Markdown table.
func censorTable(rows []labRow) string {
	var b strings.Builder
	head := censorPaths
	head[outlinePath] += " (voice RTT p50 / p99)"
	b.WriteString("| Censor profile | " + strings.Join(head[:], " | ") + " | Invite page advises |\n")
	b.WriteString("|---" + strings.Repeat("|---", len(censorPaths)) + "|---|\n")
	advice := map[string]string{"wireguard": "WireGuard app", "amneziawg": "AmneziaWG app", "outline": "Outline app",
		"calls": "VPN blocked, calls work", "none": "try another network"}
	for _, r := range rows {
		cells := []string{r.profile.name}
		for i, w := range r.works {
			cell := map[bool]string{true: "works", false: "blocked"}[w]
			if i == outlinePath && w {
				// The voice stream's round trips.
				cell += fmt.Sprintf(" (RTT %.1f / %.1f ms)", float64(r.voice.RTT(0.5))/1e6, float64(r.voice.RTT(0.99))/1e6)
			}
			cells = append(cells, cell)
		}
		v := r.page.Verdict
		if r.final != "" {
			v = r.final
		}
		a := advice[v]
		switch {
		case a == "":
			a = "(no answer)"
		case r.switched:
			a += " (switched to when no stock handshake arrives)"
		case v == "wireguard" && !r.works[0]:
			a += " (a port check cannot see this censor)"
		}
		cells = append(cells, a)
		b.WriteString("| " + strings.Join(cells, " | ") + " |\n")
	}
	return b.String()
}

// labCallPage places relay-only calls: labCalls(servers, setupMs,
// streamMs) runs one call per TURN server at once, each between two
// RTCPeerConnections of this page forced through that server, and
// resolves with each call's messages, stream counts and selected pairs.
const labCallPage = `<!doctype html>
<meta charset="utf-8">
<title>tariq censor lab calls</title>
<script>
'use strict';
async function labCall(iceServer, setupMs, streamMs) {
  const t0 = performance.now();
  const result = {log: [], sent: 0, got: 0};
  const note = (s) => result.log.push(Math.round(performance.now() - t0) + 'ms ' + s);
  const config = {iceServers: [iceServer], iceTransportPolicy: 'relay'};
  const pc1 = new RTCPeerConnection(config);
  const pc2 = new RTCPeerConnection(config);
  let hopeless;
  const noHope = new Promise((_, reject) => { hopeless = reject; });
  noHope.catch(() => {});
  for (const [name, pc, other] of [['pc1', pc1, pc2], ['pc2', pc2, pc1]]) {
    let n = 0;
    pc.onicecandidate = (e) => {
      if (!e.candidate) {
        note(name + ' gathering complete');
        if (n === 0) hopeless(new Error(name + ' gathered no relay candidate'));
        return;
      }
      n++;
      note(name + ' candidate ' + e.candidate.candidate);
      other.addIceCandidate(e.candidate).catch((err) => note(name + ' addIceCandidate: ' + err));
    };
    pc.onicecandidateerror = (e) => note(name + ' icecandidateerror ' + e.url + ' ' + e.errorCode + ' ' + e.errorText);
    pc.onconnectionstatechange = () => {
      note(name + ' connection ' + pc.connectionState);
      if (pc.connectionState === 'failed') {
        setTimeout(() => { if (pc.connectionState === 'failed') hopeless(new Error(name + ' connection failed')); }, 2000);
      }
    };
  }
  const message = (dc) => new Promise((resolve) => dc.addEventListener('message', (e) => resolve(e.data), {once: true}));
  const dc1 = pc1.createDataChannel('tariq');
  const voice1 = pc1.createDataChannel('voice', {ordered: false, maxRetransmits: 0});
  const channels = {};
  const gotBoth = new Promise((resolve) => {
    pc2.ondatachannel = (e) => {
      channels[e.channel.label] = e.channel;
      if (e.channel.label === 'voice') e.channel.onmessage = () => { result.got++; };
      if (channels.tariq && channels.voice) resolve();
    };
  });
  const setup = async () => {
    const open1 = new Promise((resolve) => { dc1.onopen = resolve; });
    await pc1.setLocalDescription();
    await pc2.setRemoteDescription(pc1.localDescription);
    await pc2.setLocalDescription();
    await pc1.setRemoteDescription(pc2.localDescription);
    await open1;
    await gotBoth;
    const at2 = message(channels.tariq);
    dc1.send('ping from pc1');
    result.received2 = await at2;
    const at1 = message(dc1);
    channels.tariq.send('pong from pc2');
    result.received1 = await at1;
    note('messages exchanged');
  };
  const timeout = (ms, what) => new Promise((_, reject) => setTimeout(() => reject(new Error('no ' + what + ' within ' + ms + ' ms')), ms));
  try {
    await Promise.race([setup(), noHope, timeout(setupMs, 'call')]);
    // The stream: 50 packets of 160 bytes a second, like a voice codec.
    const total = Math.round(streamMs / 20);
    await new Promise((resolve) => {
      const tick = setInterval(() => {
        if (voice1.readyState === 'open' && voice1.bufferedAmount < 64000) {
          voice1.send(new Uint8Array(160));
        }
        if (++result.sent >= total) {
          clearInterval(tick);
          setTimeout(resolve, 1000);
        }
      }, 20);
    });
    note('stream: ' + result.got + ' of ' + result.sent);
  } catch (e) {
    result.error = String(e);
    note('error: ' + result.error);
  }
  try {
    result.pc1 = await selectedPair(pc1);
    result.pc2 = await selectedPair(pc2);
  } catch (e) {
    result.error = (result.error ? result.error + '; ' : '') + 'getStats: ' + e;
  }
  pc1.close();
  pc2.close();
  return result;
}

async function labCalls(servers, setupMs, streamMs) {
  const names = Object.keys(servers);
  const results = await Promise.all(names.map((n) => labCall(servers[n], setupMs, streamMs)));
  return Object.fromEntries(names.map((n, i) => [n, results[i]]));
}

async function selectedPair(pc) {
  const stats = await pc.getStats();
  let pair = null;
  stats.forEach((s) => {
    if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
  });
  if (!pair) return null;
  const local = stats.get(pair.localCandidateId) || {};
  const remote = stats.get(pair.remoteCandidateId) || {};
  return {
    state: pair.state, nominated: !!pair.nominated,
    localType: local.candidateType, localAddress: local.address + ':' + local.port, relayProtocol: local.relayProtocol,
    url: local.url, remoteType: remote.candidateType, remoteAddress: remote.address + ':' + remote.port,
  };
}
</script>
`
