package daemon

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/gorilla/websocket"

	"github.com/tariq-vpn/tariq/config"
	"github.com/tariq-vpn/tariq/internal/admin"
	"github.com/tariq-vpn/tariq/internal/certs"
	"github.com/tariq-vpn/tariq/internal/members"
	"github.com/tariq-vpn/tariq/internal/testutil"
)

// outlineLab is a daemon with the Outline path on, in a namespace of its
// own (the VPN needs a kernel TUN), its HTTPS port on 127.0.0.1 with a
// certificate from Pebble for that address, which the test's Outline
// client trusts alone.
type outlineLab struct {
	t     *testing.T
	r     *running
	web   string // 127.0.0.1:port
	roots *x509.CertPool
	admin *admin.Client
}

// The address the lab adds to the namespace's loopback as one of the
// server's own, public-looking addresses: only the own-address rule
// refuses it.
const labOwnAddr = "193.0.14.129"

func newOutlineLab(t *testing.T, tlsMode string, extraOpts ...func(*Options)) *outlineLab {
	t.Helper()
	if out, err := exec.Command("ip", "addr", "add", labOwnAddr+"/32", "dev", "lo").CombinedOutput(); err != nil {
		t.Fatalf("adding %s to lo: %v: %s", labOwnAddr, err, out)
	}
	webPort := testutil.FreePort(t)
	var rnd [3]byte
	rand.Read(rnd[:])
	dir := t.TempDir()
	tlsYAML := "  mode: self-signed"
	var p *testutil.Pebble
	if tlsMode == "acme" {
		p = testutil.StartPebble(t, testutil.PebbleOptions{TLSPort: webPort,
			Profiles: map[string]time.Duration{"default": 90 * 24 * time.Hour, certs.ProfileShortlived: 160 * time.Hour}})
		tlsYAML = fmt.Sprintf("  mode: auto\n  acme_ca: %s\n  acme_ca_roots: %s", p.DirectoryURL, p.RootsFile)
	}
	file := writeConfig(t, dir, fmt.Sprintf(`server:
  public_host: 127.0.0.1
  data_dir: %[1]s/data
  admin_socket: %[1]s/admin.sock
  metrics_listen: 127.0.0.1:0
tls:
%[2]s
vpn:
  interface: tq%[3]s
  listen_port: %[4]d
  nat: false
  outline: {enabled: true}
web:
  listen: ["127.0.0.1:%[5]d"]
relay:
  enabled: false
`, dir, tlsYAML, hex.EncodeToString(rnd[:]), freeUDPPort(t), webPort))
	opts := append([]func(*Options){func(o *Options) {
		o.AllowDestinations = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
		o.Limits = members.Timings{Tick: 50 * time.Millisecond, Flush: time.Second}
	}}, extraOpts...)
	r, _ := runDaemon(t, file, func(d *certs.Deps) {
		d.PublicIP = func(a netip.Addr) bool { return a.IsLoopback() || config.IsPublicIP(a) }
		d.ACMEListenHost = "127.0.0.1"
		d.ACMETLSALPNPort = webPort
		d.ACMEDisableHTTP01 = true
		d.ACMERetry = 200 * time.Millisecond
	}, opts...)
	lab := &outlineLab{t: t, r: r, web: r.d.WebAddrs()[0].String(), admin: admin.NewClient(r.d.config().Server.AdminSocket)}
	if p != nil {
		waitCert(t, r, certs.SourceACME)
		lab.roots = p.RootPool()
	} else {
		lab.roots = selfSignedPool(t, r)
	}
	return lab
}

func (l *outlineLab) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	l.t.Cleanup(cancel)
	return ctx
}

// add adds device name (of its own member unless req says otherwise).
func (l *outlineLab) add(req members.AddRequest) {
	l.t.Helper()
	if _, err := l.admin.Add(l.ctx(), req); err != nil {
		l.t.Fatalf("adding %s: %v", req.Name, err)
	}
}

var outlineKeyRe = regexp.MustCompile(`^ssconf://127\.0\.0\.1:(\d+)/([A-Z2-7]{26})#([a-z]+)$`)

