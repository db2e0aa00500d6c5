package web

import (
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tariq-vpn/tariq/internal/members"
	"github.com/tariq-vpn/tariq/internal/store"
)

// The reachability check: the invite page tests, from the visitor's own
// network with WebRTC in their browser, which of the server's paths get
// through, and says which app and config to use.
//
//	wg-<port>      UDP to a stock WireGuard port: a STUN Binding answered by
//	               that port (every WireGuard port answers STUN), seen as a
//	               server-reflexive candidate
//	awg-<port>     the same on the AmneziaWG port
//	turn-udp       a TURN allocation over UDP (a relay candidate, relay-only)
//	turn-tcp       the same over TCP
//	turns-<port>   the same over TLS on the HTTPS port
//	udp-sustained  a call relayed over turn-udp carried a voice-like stream
//	               (50 packets a second for four seconds) with little loss:
//	               what a network that throttles UDP after the first seconds
//	               of a flow fails
////	outline-<port> a WebSocket over TLS on the HTTPS port (the Outline
//	               app's path: TCP only), opened to the link's own probe
//	               path (/join/{token}/ws) and closed at once
//
// The WebSocket probe goes to the link's own path, not to the Outline
// WebSocket paths: their prefix is the server's, which no GET of a page
// may show (a link preview would learn where the WebSocket endpoint is),
// and they hold a keyless connection silent until its auth timeout, by
// design. To the network between, both are the same: a TLS connection to
// the same address and port, an HTTP/1.1 upgrade inside it that only the
// two ends see, a few frames. What the probe tests is what can stop the
// Outline app: TCP or TLS to the port blocked, or a middlebox that
// breaks WebSockets.
//
// A port check cannot see a censor that recognises WireGuard's handshake
// (a browser can only send STUN): such a network shows the stock port as
// reached. udp-sustained catches throttling. See README, "When networks
// block calls".
//
// The confirmation closes that gap, with the one party that can see a
// handshake: the server. Once the member has downloaded (or scanned) the
// settings, the page, still open, polls GET /join/{token}/connected, which
// says whether the server has seen the peer's handshake since the link was
// used. Polling starts with the download, and a countdown of confirmWait
// with the member's "I have switched it on": a WireGuard client sends its
// first handshake initiation at once and retries every 5 seconds
// (REKEY_TIMEOUT), so that long without one means the handshake does not
// get through. The page then offers the AmneziaWG form (its QR code and
// ?form=amneziawg), which the link hands out once more for this (see
// Invites.Redeem), or, without it, says to try another network. A poll
// that fails counts as "not connected": on a phone whose tunnel is on but
// blocked, the page's own requests go into the tunnel too.

// Check is what the reachability check probes. The TURN URIs are empty
// when the relay does not offer that transport.
type Check struct {
	// Host is the server as browsers dial it (server.public_host).
	Host string
	// StockPorts are the UDP ports speaking stock WireGuard, the listen
	// port first; AmneziaWGPort is the obfuscated one (0: none).
	StockPorts    []int
	AmneziaWGPort int
	// TURNUDP, TURNTCP and TURNTLS are turn:/turns: URIs; TURNTLS is TLS on
	// the HTTPS port.
	TURNUDP, TURNTCP, TURNTLS string
	// Username and Credential are short-lived TURN REST credentials.
	Username, Credential string
	// OutlinePort is the HTTPS port the Outline path rides, when the
	// server hands out Outline keys (0: it does not).
	OutlinePort int
}

// errBadCheck marks a posted check that does not fit the page's paths.
var errBadCheck = errors.New("bad check result")

type checkPath struct {
	ID, URL string
	Port    int
	Kind    string // wg, awg, turn-udp, turn-tcp, turns, udp-sustained, outline
}

