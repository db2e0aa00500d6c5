package daemon

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/tariq-vpn/tariq/config"
	"github.com/tariq-vpn/tariq/internal/store"
	"github.com/tariq-vpn/tariq/internal/web"
	"github.com/tariq-vpn/tariq/relay"
	"github.com/tariq-vpn/tariq/vpn"
)

// invites serves one-time links from the store for the HTTPS page.
type invites struct{ d *Daemon }

var _ web.Invites = invites{}

// find returns the index of the invite whose hash matches token's,
// comparing every stored hash in constant time.
func find(st *store.State, token string) int {
	want := []byte(web.HashToken(token))
	found := -1
	for i := range st.Invites {
		if subtle.ConstantTimeCompare([]byte(st.Invites[i].Hash), want) == 1 {
			found = i
		}
	}
	return found
}

func check(inv store.Invite, now time.Time) error {
	switch {
	case !inv.UsedAt.IsZero():
		return web.ErrInviteUsed
	case !now.Before(inv.Expires):
		return web.ErrInviteExpired
	}
	return nil
}

// Peek returns what the invite's page shows before the reveal: the peer,
// its own form, the other forms on offer and the reachability check, and
// no key material. Each form's config is rendered (and dropped) to offer
// only the forms that can be handed out.
func (iv invites) Peek(token string) (*web.Invite, error) {
	st, err := iv.d.store.Load()
	if err != nil {
		return nil, err
	}
	i := find(st, token)
	if i < 0 {
		return nil, web.ErrInviteUnknown
	}
	stored := st.Invites[i]
	if err := check(stored, time.Now()); err != nil {
		return nil, err
	}
	p := st.Peer(stored.Peer)
	if iv.d.vpn == nil || p == nil {
		return nil, web.ErrInviteUnknown
	}
	cfg := iv.d.config()
	own, err := ownForm(cfg, *p)
	if err == nil {
		_, err = iv.d.vpn.ClientConfig(p.Name)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", web.ErrInviteUnknown, err)
	}
	inv := &web.Invite{Peer: p.Name, Expires: stored.Expires, Form: own}
	for _, f := range offeredForms(cfg, *p) {
		if f == own {
			continue
		}
		if _, err := iv.formConfig(st, *p, f); err != nil {
			continue // e.g. a port no longer configured: just not offered
		}
		inv.Alternatives = append(inv.Alternatives, f)
	}
	inv.Check = iv.check(p.Name, true)
	return inv, nil
}

// Redeem burns the invite and returns its settings in form f (nil: the
// peer's own), which becomes the peer's stored form: the one the member
// now uses. A form the server does not offer burns nothing. A used invite
// is refused, but for the one switch to AmneziaWG (canSwitch).
func (iv invites) Redeem(token string, f *web.Form) (*web.Settings, error) {
	// The switch depends on the device's last handshake, read before the
	// store is locked: the vpn service takes its own lock and then the
	// store's (AddPeer), so never the other way round. A handshake landing
	// in between lets one switch through that could have been refused,
	// which hands out nothing new (see canSwitch).
	var handshakes map[string]time.Time
	if f != nil && f.AmneziaWG {
		handshakes = iv.handshakes()
	}
	var used store.Invite
	var switched, changed bool
	st, err := iv.d.store.Update(func(st *store.State) (err error) {
		used, switched, changed, err = redeemLocked(st, iv.d.config(), token, f, handshakes, time.Now())
		return err
	})
	if err != nil {
		return nil, err
	}
	if changed && iv.d.vpn != nil {
		if err := iv.d.vpn.ReloadPeers(); err != nil {
			iv.d.log.Warn("peer's new config form not shown by peer show until restart", "peer", used.Peer, "err", err)
		}
	}
	inv, err := iv.render(st, used, f)
	switch {
	case err != nil:
	case switched:
		iv.d.log.Info("invite switched to amneziawg", "peer", used.Peer, "form", inv.Form.Key(),
			"reason", "no handshake since the stock reveal")
	default:
		iv.d.log.Info("invite used", "peer", used.Peer, "form", inv.Form.Key())
	}
	return inv, err
}