// key returns member's Outline key as the admin API (peer show --outline)
// gives it, checking its shape.
func (l *outlineLab) key(member string) string {
	l.t.Helper()
	k, err := l.admin.OutlineKey(l.ctx(), member)
	if err != nil {
		l.t.Fatalf("Outline key of %s: %v", member, err)
	}
	m := outlineKeyRe.FindStringSubmatch(k.Key)
	if m == nil || m[1] != l.web[strings.LastIndex(l.web, ":")+1:] || m[3] != member {
		l.t.Fatalf("Outline key of %s: %q, want ssconf://%s/<26 base32 characters>#%s", member, k.Key, l.web, member)
	}
	return k.Key
}

// fetch fetches key's config document as the app does.
func (l *outlineLab) fetch(key string) (*testutil.OutlineFetch, error) {
	return testutil.FetchOutlineConfig(context.Background(), key, l.roots, nil)
}

// client fetches key's document and builds the Outline client from it.
func (l *outlineLab) client(key string) (*testutil.OutlineClient, *testutil.OutlineFetch) {
	l.t.Helper()
	f, err := l.fetch(key)
	if err != nil {
		l.t.Fatalf("fetching %s: %v", key, err)
	}
	c, err := testutil.NewOutlineClient(f.Config, l.roots, nil)
	if err != nil {
		l.t.Fatal(err)
	}
	return c, f
}

// assertCut checks that c, open before, was cut: a read ends with an error
// that is not its deadline passing.
func assertCut(t *testing.T, what string, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := c.Read(make([]byte, 1))
	if err == nil || testutil.IsTimeout(err) {
		t.Errorf("%s: still open after the cut (read: %v)", what, err)
	}
}

// assertErrorDoc checks key's document is the error document saying
// want, without the secret.
func (l *outlineLab) assertErrorDoc(key, secret, want string) {
	l.t.Helper()
	f, err := l.fetch(key)
	var de *testutil.OutlineDocError
	switch {
	case !errors.As(err, &de):
		l.t.Errorf("%s: %v, want the error document", key, err)
	case !strings.Contains(de.Message, want):
		l.t.Errorf("%s: error document says %q, want %q", key, de.Message, want)
	}
	if f != nil && secret != "" && bytes.Contains(f.Body, []byte(secret)) {
		l.t.Errorf("%s: the error document carries the secret:\n%s", key, f.Body)
	}
}

