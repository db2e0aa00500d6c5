package daemon

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/tariq-vpn/tariq/config"
	"github.com/tariq-vpn/tariq/internal/egress"
	"github.com/tariq-vpn/tariq/internal/members"
	"github.com/tariq-vpn/tariq/internal/outline"
)

// outlinePath is the Outline server (Shadowsocks over WebSocket on the
// HTTPS port) as the members model sees it: told every member's key, it
// keeps the keys that may connect in the server's cipher list and serves
// every member's config document, the error document for one who may not
// connect.
type outlinePath struct {
	svc    *outline.Service
	prefix string // of the WebSocket paths
	// wss returns the WebSocket prefix URL the documents name,
	// wss://host[:port]/<prefix>.
	wss func() (string, error)

	mu      sync.Mutex                       // guards docs and retired
	docs    map[string]members.OutlineAccess // by document token
	retired map[string]bool                  // hashed tokens of removed members
}

var _ members.MemberPath = (*outlinePath)(nil)

func (p *outlinePath) Apply(d members.Desired) error {
	limits := map[string]outline.Limits{}
	var keys []outline.Key
	docs := make(map[string]members.OutlineAccess, len(d.Outline))
	for _, a := range d.Outline {
		docs[a.Token] = a
		switch a.Off {
		case "":
			keys = append(keys, outline.Key{Member: a.Member, Secret: a.Secret})
			limits[a.Member] = outline.Limits{Rate: d.Limits[a.Member].Rate}
		case members.BlockExpired, members.BlockOverLimit:
			// Kept in the set but blocked, so that the cut counts as a
			// limit's (tariq_outline_connections_cut_total{reason}).
			keys = append(keys, outline.Key{Member: a.Member, Secret: a.Secret})
			limits[a.Member] = outline.Limits{Blocked: true}
		}
	}
	// Limits first: a member just blocked is cut before the key set is
	// swapped, and a new member's rate cap is in place before they can
	// connect.
	p.svc.SetLimits(limits)
	if err := p.svc.SetKeys(keys); err != nil {
		return err
	}
	retired := make(map[string]bool, len(d.OutlineRetired))
	for _, h := range d.OutlineRetired {
		retired[h] = true
	}
	p.mu.Lock()
	p.docs, p.retired = docs, retired
	p.mu.Unlock()
	return nil
}

func (p *outlinePath) Usage() map[string]members.Traffic {
	u := p.svc.Usage()
	out := make(map[string]members.Traffic, len(u))
	for name, t := range u {
		out[name] = members.Traffic{In: t.In, Out: t.Out}
	}
	return out
}

// Live is nil: the Outline path knows members, not devices (MemberLive).
func (p *outlinePath) Live() map[string]members.Live { return nil }

func (p *outlinePath) MemberLive() map[string]members.MemberLive {
	st := p.svc.Status()
	out := make(map[string]members.MemberLive, len(st))
	for name, s := range st {
		out[name] = members.MemberLive{Open: s.Open, Total: s.Total, LastSeen: s.LastSeen, In: s.In, Out: s.Out}
	}
	return out
}

// The error documents' messages, which the Outline app shows instead of
// connecting: in plain words, English then Arabic (the app's request says
// nothing of its language).
var outlineOffMessages = map[string]string{
	members.OutlineOffDisabled: "This key is switched off for now. Ask the person who runs this server to switch it back on; the same key will work again.\n\n" +
		"هذا المفتاح موقوف الآن. اطلب من الشخص الذي يدير هذا الخادم أن يعيد تشغيله؛ سيعمل المفتاح نفسه من جديد.",
	members.BlockExpired: "The access given with this key has ended. Ask the person who runs this server to extend it; the same key will work again.\n\n" +
		"انتهى الوصول الممنوح بهذا المفتاح. اطلب من الشخص الذي يدير هذا الخادم أن يمدّده؛ سيعمل المفتاح نفسه من جديد.",
	members.BlockOverLimit: "This key has used this month's data allowance. It works again on the first of next month, or sooner if the person who runs this server raises the allowance.\n\n" +
		"استهلك هذا المفتاح حصة البيانات لهذا الشهر. سيعمل من جديد في أول الشهر القادم، أو قبل ذلك إن رفع الشخص الذي يدير هذا الخادم الحصة.",
	members.OutlineOffRemoved: "This key was removed from the server. Ask the person who runs it for a new invitation.\n\n" +
		"أُزيل هذا المفتاح من الخادم. اطلب من الشخص الذي يديره دعوة جديدة.",
}