// paths lists what c probes, in the order the page shows them.
func (c *Check) paths() []checkPath {
	var out []checkPath
	for _, p := range c.StockPorts {
		out = append(out, checkPath{ID: fmt.Sprintf("wg-%d", p), URL: stunURL(c.Host, p), Port: p, Kind: "wg"})
	}
	if c.AmneziaWGPort != 0 {
		out = append(out, checkPath{ID: fmt.Sprintf("awg-%d", c.AmneziaWGPort), URL: stunURL(c.Host, c.AmneziaWGPort), Port: c.AmneziaWGPort, Kind: "awg"})
	}
	if c.TURNUDP != "" {
		out = append(out, checkPath{ID: "turn-udp", URL: c.TURNUDP, Kind: "turn-udp"},
			checkPath{ID: "udp-sustained", URL: c.TURNUDP, Kind: "udp-sustained"})
	}
	if c.TURNTCP != "" {
		out = append(out, checkPath{ID: "turn-tcp", URL: c.TURNTCP, Kind: "turn-tcp"})
	}
	if c.TURNTLS != "" {
		p := uriPort(c.TURNTLS)
		out = append(out, checkPath{ID: fmt.Sprintf("turns-%d", p), URL: c.TURNTLS, Port: p, Kind: "turns"})
	}
	if c.OutlinePort != 0 {
		out = append(out, checkPath{ID: fmt.Sprintf("outline-%d", c.OutlinePort), Port: c.OutlinePort, Kind: "outline"})
	}
	return out
}

func stunURL(host string, port int) string {
	return "stun:" + net.JoinHostPort(strings.Trim(host, "[]"), strconv.Itoa(port))
}

// uriPort returns the port of a turn:/turns: URI, or 0.
func uriPort(uri string) int {
	_, rest, _ := strings.Cut(uri, ":")
	rest, _, _ = strings.Cut(rest, "?")
	_, p, err := net.SplitHostPort(rest)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(p)
	return n
}

// judge validates a posted result against c and decides the advice for a
// peer whose own config is in form own. Every path named must be one of
// c's, named once.
func judge(c *Check, own members.Form, reached, failed []string, now time.Time) (store.Reachability, error) {
	known := map[string]bool{}
	for _, p := range c.paths() {
		known[p.ID] = true
	}
	ok, tested := map[string]bool{}, map[string]bool{}
	for i, list := range [][]string{reached, failed} {
		for _, id := range list {
			if !known[id] || tested[id] {
				return store.Reachability{}, fmt.Errorf("%w: path %q", errBadCheck, id)
			}
			tested[id] = true
			ok[id] = i == 0
		}
	}
	// Kept in the page's order, whatever order the probes finished in.
	r := store.Reachability{CheckedAt: now}
	for _, p := range c.paths() {
		switch {
		case !tested[p.ID]:
		case ok[p.ID]:
			r.Reached = append(r.Reached, p.ID)
		default:
			r.Failed = append(r.Failed, p.ID)
		}
	}
	r.Verdict, r.Port = verdict(c, own, ok, tested)
	return r, nil
}

// udpUsable reports whether UDP works for more than a moment from where
// the check ran: a throttled sustained stream makes every UDP path
// (WireGuard included) useless for calls, whatever a single STUN answer
// said.
func udpUsable(ok, tested map[string]bool) bool {
	return !tested["udp-sustained"] || ok["udp-sustained"]
}

// verdict is the advice: the stock app if UDP reaches a stock port (the
// peer's own port first), else the AmneziaWG app if UDP reaches the
// obfuscated port, else the Outline app if its WebSocket gets through,
// else relayed calls if any TURN path works, else none.
func verdict(c *Check, own members.Form, ok, tested map[string]bool) (string, int) {
	udp := udpUsable(ok, tested)
	if udp {
		ports := c.StockPorts
		if !own.AmneziaWG {
			ports = append([]int{own.Port}, ports...)
		}
		for _, p := range ports {
			if ok[fmt.Sprintf("wg-%d", p)] {
				return members.VerdictWireGuard, p
			}
		}
		if c.AmneziaWGPort != 0 && ok[fmt.Sprintf("awg-%d", c.AmneziaWGPort)] {
			return members.VerdictAmneziaWG, c.AmneziaWGPort
		}
	}
	if c.OutlinePort != 0 && ok[fmt.Sprintf("outline-%d", c.OutlinePort)] {
		return members.VerdictOutline, 0
	}
	for _, p := range c.paths() {
		switch p.Kind {
		case "turn-tcp", "turns":
			if ok[p.ID] {
				return members.VerdictCalls, 0
			}
		case "turn-udp":
			if ok[p.ID] && udp {
				return members.VerdictCalls, 0
			}
		}
	}
	return members.VerdictNone, 0
}