// redeemLocked is Redeem's change to st (inside store.Update), at now,
// given each peer's last handshake: it returns the invite as used, whether
// this was the switch to AmneziaWG, and whether the peer's stored form
// changed.
func redeemLocked(st *store.State, cfg *config.Config, token string, f *web.Form, handshakes map[string]time.Time,
	now time.Time) (used store.Invite, switched, changed bool, err error) {
	i := find(st, token)
	if i < 0 {
		return used, false, false, web.ErrInviteUnknown
	}
	inv := &st.Invites[i]
	p := st.Peer(inv.Peer)
	if p == nil {
		return used, false, false, web.ErrInviteUnknown
	}
	if !inv.UsedAt.IsZero() {
		if err := canSwitch(*inv, *p, cfg, f, handshakes[inv.Peer], now); err != nil {
			return used, false, false, err
		}
		awg, _ := resolveForm(cfg, *p, web.Form{AmneziaWG: true}) // canSwitch resolved it
		inv.SwitchedAt = now
		setForm(p, cfg, awg)
		r := p.Reach
		if r == nil { // no check was posted: the switch is still worth keeping
			r = &store.Reachability{CheckedAt: now.UTC(), Verdict: web.VerdictWireGuard}
			p.Reach = r
		}
		r.SwitchedFrom, r.Verdict, r.Port = web.VerdictWireGuard, web.VerdictAmneziaWG, awg.Port
		r.Confirmed, r.ConfirmedAt = confirmedNoHandshake, now.UTC()
		return *inv, true, true, nil
	}
	if err := check(*inv, now); err != nil {
		return used, false, false, err
	}
	if f != nil {
		form, err := resolveForm(cfg, *p, *f)
		if err != nil {
			return used, false, false, err
		}
		if own, err := ownForm(cfg, *p); err != nil || own != form {
			setForm(p, cfg, form)
			changed = true
		}
	}
	inv.UsedAt = now
	return *inv, false, changed, nil
}

// canSwitch reports (nil, else ErrInviteUsed) whether inv, already used,
// may hand out its peer's config once more: the one exception to a link
// working once, for a member whose network drops WireGuard's handshake,
// which the page's port check cannot see (README, "When networks block
// calls"). All of these must hold:
//
//   - the form asked for is AmneziaWG, and the server offers it;
//   - the reveal was the stock form (the peer's stored form is stock);
//   - it was within checkGrace, as long as the page may still talk to us;
//   - the server has seen no handshake from the peer since (lastHandshake):
//     the stock settings did not get through;
//   - the link has not switched before.
//
// It discloses nothing new: whoever revealed the link already has the
// peer's private key and PSK from the first reveal, and the AmneziaWG form is
// the same keys and addresses with the server's obfuscation parameters,
// which every obfuscated peer's config carries and which authenticate
// nothing. What the rule keeps is the link's meaning: a used link stays
// used, but for this once.
func canSwitch(inv store.Invite, p store.Peer, cfg *config.Config, f *web.Form, lastHandshake, now time.Time) error {
	ok := f != nil && f.AmneziaWG && // AmneziaWG only,
		!p.Obfuscated && // after a stock reveal,
		now.Sub(inv.UsedAt) <= checkGrace && // within the hour,
		!handshakeSince(inv, lastHandshake) && // if that did not connect,
		inv.SwitchedAt.IsZero() // once
	if ok {
		if _, err := resolveForm(cfg, p, *f); err == nil {
			return nil
		}
	}
	return web.ErrInviteUsed
}

// setForm makes f peer p's stored form.
func setForm(p *store.Peer, cfg *config.Config, f web.Form) {
	p.Obfuscated, p.Port = f.AmneziaWG, 0
	if !f.AmneziaWG && f.Port != cfg.VPN.ListenPort {
		p.Port = f.Port
	}
}

// checkGrace is how long after its reveal an invite's page may still
// talk to the server: post a reachability check (the visitor may reveal
// before it finishes), poll the confirmation, switch to AmneziaWG.
const checkGrace = time.Hour

// pageLive returns nil if inv's page may still talk to the server: the
// invite is valid, or was used within checkGrace.
func pageLive(inv store.Invite, now time.Time) error {
	switch {
	case !inv.UsedAt.IsZero():
		if now.Sub(inv.UsedAt) > checkGrace {
			return web.ErrInviteUsed
		}
	case !now.Before(inv.Expires):
		return web.ErrInviteExpired
	}
	return nil
}

// What the page's confirmation found (store.Reachability.Confirmed).
const (
	confirmedConnected   = "connected"
	confirmedNoHandshake = "no-handshake"
)

// handshakeSince reports whether a handshake at hs (zero: none yet) counts
// as inv's member connecting: it came after the link was used or, not used
// yet, after the link was created. Settings scanned from the page leave no
// trace on the server, and before the link existed nobody had them from it.
func handshakeSince(inv store.Invite, hs time.Time) bool {
	since := inv.UsedAt
	if since.IsZero() {
		since = inv.CreatedAt
	}
	return hs.After(since)
}

