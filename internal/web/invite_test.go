package web

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tariq-vpn/tariq/internal/members"
	"github.com/tariq-vpn/tariq/internal/store"
)

// fakeInvites holds one invite, token "good", which Redeem burns. Its
// peer's own form is stock WireGuard on 51820; the server also offers 443
// and the AmneziaWG form on 51821, and a check of every kind of path.
type fakeInvites struct {
	used      bool
	form      *members.Form // what the last Redeem asked for
	redeems   int           // Redeem calls that handed out settings
	saved     []store.Reachability
	connected bool // what Connected answers for "good"
}

// The secrets of the fake's config, which only a reveal may hand out.
const (
	fakePrivateKey = "uFA2K7kRbnl7AhRCj3Y3P8c1rVpD0TbmzgW1Z9hV3Xk="
	fakePSK        = "q0v8mW4cYlJ7d9nq3Jm1x2Zp5KcXvB6yT8rU0sFhG2E="
	fakeConf       = "[Interface]\nPrivateKey = " + fakePrivateKey + "\n[Peer]\nPresharedKey = " + fakePSK + "\n"
)

var fakeCheck = &Check{Host: "vpn.example.org", StockPorts: []int{51820, 443}, AmneziaWGPort: 51821,
	TURNUDP: "turn:vpn.example.org:3478?transport=udp", TURNTCP: "turn:vpn.example.org:3478?transport=tcp",
	TURNTLS: "turns:vpn.example.org:443?transport=tcp", Username: "1:check:mom", Credential: "pw"}

func (f *fakeInvites) Peek(token string) (*members.Invite, error) {
	switch {
	case token != "good":
		return nil, members.ErrInviteUnknown
	case f.used:
		return nil, members.ErrInviteUsed
	}
	return &members.Invite{Peer: "mom", Expires: time.Date(2030, 1, 2, 3, 4, 0, 0, time.UTC), Form: members.Form{Port: 51820},
		Alternatives: []members.Form{{Port: 443}, {AmneziaWG: true, Port: 51821}}}, nil
}

// fakeChecks describes the check every page runs: fakeCheck, whose
// credentials only come with creds.
func fakeChecks(peer string, creds bool) *Check {
	c := *fakeCheck
	if !creds {
		c.Username, c.Credential = "", ""
	}
	return &c
}

// Page answers for "good" (valid or used) and "old" (used too long ago).
func (f *fakeInvites) Page(token string) (string, members.Form, error) {
	switch token {
	case "good":
		return "mom", members.Form{Port: 51820}, nil
	case "old":
		return "", members.Form{}, members.ErrInviteUsed
	}
	return "", members.Form{}, members.ErrInviteUnknown
}

func (f *fakeInvites) Redeem(token string, form *members.Form) (*members.Settings, error) {
	if form != nil && form.AmneziaWG && form.Port != 0 {
		return nil, members.ErrFormNotOffered
	}
	inv, err := f.Peek(token)
	if err != nil {
		return nil, err
	}
	f.used, f.form = true, form
	f.redeems++
	s := &members.Settings{Peer: inv.Peer, Form: inv.Form, Config: fakeConf}
	if form != nil && form.AmneziaWG {
		s.Config += "Jc = 4\n"
		s.Form = members.Form{AmneziaWG: true, Port: 51821}
	}
	s.QRPNG = []byte("PNG " + s.Config) // what a QR code of it would read
	return s, nil
}

// Connected answers for "good", and for "old", used more than an hour ago.
func (f *fakeInvites) Connected(token string) (bool, error) {
	switch token {
	case "good":
		return f.connected, nil
	case "old":
		return false, members.ErrInviteUsed
	}
	return false, members.ErrInviteUnknown
}

func (f *fakeInvites) SaveCheck(token string, r store.Reachability) error {
	if token != "good" {
		return members.ErrInviteUnknown
	}
	f.saved = append(f.saved, r)
	return nil
}

