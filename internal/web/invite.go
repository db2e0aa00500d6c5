package web

import (
	"crypto/rand"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"path"
	"regexp"
	"strings"
	"sync"
	"time"

	"golang.org/x/text/language"
	"golang.org/x/time/rate"
)

// The outcomes of looking up an invite token.
var (
	ErrInviteUnknown = errors.New("no such invite")
	ErrInviteUsed    = errors.New("invite already used")
	ErrInviteExpired = errors.New("invite expired")
	// ErrFormNotOffered is a download asking for a config form the server
	// does not offer (Redeem burns nothing then).
	ErrFormNotOffered = errors.New("this server does not offer that form of the settings")
)

// Invite is what a one-time link opens: one peer's client config.
type Invite struct {
	Peer    string
	Config  string // wg-quick text
	QRPNG   []byte // the config as a QR code
	Expires time.Time
	// Form is the form Config is in: the peer's own, unless Redeem was
	// asked for another.
	Form Form
	// Alternatives are the other forms the server offers this peer, with
	// their QR codes, for the reachability check to switch to (Peek only).
	Alternatives []AltForm
	// Check is the reachability check the page runs (Peek only); nil: none.
	Check *Check
}

// AltForm is another form of an invite's config, as a QR code.
type AltForm struct {
	Form  Form
	QRPNG []byte
}

// Invites looks invites up by token. Implementations compare token hashes
// in constant time and never keep the token itself.
type Invites interface {
	// Peek returns the invite without using it up.
	Peek(token string) (*Invite, error)
	// Redeem burns the invite and returns it with its config in form f (nil:
	// the peer's own); a second call gets ErrInviteUsed, but for one
	// exception: the AmneziaWG form, once, soon after a stock download
	// whose device never reached the server (the page's confirmation, see
	// reach.go). A form the server does not offer is an error and burns
	// nothing.
	Redeem(token string, f *Form) (*Invite, error)
	// SaveCheck records the result of the reachability check run from the
	// invite's page: judge gets the invite's check and the peer's own form
	// and returns the result to keep, or an error to keep nothing. It
	// returns what it kept.
	SaveCheck(token string, judge func(c *Check, own Form) (Reachability, error)) (Reachability, error)
	// Connected reports whether the device of the invite's peer has
	// completed a handshake with the server since the invite was used
	// (not used yet: since it was created, as settings scanned from the
	// page leave no trace on the server). Like SaveCheck, it answers while
	// the invite is valid or was used within the last hour.
	Connected(token string) (bool, error)
}

// NewToken returns a fresh invite token (144 random bits, URL-safe) and
// the hash to store in its place.
func NewToken() (token, hash string) {
	b := make([]byte, 18)
	rand.Read(b)
	token = base64.RawURLEncoding.EncodeToString(b)
	return token, HashToken(token)
}

// HashToken returns the stored form of token: hex SHA-256.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

//go:embed i18n/*.json
var i18nFiles embed.FS

// translations maps a language tag ("en", "ar") to its strings. A language
// is one JSON file in i18n/; keys it lacks fall back to English.
var translations, langTags = loadTranslations()

func loadTranslations() (map[string]map[string]string, []language.Tag) {
	out := map[string]map[string]string{}
	tags := []language.Tag{language.English} // the matcher's default comes first
	entries, err := fs.ReadDir(i18nFiles, "i18n")
	if err != nil {
		panic(err)
	}
	for _, e := range entries {
		b, err := i18nFiles.ReadFile(path.Join("i18n", e.Name()))
		if err != nil {
			panic(err)
		}
		m := map[string]string{}
		if err := json.Unmarshal(b, &m); err != nil {
			panic(fmt.Sprintf("i18n/%s: %v", e.Name(), err)) // embedded: a build-time mistake
		}
		lang := strings.TrimSuffix(e.Name(), ".json")
		out[lang] = m
		if lang != "en" {
			tags = append(tags, language.MustParse(lang))
		}
	}
	return out, tags
}

var langMatcher = language.NewMatcher(langTags)

// pickLang chooses the page language: ?lang= if known, else Accept-Language.
func pickLang(r *http.Request) string {
	if l := r.URL.Query().Get("lang"); translations[l] != nil {
		return l
	}
	tags, _, _ := language.ParseAcceptLanguage(r.Header.Get("Accept-Language"))
	_, i, _ := langMatcher.Match(tags...)
	base, _ := langTags[i].Base()
	return base.String()
}