// TestOutlineEndToEnd: the Outline path of a running daemon with a
// certificate from Pebble for its bare IP address, driven by a client
// that follows the Outline app's code path. The key peer show prints
// leads to a config document (CORS open, never cached) that carries the
// member's secret; through it a TCP transfer and a UDP echo reach a
// target the policy allows, while loopback and the server's own
// addresses are refused. A member added while others are connected gets
// in at once and nobody else is disturbed; disabling a member's only
// device cuts their open connection and their document says so; enabling
// it lets them back; removing a member cuts their open TCP stream and UDP
// association, and their document says the key was removed, without the
// secret; a member over their data limit is cut on this path too, their
// usage counted. Every other path of the port is the normal page; the
// metrics and the status name the members' Outline activity.
func TestOutlineEndToEnd(t *testing.T) {
	testutil.RequireRoot(t)
	if !testutil.InNetNS(t, 150*time.Second) {
		return
	}
	testutil.LeakCheck(t, testutil.PebbleLeakOptions()...)
	l := newOutlineLab(t, "acme")
	tcpTarget := testutil.TCPEcho(t, "127.0.0.1:0").String()
	udpTarget := testutil.UDPEchoOn(t, "127.0.0.1:0").LocalAddr()

	l.add(members.AddRequest{Name: "mom"})
	momKey := l.key("mom")
	mom, f := l.client(momKey)
	if got := f.Header.Get("Access-Control-Allow-Origin"); got != "*" {
		t.Errorf("Access-Control-Allow-Origin %q, want *", got)
	}
	if got := f.Header.Get("Cache-Control"); got != "no-store" {
		t.Errorf("Cache-Control %q, want no-store", got)
	}
	if f.Name != "mom" || f.Config.Cipher != "chacha20-ietf-poly1305" || !strings.HasPrefix(f.Config.TCPURL, "wss://"+l.web+"/") ||
		!strings.HasSuffix(f.Config.TCPURL, "/tcp") || !strings.HasSuffix(f.Config.UDPURL, "/udp") {
		t.Errorf("mom's document: name %q, %+v", f.Name, f.Config)
	}
	momSecret := f.Config.Secret

	// A TCP transfer and a UDP echo to the allowed target.
	momTCP, err := mom.Stream.DialStream(context.Background(), tcpTarget)
	if err != nil {
		t.Fatalf("mom: TCP through Outline: %v", err)
	}
	defer momTCP.Close()
	if err := testutil.EchoRound(momTCP, noise(256<<10), 20*time.Second); err != nil {
		t.Fatalf("mom: 256 KiB echoed through Outline over TCP: %v", err)
	}
	momUDP, err := mom.Packet.ListenPacket(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer momUDP.Close()
	if err := testutil.UDPRound(momUDP, udpTarget, noise(160), 5*time.Second); err != nil {
		t.Fatalf("mom: UDP echo through Outline: %v", err)
	}

	// Refused targets: another loopback address, the server's own
	// (public-looking) address, link-local metadata, a private address.
	for _, target := range []string{"127.0.0.2", labOwnAddr, "169.254.169.254", "10.1.2.3"} {
		c := canaryOn(t, target)
		if conn, err := mom.Stream.DialStream(context.Background(), c.addr); err == nil {
			conn.SetReadDeadline(time.Now().Add(2 * time.Second))
			conn.Write([]byte("hello"))
			conn.Read(make([]byte, 1))
			conn.Close()
		}
		if ap, err := netip.ParseAddrPort(c.addr); err == nil {
			momUDP.WriteTo([]byte("hello"), net.UDPAddrFromAddrPort(ap))
		}
		c.assertQuiet(t, 500*time.Millisecond)
	}
	refused := adminStatusVPN(t, l).Outline.Refused
	for _, rule := range []string{"loopback", "own-address"} {
		if refused["tcp"][rule] == 0 {
			t.Errorf("status counts no TCP target refused as %s: %v", rule, refused)
		}
	}

	// A member added while mom is connected gets in at once; mom's open
	// stream carries on.
	l.add(members.AddRequest{Name: "dad"})
	dadKey := l.key("dad")
	dad, f := l.client(dadKey)
	dadSecret := f.Config.Secret
	dadTCP, err := dad.Stream.DialStream(context.Background(), tcpTarget)
	if err != nil || testutil.EchoRound(dadTCP, noise(4096), 10*time.Second) != nil {
		t.Fatalf("dad, added live: TCP through Outline: %v", err)
	}
	if err := testutil.EchoRound(momTCP, noise(4096), 10*time.Second); err != nil {
		t.Errorf("mom's open stream after dad was added: %v", err)
	}

	// Dad's only device disabled: his open stream is cut, his document
	// says so; enabled again, the same key works.
	if err := l.admin.SetEnabled(l.ctx(), "dad", false); err != nil {
		t.Fatal(err)
	}
	assertCut(t, "dad's stream after his device was disabled", dadTCP)
	l.assertErrorDoc(dadKey, dadSecret, "switched off")
	if err := testutil.EchoRound(momTCP, noise(4096), 10*time.Second); err != nil {
		t.Errorf("mom's open stream after dad was disabled: %v", err)
	}
	if err := l.admin.SetEnabled(l.ctx(), "dad", true); err != nil {
		t.Fatal(err)
	}
	dad, _ = l.client(dadKey)
	if c, err := dad.Stream.DialStream(context.Background(), tcpTarget); err != nil || testutil.EchoRound(c, noise(4096), 10*time.Second) != nil {
		t.Errorf("dad enabled again: %v", err)
	} else {
		c.Close()
	}

	// Mom removed: her open stream and association are cut, her document
	// says the key was removed, without her secret, and her saved secret
	// gets nothing.
	if err := l.admin.Remove(l.ctx(), "mom"); err != nil {
		t.Fatal(err)
	}
	assertCut(t, "mom's TCP stream after her removal", momTCP)
	if err := testutil.UDPRound(momUDP, udpTarget, noise(160), 3*time.Second); err == nil {
		t.Error("mom's UDP association still echoes after her removal")
	}
	l.assertErrorDoc(momKey, momSecret, "removed")
	if c, err := mom.Stream.DialStream(context.Background(), tcpTarget); err == nil {
		if testutil.EchoRound(c, noise(16), 3*time.Second) == nil {
			t.Error("mom's saved secret still carries a new stream")
		}
		c.Close()
	}

	// A member over their data limit is cut on the Outline path too: the
	// path counts toward the month's usage.
	limit := uint64(192 << 10)
	l.add(members.AddRequest{Name: "kid", Limits: members.LimitsChange{DataLimit: &limit}})
	kidKey := l.key("kid")
	kid, f := l.client(kidKey)
	kidTCP, err := kid.Stream.DialStream(context.Background(), tcpTarget)
	if err != nil {
		t.Fatal(err)
	}
	defer kidTCP.Close()
	// The path enforces the limit when the members model counts (every
	// Tick, 50 ms here): keep sending, bounded in rounds and time.
	cut := false
	deadline := time.Now().Add(15 * time.Second)
	for i := 0; i < 1000 && time.Now().Before(deadline); i++ {
		if err := testutil.EchoRound(kidTCP, noise(16<<10), 5*time.Second); err != nil {
			cut = true
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !cut {
		t.Fatal("kid's stream was never cut past the data limit")
	}
	assertCut(t, "kid's stream past the data limit", kidTCP)
	st := adminStatusVPN(t, l)
	for _, m := range st.Members {
		if m.Name == "kid" && (m.Blocked != members.BlockOverLimit || m.Usage.Total() < limit) {
			t.Errorf("kid after the cut: %+v, want over-limit with at least %d bytes counted", m, limit)
		}
	}
	l.assertErrorDoc(kidKey, f.Config.Secret, "data allowance")

	// Every other path is the ordinary page.
	assertNormalPage(t, l)

	// Dad's invite page: no GET carries his key, the probe is a real
	// WebSocket through the Outline handlers, the reveal hands it out.
	assertInviteOutline(t, l, "dad", dadKey, dadSecret)

	// Metrics and status name dad's activity.
	fams := scrape(t, l.r)
	if v, ok := gauge(fams, "tariq_outline_bytes_total", "member", "dad", "direction", "from_member"); !ok || v == 0 {
		t.Errorf("tariq_outline_bytes_total for dad: %v %v", v, ok)
	}
	if v, ok := gauge(fams, "tariq_outline_connections_cut_total", "reason", "blocked"); !ok || v == 0 {
		t.Errorf("tariq_outline_connections_cut_total{reason=blocked}: %v %v", v, ok)
	}
	st = adminStatusVPN(t, l)
	if st.Outline == nil || st.Outline.Untrusted != "" {
		t.Errorf("status: Outline %+v, want on with working keys", st.Outline)
	}
	for _, m := range st.Members {
		if m.Name == "dad" && (m.Outline == nil || m.Outline.Total < 2 || m.Outline.LastSeen.IsZero() || !slices.Contains(m.Seen, "outline")) {
			t.Errorf("status for dad: Outline %+v, seen %q", m.Outline, m.Seen)
		}
	}
}

// assertNormalPage checks that the Outline paths hide nothing else: a
// random path, a config-document-shaped path nobody was given, and a
// WebSocket upgrade on a random path get the page's own answer.
func assertNormalPage(t *testing.T, l *outlineLab) {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: l.roots}}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	get := func(path string, hdr map[string]string) (*http.Response, string) {
		req, _ := http.NewRequest("GET", "https://"+l.web+path, nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	if resp, body := get("/", nil); resp.StatusCode != 200 || !strings.Contains(body, "tariq") {
		t.Errorf("GET /: %d\n%s", resp.StatusCode, body)
	}
	_, notFound := get("/no-such-page", nil)
	for _, path := range []string{"/" + rand.Text(), "/" + strings.ToLower(rand.Text()) + "/tcp", "/" + rand.Text() + "/udp"} {
		for _, hdr := range []map[string]string{nil, {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
			"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}} {
			resp, body := get(path, hdr)
			if resp.StatusCode != http.StatusNotFound || body != notFound || resp.Header.Get("Content-Security-Policy") == "" {
				t.Errorf("GET %s (%v): %d %q, want the page's own 404", path, hdr, resp.StatusCode, body)
			}
		}
	}
}

// assertInviteOutline checks member's invite page: its GETs (any agent,
// any language, everything the page points to) never carry the member's
// Outline key, its token or secret; its WebSocket probe upgrades through
// the Outline handlers in front of the page and closes cleanly; the
// member's deliberate POST reveals the key peer show prints.
func assertInviteOutline(t *testing.T, l *outlineLab, member, key, secret string) {
	t.Helper()
	inv, err := l.admin.CreateInvite(l.ctx(), member, 0)
	if err != nil {
		t.Fatal(err)
	}
	link := inv.URL[strings.Index(inv.URL, "/join/"):]
	token := outlineKeyRe.FindStringSubmatch(key)[2]
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: l.roots}}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	do := func(method, path, body string, hdr map[string]string) (*http.Response, string) {
		req, _ := http.NewRequest(method, "https://"+l.web+path, strings.NewReader(body))
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	queue := []string{link, link + "?lang=ar", link + "?os=ios", link + "?form=outline", link + "/ws", link + "/connected", "/assets/reach.js"}
	var data string
	for _, path := range queue {
		for _, ua := range linkPreviewAgents {
			for _, method := range []string{"GET", "HEAD"} {
				resp, body := do(method, path, "", map[string]string{"User-Agent": ua})
				for _, s := range []string{key, "ssconf://" + l.web, token, secret} {
					if strings.Contains(body, s) || strings.Contains(unescape(body), s) {
						t.Fatalf("%s %s (%q, %d) carries %q", method, path, ua, resp.StatusCode, s)
					}
				}
				if path == link && method == "GET" {
					data = body
				}
			}
		}
	}
	if !strings.Contains(data, `"ws":{"id":"outline-`) || !strings.Contains(data, `id="outline-box" hidden`) {
		t.Errorf("the page offers no Outline probe or key box:\n%s", data)
	}

	// The probe, as the page's script opens it.
	dialer := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: l.roots}, HandshakeTimeout: 5 * time.Second}
	ws, resp, err := dialer.Dial("wss://"+l.web+link+"/ws", http.Header{"Origin": {"https://" + l.web}})
	if err != nil {
		t.Fatalf("the page's WebSocket probe: %v %v", err, resp)
	}
	ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _, err = ws.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.CloseNormalClosure {
		t.Errorf("the probe after the page's close: %v, want the server's normal close", err)
	}
	ws.Close()

	// The member's step: the key, once.
	hdr := map[string]string{"Content-Type": "application/x-www-form-urlencoded", "Origin": "https://" + l.web,
		"Sec-Fetch-Site": "same-origin", "Accept": "application/json"}
	resp, body := do("POST", link, "form=outline", hdr)
	var rr struct{ Form, Key, QR, Download string }
	if json.Unmarshal([]byte(body), &rr); resp.StatusCode != 200 || rr.Form != "outline" || rr.Key != key || rr.Download != "" ||
		!strings.HasPrefix(rr.QR, "data:image/png;base64,") {
		t.Errorf("the reveal of the Outline form: %d %s, want %s", resp.StatusCode, body, key)
	}
	if resp, body := do("POST", link, "form=outline", hdr); resp.StatusCode != http.StatusGone || strings.Contains(body, "ssconf") {
		t.Errorf("a second reveal: %d %s", resp.StatusCode, body)
	}
}

// adminStatusVPN returns the VPN part of the admin status.
func adminStatusVPN(t *testing.T, l *outlineLab) *admin.VPNStatus {
	t.Helper()
	st, err := l.admin.Status(l.ctx())
	if err != nil || st.VPN == nil {
		t.Fatalf("admin status: %v %+v", err, st)
	}
	return st.VPN
}

// canary listens on TCP and UDP on one port of ip and reports whatever
// reaches it.
type canary struct {
	addr string
	hits chan string
}

func canaryOn(t *testing.T, ip string) *canary {
	t.Helper()
	if !strings.HasPrefix(ip, "127.") && ip != labOwnAddr {
		// Addresses the namespace does not have: a local route to them
		// on lo makes a connection reach the canary if anything lets it
		// through.
		if out, err := exec.Command("ip", "addr", "add", ip+"/32", "dev", "lo").CombinedOutput(); err != nil {
			t.Fatalf("adding %s to lo: %v: %s", ip, err, out)
		}
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenPacket("udp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := &canary{addr: ln.Addr().String(), hits: make(chan string, 16)}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			c.hits <- "tcp from " + conn.RemoteAddr().String()
			conn.Close()
		}
	}()
	go func() {
		defer wg.Done()
		buf := make([]byte, 2048)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			c.hits <- "udp from " + from.String()
		}
	}()
	t.Cleanup(func() { ln.Close(); pc.Close(); wg.Wait() })
	return c
}

