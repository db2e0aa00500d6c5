package daemon

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tariq-vpn/tariq/internal/admin"
	"github.com/tariq-vpn/tariq/internal/members"
	"github.com/tariq-vpn/tariq/internal/testutil"
	"github.com/tariq-vpn/tariq/internal/wgconf"
)

// The invite page against a real daemon: real keys, real QR codes, the
// real store. The VPN needs a kernel TUN, so each test runs as a process
// of its own in a fresh network namespace (testutil.InNetNS).

// invitePage is a daemon serving invites, with every form a link can hand
// out (stock on two ports, AmneziaWG) and the relay (the page's check).
type invitePage struct {
	r    *running
	t    *testing.T
	web  string // host:port of the HTTPS page, which is also public_host
	tls  *tls.Config
	zbar string
}

func newInvitePage(t *testing.T) *invitePage {
	t.Helper()
	zbar := testutil.RequireBinary(t, "zbarimg")
	var rnd [3]byte
	rand.Read(rnd[:])
	dir := t.TempDir()
	file := writeConfig(t, dir, fmt.Sprintf(`server:
  public_host: 127.0.0.1
  data_dir: %[1]s/data
  admin_socket: %[1]s/admin.sock
  metrics_listen: ""
tls:
  mode: self-signed
vpn:
  interface: tq%[2]s
  listen_port: %[3]d
  extra_ports: [%[4]d]
  nat: false
  obfuscation: {enabled: true, listen_port: %[5]d}
web:
  listen: ["127.0.0.1:0"]
relay:
  listen_udp: ["127.0.0.1:0"]
  listen_tcp: ["127.0.0.1:0"]
  listen_tls: ["127.0.0.1:0"]
  relay_bind: 127.0.0.1
`, dir, hex.EncodeToString(rnd[:]), freeUDPPort(t), freeUDPPort(t), freeUDPPort(t)))
	r, _ := runDaemon(t, file, nil)
	return &invitePage{r: r, t: t, web: r.d.WebAddrs()[0].String(),
		tls: &tls.Config{RootCAs: selfSignedPool(t, r), ServerName: "127.0.0.1"}, zbar: zbar}
}

// member adds peer name and a one-time link to it, and returns the link's
// path (/join/<token>) and the peer's config as peer show prints it.
func (p *invitePage) member(name string) (path, conf string) {
	t := p.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c := admin.NewClient(p.r.d.config().Server.AdminSocket)
	pc, err := c.Show(ctx, name)
	if err != nil {
		if pc, err = c.Add(ctx, members.AddRequest{Name: name}); err != nil {
			t.Fatalf("adding peer %s: %v", name, err)
		}
	}
	inv, err := c.CreateInvite(ctx, name, 0)
	if err != nil {
		t.Fatalf("invite for %s: %v", name, err)
	}
	u, err := url.Parse(inv.URL)
	if err != nil || u.Host != p.web || !strings.HasPrefix(u.Path, "/join/") {
		t.Fatalf("invite URL %q, want https://%s/join/<token>", inv.URL, p.web)
	}
	return u.Path, pc.Config
}

// client is an HTTPS client for the page from loopback address src (each
// address has its own rate limit); follow says whether it follows
// redirects.
func (p *invitePage) client(src string, follow bool) *http.Client {
	tr := &http.Transport{TLSClientConfig: p.tls, DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}).DialContext}
	p.t.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	if !follow {
		c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	}
	return c
}

