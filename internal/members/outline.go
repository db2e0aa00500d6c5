package members

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"

	"github.com/tariq-vpn/tariq/config"
	"github.com/tariq-vpn/tariq/internal/outline"
	"github.com/tariq-vpn/tariq/internal/store"
	"github.com/tariq-vpn/tariq/internal/wgconf"
)

// The Outline path: every member has one Outline key, next to their
// WireGuard devices, generated with the member and kept in the state (a
// member from before format 4 gets one on the first change or start). The
// key is an ssconf:// link to the member's config document,
// https://<public host>[:port]/<token>, which the Outline app fetches on
// every connect; the document names the server's WebSocket paths and the
// member's Shadowsocks secret.
//
// A member's key works while they are within their limits and have at
// least one enabled device: disabling every device of a member switches
// their Outline key off too (the operator's "peer disable" of a one-device
// member means "cut them off"), while disabling one of several devices
// leaves it on. A removed member's document token is kept, hashed, so that
// its URL answers with an error the app shows rather than as an unknown
// page.

// Why a member's Outline key does not work (OutlineAccess.Off), besides
// the limits' BlockExpired and BlockOverLimit.
const (
	// OutlineOffDisabled: every device of the member is disabled.
	OutlineOffDisabled = "disabled"
	// OutlineOffRemoved: the member was removed (a retired token).
	OutlineOffRemoved = "removed"
)

// ErrOutlineOff is a request for an Outline key while vpn.outline.enabled
// is false.
var ErrOutlineOff = errors.New("the Outline path is off (vpn.outline.enabled)")

// ErrUntrustedCert is a request for an Outline key while the HTTPS
// certificate is not one the Outline app accepts (wrapped with why).
var ErrUntrustedCert = errors.New("the Outline app needs a publicly trusted certificate")

// OutlineAccess is one member's Outline key as the Outline path needs it.
type OutlineAccess struct {
	Member string
	Secret string
	// Token names the member's config document: /<token> on the HTTPS
	// port.
	Token string
	// Off is why the key does not work now: "" when it does, else
	// OutlineOffDisabled, BlockExpired or BlockOverLimit.
	Off string
}

// LogValue keeps the secret and the token out of logs.
func (a OutlineAccess) LogValue() slog.Value { return slog.StringValue(a.Member) }

// OutlineKey is a member's Outline key as `tariq peer show --outline`
// prints it.
type OutlineKey struct {
	Member string `json:"member"`
	// Key is the ssconf:// link, to paste into the Outline app or open on
	// the phone ("Add to Outline").
	Key string `json:"key"`
	// Off says why the key does not work now ("" when it does); it works
	// again, unchanged, once that is lifted.
	Off string `json:"off,omitempty"`
}

// newOutlineAccess generates a member's Outline key.
func newOutlineAccess() *store.OutlineAccess {
	return &store.OutlineAccess{Secret: store.Secret(outline.NewSecret()), Token: store.Secret(outline.NewPrefix())}
}

// ensureOutline generates what the Outline path keeps and st lacks: the
// server's WebSocket prefix and every member's key. They are generated
// whether or not the path is on, so that turning it on later hands out
// keys that were fixed with the member.
func ensureOutline(st *store.State) {
	if st.Outline.Prefix == "" {
		st.Outline.Prefix = store.Secret(outline.NewPrefix())
	}
	for i := range st.Members {
		if st.Members[i].Outline == nil {
			st.Members[i].Outline = newOutlineAccess()
		}
	}
}

// retireOutline keeps the hash of removed member m's document token.
func retireOutline(st *store.State, m store.Member) {
	if m.Outline == nil {
		return
	}
	st.Outline.Retired = append(st.Outline.Retired, HashToken(m.Outline.Token.Reveal()))
}

// outlineLocked lists every member's Outline key for the paths, on or
// off: blocked members' (limits) stay known so their documents say why.
// A damaged entry (no secret, or one another member has) is skipped and
// logged: the path would refuse the whole set.
func (s *Service) outlineLocked(st *store.State, blocked map[string]string) []OutlineAccess {
	enabled := map[string]bool{}
	for _, p := range st.Peers {
		if !p.Disabled {
			enabled[memberOf(st, p)] = true
		}
	}
	secrets, tokens := map[string]bool{}, map[string]bool{}
	var out []OutlineAccess
	for _, m := range st.Members {
		o := m.Outline
		if o == nil {
			continue // before format 4, until the first change or start
		}
		secret, token := o.Secret.Reveal(), o.Token.Reveal()
		if secret == "" || token == "" || secrets[secret] || tokens[token] {
			s.log.Error("Outline key skipped: damaged entry in the state", "member", m.Name)
			continue
		}
		secrets[secret], tokens[token] = true, true
		a := OutlineAccess{Member: m.Name, Secret: secret, Token: token, Off: blocked[m.Name]}
		if a.Off == "" && !enabled[m.Name] {
			a.Off = OutlineOffDisabled
		}
		out = append(out, a)
	}
	return out
}