// assertQuiet fails t if anything reached the canary within d.
func (c *canary) assertQuiet(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case hit := <-c.hits:
		t.Errorf("the canary on %s was reached: %s", c.addr, hit)
	case <-time.After(d):
	}
}

// TestOutlineSelfSignedRefused: with a self-signed certificate, which the
// Outline app refuses, no key is handed out: the admin API (peer show
// --outline) says why in one line, and status and the start-up summary
// say no key works. Turning the path off takes a restart: a reload says
// so and keeps it on.
func TestOutlineSelfSignedRefused(t *testing.T) {
	testutil.RequireRoot(t)
	if !testutil.InNetNS(t, 60*time.Second) {
		return
	}
	var summary syncBuffer
	l := newOutlineLab(t, "self-signed", func(o *Options) { o.Out = &summary })
	if !strings.Contains(summary.String(), "Outline: on the web port, but no key works yet: the Outline app needs a publicly trusted certificate") {
		t.Errorf("the start-up summary does not say no Outline key works:\n%s", summary.String())
	}
	l.add(members.AddRequest{Name: "mom"})
	_, err := l.admin.OutlineKey(l.ctx(), "mom")
	var ae *admin.Error
	if !errors.As(err, &ae) || ae.Code != http.StatusConflict || !strings.Contains(ae.Msg, "publicly trusted certificate") ||
		!strings.Contains(ae.Msg, "self-signed") || strings.Contains(ae.Msg, "\n") {
		t.Errorf("Outline key with a self-signed certificate: %v, want a 409 naming the self-signed certificate in one line", err)
	}
	if o := adminStatusVPN(t, l).Outline; o == nil || !strings.Contains(o.Untrusted, "self-signed") {
		t.Errorf("status: Outline %+v, want it to say no key works with the self-signed certificate", o)
	}

	b, err := os.ReadFile(l.r.file)
	if err != nil {
		t.Fatal(err)
	}
	l.r.reloadFile(t, strings.Replace(string(b), "outline: {enabled: true}", "outline: {enabled: false}", 1))
	if !strings.Contains(l.r.logs.String(), "vpn.outline.enabled: changing it needs a restart") {
		t.Errorf("a reload turning the Outline path off does not say it needs a restart:\n%s", l.r.logs)
	}
	if !l.r.d.config().VPN.Outline.Enabled || adminStatusVPN(t, l).Outline == nil {
		t.Error("after the reload the config in force says the Outline path is off, or it stopped")
	}
}

