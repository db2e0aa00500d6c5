package members

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/tariq-vpn/tariq/config"
	"github.com/tariq-vpn/tariq/internal/store"
	"github.com/tariq-vpn/tariq/internal/wgconf"
)

// One-time links: `tariq peer add mom --invite` stores the SHA-256 of a
// fresh token and prints https://<public host>/join/<token>. The page (in
// internal/web) shows nothing secret on a GET; a deliberate POST reveals
// the settings and burns the link. What the link may do, and when, is
// decided here.

// DefaultInviteTTL is how long a link stays valid unless asked otherwise;
// MaxInviteTTL the longest it may.
const (
	DefaultInviteTTL = 72 * time.Hour
	MaxInviteTTL     = 30 * 24 * time.Hour
)

// checkGrace is how long after its reveal an invite's page may still
// talk to the server: post a reachability check (the visitor may reveal
// before it finishes), poll the confirmation, switch to AmneziaWG.
const checkGrace = time.Hour

// What the page's confirmation found (store.Reachability.Confirmed).
const (
	ConfirmedConnected   = "connected"
	ConfirmedNoHandshake = "no-handshake"
)

// ErrBlocked marks an invite whose member is cut off (BlockedError).
var ErrBlocked = errors.New("member cut off")

// BlockedError is a reveal refused because the member is expired or over
// their data limit; the link is not used up.
type BlockedError struct{ Member, Reason string }

func (e *BlockedError) Error() string {
	return fmt.Sprintf("member %q is cut off (%s)", e.Member, e.Reason)
}

// Is makes errors.Is(err, ErrBlocked) true.
func (e *BlockedError) Is(target error) bool { return target == ErrBlocked }

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

// CreatedInvite is a new one-time link. The URL carries the only copy of
// the token.
type CreatedInvite struct {
	URL     string    `json:"url"`
	Peer    string    `json:"peer"`
	Expires time.Time `json:"expires"`
}

// CreateInvite records a one-time link to device name's settings, valid
// for ttl (0: DefaultInviteTTL), and returns it.
func (s *Service) CreateInvite(name string, ttl time.Duration) (CreatedInvite, error) {
	switch {
	case ttl == 0:
		ttl = DefaultInviteTTL
	case ttl < time.Second:
		return CreatedInvite{}, fmt.Errorf("%w: --ttl %s is not a positive duration", ErrBadInvite, ttl)
	case ttl > MaxInviteTTL:
		return CreatedInvite{}, fmt.Errorf("%w: --ttl %s is longer than 30 days", ErrBadInvite, ttl)
	}
	token, hash := NewToken()
	url, err := s.inviteURL(token)
	if err != nil {
		return CreatedInvite{}, err
	}
	now := s.deps.Now()
	inv := store.Invite{Hash: hash, Peer: name, CreatedAt: now, Expires: now.Add(ttl)}
	_, err = s.change(func(st *store.State) error {
		p := st.Peer(name)
		switch {
		case p == nil:
			return fmt.Errorf("peer %q: %w", name, ErrPeerNotFound)
		case p.PrivateKey == "":
			return fmt.Errorf("%w: peer %q brought its own key (--public-key), so the server has no config to hand out", ErrBadInvite, name)
		}
		st.Invites = append(pruneInvites(st.Invites, now), inv)
		return nil
	})
	if err != nil {
		return CreatedInvite{}, err
	}
	s.log.Info("invite created", "peer", name, "expires", inv.Expires.Format(time.RFC3339))
	return CreatedInvite{URL: url, Peer: name, Expires: inv.Expires}, nil
}

// inviteURL is the link for token: https://<public host>[:port]/join/<token>,
// on the first HTTPS port.
func (s *Service) inviteURL(token string) (string, error) {
	hp, err := s.WebHostPort()
	if err != nil {
		return "", fmt.Errorf("%w: invites need the HTTPS page (web.enabled, and a tls.mode other than off)", ErrBadInvite)
	}
	return "https://" + hp + "/join/" + token, nil
}

// pruneInvites drops invites that ended (used or expired) over 30 days ago.
func pruneInvites(in []store.Invite, now time.Time) []store.Invite {
	out := in[:0]
	for _, i := range in {
		end := i.Expires
		if !i.UsedAt.IsZero() {
			end = i.UsedAt
		}
		if now.Sub(end) < 30*24*time.Hour {
			out = append(out, i)
		}
	}
	return out
}