// handshakes returns each peer's last handshake as the device reports it.
// Call it without the store locked (see Redeem).
func (iv invites) handshakes() map[string]time.Time {
	out := map[string]time.Time{}
	if iv.d.vpn == nil {
		return out
	}
	for _, p := range iv.d.vpn.PeerStatus() {
		out[p.Name] = p.LastHandshake
	}
	return out
}

// Connected reports whether the invite's peer has connected since the
// link was used (handshakeSince), for the page's confirmation. The first
// time it has, it is kept with the peer's reachability check, for status.
func (iv invites) Connected(token string) (bool, error) {
	st, err := iv.d.store.Load()
	if err != nil {
		return false, err
	}
	i := find(st, token)
	if i < 0 {
		return false, web.ErrInviteUnknown
	}
	inv, now := st.Invites[i], time.Now()
	if err := pageLive(inv, now); err != nil {
		return false, err
	}
	p := st.Peer(inv.Peer)
	if p == nil {
		return false, web.ErrInviteUnknown
	}
	if !handshakeSince(inv, iv.handshakes()[inv.Peer]) {
		return false, nil
	}
	if p.Reach != nil && p.Reach.Confirmed != confirmedConnected {
		_, err := iv.d.store.Update(func(st *store.State) error {
			if p := st.Peer(inv.Peer); p != nil && p.Reach != nil {
				p.Reach.Confirmed, p.Reach.ConfirmedAt = confirmedConnected, now.UTC()
			}
			return nil
		})
		if err != nil {
			iv.d.log.Warn("connection confirmed but not recorded", "peer", inv.Peer, "err", err)
		} else {
			iv.d.log.Info("connection confirmed", "peer", inv.Peer, "switched_from", p.Reach.SwitchedFrom)
		}
	}
	return true, nil
}

// SaveCheck records a reachability check run from the invite's page on
// the invite's peer, in the store.
func (iv invites) SaveCheck(token string, judge func(*web.Check, web.Form) (web.Reachability, error)) (web.Reachability, error) {
	var res web.Reachability
	var peer string
	_, err := iv.d.store.Update(func(st *store.State) error {
		i := find(st, token)
		if i < 0 {
			return web.ErrInviteUnknown
		}
		inv := st.Invites[i]
		if err := pageLive(inv, time.Now()); err != nil {
			return err
		}
		p := st.Peer(inv.Peer)
		if p == nil {
			return web.ErrInviteUnknown
		}
		own, err := ownForm(iv.d.config(), *p)
		if err != nil {
			return err
		}
		if res, err = judge(iv.check(p.Name, false), own); err != nil {
			return err
		}
		peer = p.Name
		p.Reach = &store.Reachability{CheckedAt: res.CheckedAt.UTC(), Verdict: res.Verdict, Port: res.Port,
			Reached: res.Reached, Failed: res.Failed}
		return nil
	})
	if err == nil {
		iv.d.log.Info("reachability checked", "peer", peer, "verdict", res.Verdict, "port", res.Port,
			"reached", res.Reached, "failed", res.Failed)
	}
	return res, err
}

// render returns inv's peer's config in form f (nil: the peer's own), as
// text and QR code.
func (iv invites) render(st *store.State, inv store.Invite, f *web.Form) (*web.Settings, error) {
	if iv.d.vpn == nil {
		return nil, web.ErrInviteUnknown
	}
	p := st.Peer(inv.Peer)
	if p == nil {
		return nil, web.ErrInviteUnknown
	}
	cfg := iv.d.config()
	own, err := ownForm(cfg, *p)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", web.ErrInviteUnknown, err)
	}
	form, text := own, ""
	if f == nil {
		// The peer's own form exactly as `tariq peer show` prints it.
		text, err = iv.d.vpn.ClientConfig(inv.Peer)
	} else {
		if form, err = resolveForm(cfg, *p, *f); err != nil {
			return nil, err
		}
		// Rendered from st, where Redeem has just made it the peer's
		// stored form: the text peer show prints, without waiting for the
		// vpn service to reread the store.
		text, err = iv.formConfig(st, *p, form)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", web.ErrInviteUnknown, err)
	}
	png, err := vpn.QRPNG(text, 512)
	if err != nil {
		return nil, err
	}
	return &web.Settings{Peer: inv.Peer, Config: text, QRPNG: png, Form: form}, nil
}