// TestOutlineInviteBrowser: in headless Chromium, on a network that drops
// UDP to the WireGuard port, a member's invite page runs its check: its
// WebSocket probe opens (under the page's CSP) to this same HTTPS port
// and the page advises the Outline app, with Outline's steps and store
// links; "Show my settings" then shows the key peer show prints as the
// "Add to Outline" link and in the copy field, and nothing the page
// loaded before carried it.
func TestOutlineInviteBrowser(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireBinary(t, "chromium")
	testutil.RequireBinary(t, "nft")
	if !testutil.InNetNS(t, 150*time.Second) {
		return
	}
	l := newOutlineLab(t, "acme")
	wgPort := l.r.d.VPN().ListenPort()
	// This namespace's network drops UDP to the WireGuard port, as
	// profile 1 of the censor lab does.
	for _, args := range [][]string{
		{"add", "table", "inet", "olcensor"},
		{"add", "chain", "inet", "olcensor", "out", "{ type filter hook output priority 0; }"},
		{"add", "rule", "inet", "olcensor", "out", "udp", "dport", fmt.Sprint(wgPort), "drop"},
	} {
		if out, err := exec.Command("nft", args...).CombinedOutput(); err != nil {
			t.Fatalf("nft %v: %v: %s", args, err, out)
		}
	}
	l.add(members.AddRequest{Name: "mom"})
	key := l.key("mom")
	inv, err := l.admin.CreateInvite(l.ctx(), "mom", 0)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := handshake(l.web, "", l.roots)
	if err != nil {
		t.Fatal(err)
	}
	b := testutil.NewBrowser(t, testutil.BrowserOptions{Viewport: testutil.PhoneViewport(),
		Flags: map[string]any{"ignore-certificate-errors-spki-list": certs.SPKIHash(leaf)}})
	var before string
	if err := b.RunTimeout(30*time.Second, chromedp.Navigate(inv.URL), chromedp.WaitReady("body"),
		chromedp.OuterHTML("html", &before)); err != nil {
		t.Fatalf("opening %s: %v", inv.URL, err)
	}
	if strings.Contains(before, key) {
		t.Fatal("the page carries the key before the reveal")
	}
	var v struct {
		State, Verdict, Outline string
		Steps, OutlineSteps     bool
		Stores                  []string
	}
	const read = `(() => {
		const el = (id) => document.getElementById(id);
		const li = document.querySelector('#reach-list li[data-path^="outline-"]');
		return {State: el('reach').dataset.state, Verdict: el('reach').dataset.verdict || '', Outline: li ? li.dataset.ok || '' : 'none',
			Steps: !el('steps').hidden, OutlineSteps: !el('outline-steps').hidden,
			Stores: [...document.querySelectorAll('#outline-stores a')].map((a) => a.href)};
	})()`
	if err := b.RunTimeout(40*time.Second, chromedp.Poll(`document.getElementById('reach').dataset.state === 'done'`, nil,
		chromedp.WithPollingTimeout(35*time.Second)), testutil.EvalJSON(read, &v)); err != nil {
		t.Fatalf("the check did not finish: %v", err)
	}
	if v.Verdict != "outline" || v.Outline != "true" || v.Steps || !v.OutlineSteps || len(v.Stores) != 4 {
		t.Errorf("the check on a network without UDP: %+v, want the Outline advice, its WebSocket ticked, Outline's steps and four store links", v)
	}
	var got struct{ Href, Value string }
	if err := b.RunTimeout(20*time.Second, chromedp.Click("#reveal-button", chromedp.ByID), chromedp.WaitVisible("#outline-box", chromedp.ByID),
		testutil.EvalJSON(`({Href: document.getElementById('outline-add').getAttribute('href'), Value: document.getElementById('outline-key').value})`, &got)); err != nil {
		t.Fatalf("revealing: %v", err)
	}
	if got.Href != key || got.Value != key {
		t.Errorf("after the reveal: Add to Outline %q, copy field %q; want %q", got.Href, got.Value, key)
	}
	for _, line := range b.Console() {
		if strings.Contains(line, "Content Security Policy") || strings.Contains(line, "Refused to") {
			t.Errorf("the page broke its CSP: %s", line)
		}
	}
	if st := adminStatusVPN(t, l); len(st.Peers) != 1 || st.Peers[0].Reach == nil || st.Peers[0].Reach.Verdict != "outline" ||
		!slices.Contains(st.Peers[0].Reach.Reached, fmt.Sprintf("outline-%d", l.r.d.WebAddrs()[0].(*net.TCPAddr).Port)) {
		t.Errorf("the check as recorded: %+v", st.Peers[0].Reach)
	}
}

// noise returns n random bytes, a message no other round repeats.
func noise(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}
