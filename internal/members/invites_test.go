package members

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/tariq-vpn/tariq/config"
	"github.com/tariq-vpn/tariq/internal/store"
)

// TestResolveForm: a download may ask for the stock form on any of the
// server's WireGuard ports or for the AmneziaWG form when it is on; a bare
// ?form=wireguard means the peer's own stock port; nothing else is offered.
func TestResolveForm(t *testing.T) {
	cfg := &config.Config{}
	cfg.VPN.ListenPort, cfg.VPN.ExtraPorts = 51820, []int{443}
	cfg.VPN.Obfuscation.Enabled, cfg.VPN.Obfuscation.ListenPort = true, 51821
	stock443 := store.Peer{Name: "dad", Port: 443}
	awg := store.Peer{Name: "mom", Obfuscated: true}
	for _, tc := range []struct {
		name string
		p    store.Peer
		in   Form
		want Form
		err  error
	}{
		{"own stock port", stock443, Form{}, Form{Port: 443}, nil},
		{"listen port", stock443, Form{Port: 51820}, Form{Port: 51820}, nil},
		{"obfuscated peer, stock", awg, Form{}, Form{Port: 51820}, nil},
		{"amneziawg", stock443, Form{AmneziaWG: true}, Form{AmneziaWG: true, Port: 51821}, nil},
		{"not a port", stock443, Form{Port: 444}, Form{}, ErrFormNotOffered},
		{"obfuscated port in stock form", stock443, Form{Port: 51821}, Form{}, ErrFormNotOffered},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := resolveForm(cfg, tc.p, tc.in)
			if got != tc.want || !errors.Is(err, tc.err) {
				t.Errorf("resolveForm(%+v) = %+v, %v; want %+v, %v", tc.in, got, err, tc.want, tc.err)
			}
		})
	}
	cfg.VPN.Obfuscation.Enabled = false
	if _, err := resolveForm(cfg, stock443, Form{AmneziaWG: true}); !errors.Is(err, ErrFormNotOffered) {
		t.Errorf("amneziawg with obfuscation off: %v", err)
	}
}

// TestSwitchRule: a used link hands out its config once more, in the
// AmneziaWG form, to a member whose stock download never got a handshake
// through, within the hour; it refuses everything else after the use. The
// switch makes AmneziaWG the peer's stored form and keeps, with its
// reachability check, why; a refusal changes nothing.
func TestSwitchRule(t *testing.T) {
	cfg := &config.Config{}
	cfg.Server.PublicHost = "vpn.example.org"
	cfg.VPN.ListenPort, cfg.VPN.ExtraPorts = 51820, []int{443}
	cfg.VPN.Obfuscation.Enabled, cfg.VPN.Obfuscation.ListenPort = true, 51821
	noObf := *cfg
	noObf.VPN.Obfuscation.Enabled = false

	created := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	used := created.Add(time.Hour)
	token, hash := NewToken()
	fresh := func() *store.State {
		return &store.State{
			Peers: []store.Peer{{Name: "mom", Reach: &store.Reachability{CheckedAt: used.Add(-time.Minute), Verdict: VerdictWireGuard,
				Port: 51820, Reached: []string{"wg-51820", "awg-51821"}}}},
			Invites: []store.Invite{{Hash: hash, Peer: "mom", CreatedAt: created, Expires: created.Add(72 * time.Hour), UsedAt: used}},
		}
	}
	awg, stock, stock443 := &Form{AmneziaWG: true}, &Form{}, &Form{Port: 443}
	hs := func(at time.Time) map[string]time.Time { return map[string]time.Time{"mom": at} }

	for _, tc := range []struct {
		name  string
		cfg   *config.Config
		edit  func(*store.State)
		f     *Form
		hs    map[string]time.Time
		now   time.Time
		allow bool
	}{
		{"allowed", cfg, nil, awg, nil, used.Add(30 * time.Second), true},
		{"a handshake before the use does not count", cfg, nil, awg, hs(used.Add(-time.Minute)), used.Add(time.Minute), true},
		{"expired since the use, within the hour", cfg, func(st *store.State) { st.Invites[0].Expires = used.Add(time.Minute) },
			awg, nil, used.Add(10 * time.Minute), true},
		{"no check was posted", cfg, func(st *store.State) { st.Peers[0].Reach = nil }, awg, nil, used.Add(time.Minute), true},
		{"after a handshake", cfg, nil, awg, hs(used.Add(5 * time.Second)), used.Add(time.Minute), false},
		{"after an hour", cfg, nil, awg, nil, used.Add(time.Hour + time.Second), false},
		{"stock form again", cfg, nil, stock, nil, used.Add(time.Minute), false},
		{"own form again", cfg, nil, nil, nil, used.Add(time.Minute), false},
		{"stock on another port", cfg, nil, stock443, nil, used.Add(time.Minute), false},
		{"obfuscation disabled", &noObf, nil, awg, nil, used.Add(time.Minute), false},
		{"the download was AmneziaWG already", cfg, func(st *store.State) { st.Peers[0].Obfuscated = true }, awg, nil, used.Add(time.Minute), false},
		{"switched before", cfg, func(st *store.State) { st.Invites[0].SwitchedAt = used.Add(time.Minute) }, awg, nil, used.Add(2 * time.Minute), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := fresh()
			if tc.edit != nil {
				tc.edit(st)
			}
			before := fmt.Sprintf("%+v", *st)
			got, switched, changed, err := redeem(st, tc.cfg, token, tc.f, tc.hs, tc.now)
			if !tc.allow {
				if !errors.Is(err, ErrInviteUsed) || switched || changed {
					t.Errorf("got %v (switched %v, changed %v), want ErrInviteUsed", err, switched, changed)
				}
				if after := fmt.Sprintf("%+v", *st); after != before {
					t.Errorf("a refusal changed the state:\n%s\n%s", before, after)
				}
				return
			}
			mom := st.Peer("mom")
			if err != nil || !switched || !changed || !got.SwitchedAt.Equal(tc.now) || !st.Invites[0].SwitchedAt.Equal(tc.now) || !mom.Obfuscated || mom.Port != 0 {
				t.Fatalf("got %v (switched %v, changed %v), invite %+v, mom %+v", err, switched, changed, st.Invites[0], mom)
			}
			r := mom.Reach
			if r == nil || r.Verdict != VerdictAmneziaWG || r.Port != 51821 || r.SwitchedFrom != VerdictWireGuard ||
				r.Confirmed != ConfirmedNoHandshake || !r.ConfirmedAt.Equal(tc.now) {
				t.Errorf("reach %+v", r)
			}
			if own, err := ownForm(tc.cfg, *mom); err != nil || own != (Form{AmneziaWG: true, Port: 51821}) {
				t.Errorf("mom's own form now %+v %v", own, err)
			}
			// Once: the same request again is refused.
			if _, _, _, err := redeem(st, tc.cfg, token, tc.f, tc.hs, tc.now.Add(time.Second)); !errors.Is(err, ErrInviteUsed) {
				t.Errorf("a second switch: %v", err)
			}
		})
	}

	// A first download in another form makes it the peer's stored form;
	// in the peer's own form, nothing changes but the use.
	for _, tc := range []struct {
		name    string
		f       *Form
		changed bool
		want    store.Peer
	}{
		{"own form", nil, false, store.Peer{Name: "mom"}},
		{"own form, asked for", stock, false, store.Peer{Name: "mom"}},
		{"AmneziaWG", awg, true, store.Peer{Name: "mom", Obfuscated: true}},
		{"another stock port", stock443, true, store.Peer{Name: "mom", Port: 443}},
	} {
		t.Run("first download, "+tc.name, func(t *testing.T) {
			st := fresh()
			st.Invites[0].UsedAt = time.Time{}
			st.Peers[0].Reach = nil
			got, switched, changed, err := redeem(st, cfg, token, tc.f, nil, used)
			if err != nil || switched || changed != tc.changed || !got.UsedAt.Equal(used) || !got.SwitchedAt.IsZero() {
				t.Errorf("got %+v (switched %v, changed %v) %v", got, switched, changed, err)
			}
			if st.Peers[0] != tc.want {
				t.Errorf("mom %+v, want %+v", st.Peers[0], tc.want)
			}
			// Then the rule above: a switch only from the stock form.
			_, switched, _, err = redeem(st, cfg, token, awg, nil, used.Add(time.Minute))
			if wantSwitch := !tc.want.Obfuscated; switched != wantSwitch || (err == nil) != wantSwitch {
				t.Errorf("switch after a first download %s: %v %v", tc.name, switched, err)
			}
		})
	}
	if _, _, _, err := redeem(fresh(), cfg, "nope", awg, nil, used); !errors.Is(err, ErrInviteUnknown) {
		t.Errorf("unknown token: %v", err)
	}
	st := fresh()
	st.Invites[0].UsedAt, st.Invites[0].Expires = time.Time{}, used
	if _, _, _, err := redeem(st, cfg, token, awg, nil, used); !errors.Is(err, ErrInviteExpired) {
		t.Errorf("expired, unused: %v", err)
	}
}