// usable lists the paths the page ticks: reached, and for UDP paths only
// if UDP also carried a sustained stream.
func usable(c *Check, r store.Reachability) []string {
	ok, tested := map[string]bool{}, map[string]bool{}
	for _, id := range r.Reached {
		ok[id], tested[id] = true, true
	}
	for _, id := range r.Failed {
		tested[id] = true
	}
	udp := udpUsable(ok, tested)
	out := []string{}
	for _, p := range c.paths() {
		switch {
		case !ok[p.ID]:
		case p.Kind == "wg", p.Kind == "awg", p.Kind == "turn-udp":
			if udp {
				out = append(out, p.ID)
			}
		default:
			out = append(out, p.ID)
		}
	}
	return out
}

// checkData is the page's <script type="application/json" id="reach-data">
// block, read by reach.js: the check's probes (none without a check) and
// the confirmation's polls. It carries nothing secret: the settings come
// only from the reveal (invite.go).
type checkData struct {
	Post      string  `json:"post"`
	TimeoutMs int     `json:"timeoutMs"`
	StreamMs  int     `json:"streamMs"`
	STUN      []probe `json:"stun"`
	TURN      []probe `json:"turn"`
	Stream    *probe  `json:"stream,omitempty"` // turn-udp, and udp-sustained
	WS        *probe  `json:"ws,omitempty"`     // outline-<port>: the link's WebSocket probe
	// Creds is where the page posts for the TURN probes' short-lived
	// credentials, so that no GET of the page carries them.
	Creds string `json:"creds,omitempty"`
	Own   string `json:"own"`
	// The confirmation: where to poll, how often, how long the countdown
	// runs, and the AmneziaWG form's key if the page may switch to it.
	Connected string `json:"connected"`
	PollMs    int    `json:"pollMs"`
	ConfirmMs int    `json:"confirmMs"`
	Switch    string `json:"switch,omitempty"`
	// Outline says the page may hand out the member's Outline key: when
	// the check advises it, or the confirmation finds no handshake.
	Outline bool `json:"outline,omitempty"`
}

type probe struct {
	ID  string `json:"id"`
	URL string `json:"url"`
}

// How long the page gives each probe to gather a candidate, and how long
// the sustained stream runs.
const (
	probeTimeout   = 8 * time.Second
	streamDuration = 4 * time.Second
)

// The confirmation: the page polls every pollInterval, and gives up on a
// handshake confirmWait after the member says the connection is on (the
// client's first initiation goes at once, then one every 5 s: five tries).
// A poll waits at most pollInterval for its answer. pollLimitEvery is the
// per-link budget for polls, after a burst of 10: one every 2 s, more
// than a page polling every 3 s needs.
const (
	pollInterval   = 3 * time.Second
	confirmWait    = 25 * time.Second
	pollLimitEvery = 2 * time.Second
)

func newCheckData(token string, inv *members.Invite, c *Check) checkData {
	d := checkData{Post: "/join/" + token + "/check", TimeoutMs: int(probeTimeout / time.Millisecond),
		StreamMs: int(streamDuration / time.Millisecond), Own: inv.Form.Key(),
		Connected: "/join/" + token + "/connected", PollMs: int(pollInterval / time.Millisecond),
		ConfirmMs: int(confirmWait / time.Millisecond)}
	if f := switchForm(inv); f != nil {
		d.Switch = f.Key()
	}
	d.Outline = offersOutline(inv)
	if c == nil {
		return d
	}
	if len(c.TURNURIs()) > 0 {
		d.Creds = "/join/" + token + "/turn"
	}
	for _, p := range c.paths() {
		switch p.Kind {
		case "wg", "awg":
			d.STUN = append(d.STUN, probe{p.ID, p.URL})
		case "turn-udp":
			d.Stream = &probe{p.ID, p.URL}
		case "turn-tcp", "turns":
			d.TURN = append(d.TURN, probe{p.ID, p.URL})
		case "outline":
			if d.Outline {
				d.WS = &probe{p.ID, "/join/" + token + "/ws"}
			}
		}
	}
	return d
}

