package web

import (
	"encoding/json"
	"fmt"
	"html"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tariq-vpn/tariq/internal/members"
)

// TestVerdict: the advice for each kind of network, as the censor lab's
// profiles leave it (README, "When networks block calls").
func TestVerdict(t *testing.T) {
	all := []string{"wg-51820", "wg-443", "awg-51821", "turn-udp", "udp-sustained", "turn-tcp", "turns-443"}
	minus := func(drop ...string) []string {
		return slices.DeleteFunc(slices.Clone(all), func(s string) bool { return slices.Contains(drop, s) })
	}
	for _, tc := range []struct {
		name    string
		own     members.Form
		reached []string
		want    string
		port    int
		usable  []string
	}{
		{"open network", members.Form{Port: 51820}, all, members.VerdictWireGuard, 51820, all},
		{"own port 443 first", members.Form{Port: 443}, all, members.VerdictWireGuard, 443, all},
		{"own port blocked", members.Form{Port: 51820}, minus("wg-51820"), members.VerdictWireGuard, 443, minus("wg-51820")},
		{"obfuscated peer, stock works", members.Form{AmneziaWG: true, Port: 51821}, all, members.VerdictWireGuard, 51820, all},
		{"only the obfuscated port", members.Form{Port: 51820}, minus("wg-51820", "wg-443"), members.VerdictAmneziaWG, 51821, minus("wg-51820", "wg-443")},
		{"UDP dropped", members.Form{Port: 51820}, []string{"turn-tcp", "turns-443"}, members.VerdictCalls, 0, []string{"turn-tcp", "turns-443"}},
		{"only TCP 443", members.Form{Port: 51820}, []string{"turns-443"}, members.VerdictCalls, 0, []string{"turns-443"}},
		// UDP answers a probe but a sustained stream is throttled: no UDP path is usable.
		{"UDP throttled", members.Form{Port: 51820}, minus("udp-sustained"), members.VerdictCalls, 0, []string{"turn-tcp", "turns-443"}},
		{"throttled, no TCP", members.Form{Port: 51820}, []string{"wg-51820", "turn-udp"}, members.VerdictNone, 0, []string{}},
		{"nothing", members.Form{Port: 51820}, nil, members.VerdictNone, 0, []string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var failed []string
			for _, id := range all {
				if !slices.Contains(tc.reached, id) {
					failed = append(failed, id)
				}
			}
			if !slices.Contains(tc.reached, "turn-udp") { // the stream needs a relayed call
				failed = slices.DeleteFunc(failed, func(s string) bool { return s == "udp-sustained" })
			}
			r, err := judge(fakeCheck, tc.own, tc.reached, failed, time.Unix(1, 0))
			if err != nil {
				t.Fatal(err)
			}
			if r.Verdict != tc.want || r.Port != tc.port {
				t.Errorf("verdict %s %d, want %s %d", r.Verdict, r.Port, tc.want, tc.port)
			}
			if diff := cmp.Diff(tc.usable, usable(fakeCheck, r)); diff != "" {
				t.Errorf("usable (-want +got):\n%s", diff)
			}
		})
	}
	for _, bad := range [][2][]string{
		{{"wg-1"}, nil},                       // not a port of this server
		{{"wg-51820"}, {"wg-51820"}},          // both
		{{"turn-udp", "turn-udp"}, nil},       // twice
		{{"<script>"}, nil},                   // junk
		{{"turns-5349"}, nil},                 // TLS is checked on the HTTPS port only
		{nil, {"awg-51820"}},                  // wrong kind for the port
		{{"wg-51820", "udp-sustained "}, nil}, // near miss
	} {
		if _, err := judge(fakeCheck, members.Form{Port: 51820}, bad[0], bad[1], time.Now()); err == nil {
			t.Errorf("judge accepted reached %q failed %q", bad[0], bad[1])
		}
	}
}