// request is one request to h from remote (host:port), with headers.
func request(h http.Handler, method, path, remote, body string, hdr map[string]string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, "https://vpn.example.org"+path, strings.NewReader(body))
	r.RemoteAddr = remote
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// reveal posts the page's reveal form for fields, as the page does: a
// browser's form post, or with accept application/json its script's.
func reveal(h http.Handler, path, remote, fields, accept string) *httptest.ResponseRecorder {
	return request(h, "POST", path, remote, fields, map[string]string{
		"Content-Type": "application/x-www-form-urlencoded", "Origin": "https://vpn.example.org",
		"Sec-Fetch-Site": "same-origin", "Accept": accept})
}

var dataURLRe = regexp.MustCompile(`data:[a-zA-Z]+/[a-zA-Z]`)

// leaks returns what of the fake's secrets body carries, as is, escaped,
// or inside a data: URL, and any data: URL at all.
func leaks(body string) []string {
	hay := []string{body, html.UnescapeString(body), strings.ReplaceAll(body, `\u002b`, "+")}
	for _, m := range regexp.MustCompile(`data:[^,"]*,([A-Za-z0-9+/=]*)`).FindAllStringSubmatch(html.UnescapeString(body), -1) {
		b, _ := base64.StdEncoding.DecodeString(m[1])
		hay = append(hay, string(b))
	}
	var out []string
	for _, s := range []string{fakePrivateKey, strings.TrimSuffix(fakePrivateKey, "="), fakePSK, strings.TrimSuffix(fakePSK, "="), "PrivateKey", "PresharedKey"} {
		for _, h := range hay {
			if strings.Contains(h, s) {
				out = append(out, s)
				break
			}
		}
	}
	if m := dataURLRe.FindString(hay[1]); m != "" {
		out = append(out, m)
	}
	return out
}