// do sends one request and returns the response with its body read.
func (p *invitePage) do(c *http.Client, method, path string, body string, hdr map[string]string) (*http.Response, string) {
	p.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, "https://"+p.web+path, rd)
	if err != nil {
		p.t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		p.t.Fatalf("%s %s: %v", method, path, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		p.t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp, string(b)
}

// reveal posts the page's "show my settings" form, as the page itself
// does (same origin), asking for form (url-encoded fields; "" for the
// peer's own).
func (p *invitePage) reveal(c *http.Client, path, form string) (*http.Response, string) {
	return p.do(c, "POST", path, form, map[string]string{
		"Content-Type": "application/x-www-form-urlencoded", "Origin": "https://" + p.web, "Sec-Fetch-Site": "same-origin",
		"Accept": "text/html",
	})
}

// secrets are the forms a config's private key and PSK may take in a page.
func secrets(t *testing.T, conf string) []string {
	t.Helper()
	var out []string
	for _, k := range []string{"PrivateKey", "PresharedKey"} {
		m := regexp.MustCompile(`(?m)^` + k + ` = (\S+)$`).FindStringSubmatch(conf)
		if m == nil {
			t.Fatalf("no %s in\n%s", k, conf)
		}
		key, err := wgconf.ParseKey(m[1])
		if err != nil {
			t.Fatal(err)
		}
		b, _ := hex.DecodeString(key.Hex())
		out = append(out, m[1], base64.RawStdEncoding.EncodeToString(b), base64.URLEncoding.EncodeToString(b),
			base64.RawURLEncoding.EncodeToString(b), key.Hex(), strings.ToUpper(key.Hex()))
	}
	return out
}

var (
	dataURLRe = regexp.MustCompile(`data:([a-zA-Z0-9.+/-]*)((?:;[a-zA-Z0-9=.-]+)*)(?:;base64)?,([A-Za-z0-9+/=%._~-]*)`)
	jsEscRe   = regexp.MustCompile(`\\u([0-9a-fA-F]{4})`)
)

// unescape undoes what HTML, JSON and JavaScript string escaping may have
// done to a secret in a page.
func unescape(s string) string {
	s = jsEscRe.ReplaceAllStringFunc(s, func(m string) string {
		n, _ := strconv.ParseUint(m[2:], 16, 32)
		return string(rune(n))
	})
	s = strings.ReplaceAll(s, `\/`, "/")
	return html.UnescapeString(s)
}

// qrText returns what zbarimg reads in a PNG, "" if no code.
func (p *invitePage) qrText(png []byte) string {
	p.t.Helper()
	file := filepath.Join(p.t.TempDir(), "qr.png")
	if err := os.WriteFile(file, png, 0o600); err != nil {
		p.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, p.zbar, "--raw", "-q", file).Output()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit) && exit.ExitCode() == 4: // no symbols
		return ""
	case err != nil:
		p.t.Fatalf("zbarimg: %v", err)
	}
	return strings.TrimSuffix(string(out), "\n")
}

// dataURLs returns the decoded contents of every data: URL in body, PNGs
// as what their QR codes read.
func (p *invitePage) dataURLs(body string) []string {
	var out []string
	for _, m := range dataURLRe.FindAllStringSubmatch(unescape(body), -1) {
		var b []byte
		if strings.HasSuffix(m[0][:len(m[0])-len(m[3])-1], ";base64") {
			var err error
			if b, err = base64.StdEncoding.DecodeString(m[3]); err != nil {
				p.t.Errorf("data: URL with bad base64 %q: %v", m[0], err)
				continue
			}
		} else {
			s, _ := url.PathUnescape(m[3])
			b = []byte(s)
		}
		if bytes.HasPrefix(b, []byte("\x89PNG")) {
			out = append(out, p.qrText(b))
		} else {
			out = append(out, string(b))
		}
	}
	return out
}

// disclosed returns the secrets of conf found in body (raw, unescaped, or
// inside any data: URL, a QR code's text included).
func (p *invitePage) disclosed(body, conf string) []string {
	var found []string
	hay := []string{body, unescape(body)}
	hay = append(hay, p.dataURLs(body)...)
	for _, s := range secrets(p.t, conf) {
		for _, h := range hay {
			if strings.Contains(h, s) {
				found = append(found, s)
				break
			}
		}
	}
	for _, h := range hay {
		for _, w := range []string{"PrivateKey", "PresharedKey", "[Interface]"} {
			if strings.Contains(h, w) {
				found = append(found, w)
			}
		}
	}
	return found
}

// linkPreviewAgents are what link previews, mail scanners and people's
// browsers send: none of them may burn or see a link by fetching it.
var linkPreviewAgents = []string{
	"Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Mobile Safari/537.36",
	"WhatsApp/2.23.20.0 A",
	"TelegramBot (like TwitterBot)",
	"facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
	"Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
	"Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
	"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Edg/120.0.0.0 (Microsoft Defender for Office 365)",
	"curl/8.5.0",
	"",
}

var attrURLRe = regexp.MustCompile(`(?:href|src|action)="([^"]*)"|"(/[^"]*)"`)