// offersOutline reports whether inv's page may hand out its member's
// Outline key.
func offersOutline(inv *members.Invite) bool {
	return slices.Contains(inv.Alternatives, members.Form{Outline: true})
}

// switchForm returns the AmneziaWG form the confirmation may switch inv's
// page to, or nil: the server does not offer it, or it is the peer's own.
func switchForm(inv *members.Invite) *members.Form {
	if inv.Form.AmneziaWG {
		return nil
	}
	for i, f := range inv.Alternatives {
		if f.AmneziaWG {
			return &inv.Alternatives[i]
		}
	}
	return nil
}

// checkLabel is one line of the page's list of paths.
type checkLabel struct{ ID, Label string }

func checkLabels(c *Check, t func(string) string) []checkLabel {
	var out []checkLabel
	for _, p := range c.paths() {
		s := t("check_path_" + strings.ReplaceAll(p.Kind, "-", "_"))
		out = append(out, checkLabel{p.ID, strings.ReplaceAll(s, "{port}", strconv.Itoa(p.Port))})
	}
	return out
}

//go:embed assets/reach.js
var reachJS []byte

func serveReachJS(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
	w.Write(reachJS)
}

// checkResponse is what the page gets back for its POST.
type checkResponse struct {
	Verdict string   `json:"verdict"`
	Form    string   `json:"form,omitempty"` // the config form to hand out, as Form.Key
	Usable  []string `json:"usable"`
	Error   string   `json:"error,omitempty"`
}

// maxCheckBody bounds a posted result: a handful of short path names.
const maxCheckBody = 2048