// TestInvitePageDisclosesNothing: no GET or HEAD of any page of the
// server, whoever asks (a browser, a link preview, a mail scanner), with
// any query, carries the settings or uses the link up. A same-origin POST
// reveals them; one from another site is refused and burns nothing.
func TestInvitePageDisclosesNothing(t *testing.T) {
	inv := &fakeInvites{}
	h := Handler(func() Info { return Info{Host: "vpn.example.org"} }, inv, fakeChecks)
	for _, path := range []string{"/join/good", "/join/good?lang=ar&os=ios", "/join/good?form=amneziawg", "/join/good?form=wireguard&port=443",
		"/join/good/", "/join/good/download", "/join/good/download?form=amneziawg", "/join/good/reveal", "/join/good/check",
		"/join/good/connected", "/assets/reach.js", "/"} {
		for _, ua := range []string{"Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X)", "WhatsApp/2.23.20.0 A",
			"facebookexternalhit/1.1", "Slackbot-LinkExpanding 1.0", "TelegramBot (like TwitterBot)", ""} {
			for _, method := range []string{"GET", "HEAD"} {
				w := request(h, method, path, "192.0.2.1:1", "", map[string]string{"User-Agent": ua})
				if l := leaks(w.Body.String()); len(l) > 0 {
					t.Errorf("%s %s (%q): %d, carries %q", method, path, ua, w.Code, l)
				}
				if strings.Contains(w.Body.String(), fakeCheck.Username) {
					t.Errorf("%s %s (%q): carries the check's TURN credentials", method, path, ua)
				}
				if loc := w.Header().Get("Location"); loc != "" {
					t.Errorf("%s %s: redirects to %s", method, path, loc)
				}
			}
		}
	}
	if inv.used {
		t.Fatal("a GET used the link up")
	}
	for _, hdr := range []map[string]string{
		{"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
		{"Origin": "https://evil.example"},
		{"Origin": "http://vpn.example.org"},
		{"Sec-Fetch-Site": "cross-site"},
		{"Sec-Fetch-Site": "same-site", "Origin": "null"},
		{"Sec-Fetch-Site": "none"},
	} {
		hdr["Content-Type"] = "application/x-www-form-urlencoded"
		if w := request(h, "POST", "/join/good", "192.0.2.1:1", "form=", hdr); w.Code != http.StatusForbidden || len(leaks(w.Body.String())) > 0 {
			t.Errorf("POST with %v: %d, want 403:\n%s", hdr, w.Code, w.Body)
		}
	}
	if inv.used {
		t.Fatal("a cross-site POST used the link up")
	}
	// Origin "null" (Referrer-Policy: no-referrer) from the page itself, and
	// a client that sends neither header, both pass.
	for _, hdr := range []map[string]string{{"Origin": "null", "Sec-Fetch-Site": "same-origin"}, {}} {
		inv.used = false
		hdr["Content-Type"] = "application/x-www-form-urlencoded"
		if w := request(h, "POST", "/join/good", "192.0.2.1:1", "form=", hdr); w.Code != 200 || !strings.Contains(w.Body.String(), "data:") {
			t.Errorf("POST with %v: %d\n%s", hdr, w.Code, w.Body)
		}
	}
}

// TestInviteReveal: the page offers the reveal (a form posting to the link
// itself, keeping ?lang=) and nothing to download; the reveal answers the
// settings as data: URLs, to a browser's form post as a page in the
// visitor's language, to the page's script as JSON; either way it uses
// the link up, and a second reveal says used.
func TestInviteReveal(t *testing.T) {
	inv := &fakeInvites{}
	h := Handler(func() Info { return Info{Host: "vpn.example.org"} }, inv, fakeChecks)

	w := request(h, "GET", "/join/good?lang=ar", "192.0.2.1:1000", "", nil)
	body := w.Body.String()
	for _, want := range []string{
		`<form id="reveal" method="post" action="good?lang=ar">`,
		`<input type="hidden" name="form" value=""><input type="hidden" name="port" value="">`,
		`<button class="btn" id="reveal-button" type="submit">` + translations["ar"]["reveal"] + `</button>`,
		`<a class="btn" id="download" hidden download="mom.conf">`,
		`<img class="qr" id="qr" alt="QR" hidden>`,
		"\u20662030-01-02 03:04 UTC\u2069", // the expiry, isolated left-to-right
	} {
		if !strings.Contains(html.UnescapeString(body), want) {
			t.Errorf("page: %d, lacks %s:\n%s", w.Code, want, body)
		}
	}
	if w.Code != 200 || w.Header().Get("Cache-Control") != "no-store" {
		t.Errorf("page: %d, Cache-Control %q", w.Code, w.Header().Get("Cache-Control"))
	}

	w = reveal(h, "/join/good?lang=ar", "192.0.2.1:1000", "form=&port=", "text/html")
	body = html.UnescapeString(w.Body.String())
	file := "data:text/plain;charset=utf-8;base64," + base64.StdEncoding.EncodeToString([]byte(fakeConf))
	qr := "data:image/png;base64," + base64.StdEncoding.EncodeToString([]byte("PNG "+fakeConf))
	for _, want := range []string{
		`<a class="btn" id="download" href="` + file + `" download="mom.conf">` + translations["ar"]["download"] + `</a>`,
		`<img class="qr" id="qr" alt="QR" src="` + qr + `">`,
		`<html lang="ar" dir="rtl">`,
		translations["ar"]["revealed"],
	} {
		if !strings.Contains(body, want) {
			t.Errorf("reveal lacks %s:\n%s", want, body)
		}
	}
	if w.Code != 200 || !inv.used || inv.form != nil || w.Header().Get("Cache-Control") != "no-store" {
		t.Errorf("reveal: %d, used %v, form %+v, Cache-Control %q", w.Code, inv.used, inv.form, w.Header().Get("Cache-Control"))
	}
	if strings.Contains(body, "<script") || strings.Contains(body, `href="?`) {
		t.Errorf("the revealed page carries a script or a link back to the (used) page:\n%s", body)
	}
	for _, accept := range []string{"text/html", "application/json"} {
		w = reveal(h, "/join/good?lang=ar", "192.0.2.1:1000", "form=", accept)
		if w.Code != http.StatusGone || len(leaks(w.Body.String())) > 0 {
			t.Errorf("second reveal (%s): %d\n%s", accept, w.Code, w.Body)
		}
	}
	if !strings.Contains(w.Body.String(), `"error"`) || !strings.Contains(reveal(h, "/join/good?lang=ar", "192.0.2.1:1000", "", "").Body.String(), translations["ar"]["used_title"]) {
		t.Errorf("second reveal: no error in JSON, or no used message in the page")
	}
	if inv.redeems != 1 {
		t.Errorf("%d reveals handed out settings, want 1", inv.redeems)
	}

	// The script's reveal, in the form the check advised.
	inv.used = false
	w = reveal(h, "/join/good", "192.0.2.1:1000", "form=amneziawg&port=", "application/json")
	var resp revealResponse
	if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil || w.Code != 200 {
		t.Fatalf("JSON reveal: %d %s %v", w.Code, w.Body, err)
	}
	awg := fakeConf + "Jc = 4\n"
	want := revealResponse{Form: "amneziawg-51821", File: "mom.conf",
		QR:       "data:image/png;base64," + base64.StdEncoding.EncodeToString([]byte("PNG "+awg)),
		Download: "data:text/plain;charset=utf-8;base64," + base64.StdEncoding.EncodeToString([]byte(awg))}
	if resp != want || inv.form == nil || !inv.form.AmneziaWG {
		t.Errorf("JSON reveal:\n%+v\nwant\n%+v (asked %+v)", resp, want, inv.form)
	}
	inv.used = false
	for _, bad := range []string{"form=skype", "form=wireguard&port=70000", "form=" + strings.Repeat("x", 2*maxRevealBody)} {
		if w := reveal(h, "/join/good", "192.0.2.1:1000", bad, "application/json"); w.Code != http.StatusBadRequest || inv.used {
			t.Errorf("reveal %.40s: %d, used %v", bad, w.Code, inv.used)
		}
	}
	if w := reveal(h, "/join/nope", "192.0.2.1:1000", "form=", "text/html"); w.Code != http.StatusNotFound ||
		!strings.Contains(w.Body.String(), translations["en"]["unknown_title"]) {
		t.Errorf("reveal of an unknown link: %d\n%s", w.Code, w.Body)
	}
}

// TestInviteGuessLimit: misses from one address are limited (429 with the
// friendly text, in the visitor's language), per address and per /64 for
// IPv6; a valid link from that same address still opens, reveals and
// then says used, and none of that counts as a guess.
func TestInviteGuessLimit(t *testing.T) {
	inv := &fakeInvites{}
	h := Handler(func() Info { return Info{Host: "vpn.example.org"} }, inv, fakeChecks)
	for _, src := range []struct{ guesser, neighbour, other string }{
		{"192.0.2.9:1000", "192.0.2.9:2000", "192.0.2.10:1000"},
		{"[2001:db8:1:2::1]:1000", "[2001:db8:1:2:ffff::9]:1000", "[2001:db8:1:3::1]:1000"},
	} {
		inv.used = false
		limited := 0
		for i := range 25 {
			w := request(h, "GET", fmt.Sprintf("/join/guess%d?lang=ar", i), src.guesser, "", nil)
			switch w.Code {
			case http.StatusTooManyRequests:
				limited++
				if !strings.Contains(w.Body.String(), translations["ar"]["slow_title"]) {
					t.Errorf("429 without the friendly text:\n%s", w.Body)
				}
			case http.StatusNotFound:
			default:
				t.Fatalf("guess %d: %d", i, w.Code)
			}
		}
		if limited < 10 {
			t.Errorf("%s: 25 guesses, %d refused", src.guesser, limited)
		}
		for _, path := range []string{"/join/nope/connected", "/join/nope"} {
			if w := request(h, "GET", path, src.neighbour, "", nil); w.Code != http.StatusTooManyRequests {
				t.Errorf("%s: a miss from the same address (%s) on %s: %d, want 429", src.guesser, src.neighbour, path, w.Code)
			}
		}
		if w := reveal(h, "/join/nope", src.neighbour, "form=", "application/json"); w.Code != http.StatusTooManyRequests {
			t.Errorf("%s: a reveal miss from the same address: %d, want 429", src.guesser, w.Code)
		}
		for i := range 3 {
			if w := request(h, "GET", "/join/good", src.neighbour, "", nil); w.Code != 200 || !strings.Contains(w.Body.String(), `id="reveal"`) {
				t.Fatalf("%s: the valid link (%d) from the guessing address: %d\n%s", src.guesser, i, w.Code, w.Body)
			}
		}
		if w := reveal(h, "/join/good", src.neighbour, "form=", "text/html"); w.Code != 200 || !strings.Contains(w.Body.String(), "data:text/plain") {
			t.Fatalf("%s: revealing the valid link from the guessing address: %d\n%s", src.guesser, w.Code, w.Body)
		}
		if w := request(h, "GET", "/join/good", src.neighbour, "", nil); w.Code != http.StatusGone {
			t.Errorf("%s: the used link: %d, want 410", src.guesser, w.Code)
		}
		if w := request(h, "GET", "/join/nope", src.other, "", nil); w.Code != http.StatusNotFound {
			t.Errorf("%s: a miss from another address (%s): %d, want 404", src.guesser, src.other, w.Code)
		}
	}
}

// TestLimiterBounded: a limiter holds at most max keys; when full, it
// drops keys whose buckets have refilled, and a new key gets the answer
// full says when none can go. Spent tells a spent key without charging it.
func TestLimiterBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		for _, full := range []bool{false, true} {
			l := &limiter[netip.Prefix]{every: time.Second, burst: 2, max: 100, full: full}
			key := func(i int) netip.Prefix {
				return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), 32)
			}
			for i := range 100 {
				if !l.allow(key(i)) {
					t.Fatalf("key %d refused", i)
				}
			}
			if got := l.allow(key(1000)); got != full || len(l.m) != 100 {
				t.Errorf("full %v: a new key allowed %v, %d tracked", full, got, len(l.m))
			}
			if l.allow(key(0)); !l.spent(key(0)) || l.allow(key(0)) || l.spent(key(1)) || l.spent(key(5000)) {
				t.Errorf("spent: key 0 %v, key 1 %v, untracked %v", l.spent(key(0)), l.spent(key(1)), l.spent(key(5000)))
			}
			time.Sleep(2 * time.Second) // every bucket full again
			if !l.allow(key(1000)) || len(l.m) != 1 {
				t.Errorf("after the buckets refilled: %d tracked, want 1", len(l.m))
			}
		}
	})
}