// document answers a config-document request for token: the member's
// config, the error document when their key is off or was removed, and
// not ok for a token nobody was given (the request goes on to the page).
func (p *outlinePath) document(token string) ([]byte, bool) {
	p.mu.Lock()
	a, ok := p.docs[token]
	removed := !ok && p.retired[members.HashToken(token)]
	p.mu.Unlock()
	switch {
	case removed:
		return outline.ErrorConfig(outlineOffMessages[members.OutlineOffRemoved]), true
	case !ok:
		return nil, false
	case a.Off != "":
		return outline.ErrorConfig(outlineOffMessages[a.Off]), true
	}
	wss, err := p.wss()
	if err != nil {
		return nil, false
	}
	return outline.AccessConfig(wss, a.Secret), true
}

// handler puts the Outline paths in front of page: the config documents
// (/<token>) and the WebSocket paths (/<prefix>/tcp, /<prefix>/udp);
// everything else, and every request on those paths the server would not
// answer, is the page's.
func (p *outlinePath) handler(page http.Handler) (http.Handler, error) {
	ws, err := p.svc.Handler(p.prefix, page)
	if err != nil {
		return nil, err
	}
	return outline.ConfigHandler("", p.document, ws)
}

// Close cuts every Outline connection; the counters stay readable.
func (p *outlinePath) Close() error { return p.svc.Close() }

// newOutline builds the Outline path, a path of the members model m
// returns; its WebSocket prefix is set once the model has given it.
// Nothing listens of its own: the HTTPS server serves its handler.
func (d *Daemon) newOutline(m func() *members.Service) (*outlinePath, error) {
	svc, err := outline.New(outline.Config{}, outline.Deps{
		Logger: d.log.With("component", "outline"),
		Allow:  d.destinations(&d.egress),
	})
	if err != nil {
		return nil, err
	}
	p := &outlinePath{svc: svc, docs: map[string]members.OutlineAccess{}, retired: map[string]bool{}}
	p.wss = func() (string, error) {
		hp, err := m().WebHostPort()
		if err != nil {
			return "", err
		}
		return "wss://" + hp + "/" + p.prefix, nil
	}
	return p, nil
}

// Serve does nothing: the HTTPS server serves the path's connections.
func (p *outlinePath) Serve(ctx context.Context) error {
	<-ctx.Done()
	return nil
}

// trustedCert says whether the certificate being served is one the
// Outline app accepts, for the members model's Outline keys.
func (d *Daemon) trustedCert() error {
	if d.certs == nil {
		return fmt.Errorf("%w: TLS is off (tls.mode)", members.ErrUntrustedCert)
	}
	info := d.certs.Info()
	switch {
	case !info.SelfSigned:
		return nil
	case info.Mode == config.TLSACME:
		return fmt.Errorf("%w, and this server still serves a self-signed one until %s issues one for %s (tariq status shows progress)",
			members.ErrUntrustedCert, info.CA, d.host)
	}
	return fmt.Errorf("%w, and this server's is self-signed (tls.mode %s): set server.public_host to a public IP address, "+
		"or to a DNS name with tls.email, for a Let's Encrypt certificate", members.ErrUntrustedCert, info.Mode)
}

// offlineTrustedCert judges, with no daemon running, whether the
// certificate the daemon will serve under cfg is one the Outline app
// accepts: what tls.mode resolves to, as certs.ResolveMode decides it.
func offlineTrustedCert(cfg *config.Config, mode config.TLSMode) func() error {
	return func() error {
		switch mode {
		case config.TLSACME, config.TLSFiles:
			return nil
		case config.TLSOff:
			return fmt.Errorf("%w: TLS is off (tls.mode)", members.ErrUntrustedCert)
		}
		why := "tls.mode self-signed"
		if cfg.TLS.Mode == config.TLSAuto {
			why = "tls.mode auto resolves to self-signed for " + cfg.Server.PublicHost
		}
		return fmt.Errorf("%w, and this server's would be self-signed (%s): set server.public_host "+
			"to a public IP address, or to a DNS name with tls.email, for a Let's Encrypt certificate", members.ErrUntrustedCert, why)
	}
}

// destinations is the Outline path's destination policy: the members'
// egress policy (vpn.allow_destinations, vpn.deny_destinations,
// vpn.member_to_member, the server's own addresses followed live), with
// Options.AllowDestinations, a test hook, let through first. Until the
// policy is open nothing is.
func (d *Daemon) destinations(eg *atomic.Pointer[egress.Policy]) func(netip.Addr) (bool, string) {
	allow := d.opts.AllowDestinations
	return func(ip netip.Addr) (bool, string) {
		for _, p := range allow {
			if p.Contains(ip.Unmap()) {
				return true, ""
			}
		}
		if p := eg.Load(); p != nil {
			return p.Allow(ip)
		}
		return false, egress.RuleNotOpen
	}
}
