package web

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"html"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/gorilla/websocket"

	"github.com/tariq-vpn/tariq/internal/members"
)

// fakeOutlineKey is the Outline key the outline fake hands out.
const fakeOutlineKey = "ssconf://vpn.example.org/ABCDEFGHIJKLMNOPQRSTUVWXYZ#mom"

// withOutline is fakeInvites for a server that hands out Outline keys.
type withOutline struct{ *fakeInvites }

func (o *withOutline) Peek(token string) (*members.Invite, error) {
	inv, err := o.fakeInvites.Peek(token)
	if err == nil {
		inv.Alternatives = append(inv.Alternatives, members.Form{Outline: true})
	}
	return inv, err
}

func (o *withOutline) Redeem(token string, form *members.Form) (*members.Settings, error) {
	if form == nil || !form.Outline {
		return o.fakeInvites.Redeem(token, form)
	}
	if _, err := o.Peek(token); err != nil {
		return nil, err
	}
	o.used, o.form = true, form
	o.redeems++
	return &members.Settings{Peer: "mom", Form: *form, Config: fakeOutlineKey, QRPNG: []byte("PNG " + fakeOutlineKey)}, nil
}

// outlineChecks is fakeChecks with the Outline path on the HTTPS port.
func outlineChecks(peer string, creds bool) *Check {
	c := fakeChecks(peer, creds)
	c.OutlinePort = 443
	return c
}

// TestOutlineVerdict: the Outline app is the advice when no UDP path is
// usable and its WebSocket gets through, before relayed calls; WireGuard
// and AmneziaWG come first whenever UDP works.
func TestOutlineVerdict(t *testing.T) {
	c := outlineChecks("mom", false)
	own := members.Form{Port: 51820}
	for _, tc := range []struct {
		name            string
		reached, failed []string
		want            string
	}{
		{"UDP dropped", []string{"turn-tcp", "turns-443", "outline-443"}, []string{"wg-51820", "wg-443", "awg-51821", "turn-udp"}, members.VerdictOutline},
		{"only TCP 443", []string{"turns-443", "outline-443"}, []string{"wg-51820", "turn-tcp"}, members.VerdictOutline},
		{"UDP throttled", []string{"wg-51820", "turn-udp", "outline-443"}, []string{"udp-sustained"}, members.VerdictOutline},
		{"UDP works", []string{"wg-51820", "outline-443"}, nil, members.VerdictWireGuard},
		{"only AmneziaWG over UDP", []string{"awg-51821", "outline-443"}, []string{"wg-51820", "wg-443"}, members.VerdictAmneziaWG},
		{"WebSockets broken", []string{"turns-443"}, []string{"wg-51820", "outline-443"}, members.VerdictCalls},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := judge(c, own, tc.reached, tc.failed, time.Unix(1, 0))
			if err != nil || r.Verdict != tc.want {
				t.Errorf("verdict %q %v, want %q", r.Verdict, err, tc.want)
			}
		})
	}
	if _, err := judge(fakeCheck, own, []string{"outline-443"}, nil, time.Now()); err == nil {
		t.Error("an Outline result accepted from a page whose server hands out no Outline key")
	}
}

