//go:build linux

package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
	"golang.org/x/sys/unix"

	"github.com/tariq-vpn/tariq/internal/certs"
	"github.com/tariq-vpn/tariq/internal/testutil"
)

// The invite test: the real binary serves the WireGuard endpoint and the
// HTTPS page in a namespace of its own (the VPN needs root and a TUN, and
// the namespace keeps both off the host); the CLI makes the invite through
// the admin socket; headless Chromium, started inside the same namespace,
// opens the link the way a family member's phone would.

const (
	invitePublicHost = "vpn.tariq.test"
	// The page listens on 443 in the test's own namespace, so the link is
	// the plain https://vpn.tariq.test/join/<token> a family member gets.
	inviteWebAddr = "127.0.0.1:443"

	androidUA = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Mobile Safari/537.36"
	iPhoneUA  = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)

// inviteStrings returns the page's translation file for lang, so the test
// checks the texts a visitor sees against the files translators edit.
func inviteStrings(t *testing.T, lang string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "internal", "web", "i18n", lang+".json"))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// browserIn starts Chromium inside ns. NewBrowser forks chromium and dials
// its DevTools socket from the calling goroutine, so running it on a thread
// that joined ns puts the browser, its helper processes and the DevTools
// connection in ns. The thread is then kept until the browser has closed:
// chromium runs with Pdeathsig, which Linux delivers when the *thread* that
// forked it exits (golang/go#27505), and Go ends a locked thread whose
// goroutine returns.
func browserIn(t *testing.T, ns *testutil.NetNS, opts testutil.BrowserOptions) *testutil.Browser {
	t.Helper()
	testutil.RequireBinary(t, "chromium") // skip here, on the test's goroutine
	release := make(chan struct{})
	t.Cleanup(func() { close(release) }) // registered first, so it runs after the browser's own cleanup
	got := make(chan *testutil.Browser)
	go func() {
		ok := false
		defer func() {
			if !ok { // NewBrowser failed the test and ended this goroutine
				close(got)
			}
		}()
		runtime.LockOSThread() // never unlocked: the thread belongs to ns for good
		f, err := os.Open(ns.Path())
		if err != nil {
			t.Error(err)
			return
		}
		err = unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
		f.Close()
		if err != nil {
			t.Errorf("setns %s: %v", ns.Name, err)
			return
		}
		b := testutil.NewBrowser(t, opts)
		ok = true
		got <- b
		<-release
	}()
	b, ok := <-got
	if !ok {
		t.FailNow()
	}
	return b
}

func get(t *testing.T, c *http.Client, url, acceptLanguage string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Accept-Language", acceptLanguage)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp, string(body)
}

// checkSecurityHeaders asserts the page's headers: a CSP that loads
// nothing from anywhere but the page itself (and data: images), no
// referrer, no sniffing, and no HSTS for a self-signed certificate, which
// would lock visitors out of a server whose certificate they cannot check.
func checkSecurityHeaders(t *testing.T, what string, h http.Header) {
	t.Helper()
	csp := h.Get("Content-Security-Policy")
	if !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("%s: CSP %q lacks default-src 'none'", what, csp)
	}
	for _, dir := range strings.Split(csp, ";") {
		f := strings.Fields(dir)
		for _, src := range f[min(1, len(f)):] {
			switch src {
			case "'none'", "'self'", "'unsafe-inline'", "data:":
			default:
				t.Errorf("%s: CSP %q allows source %s", what, csp, src)
			}
		}
	}
	for k, want := range map[string]string{"Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff"} {
		if got := h.Get(k); got != want {
			t.Errorf("%s: %s %q, want %q", what, k, got, want)
		}
	}
	if v := h.Values("Strict-Transport-Security"); len(v) > 0 {
		t.Errorf("%s: HSTS %q with a self-signed certificate", what, v)
	}
}