// outlineOffered returns nil if the server hands out Outline keys: the
// path is on and the certificate is one the app trusts.
func (s *Service) outlineOffered() error {
	cfg := s.deps.Config()
	if !cfg.VPN.Outline.Enabled {
		return ErrOutlineOff
	}
	if !cfg.Web.Enabled || len(cfg.Web.Listen) == 0 || cfg.TLS.Mode == config.TLSOff {
		return fmt.Errorf("%w: the HTTPS page is off", ErrOutlineOff)
	}
	if s.deps.TrustedCert == nil {
		return fmt.Errorf("%w: nothing says which certificate is served", ErrUntrustedCert)
	}
	return s.deps.TrustedCert()
}

// WebHostPort is the HTTPS port as URLs name it: server.public_host, with
// the port of the first web.listen address (the one bound, with a
// running daemon) unless it is 443, an IPv6 address in brackets. Invite
// links, Outline keys and the Outline config documents all use it.
func (s *Service) WebHostPort() (string, error) {
	cfg := s.deps.Config()
	if !cfg.Web.Enabled || len(cfg.Web.Listen) == 0 || cfg.TLS.Mode == config.TLSOff {
		return "", errors.New("the HTTPS page is off (web.enabled, and a tls.mode other than off)")
	}
	listen := cfg.Web.Listen[0]
	if s.deps.WebAddr != nil {
		if a := s.deps.WebAddr(); a != nil {
			listen = a.String()
		}
	}
	_, port, _ := net.SplitHostPort(listen)
	host := cfg.Server.PublicHost
	if n, err := strconv.Atoi(port); err == nil && n != 443 && n != 0 {
		return net.JoinHostPort(host, port), nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.To4() == nil {
		return "[" + host + "]", nil
	}
	return host, nil
}

// accessKey renders m's ssconf:// key, named label in the app.
func (s *Service) accessKey(m *store.Member, label string) (string, error) {
	hp, err := s.WebHostPort()
	if err != nil {
		return "", err
	}
	return outline.AccessKey(hp, 0, m.Outline.Token.Reveal(), label), nil
}

// OutlineKey returns the Outline key of the member named name, or of the
// member whose device is named name, generating it if the member has
// none yet. It refuses while the server hands out none (ErrOutlineOff,
// ErrUntrustedCert): a key that cannot connect helps nobody.
func (s *Service) OutlineKey(name string) (OutlineKey, error) {
	if err := s.outlineOffered(); err != nil {
		return OutlineKey{}, err
	}
	var member string
	st, err := s.change(func(st *store.State) error {
		m, _ := memberNamed(st, name)
		if m == nil {
			return fmt.Errorf("member or peer %q: %w", name, ErrPeerNotFound)
		}
		member = m.Name
		return nil
	})
	if err != nil {
		return OutlineKey{}, err
	}
	m := st.Member(member)
	key, err := s.accessKey(m, m.Name)
	if err != nil {
		return OutlineKey{}, err
	}
	s.mu.Lock()
	blocked := blockReason(m, s.usageNowLocked(m, s.deps.Now()), s.deps.Now())
	s.mu.Unlock()
	k := OutlineKey{Member: m.Name, Key: key, Off: blocked}
	for _, a := range s.outlineLocked(st, map[string]string{m.Name: blocked}) {
		if a.Member == m.Name {
			k.Off = a.Off
		}
	}
	return k, nil
}

// outlineSettings is what an invite's reveal of the Outline form hands
// out: device p's member's key, as text and as a QR code.
func (s *Service) outlineSettings(st *store.State, p store.Peer) (*Settings, error) {
	m := st.Member(memberOf(st, p))
	if m == nil || m.Outline == nil {
		return nil, fmt.Errorf("%w: peer %q has no member with an Outline key", ErrInviteUnknown, p.Name)
	}
	key, err := s.accessKey(m, m.Name)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInviteUnknown, err)
	}
	png, err := wgconf.QRPNG(key, 512)
	if err != nil {
		return nil, err
	}
	return &Settings{Peer: p.Name, Form: Form{Outline: true}, Config: key, QRPNG: png}, nil
}