// TestCheckPage: the page carries the check as data (a JSON block, no
// inline script, nothing secret) and a same-origin script, which the CSP
// allows and nothing else; the POST records a valid result and refuses
// everything else, within the link's own budget.
func TestCheckPage(t *testing.T) {
	inv := &fakeInvites{}
	h := Handler(func() Info { return Info{Host: "vpn.example.org"} }, inv, fakeChecks)
	do := func(method, path, remote, body string, hdr map[string]string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(method, "https://vpn.example.org"+path, strings.NewReader(body))
		r.RemoteAddr = remote
		for k, v := range hdr {
			r.Header.Set(k, v)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}

	w := do("GET", "/join/good", "192.0.2.1:1", "", nil)
	body := w.Body.String()
	csp := w.Header().Get("Content-Security-Policy")
	if !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "connect-src 'self'") || strings.Contains(csp, "unsafe-eval") {
		t.Errorf("CSP %q", csp)
	}
	scripts := regexp.MustCompile(`<script([^>]*)>`).FindAllStringSubmatch(body, -1)
	if len(scripts) != 2 || scripts[0][1] != ` type="application/json" id="reach-data"` || scripts[1][1] != ` src="/assets/reach.js"` {
		t.Errorf("script tags %q: want the JSON block and /assets/reach.js only", scripts)
	}
	m := regexp.MustCompile(`(?s)<script type="application/json" id="reach-data">(.*?)</script>`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no data block:\n%s", body)
	}
	var data checkData
	if err := json.Unmarshal([]byte(m[1]), &data); err != nil {
		t.Fatalf("data block %s: %v", m[1], err)
	}
	want := checkData{Post: "/join/good/check", TimeoutMs: 8000, StreamMs: 4000,
		STUN:   []probe{{"wg-51820", "stun:vpn.example.org:51820"}, {"wg-443", "stun:vpn.example.org:443"}, {"awg-51821", "stun:vpn.example.org:51821"}},
		TURN:   []probe{{"turn-tcp", fakeCheck.TURNTCP}, {"turns-443", fakeCheck.TURNTLS}},
		Stream: &probe{"turn-udp", fakeCheck.TURNUDP},
		Creds:  "/join/good/turn", Own: "wireguard-51820",
		Connected: "/join/good/connected", PollMs: 3000, ConfirmMs: 25000, Switch: "amneziawg-51821"}
	if diff := cmp.Diff(want, data); diff != "" {
		t.Errorf("data block (-want +got):\n%s", diff)
	}
	for _, id := range []string{"wg-51820", "wg-443", "awg-51821", "turn-udp", "udp-sustained", "turn-tcp", "turns-443"} {
		if !strings.Contains(body, `<li data-path="`+id+`">`) {
			t.Errorf("no list item for %s", id)
		}
	}
	if !strings.Contains(html.UnescapeString(body), "AmneziaWG, disguised WireGuard (UDP port 51821)") {
		t.Errorf("path label without its port:\n%s", body)
	}
	js := do("GET", "/assets/reach.js", "192.0.2.1:1", "", nil)
	if js.Code != 200 || !strings.HasPrefix(js.Header().Get("Content-Type"), "text/javascript") || !strings.Contains(js.Body.String(), "RTCPeerConnection") {
		t.Errorf("reach.js: %d %q", js.Code, js.Header().Get("Content-Type"))
	}

	post := func(remote, token, body string, hdr map[string]string) *httptest.ResponseRecorder {
		if hdr == nil {
			hdr = map[string]string{"Content-Type": "application/json", "Origin": "https://vpn.example.org"}
		}
		return do("POST", "/join/"+token+"/check", remote, body, hdr)
	}
	w = post("192.0.2.2:1", "good", `{"reached":["awg-51821","turn-udp","udp-sustained","turn-tcp","turns-443"],"failed":["wg-51820","wg-443"]}`, nil)
	var resp checkResponse
	json.Unmarshal(w.Body.Bytes(), &resp)
	if w.Code != 200 || resp.Verdict != members.VerdictAmneziaWG || resp.Form != "amneziawg-51821" || len(inv.saved) != 1 {
		t.Errorf("valid post: %d %s (saved %v)", w.Code, w.Body, inv.saved)
	}
	for _, tc := range []struct {
		name, token, body string
		hdr               map[string]string
		code              int
	}{
		{"unknown path", "good", `{"reached":["wg-1"]}`, nil, 400},
		{"unknown field", "good", `{"reached":[],"verdict":"wireguard"}`, nil, 400},
		{"not JSON", "good", `reached=wg-51820`, map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, 415},
		{"other origin", "good", `{"reached":[]}`, map[string]string{"Content-Type": "application/json", "Origin": "https://evil.example"}, 403},
		{"too big", "good", `{"reached":["` + strings.Repeat("a", 4096) + `"]}`, nil, 400},
		{"trailing data", "good", `{"reached":[]} {}`, nil, 400},
		{"unknown token", "nope", `{"reached":[]}`, nil, 404},
	} {
		if w := post("192.0.2.3:1", tc.token, tc.body, tc.hdr); w.Code != tc.code {
			t.Errorf("%s: %d %s, want %d", tc.name, w.Code, w.Body, tc.code)
		}
	}
	if len(inv.saved) != 1 {
		t.Errorf("refused posts were saved: %v", inv.saved)
	}
	// The link's own budget, whatever the addresses: a page posts once.
	limited := false
	for i := range 30 {
		if post(fmt.Sprintf("192.0.2.%d:1", 100+i), "good", `{"reached":[]}`, nil).Code == http.StatusTooManyRequests {
			limited = true
			break
		}
	}
	if !limited {
		t.Error("30 posts for one link, none refused")
	}
	if w := do("GET", "/join/good", "192.0.2.4:1", "", nil); w.Code != 200 {
		t.Errorf("the page after a flood of posts: %d", w.Code)
	}
	if !strings.Contains(csp, "form-action 'self'") {
		t.Errorf("CSP %q: the reveal form (without script) needs form-action 'self'", csp)
	}

	if f, err := parseForm(map[string][]string{"form": {"wireguard"}, "port": {"443"}}); err != nil || *f != (members.Form{Port: 443}) {
		t.Errorf("?form=wireguard&port=443: %+v %v", f, err)
	}
	if _, err := parseForm(map[string][]string{"form": {"wireguard"}, "port": {"70000"}}); err == nil {
		t.Error("port 70000 accepted")
	}
}

