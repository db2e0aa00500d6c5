package web

import (
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/text/language"
	"golang.org/x/time/rate"

	"github.com/tariq-vpn/tariq/internal/members"
	"github.com/tariq-vpn/tariq/internal/source"
	"github.com/tariq-vpn/tariq/internal/store"
)

// Invites is what the invite pages need of the members model
// (members.Service implements it). Implementations compare token hashes
// in constant time and never keep the token itself.
type Invites interface {
	// Peek returns the invite without using it up, and nothing secret.
	Peek(token string) (*members.Invite, error)
	// Redeem burns the invite and returns its settings in form f (nil: the
	// device's own); a second call gets ErrInviteUsed, but for one
	// exception: the AmneziaWG form, once, soon after a stock reveal whose
	// device never reached the server (the page's confirmation, see
	// reach.go). A form the server does not offer, or a member who is cut
	// off, is an error and burns nothing.
	Redeem(token string, f *members.Form) (*members.Settings, error)
	// Page returns the invite's device and its own form while the page
	// may still talk to the server (valid, or used within the hour).
	Page(token string) (peer string, own members.Form, err error)
	// SaveCheck records the result of the reachability check run from the
	// invite's page, under the same condition as Page.
	SaveCheck(token string, r store.Reachability) error
	// Connected reports whether the device of the invite has completed a
	// handshake with the server since the invite was used (not used yet:
	// since it was created), under the same condition as Page.
	Connected(token string) (bool, error)
}