// redeem runs redeemLocked on the invite for token in st, as Redeem does
// inside the store's lock, given each device's last handshake; it reports
// the invite after, whether it switched, and whether the device's stored
// form changed.
func redeem(st *store.State, cfg *config.Config, token string, f *Form, hs map[string]time.Time, now time.Time) (store.Invite, bool, bool, error) {
	inv, p, err := lookup(st, token)
	if err != nil {
		return store.Invite{}, false, false, err
	}
	port, obf := p.Port, p.Obfuscated
	switched, err := redeemLocked(inv, p, cfg, f, hs[inv.Peer], now)
	return *inv, switched, port != p.Port || obf != p.Obfuscated, err
}

// TestConfirmWindow: the page may talk to the server while its link is
// valid or within the hour after its use; a handshake counts as the
// member connecting after the use or, before any, after the link was
// made (scanned settings leave no trace).
func TestConfirmWindow(t *testing.T) {
	created := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	valid := store.Invite{CreatedAt: created, Expires: created.Add(time.Hour)}
	used := valid
	used.UsedAt = created.Add(30 * time.Minute)
	for _, tc := range []struct {
		name string
		inv  store.Invite
		now  time.Time
		want error
	}{
		{"valid", valid, created.Add(time.Minute), nil},
		{"expired", valid, created.Add(time.Hour), ErrInviteExpired},
		{"used, within the hour", used, used.UsedAt.Add(59 * time.Minute), nil}, // expired by then, but used in time
		{"used over an hour ago", used, used.UsedAt.Add(61 * time.Minute), ErrInviteUsed},
	} {
		if err := pageLive(tc.inv, tc.now); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	for _, tc := range []struct {
		name string
		inv  store.Invite
		hs   time.Time
		want bool
	}{
		{"no handshake", used, time.Time{}, false},
		{"before the use", used, used.UsedAt.Add(-time.Second), false},
		{"after the use", used, used.UsedAt.Add(time.Second), true},
		{"not used, before the link", valid, created.Add(-time.Second), false},
		{"not used, scanned", valid, created.Add(time.Second), true},
	} {
		if got := handshakeSince(tc.inv, tc.hs); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