// TestInviteFormQuery: the reveal form keeps the page's query (language,
// platform) but never carries a form chosen by a GET's query: only the
// page's check may choose one.
func TestInviteFormQuery(t *testing.T) {
	h := Handler(func() Info { return Info{Host: "vpn.example.org"} }, &fakeInvites{}, fakeChecks)
	body := request(h, "GET", "/join/good?os=ios&lang=en&form=amneziawg", "192.0.2.1:1", "", nil).Body.String()
	m := regexp.MustCompile(`<form id="reveal" method="post" action="([^"]*)">`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no reveal form:\n%s", body)
	}
	u, err := url.Parse(html.UnescapeString(m[1]))
	if err != nil || u.Path != "good" || u.Query().Get("os") != "ios" || u.Query().Get("lang") != "en" {
		t.Errorf("reveal form action %q", m[1])
	}
	if !strings.Contains(body, `<input type="hidden" name="form" value="">`) {
		t.Errorf("the reveal form's form is not empty:\n%s", body)
	}
}

// TestTURNCredsByPost: the check's TURN credentials come only by a
// same-origin POST from the page, for a link the page may still use, and
// cross-site or unknown asks get none.
func TestTURNCredsByPost(t *testing.T) {
	h := Handler(func() Info { return Info{Host: "vpn.example.org"} }, &fakeInvites{}, fakeChecks)
	same := map[string]string{"Origin": "https://vpn.example.org", "Sec-Fetch-Site": "same-origin", "Accept": "application/json"}
	w := request(h, "POST", "/join/good/turn", "192.0.2.1:1", "", same)
	var got credsResponse
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil || w.Code != 200 || got.Username != fakeCheck.Username || got.Credential != "pw" {
		t.Errorf("same-origin POST: %d %+v %v", w.Code, got, err)
	}
	for _, tc := range []struct {
		name, path string
		hdr        map[string]string
		code       int
	}{
		{"cross-site", "/join/good/turn", map[string]string{"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}, 403},
		{"used long ago", "/join/old/turn", same, 410},
		{"unknown", "/join/nope/turn", same, 404},
	} {
		w := request(h, "POST", tc.path, "192.0.2.2:1", "", tc.hdr)
		if w.Code != tc.code || strings.Contains(w.Body.String(), fakeCheck.Username) {
			t.Errorf("%s: %d %s, want %d and no credentials", tc.name, w.Code, w.Body, tc.code)
		}
	}
	if w := request(h, "GET", "/join/good/turn", "192.0.2.1:1", "", nil); w.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET of the credentials: %d", w.Code)
	}
}