// Checks describes the reachability check of a device's invite page; with
// creds, it carries short-lived TURN credentials for the probes. Nil: no
// check.
type Checks func(peer string, creds bool) *Check

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
	if p := r.URL.Query().Get("os"); p == "other" || slices.Contains(platforms, p) {
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
.key{display:block;width:100%;box-sizing:border-box;font:inherit;font-size:.85rem;padding:.5rem;margin:.3rem 0}
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
button.btn:disabled{opacity:.6;cursor:wait}
</style></head><body>
{{if .Invite}}
<nav class="small" id="langs">{{range .Langs}}{{if ne .Code $.Lang}}<a href="?lang={{.Code}}&amp;os={{$.Platform}}" hreflang="{{.Code}}" lang="{{.Code}}">{{.Name}}</a>{{end}}{{end}}</nav>
{{else if not .Settings}}
<nav class="small">{{range .Langs}}{{if ne .Code $.Lang}}<a href="?lang={{.Code}}&amp;os={{$.Platform}}" hreflang="{{.Code}}" lang="{{.Code}}">{{.Name}}</a>{{end}}{{end}}</nav>
{{end}}
{{if or .Invite .Settings}}
<h1>{{call .T "title"}}</h1>
<p>{{call .T "intro"}}</p>
{{with .Check}}
<section id="reach" data-state="checking" hidden>
<h2>{{call $.T "check_title"}}</h2>
<p id="reach-running">{{call $.T "check_running"}}</p>
<ul id="reach-list">{{range .Labels}}<li data-path="{{.ID}}"><span class="mark" aria-hidden="true">…</span>{{.Label}}</li>{{end}}</ul>
<p class="verdict" id="verdict-wireguard" hidden>{{call $.T "verdict_wireguard"}}</p>
<p class="verdict" id="verdict-amneziawg" hidden>{{call $.T "verdict_amneziawg"}}</p>
<p class="verdict" id="verdict-outline" hidden>{{call $.T "verdict_outline"}}</p>
<p class="verdict" id="verdict-calls" hidden>{{call $.T "verdict_calls"}}</p>
<p class="verdict" id="verdict-none" hidden>{{call $.T "verdict_none"}}</p>
<p class="small" id="verdict-error" hidden>{{call $.T "verdict_error"}}</p>
</section>
{{end}}
{{with .Data}}<script type="application/json" id="reach-data">{{.}}</script>
<script src="/assets/reach.js"></script>{{end}}
<ol id="steps"{{if .OutlineKey}} hidden{{end}}>
<li>{{call .T (printf "step_%s_1" .Platform)}}</li>
<li>{{call .T (printf "step_%s_2" .Platform)}}</li>
<li>{{call .T (printf "step_%s_3" .Platform)}}</li>
</ol>
{{if or .Outline .OutlineKey}}<ol id="outline-steps"{{if not .OutlineKey}} hidden{{end}}>
<li>{{call .T "outline_step_1"}}</li>
<li>{{call .T "outline_step_2"}}</li>
<li>{{call .T "outline_step_3"}}</li>
</ol>
<p class="small" id="outline-stores"{{if not .OutlineKey}} hidden{{end}}>{{call .T "outline_get"}}
<a href="https://play.google.com/store/apps/details?id=org.outline.android.client">Google Play</a> ·
<a href="https://apps.apple.com/app/outline-app/id1356177741">App Store</a> ·
<a href="https://apps.apple.com/app/outline-app/id1356178125">Mac App Store</a> ·
<a href="https://getoutline.org/">getoutline.org</a> ({{call .T "outline_other"}})</p>{{end}}
{{if .Invite}}<form id="reveal" method="post" action="{{.RevealURL}}">
<input type="hidden" name="form" value=""><input type="hidden" name="port" value="">
<button class="btn" id="reveal-button" type="submit">{{call .T "reveal"}}</button>
</form>{{end}}
<a class="btn" id="download"{{if .DownloadURL}} href="{{.DownloadURL}}"{{else}} hidden{{end}} download="{{.FileName}}">{{call .T "download"}}</a>
{{if or .Outline .OutlineKey}}<div id="outline-box"{{if not .OutlineKey}} hidden{{end}}>
<a class="btn" id="outline-add"{{with .OutlineKey}} href="{{.}}"{{end}}>{{call .T "outline_add"}}</a>
<p class="small"><label for="outline-key">{{call .T "outline_key_label"}}</label></p>
<input id="outline-key" class="key" readonly dir="ltr" value="{{.OutlineKeyText}}">
<button class="btn" id="outline-copy" type="button" hidden>{{call .T "outline_copy"}}</button>
<p class="small" id="outline-copied" hidden>{{call .T "outline_copied"}}</p>
</div>{{end}}
<img class="qr" id="qr" alt="QR"{{if .Settings}} src="{{.QR}}"{{else}} hidden{{end}}>
<p class="small" id="scan-hint"{{if not .DownloadURL}} hidden{{end}}>{{call .T "scan_hint"}}</p>
{{if or .Outline .OutlineKey}}<p class="small" id="outline-scan-hint"{{if not .OutlineKey}} hidden{{end}}>{{call .T "outline_scan_hint"}}</p>{{end}}
{{if .Invite}}
<section id="confirm" data-state="idle" hidden>
<p id="confirm-ask">{{call $.T "confirm_ask"}}</p>
<p id="confirm-waiting" hidden>{{call $.T "confirm_waiting"}} <span id="confirm-count" dir="ltr"></span></p>
<p class="verdict" id="confirm-connected" hidden>{{call $.T "confirm_connected"}}</p>
<p class="verdict" id="confirm-switch" hidden>{{call $.T "confirm_switch"}}</p>
{{if .Switch}}<div id="confirm-amneziawg" hidden>
<form id="reveal-amneziawg" method="post" action="{{.RevealURL}}">
<input type="hidden" name="form" value="amneziawg">
<button class="btn" id="reveal-amneziawg-button" type="submit">{{call $.T "reveal_amneziawg"}}</button>
</form>
<a class="btn" id="download-amneziawg" hidden download="{{$.FileName}}">{{call $.T "download_amneziawg"}}</a>
<img class="qr" id="qr-amneziawg" alt="QR" hidden>
</div>{{end}}
{{if .Outline}}<div id="confirm-outline" hidden>
<p class="verdict">{{call $.T "confirm_switch_outline"}}</p>
<form id="reveal-outline" method="post" action="{{.RevealURL}}">
<input type="hidden" name="form" value="outline">
<button class="btn" id="reveal-outline-button" type="submit">{{call $.T "reveal_outline"}}</button>
</form>
</div>{{end}}
<p class="verdict" id="confirm-blocked" hidden>{{call $.T "confirm_blocked"}}</p>
<button class="btn" id="confirm-button" type="button" hidden>{{call $.T "confirm_button"}}</button>
</section>
{{end}}
{{if .Invite}}<p class="small" id="once">{{call .T "once"}}</p>{{end}}
<p class="small" id="revealed"{{if not .Settings}} hidden{{end}}>{{call .T "revealed"}}</p>
{{if .Invite}}<nav class="small" id="platforms">{{call .T "other_devices"}} {{range .Platforms}}{{if ne . $.Platform}}<a href="?os={{.}}&amp;lang={{$.Lang}}">{{call $.T .}}</a>{{end}}{{end}}</nav>{{end}}
{{else}}
<div class="msg" id="message"><h1>{{call .T .MsgTitle}}</h1><p>{{call .T .MsgBody}}</p></div>
{{end}}
</body></html>
`))

type langLink struct{ Code, Name string }

// pageCheck is the reachability check's part of the page.
type pageCheck struct {
	Labels []checkLabel
}

// dataURL returns b as a data: URL of type mime.
func dataURL(mime string, b []byte) string {
	return "data:" + mime + ";base64," + base64.StdEncoding.EncodeToString(b)
}

// invitePageData fills invitePage, in one of three states: the link's page
// before the reveal (Invite), the settings a reveal answers to a browser
// without script (Settings), or a message (MsgTitle, MsgBody).
type invitePageData struct {
	Lang, Platform  string
	T               func(string) string
	Langs           []langLink
	Platforms       []string
	Invite          *members.Invite
	Settings        *members.Settings
	Check           *pageCheck
	Data            *checkData // reach.js's data: the check and the confirmation
	Switch          bool       // the confirmation may switch to the AmneziaWG form
	RevealURL       string
	QR, DownloadURL template.URL // data: URLs, only with Settings (no download for the Outline key)
	FileName        string
	// Outline says the page may hand out the member's Outline key (the
	// check's advice, the confirmation's switch); OutlineKey is the key a
	// reveal handed out (only with Settings), an ssconf:// link.
	Outline           bool
	OutlineKey        template.URL
	OutlineKeyText    string
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

// The rate limits of the invite pages. Tokens carry 144 random bits: what
// keeps them from being guessed is their size, not a limit. The limits
// keep a client that keeps missing (a scanner, a script) from costing the
// server a store read per request at its own pace, and a page from
// hammering the store; they never stand between a member and a valid link
// because of others behind the same address (a family behind one CGNAT
// address, or a few typos first), nor because link previews fetched it:
//
//   - guesses: per address (per /64 for IPv6), only requests for a token
//     that matches no invite: a burst of 10, then one every 6 s; past
//     that a miss gets 429 instead of 404;
//   - checks: per token, the check's posts (each one a store write): a
//     burst of 10, then one every 6 s;
//   - polls: per token, the confirmation's polls: a burst of 10, then one
//     every 2 s, more than a page polling every 3 s needs.
//
// The page and the reveal of a token that matches an invite (valid, used
// or expired) are never limited: a reveal works once anyway. A request for
// a token whose own budget is spent is refused before the lookup; a hit is
// never charged to its address, so a valid link always opens.
func newInviteHandler(invites Invites, checks Checks, server func() string) *inviteHandler {
	return &inviteHandler{invites: invites, checks: checks, server: server,
		guesses: &limiter[netip.Prefix]{every: 6 * time.Second, burst: 10, max: 1 << 14},
		posts:   &limiter[string]{every: 6 * time.Second, burst: 10, max: 1 << 12, full: true},
		polls:   &limiter[string]{every: pollLimitEvery, burst: 10, max: 1 << 12, full: true}}
}

// inviteHandler serves /join/{token}: the page, its reveal, and the
// page's check and confirmation (reach.go).
type inviteHandler struct {
	invites Invites
	checks  Checks
	server  func() string
	guesses *limiter[netip.Prefix] // misses, per address
	posts   *limiter[string]       // the check's posts (credentials and result), per token hash
	polls   *limiter[string]       // the confirmation's polls, per token hash
}

// errTooMany is a request refused by a rate limit.
var errTooMany = errors.New("too many tries")

// admit runs use, the request's lookup of token, within the limits (see
// newInviteHandler): refused at once if the token's own budget (lim; nil:
// none) is spent; a miss (ErrInviteUnknown) is charged to r's address and
// becomes errTooMany once that budget is spent; a hit is charged to the
// token.
func (h *inviteHandler) admit(r *http.Request, lim *limiter[string], token string, use func() error) error {
	var key string
	if lim != nil {
		key = members.HashToken(token)
		if lim.spent(key) {
			return errTooMany
		}
	}
	err := use()
	if errors.Is(err, members.ErrInviteUnknown) {
		if !h.guesses.allow(source.KeyOf(remoteAddr(r))) {
			return errTooMany
		}
		return err
	}
	if lim != nil {
		lim.allow(key)
	}
	return err
}

// newPageData is what every state of the page shares: r's language and
// platform.
func newPageData(r *http.Request, vars map[string]string) invitePageData {
	lang, platform := pickLang(r), pickPlatform(r)
	d := invitePageData{Lang: lang, Platform: platform, Platforms: platforms, T: tr(lang, vars)}
	for _, code := range sortedLangs() {
		d.Langs = append(d.Langs, langLink{code, translations[code]["lang_name"]})
	}
	return d
}

// expiresVar is the expiry as the page says it, isolated left-to-right
// (LRI … PDI, Unicode bidi): bare in an Arabic sentence, the bidi
// algorithm shows the date and time as "UTC 21:11 30-11-2026".
func expiresVar(t time.Time) string {
	return "\u2066" + t.UTC().Format("2006-01-02 15:04 UTC") + "\u2069"
}

func (h *inviteHandler) page(w http.ResponseWriter, r *http.Request) {
	token := r.PathValue("token")
	var inv *members.Invite
	err := h.admit(r, nil, token, func() (err error) {
		inv, err = h.invites.Peek(token)
		return err
	})
	vars := map[string]string{"server": h.server()}
	if err != nil {
		h.message(w, r, err, vars)
		return
	}
	vars["name"], vars["expires"] = inv.Peer, expiresVar(inv.Expires)
	if inv.Blocked != "" {
		h.message(w, r, &members.BlockedError{Member: inv.Member, Reason: inv.Blocked}, vars)
		return
	}
	d := newPageData(r, vars)
	d.Invite = inv
	// Relative to /join/{token}; the query (?lang=, ?os=) goes along, so
	// an answer in HTML keeps the visitor's language.
	d.RevealURL = token + query(r)
	d.FileName = confFileName(inv.Peer)
	d.Switch = switchForm(inv) != nil
	d.Outline = offersOutline(inv)
	var c *Check
	if h.checks != nil {
		c = h.checks(inv.Peer, false)
	}
	data := newCheckData(token, inv, c)
	d.Data = &data
	if c != nil {
		d.Check = &pageCheck{Labels: checkLabels(c, d.T)}
	}
	render(w, http.StatusOK, d)
}

// message answers a request for a link that cannot be shown (used,
// expired, unknown, too many tries) with the page's friendly message.
func (h *inviteHandler) message(w http.ResponseWriter, r *http.Request, err error, vars map[string]string) {
	d := newPageData(r, vars)
	var status int
	status, d.MsgTitle, d.MsgBody = messageFor(err)
	render(w, status, d)
}

func render(w http.ResponseWriter, status int, d invitePageData) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Language", d.Lang)
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

// maxRevealBody bounds a reveal's form: two short fields.
const maxRevealBody = 1024

// revealResponse is the reveal's answer to the page's script: the settings
// as data: URLs, ready for an <img> and an <a download>.
type revealResponse struct {
	Form     string `json:"form,omitempty"` // the form revealed, as Form.Key
	QR       string `json:"qr,omitempty"`
	Download string `json:"download,omitempty"`
	File     string `json:"file,omitempty"`
	// Key is the Outline form's ssconf:// key (no download then).
	Key   string `json:"key,omitempty"`
	Error string `json:"error,omitempty"`
}

// reveal is the member's deliberate step: the page's button posts here
// (same origin), which burns the link and answers with the settings, once.
// Nothing reachable by GET ever carries them: link previews and mail
// scanners fetch links but do not post forms (issue 9).
//
// The answer carries the settings whole, as data: URLs (the QR code for
// an <img>, the wg-quick file for an <a download>), so taking them needs
// no second request that could fail after the link is spent, and the
// server keeps nothing to serve later. The page's script posts with fetch
// and Accept: application/json and shows the answer in the open page,
// where the check's advice and the confirmation carry on; a browser
// without script posts the form itself and gets a page with the settings.
// Either answer is Cache-Control: no-store, which keeps it out of caches
// and the back-forward cache: going back to it, or reloading the page,
// shows the link used, and reloading a posted answer posts again, which
// says so too. The only later disclosure is the one switch to AmneziaWG
// or to the member's Outline key (Invites.Redeem), within the hour.
//
// The Outline form's answer is the member's ssconf:// key (and its QR
// code) instead of a file: a secret-bearing URL, so the same rule holds,
// only a reveal carries it. The page shows it as an "Add to Outline"
// link (the scheme opens the app), a field to copy it from and the QR
// code.
//
// The token in the path is the capability, so a forged cross-site post
// could do nothing its sender could not do alone; still, a post must not
// come from another site: Sec-Fetch-Site, where the browser sends it, must
// be same-origin, and Origin, where present, this server (sameOrigin).
func (h *inviteHandler) reveal(w http.ResponseWriter, r *http.Request) {
	token := r.PathValue("token")
	asJSON := wantsJSON(r)
	fail := func(status int, msg string) {
		if asJSON {
			writeJSON(w, status, revealResponse{Error: msg})
			return
		}
		http.Error(w, msg, status)
	}
	if !sameOrigin(r) {
		fail(http.StatusForbidden, "refused: the settings are shown only to the invite page itself")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxRevealBody)
	if err := r.ParseForm(); err != nil {
		fail(http.StatusBadRequest, "malformed form")
		return
	}
	form, err := parseForm(r.PostForm)
	if err != nil {
		fail(http.StatusBadRequest, "unknown settings form: "+err.Error())
		return
	}
	var s *members.Settings
	err = h.admit(r, nil, token, func() (err error) {
		s, err = h.invites.Redeem(token, form)
		return err
	})
	switch {
	case errors.Is(err, members.ErrFormNotOffered):
		fail(http.StatusBadRequest, err.Error())
		return
	case err != nil && asJSON:
		status, _, _ := messageFor(err)
		writeJSON(w, status, revealResponse{Error: err.Error()})
		return
	case err != nil:
		h.message(w, r, err, map[string]string{"server": h.server()})
		return
	}
	qr := dataURL("image/png", s.QRPNG)
	d := newPageData(r, map[string]string{"server": h.server(), "name": s.Peer})
	d.Settings, d.FileName, d.QR = s, confFileName(s.Peer), template.URL(qr)
	if s.Form.Outline {
		if asJSON {
			writeJSON(w, http.StatusOK, revealResponse{Form: s.Form.Key(), QR: qr, Key: s.Config})
			return
		}
		// The key is the server's own ssconf:// link, which html/template
		// would otherwise refuse as an href.
		d.OutlineKey, d.OutlineKeyText = template.URL(s.Config), s.Config
		render(w, http.StatusOK, d)
		return
	}
	file := dataURL("text/plain;charset=utf-8", []byte(s.Config))
	if asJSON {
		writeJSON(w, http.StatusOK, revealResponse{Form: s.Form.Key(), QR: qr, Download: file, File: confFileName(s.Peer)})
		return
	}
	d.DownloadURL = template.URL(file)
	render(w, http.StatusOK, d)
}

// sameOrigin reports whether r may come from this server's own page: a
// browser that sends Sec-Fetch-Site says same-origin, and an Origin, if
// there is one, is this server. Origin "null" says nothing (Chromium sends
// it with a form's post under Referrer-Policy: no-referrer, and
// Sec-Fetch-Site: same-origin); a request with neither header (an older
// browser, or a script that holds the link anyway) passes.
func sameOrigin(r *http.Request) bool {
	if s := r.Header.Get("Sec-Fetch-Site"); s != "" && s != "same-origin" {
		return false
	}
	o := r.Header.Get("Origin")
	if o == "" || o == "null" {
		return true
	}
	u, err := url.Parse(o)
	return err == nil && u.Scheme == "https" && u.Host == r.Host
}

// wantsJSON reports whether r is the page's script asking for JSON.
func wantsJSON(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), "application/json")
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func messageFor(err error) (status int, title, body string) {
	switch {
	case errors.Is(err, errTooMany):
		return http.StatusTooManyRequests, "slow_title", "slow_body"
	case errors.Is(err, members.ErrInviteUsed):
		return http.StatusGone, "used_title", "used_body"
	case errors.Is(err, members.ErrInviteExpired):
		return http.StatusGone, "expired_title", "expired_body"
	case errors.Is(err, members.ErrBlocked):
		var b *members.BlockedError
		if errors.As(err, &b) && b.Reason == members.BlockExpired {
			return http.StatusForbidden, "blocked_title", "blocked_expired_body"
		}
		return http.StatusForbidden, "blocked_title", "blocked_over_limit_body"
	case errors.Is(err, members.ErrInviteUnknown):
		return http.StatusNotFound, "unknown_title", "unknown_body"
	}
	return http.StatusInternalServerError, "unknown_title", "unknown_body"
}

func sortedLangs() []string {
	out := []string{"en"}
	for code := range translations {
		if code != "en" {
			out = append(out, code)
		}
	}
	slices.Sort(out[1:])
	return out
}

// remoteAddr returns r's client address.
func remoteAddr(r *http.Request) net.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return nil
	}
	return net.UDPAddrFromAddrPort(ap)
}

// limiter is a token bucket per key: burst requests at once, then one
// every every. It tracks at most max keys. A key whose bucket has refilled
// holds nothing a new bucket would not, so when max keys are tracked it
// drops those (at most once per every, the time a bucket needs to gain a
// token); if none can go, a new key gets full as its answer: limits whose
// keys anyone can make up (addresses) refuse, limits whose keys only a
// hit creates (tokens) allow.
type limiter[K comparable] struct {
	every time.Duration
	burst int
	max   int
	full  bool

	mu    sync.Mutex // guards m and swept
	m     map[K]*rate.Limiter
	swept time.Time // the last sweep for room
}

// allow takes one request from key's budget and reports whether there was
// one.
func (l *limiter[K]) allow(key K) bool {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	lim := l.m[key]
	if lim == nil {
		if l.m == nil {
			l.m = map[K]*rate.Limiter{}
		}
		if len(l.m) >= l.max && !l.makeRoomLocked(now) {
			return l.full
		}
		lim = rate.NewLimiter(rate.Every(l.every), l.burst)
		l.m[key] = lim
	}
	return lim.AllowN(now, 1)
}

// spent reports whether key's budget is used up now, without taking from
// it; an untracked key has its whole budget.
func (l *limiter[K]) spent(key K) bool {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	lim := l.m[key]
	return lim != nil && lim.TokensAt(now) < 1
}

// makeRoomLocked drops the keys whose buckets are full again, at most once
// per l.every, and reports whether there is room for a new key.
func (l *limiter[K]) makeRoomLocked(now time.Time) bool {
	if now.Sub(l.swept) >= l.every {
		l.swept = now
		for k, lim := range l.m {
			if lim.TokensAt(now) >= float64(l.burst) {
				delete(l.m, k)
			}
		}
	}
	return len(l.m) < l.max
}