// TestConfirm: the page carries the confirmation, hidden until the script
// shows it, with the AmneziaWG form to switch to (a reveal of it, keeping
// the page's language, and empty places for its QR code and download);
// the poll answers JSON with nothing but the one boolean, under the
// page's strict headers, on the link's own budget for polls, which leaves
// the page alone.
func TestConfirm(t *testing.T) {
	inv := &fakeInvites{}
	h := Handler(func() Info { return Info{Host: "vpn.example.org"} }, inv, fakeChecks)
	get := func(path, remote string) *httptest.ResponseRecorder {
		r := httptest.NewRequest("GET", "https://vpn.example.org"+path, nil)
		r.RemoteAddr = remote
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}

	body := html.UnescapeString(get("/join/good?lang=ar", "192.0.2.1:1").Body.String())
	for _, want := range []string{
		`<section id="confirm" data-state="idle" hidden>`,
		`<button class="btn" id="confirm-button" type="button" hidden>` + translations["ar"]["confirm_button"] + `</button>`,
		`<form id="reveal-amneziawg" method="post" action="good?lang=ar">` + "\n" + `<input type="hidden" name="form" value="amneziawg">`,
		`<button class="btn" id="reveal-amneziawg-button" type="submit">` + translations["ar"]["reveal_amneziawg"] + `</button>`,
		`<a class="btn" id="download-amneziawg" hidden download="mom.conf">` + translations["ar"]["download_amneziawg"] + `</a>`,
		`<img class="qr" id="qr-amneziawg" alt="QR" hidden>`,
		`<p class="verdict" id="confirm-switch" hidden>` + translations["ar"]["confirm_switch"] + `</p>`,
		`<p class="verdict" id="confirm-blocked" hidden>` + translations["ar"]["confirm_blocked"] + `</p>`,
		`<p class="verdict" id="confirm-connected" hidden>` + translations["ar"]["confirm_connected"] + `</p>`,
		`[hidden]{display:none!important}`, // .btn and .qr set display, which would beat the hidden attribute
	} {
		if !strings.Contains(body, want) {
			t.Errorf("the page lacks %s", want)
		}
	}
	for _, lang := range []string{"en", "ar"} {
		for _, k := range []string{"confirm_ask", "confirm_button", "confirm_waiting", "confirm_connected", "confirm_switch", "confirm_blocked",
			"download_amneziawg", "reveal", "reveal_amneziawg", "revealed"} {
			if translations[lang][k] == "" {
				t.Errorf("%s: no %s", lang, k)
			}
		}
	}

	for _, tc := range []struct {
		name, token string
		connected   bool
		code        int
	}{
		{"not yet", "good", false, 200},
		{"connected", "good", true, 200},
		{"used over an hour ago", "old", false, http.StatusGone},
		{"unknown", "nope", false, http.StatusNotFound},
	} {
		inv.connected = tc.connected
		w := get("/join/"+tc.token+"/connected", "192.0.2.2:1")
		want := `{"connected":` + strconv.FormatBool(tc.connected && tc.code == 200) + "}\n"
		if w.Code != tc.code || w.Body.String() != want || w.Header().Get("Content-Type") != "application/json" {
			t.Errorf("%s: %d %q (%s), want %d %q", tc.name, w.Code, w.Body, w.Header().Get("Content-Type"), tc.code, want)
		}
		for k, v := range map[string]string{"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"} {
			if w.Header().Get(k) != v {
				t.Errorf("%s: %s %q, want %q", tc.name, k, w.Header().Get(k), v)
			}
		}
	}
	if w := get("/join/good/connected", "192.0.2.2:1"); !strings.Contains(w.Header().Get("Content-Security-Policy"), "default-src 'none'") {
		t.Errorf("CSP %q", w.Header().Get("Content-Security-Policy"))
	}

	// 25 s of polls every 3 s pass; a flood does not, and leaves the
	// link's page and reveal alone.
	inv.connected = false
	h = Handler(func() Info { return Info{Host: "vpn.example.org"} }, inv, fakeChecks) // a fresh budget
	for i := range 9 {
		if w := get("/join/good/connected", "192.0.2.3:1"); w.Code != 200 {
			t.Fatalf("poll %d: %d", i, w.Code)
		}
	}
	limited := false
	for range 30 {
		if get("/join/good/connected", "192.0.2.3:1").Code == http.StatusTooManyRequests {
			limited = true
			break
		}
	}
	if !limited {
		t.Error("40 polls at once for one link, none refused")
	}
	if w := get("/join/good", "192.0.2.3:1"); w.Code != 200 {
		t.Errorf("the page after a flood of polls: %d", w.Code)
	}
	if w := reveal(h, "/join/good", "192.0.2.3:1", "form=", "application/json"); w.Code != 200 {
		t.Errorf("the reveal after a flood of polls: %d", w.Code)
	}

	// No AmneziaWG form to switch to: no switch on the page, in its data
	// either.
	own := &ownAWG{fakeInvites: &fakeInvites{}}
	h = Handler(func() Info { return Info{Host: "vpn.example.org"} }, own, fakeChecks)
	body = get("/join/good", "192.0.2.4:1").Body.String()
	if !strings.Contains(body, `id="confirm"`) || strings.Contains(body, "download-amneziawg") || strings.Contains(body, `"switch"`) {
		t.Errorf("a peer already on AmneziaWG is offered the switch:\n%s", body)
	}
}

// ownAWG is fakeInvites for a peer whose own form is AmneziaWG.
type ownAWG struct{ *fakeInvites }

func (o *ownAWG) Peek(token string) (*members.Invite, error) {
	inv, err := o.fakeInvites.Peek(token)
	if err == nil {
		inv.Form = members.Form{AmneziaWG: true, Port: 51821}
		inv.Alternatives = []members.Form{{Port: 51820}}
	}
	return inv, err
}