// find returns the index of the invite whose hash matches token's,
// comparing every stored hash in constant time.
func find(st *store.State, token string) int {
	want := []byte(HashToken(token))
	found := -1
	for i := range st.Invites {
		if subtle.ConstantTimeCompare([]byte(st.Invites[i].Hash), want) == 1 {
			found = i
		}
	}
	return found
}

// unused returns nil if inv may still be revealed: not used, not expired.
func unused(inv store.Invite, now time.Time) error {
	switch {
	case !inv.UsedAt.IsZero():
		return ErrInviteUsed
	case !now.Before(inv.Expires):
		return ErrInviteExpired
	}
	return nil
}

// pageLive returns nil if inv's page may still talk to the server: the
// invite is valid, or was used within checkGrace.
func pageLive(inv store.Invite, now time.Time) error {
	switch {
	case !inv.UsedAt.IsZero():
		if now.Sub(inv.UsedAt) > checkGrace {
			return ErrInviteUsed
		}
	case !now.Before(inv.Expires):
		return ErrInviteExpired
	}
	return nil
}

// Invite is what a one-time link's page shows before the member reveals
// the settings: whose they are, until when, and which forms the page may
// advise. It carries no key material by design: any GET of the page (a
// link preview, a mail scanner) sees only this.
type Invite struct {
	Peer    string
	Member  string
	Expires time.Time
	// Form is the device's own form: what a reveal hands out unless the
	// reachability check advises another.
	Form Form
	// Alternatives are the other forms the server offers the device, for
	// the check to advise and the confirmation to switch to: the Outline
	// form last, when the server hands out Outline keys.
	Alternatives []Form
	// Blocked is why the member is cut off (expired, over-limit), or "":
	// the page says so and the reveal is refused.
	Blocked string
}

// Settings is what a reveal hands out: one device's client config in one
// form, as text and as a QR code.
type Settings struct {
	Peer   string
	Form   Form
	Config string // wg-quick text; in the Outline form, the ssconf:// key
	QRPNG  []byte
}

// lookup returns the invite for token and its device, or ErrInviteUnknown.
func lookup(st *store.State, token string) (*store.Invite, *store.Peer, error) {
	i := find(st, token)
	if i < 0 {
		return nil, nil, ErrInviteUnknown
	}
	inv := &st.Invites[i]
	p := st.Peer(inv.Peer)
	if p == nil {
		return nil, nil, ErrInviteUnknown
	}
	return inv, p, nil
}

// Peek returns what the invite's page shows before the reveal: the device,
// its own form, the other forms on offer, and why the member is cut off if
// they are; nothing secret. Each form's config is rendered (and dropped)
// to offer only forms that can be handed out.
func (s *Service) Peek(token string) (*Invite, error) {
	st, err := s.deps.Store.Load()
	if err != nil {
		return nil, err
	}
	stored, p, err := lookup(st, token)
	if err != nil {
		return nil, err
	}
	now := s.deps.Now()
	if err := unused(*stored, now); err != nil {
		return nil, err
	}
	cfg := s.deps.Config()
	own, err := ownForm(cfg, *p)
	if err == nil {
		_, err = clientConfig(cfg, st, *p, own)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInviteUnknown, err)
	}
	inv := &Invite{Peer: p.Name, Member: memberOf(st, *p), Expires: stored.Expires, Form: own}
	for _, f := range offeredForms(cfg) {
		if f == own {
			continue
		}
		if _, err := clientConfig(cfg, st, *p, f); err == nil {
			inv.Alternatives = append(inv.Alternatives, f)
		}
	}
	if s.outlineOffered() == nil {
		inv.Alternatives = append(inv.Alternatives, Form{Outline: true})
	}
	if m := st.Member(inv.Member); m != nil {
		s.mu.Lock()
		inv.Blocked = blockReason(m, s.usageNowLocked(m, now), now)
		s.mu.Unlock()
	}
	return inv, nil
}

