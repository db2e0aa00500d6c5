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

func (iv invites) Peek(token string) (*web.Invite, error) {
	st, err := iv.d.store.Load()
	if err != nil {
		return nil, err
	}
	i := find(st, token)
	if i < 0 {
		return nil, web.ErrInviteUnknown
	}
	if err := check(st.Invites[i], time.Now()); err != nil {
		return nil, err
	}
	inv, err := iv.render(st, st.Invites[i], nil)
	if err != nil {
		return nil, err
	}
	// The other forms, for the reachability check to switch to.
	p := st.Peer(inv.Peer)
	for _, f := range offeredForms(iv.d.config(), *p) {
		if f == inv.Form {
			continue
		}
		text, err := iv.formConfig(st, *p, f)
		if err != nil {
			continue // e.g. a port no longer configured: just not offered
		}
		png, err := vpn.QRPNG(text, 512)
		if err != nil {
			return nil, err
		}
		inv.Alternatives = append(inv.Alternatives, web.AltForm{Form: f, QRPNG: png})
	}
	inv.Check = iv.check(inv.Peer, true)
	return inv, nil
}

// Redeem burns the invite and returns its config in form f (nil: the
// peer's own). A form the server does not offer burns nothing.
func (iv invites) Redeem(token string, f *web.Form) (*web.Invite, error) {
	var used store.Invite
	st, err := iv.d.store.Update(func(st *store.State) error {
		i := find(st, token)
		if i < 0 {
			return web.ErrInviteUnknown
		}
		now := time.Now()
		if err := check(st.Invites[i], now); err != nil {
			return err
		}
		if f != nil {
			p := st.Peer(st.Invites[i].Peer)
			if p == nil {
				return web.ErrInviteUnknown
			}
			if _, err := resolveForm(iv.d.config(), *p, *f); err != nil {
				return err
			}
		}
		st.Invites[i].UsedAt = now
		used = st.Invites[i]
		return nil
	})
	if err != nil {
		return nil, err
	}
	inv, err := iv.render(st, used, f)
	if err == nil {
		iv.d.log.Info("invite used", "peer", used.Peer, "form", inv.Form.Key())
	}
	return inv, err
}

// checkGrace is how long after its download an invite's page may still
// post a reachability check (the visitor may download before it finishes).
const checkGrace = time.Hour

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
		inv, now := st.Invites[i], time.Now()
		switch {
		case !now.Before(inv.Expires):
			return web.ErrInviteExpired
		case !inv.UsedAt.IsZero() && now.Sub(inv.UsedAt) > checkGrace:
			return web.ErrInviteUsed
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
func (iv invites) render(st *store.State, inv store.Invite, f *web.Form) (*web.Invite, error) {
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
	if f != nil {
		if form, err = resolveForm(cfg, *p, *f); err != nil {
			return nil, err
		}
	}
	if form == own {
		// The peer's own form exactly as `tariq peer show` prints it.
		text, err = iv.d.vpn.ClientConfig(inv.Peer)
	} else {
		text, err = iv.formConfig(st, *p, form)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", web.ErrInviteUnknown, err)
	}
	png, err := vpn.QRPNG(text, 512)
	if err != nil {
		return nil, err
	}
	return &web.Invite{Peer: inv.Peer, Config: text, QRPNG: png, Expires: inv.Expires, Form: form}, nil
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
	p.Obfuscated, p.Port = f.AmneziaWG, 0
	if !f.AmneziaWG && f.Port != cfg.VPN.ListenPort {
		p.Port = f.Port
	}
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