// platforms, in the order the page offers them.
var platforms = []string{"android", "ios", "windows", "macos"}

// pickPlatform chooses the instructions: ?os= if known, else the User-Agent.
func pickPlatform(r *http.Request) string {
	if p := r.URL.Query().Get("os"); p == "other" || contains(platforms, p) {
		return p
	}
	ua := r.UserAgent()
	switch {
	case strings.Contains(ua, "Android"):
		return "android"
	case strings.Contains(ua, "iPhone"), strings.Contains(ua, "iPad"), strings.Contains(ua, "iPod"):
		return "ios"
	case strings.Contains(ua, "Windows"):
		return "windows"
	case strings.Contains(ua, "Macintosh"), strings.Contains(ua, "Mac OS X"):
		return "macos"
	}
	return "other"
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// tr returns a translator for lang that fills {placeholders} from vars.
func tr(lang string, vars map[string]string) func(string) string {
	return func(key string) string {
		s, ok := translations[lang][key]
		if !ok {
			s = translations["en"][key]
		}
		for k, v := range vars {
			s = strings.ReplaceAll(s, "{"+k+"}", v)
		}
		return s
	}
}

var invitePage = template.Must(template.New("invite").Parse(`<!doctype html>
<html lang="{{.Lang}}" dir="{{call .T "dir"}}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<meta name="robots" content="noindex">
<title>{{call .T "title"}}</title>
<style>
[hidden]{display:none!important}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans Arabic",sans-serif;margin:0;padding:1rem;line-height:1.5;max-width:32rem;margin-inline:auto;color:#1b1b1b;background:#fff}
h1{font-size:1.4rem;margin:.5rem 0 1rem}
ol{padding-inline-start:1.4rem}li{margin:.5rem 0}
.btn{display:block;text-align:center;background:#0b6bcb;color:#fff;text-decoration:none;font-size:1.15rem;padding:.9rem;border-radius:.6rem;margin:1rem 0}
.qr{display:block;width:100%;max-width:20rem;height:auto;margin:1rem auto;image-rendering:pixelated}
.small{font-size:.9rem;color:#555}
nav{margin-top:1.5rem;font-size:.95rem}nav a{margin-inline-end:.8rem;white-space:nowrap}
.msg{margin-top:3rem}
#reach{border:1px solid #ccd;border-radius:.6rem;padding:.2rem 1rem;margin:1rem 0}
#reach h2{font-size:1.1rem;margin:.6rem 0}
#reach ul{list-style:none;padding:0;margin:.5rem 0}#reach li{margin:.2rem 0}
#reach li .mark{display:inline-block;width:1.4rem;font-weight:bold}
#reach li[data-ok=true] .mark{color:#16794c}#reach li[data-ok=false] .mark{color:#b3261e}
.verdict{font-weight:600}
#confirm{border:1px solid #ccd;border-radius:.6rem;padding:.2rem 1rem;margin:1rem 0}
button.btn{width:100%;box-sizing:border-box;border:0;font:inherit;font-size:1.15rem;cursor:pointer}
</style></head><body>
<nav class="small">{{range .Langs}}{{if ne .Code $.Lang}}<a href="?lang={{.Code}}&amp;os={{$.Platform}}" hreflang="{{.Code}}" lang="{{.Code}}">{{.Name}}</a>{{end}}{{end}}</nav>
{{if .Invite}}
<h1>{{call .T "title"}}</h1>
<p>{{call .T "intro"}}</p>
{{with .Check}}
<section id="reach" data-state="checking" hidden>
<h2>{{call $.T "check_title"}}</h2>
<p id="reach-running">{{call $.T "check_running"}}</p>
<ul id="reach-list">{{range .Labels}}<li data-path="{{.ID}}"><span class="mark" aria-hidden="true">…</span>{{.Label}}</li>{{end}}</ul>
<p class="verdict" id="verdict-wireguard" hidden>{{call $.T "verdict_wireguard"}}</p>
<p class="verdict" id="verdict-amneziawg" hidden>{{call $.T "verdict_amneziawg"}}</p>
<p class="verdict" id="verdict-calls" hidden>{{call $.T "verdict_calls"}}</p>
<p class="verdict" id="verdict-none" hidden>{{call $.T "verdict_none"}}</p>
<p class="small" id="verdict-error" hidden>{{call $.T "verdict_error"}}</p>
</section>
<script type="application/json" id="reach-data">{{.Data}}</script>
<script src="/assets/reach.js"></script>
{{end}}
<ol id="steps">
<li>{{call .T (printf "step_%s_1" .Platform)}}</li>
<li>{{call .T (printf "step_%s_2" .Platform)}}</li>
<li>{{call .T (printf "step_%s_3" .Platform)}}</li>
</ol>
<a class="btn" id="download" href="{{.DownloadURL}}" download="{{.FileName}}">{{call .T "download"}}</a>
<img class="qr" id="qr" alt="QR" src="{{.QR}}">
<p class="small" id="scan-hint">{{call .T "scan_hint"}}</p>
{{with .Confirm}}
<section id="confirm" data-state="idle" hidden>
<p id="confirm-ask">{{call $.T "confirm_ask"}}</p>
<p id="confirm-waiting" hidden>{{call $.T "confirm_waiting"}} <span id="confirm-count" dir="ltr"></span></p>
<p class="verdict" id="confirm-connected" hidden>{{call $.T "confirm_connected"}}</p>
<p class="verdict" id="confirm-switch" hidden>{{call $.T "confirm_switch"}}</p>
{{if .SwitchURL}}<div id="confirm-amneziawg" hidden>
<a class="btn" id="download-amneziawg" href="{{.SwitchURL}}" download="{{$.FileName}}">{{call $.T "download_amneziawg"}}</a>
<img class="qr" id="qr-amneziawg" alt="QR" src="{{.SwitchQR}}">
</div>{{end}}
<p class="verdict" id="confirm-blocked" hidden>{{call $.T "confirm_blocked"}}</p>
<button class="btn" id="confirm-button" type="button" hidden>{{call $.T "confirm_button"}}</button>
</section>
{{end}}
<p class="small">{{call .T "once"}}</p>
<nav class="small">{{call .T "other_devices"}} {{range .Platforms}}{{if ne . $.Platform}}<a href="?os={{.}}&amp;lang={{$.Lang}}">{{call $.T .}}</a>{{end}}{{end}}</nav>
{{else}}
<div class="msg" id="message"><h1>{{call .T .MsgTitle}}</h1><p>{{call .T .MsgBody}}</p></div>
{{end}}
</body></html>
`))

type langLink struct{ Code, Name string }

// pageCheck is the reachability check's part of the page.
type pageCheck struct {
	Labels []checkLabel
	Data   checkData
}

// pageConfirm is the confirmation's part of the page: once the member has
// switched the connection on, whether it connects (reach.go). SwitchURL
// and SwitchQR are the AmneziaWG form, to switch to if it does not; empty
// when the server does not offer it or the peer already has it.
type pageConfirm struct {
	SwitchURL string
	SwitchQR  template.URL
}

func qrURL(png []byte) string {
	return "data:image/png;base64," + base64.StdEncoding.EncodeToString(png)
}

type invitePageData struct {
	Lang, Platform    string
	T                 func(string) string
	Langs             []langLink
	Platforms         []string
	Invite            *Invite
	QR                template.URL
	Check             *pageCheck
	Confirm           *pageConfirm
	DownloadURL       string
	FileName          string
	MsgTitle, MsgBody string
}

// fileNameRe is what WireGuard accepts as a tunnel name, which its apps take
// from the file name: 1-15 of [a-zA-Z0-9_=+.-].
var fileNameRe = regexp.MustCompile(`[^a-zA-Z0-9_=+.-]`)

func confFileName(peer string) string {
	name := fileNameRe.ReplaceAllString(peer, "")
	if len(name) > 15 {
		name = name[:15]
	}
	if name == "" {
		name = "tariq"
	}
	return name + ".conf"
}

// inviteHandler serves /join/{token} and /join/{token}/download, and the
// page's check and confirmation (reach.go).
type inviteHandler struct {
	invites    Invites
	server     func() string
	limit      *limiter // page views and downloads
	checkLimit *limiter // posted check results
	pollLimit  *limiter // the confirmation's polls, which must not eat the downloads' budget
}

func (h *inviteHandler) page(w http.ResponseWriter, r *http.Request) {
	lang, platform := pickLang(r), pickPlatform(r)
	d := invitePageData{Lang: lang, Platform: platform, Platforms: platforms}
	for _, code := range sortedLangs() {
		d.Langs = append(d.Langs, langLink{code, translations[code]["lang_name"]})
	}
	vars := map[string]string{"server": h.server()}
	status := http.StatusOK
	if !h.limit.allow(r) {
		status, d.MsgTitle, d.MsgBody = http.StatusTooManyRequests, "slow_title", "slow_body"
	} else if inv, err := h.invites.Peek(r.PathValue("token")); err != nil {
		status, d.MsgTitle, d.MsgBody = messageFor(err)
	} else {
		d.Invite = inv
		d.QR = template.URL(qrURL(inv.QRPNG))
		// Relative to /join/{token}; the query (?lang=, ?os=) goes along,
		// so a visitor who switched language keeps it on the way back.
		d.DownloadURL = r.PathValue("token") + "/download" + query(r)
		d.FileName = confFileName(inv.Peer)
		vars["name"] = inv.Peer
		// Isolated left-to-right (LRI … PDI, Unicode bidi): bare in an
		// Arabic sentence, the bidi algorithm shows the date and time as
		// "UTC 21:11 30-11-2026".
		vars["expires"] = "\u2066" + inv.Expires.UTC().Format("2006-01-02 15:04 UTC") + "\u2069"
	}
	d.T = tr(lang, vars)
	if d.Invite != nil {
		d.Confirm = newPageConfirm(r, d.Invite)
		if d.Invite.Check != nil {
			d.Check = &pageCheck{Labels: checkLabels(d.Invite.Check, d.T), Data: newCheckData(r.PathValue("token"), d.Invite)}
		}
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Language", lang)
	w.Header().Set("Vary", "Accept-Language, User-Agent")
	w.WriteHeader(status)
	invitePage.Execute(w, d)
}

// query returns r's query string with its "?", or "".
func query(r *http.Request) string {
	if r.URL.RawQuery == "" {
		return ""
	}
	return "?" + r.URL.RawQuery
}

func (h *inviteHandler) download(w http.ResponseWriter, r *http.Request) {
	// Refused (too many tries) or failed (used, expired, unknown): back to
	// the page, which explains in the visitor's language.
	back := "../" + r.PathValue("token") + query(r)
	if !h.limit.allow(r) {
		http.Redirect(w, r, back, http.StatusSeeOther)
		return
	}
	form, err := parseForm(r.URL.Query())
	if err != nil {
		http.Error(w, "unknown settings form: "+err.Error(), http.StatusBadRequest)
		return
	}
	inv, err := h.invites.Redeem(r.PathValue("token"), form)
	if errors.Is(err, ErrFormNotOffered) {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if err != nil {
		http.Redirect(w, r, back, http.StatusSeeOther)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", confFileName(inv.Peer)))
	w.Write([]byte(inv.Config))
}

func messageFor(err error) (status int, title, body string) {
	switch {
	case errors.Is(err, ErrInviteUsed):
		return http.StatusGone, "used_title", "used_body"
	case errors.Is(err, ErrInviteExpired):
		return http.StatusGone, "expired_title", "expired_body"
	}
	return http.StatusNotFound, "unknown_title", "unknown_body"
}

func sortedLangs() []string {
	out := []string{"en"}
	for code := range translations {
		if code != "en" {
			out = append(out, code)
		}
	}
	if len(out) > 2 {
		sortStrings(out[1:])
	}
	return out
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

// limiter rate-limits invite requests per client (per /64 for IPv6): a
// burst of 10, then one every 6 seconds unless every says otherwise.
// Tokens carry 144 random bits, so this guards the server's effort more
// than the tokens.
type limiter struct {
	every time.Duration // zero: 6 seconds

	mu sync.Mutex // guards m
	m  map[netip.Prefix]*rate.Limiter
}

const maxTracked = 1 << 14

func (l *limiter) allow(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return true
	}
	a = a.Unmap()
	bits := 32
	if a.Is6() {
		bits = 64
	}
	key, _ := a.Prefix(bits)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil || len(l.m) > maxTracked {
		l.m = map[netip.Prefix]*rate.Limiter{}
	}
	lim, ok := l.m[key]
	if !ok {
		every := l.every
		if every == 0 {
			every = 6 * time.Second
		}
		lim = rate.NewLimiter(rate.Every(every), 10)
		l.m[key] = lim
	}
	return lim.Allow()
}