// Redeem burns the invite and returns its settings in form f (nil: the
// device's own), which becomes the device's stored form: the one the
// member now uses. A form the server does not offer burns nothing, nor
// does a member who is cut off (BlockedError). A used invite is refused,
// but for the one switch to AmneziaWG (canSwitch).
func (s *Service) Redeem(token string, f *Form) (*Settings, error) {
	// The switch depends on the device's last handshake, read before the
	// lock: a path takes its own lock inside ours (Apply), never the
	// other way round. A handshake landing in between lets one switch
	// through that could have been refused, which hands out nothing new.
	var handshakes map[string]time.Time
	if f != nil && (f.AmneziaWG || f.Outline) {
		handshakes = s.handshakes()
	}
	if f != nil && f.Outline && s.outlineOffered() != nil {
		return nil, ErrFormNotOffered
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var used store.Invite
	var switched bool
	now := s.deps.Now()
	cfg := s.deps.Config()
	st, err := s.changeLocked(func(st *store.State) (err error) {
		inv, p, err := lookup(st, token)
		if err != nil {
			return err
		}
		if m := st.Member(memberOf(st, *p)); m != nil {
			if why := blockReason(m, s.usageNowLocked(m, now), now); why != "" {
				return &BlockedError{Member: m.Name, Reason: why}
			}
		}
		switched, err = redeemLocked(inv, p, cfg, f, handshakes[inv.Peer], now)
		used = *inv
		return err
	})
	if err != nil {
		return nil, err
	}
	p := st.Peer(used.Peer)
	if f != nil && f.Outline {
		set, err := s.outlineSettings(st, *p)
		if err != nil {
			return nil, err
		}
		s.log.Info("invite used", "peer", used.Peer, "form", set.Form.Key(), "switched", switched)
		return set, nil
	}
	form, err := ownForm(cfg, *p) // the form it has now
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInviteUnknown, err)
	}
	text, err := clientConfig(cfg, st, *p, form)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInviteUnknown, err)
	}
	png, err := wgconf.QRPNG(text, 512)
	if err != nil {
		return nil, err
	}
	if switched {
		s.log.Info("invite switched to amneziawg", "peer", used.Peer, "form", form.Key(),
			"reason", "no handshake since the stock reveal")
	} else {
		s.log.Info("invite used", "peer", used.Peer, "form", form.Key())
	}
	return &Settings{Peer: used.Peer, Config: text, QRPNG: png, Form: form}, nil
}

// redeemLocked is Redeem's change to inv and its device p, at now, given
// the device's last handshake: it reports whether this was the switch to
// AmneziaWG.
func redeemLocked(inv *store.Invite, p *store.Peer, cfg *config.Config, f *Form, handshake, now time.Time) (switched bool, err error) {
	if !inv.UsedAt.IsZero() {
		if err := canSwitch(*inv, *p, cfg, f, handshake, now); err != nil {
			return false, err
		}
		if f.Outline {
			// The member's Outline key; the device keeps its form.
			from := VerdictWireGuard
			if p.Obfuscated {
				from = VerdictAmneziaWG
			}
			inv.SwitchedAt = now
			r := p.Reach
			if r == nil {
				r = &store.Reachability{CheckedAt: now.UTC()}
				p.Reach = r
			}
			r.SwitchedFrom, r.Verdict, r.Port = from, VerdictOutline, 0
			r.Confirmed, r.ConfirmedAt = ConfirmedNoHandshake, now.UTC()
			return true, nil
		}
		awg, _ := resolveForm(cfg, *p, Form{AmneziaWG: true}) // canSwitch resolved it
		inv.SwitchedAt = now
		setForm(p, cfg, awg)
		r := p.Reach
		if r == nil { // no check was posted: the switch is still worth keeping
			r = &store.Reachability{CheckedAt: now.UTC(), Verdict: VerdictWireGuard}
			p.Reach = r
		}
		r.SwitchedFrom, r.Verdict, r.Port = VerdictWireGuard, VerdictAmneziaWG, awg.Port
		r.Confirmed, r.ConfirmedAt = ConfirmedNoHandshake, now.UTC()
		return true, nil
	}
	if err := unused(*inv, now); err != nil {
		return false, err
	}
	inv.Outline = f != nil && f.Outline
	if f != nil && !f.Outline { // the Outline form leaves the device's own
		form, err := resolveForm(cfg, *p, *f)
		if err != nil {
			return false, err
		}
		setForm(p, cfg, form)
	}
	inv.UsedAt = now
	return false, nil
}