// formConfig renders peer p's config in form f, which resolveForm
// accepted: the same keys and addresses, another port or the AmneziaWG
// form.
func (iv invites) formConfig(st *store.State, p store.Peer, f web.Form) (string, error) {
	cfg := iv.d.config()
	srv := vpn.ServerInfo{PublicKey: iv.d.vpn.ServerPublicKey()}
	if st.VPN.AmneziaWG != nil {
		srv.AmneziaWG = *st.VPN.AmneziaWG
	}
	setForm(&p, cfg, f)
	return vpn.ClientConfig(cfg, srv, p)
}

// ownForm is the form peer p's stored choice gives its config.
func ownForm(cfg *config.Config, p store.Peer) (web.Form, error) {
	port, err := vpn.PeerPort(cfg, p)
	return web.Form{AmneziaWG: p.Obfuscated, Port: port}, err
}

// offeredForms lists the forms of a config the server hands out: stock
// WireGuard on each of its ports, and the AmneziaWG form if on.
func offeredForms(cfg *config.Config, p store.Peer) []web.Form {
	var out []web.Form
	for _, port := range stockPorts(cfg) {
		out = append(out, web.Form{Port: port})
	}
	if cfg.VPN.Obfuscation.Enabled {
		out = append(out, web.Form{AmneziaWG: true, Port: cfg.VPN.Obfuscation.ListenPort})
	}
	return out
}

func stockPorts(cfg *config.Config) []int {
	ports := []int{cfg.VPN.ListenPort}
	for _, p := range cfg.VPN.ExtraPorts {
		if !slices.Contains(ports, p) {
			ports = append(ports, p)
		}
	}
	return ports
}

// resolveForm fills in f (a stock form without a port means the peer's
// own stock port, else the listen port) and checks the server offers it.
func resolveForm(cfg *config.Config, p store.Peer, f web.Form) (web.Form, error) {
	switch {
	case f.AmneziaWG:
		f.Port = cfg.VPN.Obfuscation.ListenPort
	case f.Port == 0:
		f.Port = cfg.VPN.ListenPort
		if own, err := ownForm(cfg, p); err == nil && !own.AmneziaWG {
			f.Port = own.Port
		}
	}
	if !slices.Contains(offeredForms(cfg, p), f) {
		return web.Form{}, web.ErrFormNotOffered
	}
	return f, nil
}

// checkCredentialTTL is how long the TURN credentials the page's check
// uses stay valid: the page runs the check at once.
const checkCredentialTTL = 15 * time.Minute

// check describes the reachability check of peer's invite page; with
// creds, it carries short-lived TURN credentials (id check:<peer>).
func (iv invites) check(peer string, creds bool) *web.Check {
	cfg := iv.d.config()
	c := &web.Check{Host: iv.d.host, StockPorts: stockPorts(cfg)}
	if cfg.VPN.Obfuscation.Enabled {
		c.AmneziaWGPort = cfg.VPN.Obfuscation.ListenPort
	}
	webPort := 0
	if addrs := iv.d.WebAddrs(); len(addrs) > 0 {
		_, p, _ := net.SplitHostPort(addrs[0].String())
		webPort, _ = strconv.Atoi(p)
	}
	for _, e := range iv.d.Endpoints() {
		switch {
		case e.Scheme == "turn" && e.Transport == "udp" && c.TURNUDP == "":
			c.TURNUDP = e.URI()
		case e.Scheme == "turn" && e.Transport == "tcp" && c.TURNTCP == "":
			c.TURNTCP = e.URI()
		case e.Scheme == "turns" && e.Port == webPort && c.TURNTLS == "":
			c.TURNTLS = e.URI()
		}
	}
	if creds && iv.d.relay != nil {
		secret, err := iv.signingSecret(cfg)
		if err != nil {
			iv.d.log.Warn("reachability check without TURN: no REST secret", "err", err)
			c.TURNUDP, c.TURNTCP, c.TURNTLS = "", "", ""
		} else {
			cr := relay.MintCredentials(secret, "check:"+peer, checkCredentialTTL, time.Now())
			c.Username, c.Credential = cr.Username, cr.Password
		}
	}
	return c
}

func (iv invites) signingSecret(cfg *config.Config) (string, error) {
	if len(cfg.Relay.Secrets) > 0 {
		return cfg.Relay.Secrets[0].Reveal(), nil
	}
	s, err := iv.d.store.RelaySecret()
	if err != nil {
		return "", err
	}
	if s == "" {
		return "", errors.New("none generated")
	}
	return s.Reveal(), nil
}