// TestOutlinePage: a page whose server hands out Outline keys probes the
// link's own WebSocket path and carries the Outline steps, store links
// and the place for the key, hidden, but no GET carries a key; the check
// advising Outline answers form "outline"; the member's reveal of it
// answers the key and its QR code, for the script (no download) and for
// a browser without script ("Add to Outline" is the ssconf:// link).
func TestOutlinePage(t *testing.T) {
	inv := &withOutline{&fakeInvites{}}
	h := Handler(func() Info { return Info{Host: "vpn.example.org"} }, inv, outlineChecks)
	for _, q := range []string{"", "?lang=ar", "?os=ios"} {
		w := request(h, "GET", "/join/good"+q, "192.0.2.1:1", "", nil)
		body := w.Body.String()
		if w.Code != 200 || strings.Contains(body, "ssconf") || strings.Contains(body, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") {
			t.Fatalf("GET /join/good%s: %d, or it carries the key:\n%s", q, w.Code, body)
		}
		for _, want := range []string{`<ol id="outline-steps" hidden>`, `<div id="outline-box" hidden>`, `<p class="verdict" id="verdict-outline" hidden>`,
			`href="https://play.google.com/store/apps/details?id=org.outline.android.client"`, `href="https://apps.apple.com/app/outline-app/id1356177741"`,
			`<form id="reveal-outline" method="post" action="good` + html.EscapeString(q) + `">`} {
			if !strings.Contains(body, want) {
				t.Errorf("GET /join/good%s lacks %s", q, want)
			}
		}
	}
	body := request(h, "GET", "/join/good", "192.0.2.1:1", "", nil).Body.String()
	m := regexp.MustCompile(`(?s)<script type="application/json" id="reach-data">(.*?)</script>`).FindStringSubmatch(body)
	var data checkData
	if m == nil || json.Unmarshal([]byte(m[1]), &data) != nil {
		t.Fatalf("no data block:\n%s", body)
	}
	if diff := cmp.Diff(&probe{"outline-443", "/join/good/ws"}, data.WS); diff != "" || !data.Outline {
		t.Errorf("the WebSocket probe (-want +got):\n%s; outline on offer: %v", diff, data.Outline)
	}

	// The check advises it.
	w := request(h, "POST", "/join/good/check", "192.0.2.2:1", `{"reached":["turns-443","outline-443"],"failed":["wg-51820","wg-443","awg-51821","turn-udp","turn-tcp"]}`,
		map[string]string{"Content-Type": "application/json", "Origin": "https://vpn.example.org"})
	var resp checkResponse
	if json.Unmarshal(w.Body.Bytes(), &resp); w.Code != 200 || resp.Verdict != members.VerdictOutline || resp.Form != "outline" ||
		!strings.Contains(strings.Join(resp.Usable, " "), "outline-443") {
		t.Errorf("check with only TCP 443 and the WebSocket: %d %s", w.Code, w.Body)
	}

	// The script's reveal: the key and its QR code, no download.
	w = reveal(h, "/join/good", "192.0.2.3:1", "form=outline&port=", "application/json")
	var rr revealResponse
	if json.Unmarshal(w.Body.Bytes(), &rr); w.Code != 200 || rr.Form != "outline" || rr.Key != fakeOutlineKey || rr.Download != "" ||
		!strings.HasPrefix(rr.QR, "data:image/png;base64,") || *inv.form != (members.Form{Outline: true}) {
		t.Errorf("reveal of the Outline form: %d %s", w.Code, w.Body)
	}

	// A browser without script: the page with "Add to Outline".
	inv.used = false
	w = reveal(h, "/join/good?lang=ar", "192.0.2.3:1", "form=outline", "text/html")
	body = w.Body.String()
	for _, want := range []string{`<a class="btn" id="outline-add" href="` + html.EscapeString(fakeOutlineKey) + `">` + translations["ar"]["outline_add"] + `</a>`,
		`value="` + html.EscapeString(fakeOutlineKey) + `"`, `<ol id="outline-steps">`, `<ol id="steps" hidden>`, `<a class="btn" id="download" hidden`} {
		if !strings.Contains(body, want) {
			t.Errorf("the reveal page without script lacks %s:\n%s", want, body)
		}
	}
	if strings.Contains(body, "ZgotmplZ") {
		t.Errorf("html/template refused the ssconf:// link:\n%s", body)
	}
}

// TestOutlineProbe: the link's WebSocket probe is a real WebSocket on
// the HTTPS port that a page's script opens and closes cleanly (the
// server answers its close); it answers only a live link's own page
// (same origin), and anything that is not an upgrade, or a link that is
// unknown or used too long ago, gets an ordinary answer and no upgrade.
func TestOutlineProbe(t *testing.T) {
	inv := &withOutline{&fakeInvites{}}
	srv := httptest.NewTLSServer(Handler(func() Info { return Info{Host: "vpn.example.org"} }, inv, outlineChecks))
	defer srv.Close()
	dialer := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: poolOf(srv)}, HandshakeTimeout: 5 * time.Second}
	wsURL := "wss://" + srv.Listener.Addr().String()
	origin := http.Header{"Origin": {"https://" + srv.Listener.Addr().String()}}

	c, resp, err := dialer.Dial(wsURL+"/join/good/ws", origin)
	if err != nil {
		t.Fatalf("probe: %v (%v)", err, resp)
	}
	if err := c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _, err = c.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.CloseNormalClosure {
		t.Errorf("after the page's close: %v, want the server's normal close", err)
	}
	c.Close()

	for _, tc := range []struct {
		name, path string
		hdr        http.Header
		code       int
	}{
		{"unknown link", "/join/nope/ws", origin, http.StatusNotFound},
		{"used long ago", "/join/old/ws", origin, http.StatusGone},
		{"another site", "/join/good/ws", http.Header{"Origin": {"https://evil.example"}}, http.StatusForbidden},
	} {
		_, resp, err := dialer.Dial(wsURL+tc.path, tc.hdr)
		if err == nil || resp == nil || resp.StatusCode != tc.code {
			t.Errorf("%s: %v %v, want no upgrade and %d", tc.name, err, resp, tc.code)
		}
	}
	plain, err := srv.Client().Get(srv.URL + "/join/good/ws")
	if err != nil {
		t.Fatal(err)
	}
	plain.Body.Close()
	if plain.StatusCode != http.StatusNotFound || plain.Header.Get("Upgrade") != "" {
		t.Errorf("a plain GET of the probe: %d %v, want the 404 any unknown path gets", plain.StatusCode, plain.Header)
	}
}

// poolOf trusts srv's certificate alone.
func poolOf(srv *httptest.Server) *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	return pool
}