// canSwitch reports (nil, else ErrInviteUsed) whether inv, already used,
// may hand out its device's config once more: the one exception to a link
// working once, for a member whose network drops WireGuard's handshake,
// which the page's port check cannot see (README, "When networks block
// calls"). All of these must hold:
//
//   - the form asked for is AmneziaWG, and the server offers it;
//   - the reveal was the stock form (the device's stored form is stock);
//   - it was within checkGrace, as long as the page may still talk to us;
//   - the server has seen no handshake from the device since: the stock
//     settings did not get through;
//   - the link has not switched before.
//
// The switch may go to the member's Outline key instead (when the server
// hands them out), after a reveal in either WireGuard form, under the same
// rule: the link's holder already has the device's keys, which reach
// what the Outline key reaches. A link whose use handed out the Outline
// key never switches to a WireGuard form: that would hand out the
// device's private key, which its holder never had.
//
// It discloses nothing new: whoever revealed the link already has the
// device's private key and PSK from the first reveal, and the AmneziaWG
// form is the same keys and addresses with the server's obfuscation
// parameters, which every obfuscated device's config carries and which
// authenticate nothing. What the rule keeps is the link's meaning: a used
// link stays used, but for this once.
func canSwitch(inv store.Invite, p store.Peer, cfg *config.Config, f *Form, lastHandshake, now time.Time) error {
	if f != nil && f.Outline {
		// The same rule for the member's Outline key (Redeem has checked
		// the server hands one out), after a reveal in either WireGuard
		// form: it opens no more than the device's own keys already do.
		if !inv.Outline && now.Sub(inv.UsedAt) <= checkGrace && !handshakeSince(inv, lastHandshake) && inv.SwitchedAt.IsZero() {
			return nil
		}
		return ErrInviteUsed
	}
	ok := f != nil && f.AmneziaWG && // AmneziaWG only,
		!p.Obfuscated && !inv.Outline && // after a stock reveal,
		now.Sub(inv.UsedAt) <= checkGrace && // within the hour,
		!handshakeSince(inv, lastHandshake) && // if that did not connect,
		inv.SwitchedAt.IsZero() // once
	if ok {
		if _, err := resolveForm(cfg, p, *f); err == nil {
			return nil
		}
	}
	return ErrInviteUsed
}

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

// handshakes returns each device's last handshake as the paths report it.
func (s *Service) handshakes() map[string]time.Time {
	out := map[string]time.Time{}
	for name, l := range s.live() {
		out[name] = l.LastHandshake
	}
	return out
}

// Page returns the device of the invite for token and its own form, while
// the page may still talk to the server (see pageLive): for the page's
// reachability check.
func (s *Service) Page(token string) (peer string, own Form, err error) {
	st, err := s.deps.Store.Load()
	if err != nil {
		return "", Form{}, err
	}
	inv, p, err := lookup(st, token)
	if err != nil {
		return "", Form{}, err
	}
	if err := pageLive(*inv, s.deps.Now()); err != nil {
		return "", Form{}, err
	}
	own, err = ownForm(s.deps.Config(), *p)
	return p.Name, own, err
}

// SaveCheck records a reachability check run from the invite's page on
// the invite's device.
func (s *Service) SaveCheck(token string, r store.Reachability) error {
	var peer string
	_, err := s.change(func(st *store.State) error {
		inv, p, err := lookup(st, token)
		if err != nil {
			return err
		}
		if err := pageLive(*inv, s.deps.Now()); err != nil {
			return err
		}
		peer = p.Name
		r.CheckedAt = r.CheckedAt.UTC()
		p.Reach = &r
		return nil
	})
	if err == nil {
		s.log.Info("reachability checked", "peer", peer, "verdict", r.Verdict, "port", r.Port,
			"reached", r.Reached, "failed", r.Failed)
	}
	return err
}

// Connected reports whether the invite's device has connected since the
// link was used (handshakeSince), or its member with their Outline key,
// for the page's confirmation. The first
// time it has, it is kept with the device's reachability check, for
// status.
func (s *Service) Connected(token string) (bool, error) {
	st, err := s.deps.Store.Load()
	if err != nil {
		return false, err
	}
	inv, p, err := lookup(st, token)
	if err != nil {
		return false, err
	}
	now := s.deps.Now()
	if err := pageLive(*inv, now); err != nil {
		return false, err
	}
	mlive, _ := s.memberLive()
	if !handshakeSince(*inv, s.handshakes()[inv.Peer]) && !handshakeSince(*inv, mlive[memberOf(st, *p)].LastSeen) {
		return false, nil
	}
	if p.Reach != nil && p.Reach.Confirmed != ConfirmedConnected {
		name := p.Name
		_, err := s.change(func(st *store.State) error {
			if p := st.Peer(name); p != nil && p.Reach != nil {
				p.Reach.Confirmed, p.Reach.ConfirmedAt = ConfirmedConnected, now.UTC()
			}
			return nil
		})
		if err != nil {
			s.log.Warn("connection confirmed but not recorded", "peer", name, "err", err)
		} else {
			s.log.Info("connection confirmed", "peer", name, "switched_from", p.Reach.SwitchedFrom)
		}
	}
	return true, nil
}