// pageView is what the visitor sees of an invite page.
type pageView struct {
	Lang      string   `json:"lang"`
	Dir       string   `json:"dir"`
	Direction string   `json:"direction"` // computed, of body
	Title     string   `json:"title"`
	H1        string   `json:"h1"`
	Steps     []string `json:"steps"`
	Reveal    string   `json:"reveal"` // the "show my settings" button, if shown
	Button    string   `json:"button"` // the download button, if shown
	Href      string   `json:"href"`
	Download  string   `json:"download"`
	HasQR     bool     `json:"hasQR"`
	MsgTitle  string   `json:"msgTitle"`
	MsgBody   string   `json:"msgBody"`
	Note      string   `json:"note"` // "this link is now used up", once revealed
	Navs      int      `json:"navs"` // links to the page in another language or for another device
	HTML      string   `json:"html"`
	// Layout, in CSS pixels.
	ViewWidth   float64 `json:"viewWidth"`
	ScrollWidth float64 `json:"scrollWidth"`
	QRWidth     float64 `json:"qrWidth"`
	QRLeft      float64 `json:"qrLeft"`
	QRRight     float64 `json:"qrRight"`
	ButtonH     float64 `json:"buttonH"` // the button shown: reveal, else download
	ButtonW     float64 `json:"buttonW"`
}

const readPage = `(() => {
	const q = s => document.querySelector(s);
	const shown = e => !!e && e.offsetParent !== null;
	const box = e => shown(e) ? e.getBoundingClientRect() : {width: 0, height: 0, left: 0, right: 0};
	const qr = q('#qr'), btn = q('#download'), rev = q('#reveal-button');
	const text = e => shown(e) ? e.innerText.trim() : '';
	const img = shown(qr) && qr.complete && qr.naturalWidth > 0;
	return {
		lang: document.documentElement.lang, dir: document.documentElement.dir,
		direction: getComputedStyle(document.body).direction,
		title: document.title, h1: text(q('h1')),
		steps: [...document.querySelectorAll('ol li')].map(text),
		reveal: text(rev), button: text(btn), href: shown(btn) ? btn.href : '', download: btn ? btn.getAttribute('download') : '',
		hasQR: !!img, msgTitle: text(q('#message h1')), msgBody: text(q('#message p')), html: document.documentElement.outerHTML,
		note: text(q('#revealed')), navs: [...document.querySelectorAll('nav')].filter(shown).length,
		viewWidth: innerWidth, scrollWidth: document.documentElement.scrollWidth,
		qrWidth: box(qr).width, qrLeft: box(qr).left, qrRight: box(qr).right,
		buttonH: box(shown(rev) ? rev : btn).height, buttonW: box(shown(rev) ? rev : btn).width,
	};
})()`

// dataURLText decodes a data: URL, "" if it is not one.
func dataURLText(u string) string {
	head, data, ok := strings.Cut(u, ",")
	if !ok || !strings.HasPrefix(head, "data:") {
		return ""
	}
	if strings.HasSuffix(head, ";base64") {
		b, err := base64.StdEncoding.DecodeString(data)
		if err != nil {
			return ""
		}
		return string(b)
	}
	return data
}