// check records a result posted by reach.js: same origin, JSON, small,
// every path one the page probes, within the link's budget (admit).
func (h *inviteHandler) check(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(r) {
		writeJSON(w, http.StatusForbidden, checkResponse{Error: "cross-origin"})
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		writeJSON(w, http.StatusUnsupportedMediaType, checkResponse{Error: "want application/json"})
		return
	}
	var in struct {
		Reached []string `json:"reached"`
		Failed  []string `json:"failed"`
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxCheckBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil || dec.More() {
		writeJSON(w, http.StatusBadRequest, checkResponse{Error: "malformed result"})
		return
	}
	token := r.PathValue("token")
	var c *Check
	var res store.Reachability
	err := h.admit(r, h.posts, token, func() error {
		peer, own, err := h.invites.Page(token)
		if err != nil {
			return err
		}
		if c = h.checkFor(peer); c == nil {
			return errBadCheck
		}
		if res, err = judge(c, own, in.Reached, in.Failed, time.Now()); err != nil {
			return err
		}
		return h.invites.SaveCheck(token, res)
	})
	switch {
	case errors.Is(err, errBadCheck):
		writeJSON(w, http.StatusBadRequest, checkResponse{Error: err.Error()})
		return
	case err != nil:
		status, _, _ := messageFor(err)
		writeJSON(w, status, checkResponse{Error: "not recorded"})
		return
	}
	resp := checkResponse{Verdict: res.Verdict, Usable: usable(c, res)}
	switch res.Verdict {
	case members.VerdictWireGuard:
		resp.Form = members.Form{Port: res.Port}.Key()
	case members.VerdictAmneziaWG:
		resp.Form = members.Form{AmneziaWG: true, Port: res.Port}.Key()
	case members.VerdictOutline:
		resp.Form = members.Form{Outline: true}.Key()
	}
	writeJSON(w, http.StatusOK, resp)
}

// connectedResponse is the confirmation's answer: nothing but whether the
// peer's device reached the server, for the holder of the link.
type connectedResponse struct {
	Connected bool `json:"connected"`
}

// connected answers the page's confirmation polls, within the link's
// budget for polls (a page polls every few seconds). Used more than an
// hour ago, expired or unknown: the matching status, and still only
// {"connected":false}.
func (h *inviteHandler) connected(w http.ResponseWriter, r *http.Request) {
	token := r.PathValue("token")
	var ok bool
	err := h.admit(r, h.polls, token, func() (err error) {
		ok, err = h.invites.Connected(token)
		return err
	})
	status := http.StatusOK
	if err != nil {
		status, _, _ = messageFor(err)
		ok = false
	}
	writeJSON(w, status, connectedResponse{Connected: ok})
}

// parseForm reads form=wireguard|amneziawg|outline (and port= for
// wireguard) of a reveal; nil (form empty) means the peer's own form.
func parseForm(q url.Values) (*members.Form, error) {
	switch q.Get("form") {
	case "":
		return nil, nil
	case "outline":
		return &members.Form{Outline: true}, nil
	case "amneziawg":
		return &members.Form{AmneziaWG: true}, nil
	case "wireguard":
		f := &members.Form{}
		if p := q.Get("port"); p != "" {
			n, err := strconv.Atoi(p)
			if err != nil || n < 1 || n > 65535 {
				return nil, fmt.Errorf("port %q", p)
			}
			f.Port = n
		}
		return f, nil
	}
	return nil, fmt.Errorf("form %q", q.Get("form"))
}

// checkFor returns peer's check without credentials, or nil.
func (h *inviteHandler) checkFor(peer string) *Check {
	if h.checks == nil {
		return nil
	}
	return h.checks(peer, false)
}

// TURNURIs lists the check's TURN URIs.
func (c *Check) TURNURIs() []string {
	var out []string
	for _, u := range []string{c.TURNUDP, c.TURNTCP, c.TURNTLS} {
		if u != "" {
			out = append(out, u)
		}
	}
	return out
}

// credsResponse is the TURN credentials the page's probes use.
type credsResponse struct {
	Username   string `json:"username,omitempty"`
	Credential string `json:"credential,omitempty"`
	Error      string `json:"error,omitempty"`
}

// creds hands the page's script the short-lived TURN credentials its
// probes need: by POST from the page itself (sameOrigin), within the
// link's budget for posts, while the page may talk to the server. A link
// preview fetches the page by GET and gets none.
func (h *inviteHandler) creds(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(r) {
		writeJSON(w, http.StatusForbidden, credsResponse{Error: "cross-origin"})
		return
	}
	token := r.PathValue("token")
	var c *Check
	err := h.admit(r, h.posts, token, func() error {
		peer, _, err := h.invites.Page(token)
		if err != nil {
			return err
		}
		if h.checks != nil {
			c = h.checks(peer, true)
		}
		return nil
	})
	if err != nil {
		status, _, _ := messageFor(err)
		writeJSON(w, status, credsResponse{Error: "no credentials"})
		return
	}
	if c == nil || c.Username == "" {
		writeJSON(w, http.StatusNotFound, credsResponse{Error: "no relay"})
		return
	}
	writeJSON(w, http.StatusOK, credsResponse{Username: c.Username, Credential: c.Credential})
}

// maxProbeWait bounds how long the WebSocket probe waits for the page to
// close it.
const maxProbeWait = 10 * time.Second

// probeUpgrader is the WebSocket probe's: same-origin only (gorilla's
// default check), no compression, small buffers.
var probeUpgrader = websocket.Upgrader{ReadBufferSize: 512, WriteBufferSize: 512, HandshakeTimeout: maxProbeWait}

// ws answers the check's WebSocket probe: an upgrade on the HTTPS port,
// as the Outline app makes one, which the page closes once open; the
// server answers the close and hangs up (RFC 6455 §5.5.1), or hangs up
// after maxProbeWait. Only a link's page may probe (same origin, while
// the page may talk to the server); anything else gets the answer any unknown path gets. It takes from the
// link's budget for the check's posts (a page probes once, with its two
// posts), not from the confirmation's polls.
func (h *inviteHandler) ws(w http.ResponseWriter, r *http.Request) {
	token := r.PathValue("token")
	if !websocket.IsWebSocketUpgrade(r) {
		http.NotFound(w, r)
		return
	}
	err := h.admit(r, h.posts, token, func() error {
		_, _, err := h.invites.Page(token)
		return err
	})
	if err != nil {
		status, _, _ := messageFor(err)
		http.Error(w, http.StatusText(status), status)
		return
	}
	c, err := probeUpgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader has answered
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(maxProbeWait))
	for {
		// The page sends nothing but its close, which ReadMessage
		// answers (gorilla's default close handler) and returns as an
		// error.
		if _, _, err := c.ReadMessage(); err != nil {
			return
		}
	}
}
