package web

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// fakeInvites holds one invite, token "good", which Redeem burns. Its
// peer's own form is stock WireGuard on 51820; the server also offers 443
// and the AmneziaWG form on 51821, and a check of every kind of path.
type fakeInvites struct {
	used      bool
	form      *Form // what the last Redeem asked for
	saved     []Reachability
	connected bool // what Connected answers for "good"
}

var fakeCheck = &Check{Host: "vpn.example.org", StockPorts: []int{51820, 443}, AmneziaWGPort: 51821,
	TURNUDP: "turn:vpn.example.org:3478?transport=udp", TURNTCP: "turn:vpn.example.org:3478?transport=tcp",
	TURNTLS: "turns:vpn.example.org:443?transport=tcp", Username: "1:check:mom", Credential: "pw"}

func (f *fakeInvites) Peek(token string) (*Invite, error) {
	switch {
	case token != "good":
		return nil, ErrInviteUnknown
	case f.used:
		return nil, ErrInviteUsed
	}
	return &Invite{Peer: "mom", Config: "[Interface]\n", QRPNG: []byte("png"), Expires: time.Date(2030, 1, 2, 3, 4, 0, 0, time.UTC),
		Form: Form{Port: 51820}, Alternatives: []AltForm{{Form{AmneziaWG: true, Port: 51821}, []byte("awg")}}, Check: fakeCheck}, nil
}

func (f *fakeInvites) Redeem(token string, form *Form) (*Invite, error) {
	if form != nil && form.AmneziaWG && form.Port != 0 {
		return nil, ErrFormNotOffered
	}
	inv, err := f.Peek(token)
	if err == nil {
		f.used, f.form = true, form
		if form != nil && form.AmneziaWG {
			inv.Config = "[Interface]\nJc = 4\n"
		}
	}
	return inv, err
}

// Connected answers for "good", and for "old", used more than an hour ago.
func (f *fakeInvites) Connected(token string) (bool, error) {
	switch token {
	case "good":
		return f.connected, nil
	case "old":
		return false, ErrInviteUsed
	}
	return false, ErrInviteUnknown
}

func (f *fakeInvites) SaveCheck(token string, judge func(*Check, Form) (Reachability, error)) (Reachability, error) {
	if token != "good" {
		return Reachability{}, ErrInviteUnknown
	}
	r, err := judge(fakeCheck, Form{Port: 51820})
	if err == nil {
		f.saved = append(f.saved, r)
	}
	return r, err
}

// TestInviteFlow: the download link and the redirect back to the page keep
// the language chosen by ?lang=, a refused download goes back to the page's
// friendly message, and the expiry is isolated left-to-right.
func TestInviteFlow(t *testing.T) {
	inv := &fakeInvites{}
	h := Handler(func() Info { return Info{Host: "vpn.example.org"} }, inv)
	get := func(path, remote string) *httptest.ResponseRecorder {
		r := httptest.NewRequest("GET", path, nil)
		r.RemoteAddr = remote
		r.Header.Set("Accept-Language", "en")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}

	w := get("/join/good?lang=ar", "192.0.2.1:1000")
	body := w.Body.String()
	if w.Code != 200 || !strings.Contains(body, `href="good/download?lang=ar"`) {
		t.Errorf("page: %d, want a download link keeping ?lang=ar:\n%s", w.Code, body)
	}
	if !strings.Contains(body, "\u20662030-01-02 03:04 UTC\u2069") {
		t.Errorf("expiry not isolated left-to-right:\n%s", body)
	}

	if w := get("/join/good/download?lang=ar", "192.0.2.1:1000"); w.Code != 200 || w.Body.String() != "[Interface]\n" {
		t.Errorf("download: %d %q", w.Code, w.Body.String())
	}
	w = get("/join/good/download?lang=ar", "192.0.2.1:1000")
	if loc := w.Header().Get("Location"); w.Code != http.StatusSeeOther || loc != "/join/good?lang=ar" {
		t.Errorf("second download: %d to %q, want 303 to /join/good?lang=ar", w.Code, loc)
	}

	// Exhaust one address's budget; its download is refused with a
	// redirect to the page, which says so in the chosen language.
	for range 20 {
		get("/join/nope", "192.0.2.9:1000")
	}
	w = get("/join/good/download?lang=ar", "192.0.2.9:1000")
	if loc := w.Header().Get("Location"); w.Code != http.StatusSeeOther || loc != "/join/good?lang=ar" {
		t.Errorf("limited download: %d to %q, want 303 to /join/good?lang=ar", w.Code, loc)
	}
	w = get("/join/good?lang=ar", "192.0.2.9:1000")
	if w.Code != http.StatusTooManyRequests || !strings.Contains(w.Body.String(), translations["ar"]["slow_title"]) {
		t.Errorf("limited page: %d\n%s", w.Code, w.Body.String())
	}
}