// TestInviteBrowser is the family member's side of an invite, end to end:
// the link from `tariq peer add mom --invite` opens on a phone in English
// and Arabic without giving anything away (no QR code, no download, and a
// link preview's fetch neither sees the config nor uses the link up); the
// member's "Show my settings" reveals, in either language, with the page's
// script and without, a QR code (read back from a screenshot) and a
// download that are exactly the config `tariq peer show mom` prints, once;
// used, expired and unknown links get a friendly message and never the
// config; guessing from one address is refused while a member's genuine
// link from that same address still opens and reveals.
func TestInviteBrowser(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireBinary(t, "chromium")
	zbarimg := testutil.RequireBinary(t, "zbarimg")
	// tariq refuses unknown TARIQ_* variables, and the CLI (in-process) and
	// the daemon both read this environment: take this one out of it.
	keepShots, keep := os.LookupEnv("TARIQ_KEEP_SCREENSHOTS")
	if keep {
		os.Unsetenv("TARIQ_KEEP_SCREENSHOTS")
		t.Cleanup(func() { os.Setenv("TARIQ_KEEP_SCREENSHOTS", keepShots) })
	}
	l := newLab(t, labOptions{Isolated: true, Config: map[string]string{
		"server.public_host":    invitePublicHost,
		"server.metrics_listen": `""`,
		"tls.mode":              "self-signed",
		"vpn.nat":               "false",
		"web.enabled":           "true",
		"web.listen":            fmt.Sprintf("[%q]", inviteWebAddr),
	}})
	conf := l.conf

	// The sysadmin's side: the CLI, through the running daemon's admin socket.
	code, out, errOut := tariq(t, "peer", "add", "mom", "--invite", "--config", conf)
	if code != 0 {
		t.Fatalf("peer add mom --invite: %d %s", code, errOut)
	}
	link := strings.TrimSpace(out)
	m := regexp.MustCompile(`^https://` + regexp.QuoteMeta(invitePublicHost) + `/join/([A-Za-z0-9_-]+)$`).FindStringSubmatch(link)
	if m == nil {
		t.Fatalf("peer add --invite printed %q, want https://%s/join/<token>", out, invitePublicHost)
	}
	if tok, err := base64.RawURLEncoding.DecodeString(m[1]); err != nil || len(tok) < 16 {
		t.Errorf("token %q carries %d bytes (%v), want at least 128 random bits", m[1], len(tok), err)
	}
	code, wantConf, errOut := tariq(t, "peer", "show", "mom", "--config", conf)
	if code != 0 {
		t.Fatalf("peer show mom: %d %s", code, errOut)
	}
	privKey := regexp.MustCompile(`(?m)^PrivateKey = (\S+)$`).FindStringSubmatch(wantConf)
	if privKey == nil {
		t.Fatalf("peer show mom has no private key:\n%s", wantConf)
	}

	cert, roots := l.selfSigned()

	// Headers of the live page, and what link previews and mail scanners
	// get: a GET (any user agent, redirects followed) or a HEAD shows
	// nothing of the config and leaves the link unused.
	psk := regexp.MustCompile(`(?m)^PresharedKey = (\S+)$`).FindStringSubmatch(wantConf)
	if psk == nil {
		t.Fatalf("peer show mom has no preshared key:\n%s", wantConf)
	}
	secretFree := func(what, body string) {
		t.Helper()
		unesc := strings.NewReplacer(`\u002b`, "+", `\/`, "/").Replace(body)
		for _, s := range []string{privKey[1], psk[1], strings.TrimSuffix(privKey[1], "="), "PrivateKey", "PresharedKey", "data:image", "data:text"} {
			if strings.Contains(body, s) || strings.Contains(unesc, s) {
				t.Errorf("%s carries %q:\n%s", what, s, body)
			}
		}
	}
	other := nsClient(t, l.server, "127.0.0.2", inviteWebAddr, roots)
	resp, body := get(t, other, link, "en")
	if resp.StatusCode != 200 || !strings.Contains(body, `id="reveal"`) {
		t.Fatalf("invite page: %d\n%s", resp.StatusCode, body)
	}
	secretFree("the invite page", body)
	checkSecurityHeaders(t, "invite page", resp.Header)
	following := nsClient(t, l.server, "127.0.0.2", inviteWebAddr, roots)
	following.CheckRedirect = nil
	for _, ua := range []string{"WhatsApp/2.23.20.0 A", "facebookexternalhit/1.1", "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
		"TelegramBot (like TwitterBot)", "Mozilla/5.0 (compatible; Microsoft Defender for Office 365 link scanner)"} {
		for _, method := range []string{"GET", "HEAD"} {
			req, _ := http.NewRequest(method, link, nil)
			req.Header.Set("User-Agent", ua)
			resp, err := following.Do(req)
			if err != nil {
				t.Fatalf("%s %s as %q: %v", method, link, ua, err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Errorf("%s as %q: %d, want 200 (still valid)", method, ua, resp.StatusCode)
			}
			secretFree(method+" as "+ua, string(b))
		}
	}

	en, ar := inviteStrings(t, "en"), inviteStrings(t, "ar")
	steps := func(tr map[string]string, platform string) []string {
		return []string{tr["step_"+platform+"_1"], tr["step_"+platform+"_2"], tr["step_"+platform+"_3"]}
	}

	b := browserIn(t, l.server, testutil.BrowserOptions{
		Timeout:  3 * time.Minute,
		Viewport: testutil.PhoneViewport(),
		HostMap:  map[string]string{invitePublicHost: "127.0.0.1"},
		Flags:    map[string]any{"ignore-certificate-errors-spki-list": certs.SPKIHash(cert)},
	})
	var (
		mu     sync.Mutex
		willDL *browser.EventDownloadWillBegin
		dlDone = make(chan string, 1)
	)
	chromedp.ListenTarget(b.Context(), func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch ev := ev.(type) {
		case *browser.EventDownloadWillBegin:
			willDL = ev
		case *browser.EventDownloadProgress:
			if ev.State == browser.DownloadProgressStateCompleted || ev.State == browser.DownloadProgressStateCanceled {
				select {
				case dlDone <- string(ev.State):
				default:
				}
			}
		}
	})

	shots := t.TempDir()
	// visit opens url as a phone with ua and acceptLanguage would, runs
	// actions (the member's clicks) and returns what the page shows then,
	// and the status of the last navigation.
	visit := func(label, url, ua, acceptLanguage string, actions ...chromedp.Action) (pageView, int64) {
		t.Helper()
		ctx, cancel := context.WithTimeout(b.Context(), 30*time.Second)
		defer cancel()
		if err := chromedp.Run(ctx, emulation.SetUserAgentOverride(ua).WithAcceptLanguage(acceptLanguage)); err != nil {
			t.Fatalf("%s: %v", label, err)
		}
		resp, err := chromedp.RunResponse(ctx, chromedp.Navigate(url))
		if err != nil {
			t.Fatalf("%s: opening %s: %v", label, url, err)
		}
		if err := chromedp.Run(ctx, append([]chromedp.Action{chromedp.WaitReady("body")}, actions...)...); err != nil {
			t.Fatalf("%s: %v", label, err)
		}
		var v pageView
		if err := chromedp.Run(ctx, testutil.EvalJSON(readPage, &v)); err != nil {
			t.Fatalf("%s: reading the page: %v", label, err)
		}
		return v, resp.Status
	}
	// revealClick presses "Show my settings" and waits for the QR code:
	// the page's script shows the answer in place.
	revealClick := []chromedp.Action{chromedp.Click("#reveal-button", chromedp.ByID), chromedp.WaitVisible("#qr", chromedp.ByID),
		chromedp.Poll(`document.getElementById('qr').complete && document.getElementById('qr').naturalWidth > 0`, nil, chromedp.WithPollingTimeout(10*time.Second))}
	// screenshot saves a full-page PNG and returns what zbarimg reads in it
	// and whether it found a code at all.
	screenshot := func(name string) (string, bool) {
		t.Helper()
		var png []byte
		if err := b.RunTimeout(20*time.Second, chromedp.FullScreenshot(&png, 100)); err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		file := filepath.Join(shots, name)
		if err := os.WriteFile(file, png, 0o644); err != nil {
			t.Fatal(err)
		}
		if keepShots != "" {
			err := os.MkdirAll(keepShots, 0o755)
			if err == nil {
				err = os.WriteFile(filepath.Join(keepShots, name), png, 0o644)
			}
			if err != nil {
				t.Errorf("keeping %s: %v", name, err)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, zbarimg, "--raw", "-q", file).Output()
		var exit *exec.ExitError
		switch {
		case errors.As(err, &exit) && exit.ExitCode() == 4: // zbarimg: no symbols found
			return "", false
		case err != nil:
			t.Fatalf("zbarimg %s: %v", name, err)
		}
		return strings.TrimSuffix(string(out), "\n"), true // zbarimg ends each symbol with a newline
	}
	// download clicks the download button and returns the saved file and
	// the name the browser gave it.
	download := func(label string) (string, string) {
		t.Helper()
		dlDir := t.TempDir()
		mu.Lock()
		willDL = nil
		mu.Unlock()
		err := b.RunTimeout(20*time.Second,
			browser.SetDownloadBehavior(browser.SetDownloadBehaviorBehaviorAllowAndName).WithDownloadPath(dlDir).WithEventsEnabled(true),
			chromedp.Click("#download", chromedp.ByID))
		if err != nil {
			t.Fatalf("%s: clicking the download button: %v", label, err)
		}
		select {
		case state := <-dlDone:
			if state != string(browser.DownloadProgressStateCompleted) {
				t.Fatalf("%s: download %s", label, state)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("%s: download did not finish within 20s", label)
		}
		mu.Lock()
		will := willDL
		mu.Unlock()
		if will == nil {
			t.Fatalf("%s: no Browser.downloadWillBegin", label)
		}
		got, err := os.ReadFile(filepath.Join(dlDir, will.GUID))
		if err != nil {
			t.Fatalf("%s: the downloaded file: %v", label, err)
		}
		return string(got), will.SuggestedFilename
	}
	// phoneLayout: nothing wider than the screen, a button a thumb can hit
	// and, once revealed, a QR code big enough to scan from another phone
	// and inside the screen.
	phoneLayout := func(label string, v pageView, revealed bool) {
		t.Helper()
		if v.ScrollWidth > v.ViewWidth || v.ButtonH < 44 || v.ButtonW < v.ViewWidth/2 {
			t.Errorf("%s: page %.0f px wide on a %.0f px screen; button %.0f×%.0f px", label, v.ScrollWidth, v.ViewWidth, v.ButtonW, v.ButtonH)
		}
		if revealed && (!v.HasQR || v.QRWidth < 250 || v.QRLeft < 0 || v.QRRight > v.ViewWidth) {
			t.Errorf("%s: QR shown %v, %.0f px wide at %.0f–%.0f of %.0f", label, v.HasQR, v.QRWidth, v.QRLeft, v.QRRight, v.ViewWidth)
		}
	}

	cases := []struct {
		lang, acceptLanguage, ua, platform, dir string
		tr                                      map[string]string
	}{
		// Chromium's Accept-Language override is a plain list: it adds the
		// q-values itself (given "ar;q=0.9" it sends a malformed header).
		{"en", "en-US,en", androidUA, "android", "ltr", en},
		{"ar", "ar-EG,ar,en", iPhoneUA, "ios", "rtl", ar},
	}
	// Opening the link, in either language (the page's script runs its
	// check), shows the steps and the button, and neither a QR code nor
	// the config; it uses nothing up.
	for _, tc := range cases {
		label := "first visit, " + tc.lang
		v, status := visit(label, link, tc.ua, tc.acceptLanguage)
		title := strings.ReplaceAll(tc.tr["title"], "{server}", invitePublicHost)
		if status != 200 || v.Lang != tc.lang || v.Dir != tc.dir || v.Direction != tc.dir {
			t.Errorf("%s: status %d, lang %q, dir %q (computed %q); want 200, %s, %s", label, status, v.Lang, v.Dir, v.Direction, tc.lang, tc.dir)
		}
		if v.Title != title || v.H1 != title {
			t.Errorf("%s: title %q, heading %q, want %q", label, v.Title, v.H1, title)
		}
		if want := steps(tc.tr, tc.platform); strings.Join(v.Steps, "\n") != strings.Join(want, "\n") {
			t.Errorf("%s: steps for %s\n%q\nwant\n%q", label, tc.platform, v.Steps, want)
		}
		if v.Reveal != tc.tr["reveal"] || v.Button != "" || v.Href != "" || v.HasQR {
			t.Errorf("%s: reveal button %q, download %q → %q, QR %v; want %q and no settings before it is pressed", label, v.Reveal, v.Button, v.Href, v.HasQR, tc.tr["reveal"])
		}
		phoneLayout(label, v, false)
		secretFree(label, v.HTML)
		if v.Navs != 2 || v.Note != "" {
			t.Errorf("%s: %d language and device links, note %q; want 2 and none", label, v.Navs, v.Note)
		}
		if got, found := screenshot("invite-" + tc.lang + ".png"); found {
			t.Errorf("%s: the page shows a QR code before the reveal: %q", label, got)
		}
	}

	// The member's step, in each language, with the page's script (the
	// answer shown in place) and without (the form posts, the answer is a
	// page): the QR code and the download are the config, once.
	links := map[string]string{"ar": link}
	newLink := func() string {
		t.Helper()
		code, out, errOut := tariq(t, "peer", "show", "mom", "--invite", "--config", conf)
		if code != 0 {
			t.Fatalf("peer show --invite: %d %s", code, errOut)
		}
		return strings.TrimSpace(out)
	}
	links["en"] = newLink()
	for _, tc := range cases {
		label := "reveal, " + tc.lang
		v, status := visit(label, links[tc.lang], tc.ua, tc.acceptLanguage, revealClick...)
		if status != 200 || v.Lang != tc.lang || v.Dir != tc.dir || v.Reveal != "" || v.Button != tc.tr["download"] || v.Download != "mom.conf" ||
			dataURLText(v.Href) != wantConf {
			t.Errorf("%s: %d, lang %s %s, reveal button %q, download %q (%s) → %.60s; want the config as mom.conf", label, status, v.Lang, v.Dir, v.Reveal, v.Button, v.Download, v.Href)
		}
		phoneLayout(label, v, true)
		// Links to the page in another language would open it used.
		if v.Navs != 0 || v.Note != tc.tr["revealed"] {
			t.Errorf("%s: %d links to other versions of the page, note %q; want none, %q", label, v.Navs, v.Note, tc.tr["revealed"])
		}
		if got, found := screenshot("reveal-" + tc.lang + ".png"); !found || got != wantConf {
			t.Errorf("%s: QR code in the screenshot (found %v) reads\n%s\nwant the config peer show prints:\n%s", label, found, got, wantConf)
		}
		got, name := download(label)
		if got != wantConf || name != "mom.conf" {
			t.Errorf("%s: downloaded as %q\n%s\nwant mom.conf, the config peer show prints:\n%s", label, name, got, wantConf)
		}
		// Leaving the page and coming back (the back button) shows the
		// link used, not the settings; so does reloading it.
		ctx, cancel := context.WithTimeout(b.Context(), 20*time.Second)
		err := chromedp.Run(ctx, chromedp.Navigate("about:blank"), chromedp.NavigateBack(),
			chromedp.WaitVisible("#message", chromedp.ByID), testutil.EvalJSON(readPage, &v))
		cancel()
		if err != nil || v.MsgTitle != tc.tr["used_title"] || v.HasQR || v.Href != "" {
			t.Errorf("%s, back again: %v, %q, QR %v, download %.40q; want %q and no settings", label, err, v.MsgTitle, v.HasQR, v.Href, tc.tr["used_title"])
		}
		secretFree(label+", back again", v.HTML)
		if v, status := visit(label+", reloaded", links[tc.lang], tc.ua, tc.acceptLanguage); status != 410 || v.MsgTitle != tc.tr["used_title"] || v.HasQR {
			t.Errorf("%s, reloaded: %d %q, want 410 %q", label, status, v.MsgTitle, tc.tr["used_title"])
		}
	}
	noScript := newLink() + "?lang=ar"
	v, status := visit("reveal without script, ar", noScript, iPhoneUA, "en", emulation.SetScriptExecutionDisabled(true))
	if status != 200 || v.Reveal != ar["reveal"] {
		t.Fatalf("reveal without script, ar: the page %d, reveal button %q", status, v.Reveal)
	}
	ctx, cancel := context.WithTimeout(b.Context(), 30*time.Second)
	navResp, err := chromedp.RunResponse(ctx, chromedp.Click("#reveal-button", chromedp.ByID))
	if err == nil {
		err = chromedp.Run(ctx, chromedp.WaitVisible("#qr", chromedp.ByID), testutil.EvalJSON(readPage, &v), emulation.SetScriptExecutionDisabled(false))
	}
	cancel()
	if err != nil {
		t.Fatalf("reveal without script: %v", err)
	}
	if navResp.Status != 200 || v.Lang != "ar" || v.Dir != "rtl" || dataURLText(v.Href) != wantConf || v.Download != "mom.conf" || v.Note != ar["revealed"] || v.Navs != 0 {
		t.Errorf("reveal without script: %d, lang %s %s, download %q → %.60s:\n%s", navResp.Status, v.Lang, v.Dir, v.Download, v.Href, v.HTML)
	}
	phoneLayout("reveal without script", v, true)
	if got, found := screenshot("reveal-noscript-ar.png"); !found || got != wantConf {
		t.Errorf("reveal without script: QR code (found %v) reads\n%s\nwant\n%s", found, got, wantConf)
	}

	// Used: the page says so in the visitor's language, and carries neither
	// the QR code nor any part of the config; so does posting again.
	noConfig := func(label string, v pageView) {
		t.Helper()
		if v.HasQR || strings.Contains(v.HTML, `id="qr"`) || strings.Contains(v.HTML, "data:image") ||
			strings.Contains(v.HTML, privKey[1]) || strings.Contains(v.HTML, "PrivateKey") || v.Href != "" {
			t.Errorf("%s: the page still hands out the config:\n%s", label, v.HTML)
		}
	}
	for _, tc := range []struct {
		label, url, ua, acceptLanguage string
		tr                             map[string]string
	}{
		{"second visit, en", link, androidUA, "en", en},
		{"second visit, ar", link, iPhoneUA, "ar", ar},
	} {
		v, status := visit(tc.label, tc.url, tc.ua, tc.acceptLanguage)
		if status != 410 || v.MsgTitle != tc.tr["used_title"] || v.MsgBody != tc.tr["used_body"] {
			t.Errorf("%s: %d %q %q, want 410 %q %q", tc.label, status, v.MsgTitle, v.MsgBody, tc.tr["used_title"], tc.tr["used_body"])
		}
		noConfig(tc.label, v)
		if tc.label == "second visit, ar" {
			if got, found := screenshot("used-ar.png"); found {
				t.Errorf("%s: the screenshot has a QR code: %q", tc.label, got)
			}
		}
	}
	post := func(c *http.Client, url string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest("POST", url, strings.NewReader("form=&port="))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", "https://"+invitePublicHost)
		req.Header.Set("Sec-Fetch-Site", "same-origin")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("POST %s: %v", url, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(b)
	}
	if resp, body := post(other, link+"?lang=ar"); resp.StatusCode != 410 || !strings.Contains(body, ar["used_title"]) {
		t.Errorf("a second reveal: %d\n%s", resp.StatusCode, body)
	} else {
		secretFree("a second reveal", body)
	}

	// Expired: a link valid for one second, a second later.
	code, out, errOut = tariq(t, "peer", "show", "mom", "--invite", "--ttl", "1s", "--config", conf)
	if code != 0 {
		t.Fatalf("peer show --invite --ttl 1s: %d %s", code, errOut)
	}
	time.Sleep(1100 * time.Millisecond)
	v, status = visit("expired", strings.TrimSpace(out), iPhoneUA, "ar")
	if status != 410 || v.MsgTitle != ar["expired_title"] || v.MsgBody != ar["expired_body"] || v.Dir != "rtl" {
		t.Errorf("expired: %d %q %q (dir %q), want 410 %q %q, rtl", status, v.MsgTitle, v.MsgBody, v.Dir, ar["expired_title"], ar["expired_body"])
	}
	noConfig("expired", v)

	// Unknown: a well-formed token nobody was given.
	unknown := "https://" + invitePublicHost + "/join/" + base64.RawURLEncoding.EncodeToString(make([]byte, 18))
	resp, body = get(t, other, unknown, "en")
	if resp.StatusCode != 404 || !strings.Contains(body, en["unknown_title"]) || !strings.Contains(body, en["unknown_body"]) {
		t.Errorf("unknown token: %d\n%s", resp.StatusCode, body)
	}
	checkSecurityHeaders(t, "unknown-token page", resp.Header)

	// Guessing from one address ends in 429 with the friendly text; a
	// member behind that same address (one CGNAT address for a whole
	// family) still opens and reveals a genuine fresh link.
	fresh := newLink()
	guesser := nsClient(t, l.server, "127.0.0.3", inviteWebAddr, roots)
	limited := 0
	for i := range 30 {
		guess := make([]byte, 18)
		guess[0] = byte(i + 1)
		resp, body := get(t, guesser, "https://"+invitePublicHost+"/join/"+base64.RawURLEncoding.EncodeToString(guess), "en")
		if resp.StatusCode == http.StatusTooManyRequests {
			if limited == 0 {
				t.Logf("guess %d refused with 429", i+1)
				if !strings.Contains(body, en["slow_title"]) || !strings.Contains(body, en["slow_body"]) {
					t.Errorf("429 page lacks the friendly text:\n%s", body)
				}
				checkSecurityHeaders(t, "429 page", resp.Header)
			}
			limited++
			continue
		}
		if resp.StatusCode != 404 {
			t.Fatalf("guess %d: %d\n%s", i, resp.StatusCode, body)
		}
	}
	if limited < 10 {
		t.Fatalf("30 rapid guesses from one address, %d refused", limited)
	}
	resp, body = get(t, guesser, fresh+"?lang=ar", "en")
	if resp.StatusCode != 200 || !strings.Contains(body, `id="reveal"`) || !strings.Contains(body, `lang="ar" dir="rtl"`) {
		t.Errorf("a valid link from the guessing address: %d\n%s", resp.StatusCode, body)
	}
	secretFree("a valid link from the guessing address", body)
	// The expiry date reads left to right inside the Arabic sentence.
	if !regexp.MustCompile("\u2066\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d UTC\u2069").MatchString(body) {
		t.Errorf("the expiry is not isolated left-to-right in the Arabic page:\n%s", body)
	}
	// The language chosen by ?lang= goes along to the reveal.
	if !regexp.MustCompile(`<form id="reveal" method="post" action="[A-Za-z0-9_-]+\?lang=ar">`).MatchString(body) {
		t.Errorf("the reveal does not keep ?lang=ar:\n%s", body)
	}
	resp, body = post(guesser, fresh+"?lang=ar")
	dl := regexp.MustCompile(`<a class="btn" id="download" href="(data:[^"]*)" download="mom.conf">`).FindStringSubmatch(body)
	if resp.StatusCode != 200 || dl == nil || dataURLText(dl[1]) != wantConf {
		t.Errorf("revealing a valid link from the guessing address: %d\n%s", resp.StatusCode, body)
	}
	if resp, _ := get(t, guesser, unknown, "en"); resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("a guess after the member's reveal: %d, want 429", resp.StatusCode)
	}
}