// TestInvitePageGETDisclosesNothing (issue 9, item 2): fetching a fresh
// link, as every link preview, mail scanner and browser does, with GET
// or HEAD, following redirects, and fetching everything the page points
// to, never discloses the config (private key, PSK, in any encoding, in a
// QR code or a data: URL) and never burns the link. The member's
// deliberate step, a same-origin POST, reveals it (QR code and download,
// the peer's config exactly) and burns it; a second POST says used, and
// a POST from another site is refused and burns nothing.
func TestInvitePageGETDisclosesNothing(t *testing.T) {
	testutil.RequireRoot(t)
	if !testutil.InNetNS(t, 90*time.Second) {
		return
	}
	p := newInvitePage(t)
	link, conf := p.member("mom")

	follow, noFollow := p.client("127.0.0.2", true), p.client("127.0.0.3", false)
	seen := map[string]bool{}
	queue := []string{link, link + "?lang=ar", link + "?os=ios", link + "?form=amneziawg", link + "?form=wireguard",
		link + "/download", link + "/download?form=amneziawg", link + "/connected", link + "/check", link + "/reveal",
		link + "/", "/", "/assets/reach.js"}
	for len(queue) > 0 {
		path := queue[0]
		queue = queue[1:]
		if seen[path] {
			continue
		}
		seen[path] = true
		for _, ua := range linkPreviewAgents {
			for _, c := range []*http.Client{follow, noFollow} {
				for _, method := range []string{"GET", "HEAD"} {
					resp, body := p.do(c, method, path, "", map[string]string{"User-Agent": ua, "Accept-Language": "ar,en"})
					if found := p.disclosed(body, conf); len(found) > 0 {
						t.Fatalf("%s %s (%q, status %d) discloses %q:\n%s", method, path, ua, resp.StatusCode, found, body)
					}
					if method == "GET" && c == follow && ua == linkPreviewAgents[0] {
						// Everything the page points to, on this server.
						for _, m := range attrURLRe.FindAllStringSubmatch(unescape(body), -1) {
							ref := m[1] + m[2]
							u, err := resp.Request.URL.Parse(ref)
							if err != nil || u.Host != p.web || (u.Scheme != "https" && u.Scheme != "") {
								continue
							}
							queue = append(queue, u.RequestURI())
						}
					}
				}
			}
		}
	}
	t.Logf("fetched %d URLs with %d user agents, GET and HEAD, redirects followed and not", len(seen), len(linkPreviewAgents))

	// From another site, or a cross-site navigation: refused, not burned.
	for _, hdr := range []map[string]string{
		{"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
		{"Origin": "https://evil.example"},
		{"Sec-Fetch-Site": "cross-site"},
		{"Sec-Fetch-Site": "same-site"},
	} {
		hdr["Content-Type"] = "application/x-www-form-urlencoded"
		resp, body := p.do(noFollow, "POST", link, "form=", hdr)
		if resp.StatusCode != http.StatusForbidden || len(p.disclosed(body, conf)) > 0 {
			t.Errorf("POST with %v: %d, want 403 and nothing disclosed:\n%s", hdr, resp.StatusCode, body)
		}
	}

	// The member's step: the settings, once.
	resp, body := p.reveal(noFollow, link, "form=")
	if resp.StatusCode != 200 {
		t.Fatalf("reveal: %d\n%s", resp.StatusCode, body)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("reveal: Cache-Control %q, want no-store", cc)
	}
	qr := regexp.MustCompile(`<img [^>]*id="qr"[^>]* src="(data:[^"]*)"`).FindStringSubmatch(body)
	dl := regexp.MustCompile(`<a [^>]*id="download" href="(data:[^"]*)" download="mom.conf"`).FindStringSubmatch(body)
	if qr == nil || dl == nil {
		t.Fatalf("reveal: no QR code or no download:\n%s", body)
	}
	if got := p.dataURLs(qr[1]); len(got) != 1 || got[0] != conf {
		t.Errorf("reveal: the QR code reads %q, want the config peer show prints:\n%s", got, conf)
	}
	if got := p.dataURLs(html.UnescapeString(dl[1])); len(got) != 1 || got[0] != conf {
		t.Errorf("reveal: the download is %q, want the config peer show prints:\n%s", got, conf)
	}
	for _, c := range []*http.Client{noFollow, p.client("127.0.0.4", false)} {
		resp, body = p.reveal(c, link, "form=")
		if resp.StatusCode != http.StatusGone || !strings.Contains(body, `id="message"`) || len(p.disclosed(body, conf)) > 0 {
			t.Errorf("second reveal: %d, want 410, the used message and nothing disclosed:\n%s", resp.StatusCode, body)
		}
	}
	if resp, body := p.do(follow, "GET", link, "", nil); resp.StatusCode != http.StatusGone || len(p.disclosed(body, conf)) > 0 {
		t.Errorf("the page after the reveal: %d\n%s", resp.StatusCode, body)
	}

	// The one exception (the page's confirmation found no handshake): the
	// used link reveals the AmneziaWG form of the same keys, once.
	resp, body = p.reveal(noFollow, link, "form=amneziawg")
	dl = regexp.MustCompile(`<a [^>]*id="download" href="(data:[^"]*)"`).FindStringSubmatch(body)
	if resp.StatusCode != 200 || dl == nil {
		t.Fatalf("the switch to AmneziaWG: %d\n%s", resp.StatusCode, body)
	}
	awg := p.dataURLs(html.UnescapeString(dl[1]))
	if len(awg) != 1 || !strings.Contains(awg[0], "\nJc = ") || !strings.Contains(awg[0], secrets(t, conf)[0]) {
		t.Errorf("the switch to AmneziaWG hands out %q, want the same keys in the AmneziaWG form", awg)
	}
	for _, f := range []string{"form=amneziawg", "form="} {
		if resp, body := p.reveal(noFollow, link, f); resp.StatusCode != http.StatusGone || len(p.disclosed(body, conf)) > 0 {
			t.Errorf("a reveal (%s) after the switch: %d, want 410", f, resp.StatusCode)
		}
	}
}

// TestInviteGuessesSpareValidLinks (issue 9, item 9): guessing tokens from
// one address is throttled, but a member behind that same address (a
// family behind one CGNAT address, or after a few typos) still opens and
// reveals a genuine fresh link; the guesser's next miss is still refused.
func TestInviteGuessesSpareValidLinks(t *testing.T) {
	testutil.RequireRoot(t)
	if !testutil.InNetNS(t, 90*time.Second) {
		return
	}
	p := newInvitePage(t)
	cgnat := p.client("127.0.0.9", false)
	guess := func(i int) int {
		tok := make([]byte, 18)
		tok[0], tok[1] = byte(i), byte(i>>8)
		resp, _ := p.do(cgnat, "GET", "/join/"+base64.RawURLEncoding.EncodeToString(tok), "", nil)
		return resp.StatusCode
	}
	limited := 0
	for i := range 30 {
		switch code := guess(i + 1); code {
		case http.StatusTooManyRequests:
			limited++
		case http.StatusNotFound:
		default:
			t.Fatalf("guess %d: %d", i, code)
		}
	}
	if limited < 10 {
		t.Fatalf("30 guesses from one address, %d refused", limited)
	}
	link, conf := p.member("dad")
	resp, body := p.do(cgnat, "GET", link, "", nil)
	if resp.StatusCode != 200 || !strings.Contains(body, `id="reveal"`) {
		t.Fatalf("a fresh link from the guessing address: %d\n%s", resp.StatusCode, body)
	}
	resp, body = p.reveal(cgnat, link, "form=")
	dl := regexp.MustCompile(`<a [^>]*id="download" href="(data:[^"]*)"`).FindStringSubmatch(body)
	if resp.StatusCode != 200 || dl == nil {
		t.Fatalf("revealing a fresh link from the guessing address: %d\n%s", resp.StatusCode, body)
	}
	if got := p.dataURLs(html.UnescapeString(dl[1])); len(got) != 1 || got[0] != conf {
		t.Errorf("the download is %q, want\n%s", got, conf)
	}
	// A known link's later uses (the page says "already used") are not
	// guesses either; the guesser's next miss still is.
	for range 3 {
		if resp, _ := p.do(cgnat, "GET", link, "", nil); resp.StatusCode != http.StatusGone {
			t.Errorf("the used link from the guessing address: %d, want 410", resp.StatusCode)
		}
	}
	if code := guess(1000); code != http.StatusTooManyRequests {
		t.Errorf("a guess after the member's visit: %d, want 429", code)
	}
	if resp, _ := p.do(p.client("127.0.0.10", false), "GET", "/join/AAAAAAAAAAAAAAAAAAAAAAAA", "", nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("a miss from another address: %d, want 404", resp.StatusCode)
	}
}
