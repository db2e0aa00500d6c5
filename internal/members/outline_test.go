package members

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tariq-vpn/tariq/config"
	"github.com/tariq-vpn/tariq/internal/store"
)

// outlineOf returns what the path was last told of member's Outline key.
func (p *fakePath) outlineOf(member string) (OutlineAccess, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, a := range p.desired.Outline {
		if a.Member == member {
			return a, true
		}
	}
	return OutlineAccess{}, false
}

// outlineLab is limitsLab with the Outline path on and the certificate
// trusted (or not, as trusted says).
func outlineLab(t *testing.T, trusted *error) (*Service, *fakePath, *clock, *config.Config) {
	t.Helper()
	cfg := testConfig(t)
	cfg.VPN.Outline.Enabled = true
	cfg.VPN.Obfuscation = config.ObfuscationConfig{Enabled: true, ListenPort: 51821}
	path := &fakePath{}
	clk := &clock{now: time.Date(2026, 12, 30, 12, 0, 0, 0, time.UTC)}
	st, err := store.Open(cfg.Server.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Deps{Store: st, Config: func() *config.Config { return cfg }, Paths: []Path{path}, Now: clk.Now,
		TrustedCert: func() error { return *trusted }})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	return s, path, clk, cfg
}

var keyRe = regexp.MustCompile(`^ssconf://vpn\.example\.com/([A-Z2-7]{26})#mom$`)

// TestOutlineKeyLifecycle: a member gets one Outline key with their first
// device; the path is told it, on, and keeps being told it while any
// device of theirs is enabled; disabling every device, or a limit, turns
// it off (with why) without changing it, and lifting that turns it on
// again; removing the member retires its document token. peer show
// --outline prints the key, one line, for the member or any device of
// theirs; it refuses while the path is off or the certificate untrusted.
func TestOutlineKeyLifecycle(t *testing.T) {
	var trusted error
	s, path, _, cfg := outlineLab(t, &trusted)
	if _, err := s.Add(AddRequest{Name: "mom"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Add(AddRequest{Name: "mom-laptop", Member: "mom"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Add(AddRequest{Name: "dad"}); err != nil {
		t.Fatal(err)
	}
	st := mustLoad(t, s)
	mom, dad := st.Member("mom").Outline, st.Member("dad").Outline
	if mom == nil || dad == nil || mom.Secret == dad.Secret || mom.Token == dad.Token || len(mom.Secret.Reveal()) != 26 ||
		st.Outline.Prefix == "" {
		t.Fatalf("Outline keys %+v %+v, prefix set %v", mom, dad, st.Outline.Prefix != "")
	}
	a, ok := path.outlineOf("mom")
	if !ok || a.Off != "" || a.Secret != mom.Secret.Reveal() || a.Token != mom.Token.Reveal() {
		t.Fatalf("the path has mom's key as %+v %v", a, ok)
	}
	if _, ok := path.limits("mom"); !ok {
		t.Error("mom, whose key is on, has no limits on the path")
	}

	k, err := s.OutlineKey("mom-laptop")
	m := keyRe.FindStringSubmatch(k.Key)
	if err != nil || m == nil || m[1] != mom.Token.Reveal() || k.Member != "mom" || k.Off != "" {
		t.Fatalf("OutlineKey(mom-laptop) = %+v, %v; want ssconf://vpn.example.com/<mom's token>#mom", k, err)
	}
	if k2, _ := s.OutlineKey("mom"); k2 != k {
		t.Errorf("the member's name gives %+v, the device's %+v", k2, k)
	}
	if _, err := s.OutlineKey("nobody"); !errors.Is(err, ErrPeerNotFound) {
		t.Errorf("OutlineKey(nobody): %v", err)
	}

	// One of two devices disabled: the key stays on; both: off.
	must(0, s.SetEnabled("mom", false))
	if a, _ := path.outlineOf("mom"); a.Off != "" {
		t.Errorf("one of mom's two devices disabled: key %q, want on", a.Off)
	}
	must(0, s.SetEnabled("mom-laptop", false))
	if a, _ := path.outlineOf("mom"); a.Off != OutlineOffDisabled {
		t.Errorf("every device of mom's disabled: key off %q, want %q", a.Off, OutlineOffDisabled)
	}
	if k, _ := s.OutlineKey("mom"); k.Off != OutlineOffDisabled {
		t.Errorf("OutlineKey of a disabled member: %+v", k)
	}
	must(0, s.SetEnabled("mom", true))
	if a, _ := path.outlineOf("mom"); a.Off != "" || a.Secret != mom.Secret.Reveal() {
		t.Errorf("mom enabled again: %+v, want her key on, unchanged", a)
	}

	// A limit turns it off, with why; lifting it turns it on again.
	past := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	must(s.SetLimits("mom", LimitsChange{Expires: &past}))
	if a, _ := path.outlineOf("mom"); a.Off != BlockExpired {
		t.Errorf("mom expired: key off %q, want %q", a.Off, BlockExpired)
	}
	must(s.SetLimits("mom", LimitsChange{Expires: &time.Time{}}))
	if a, _ := path.outlineOf("mom"); a.Off != "" {
		t.Errorf("mom's expiry lifted: key off %q", a.Off)
	}

	// Removing the member (her last device) retires her token.
	must(0, s.Remove("mom"))
	must(0, s.Remove("mom-laptop"))
	if _, ok := path.outlineOf("mom"); ok {
		t.Error("the path still has a removed member's key")
	}
	st = mustLoad(t, s)
	path.mu.Lock()
	retired := path.desired.OutlineRetired
	path.mu.Unlock()
	if want := HashToken(mom.Token.Reveal()); !slices.Equal(st.Outline.Retired, []string{want}) || !slices.Equal(retired, []string{want}) {
		t.Errorf("retired tokens: stored %q, told the path %q; want mom's token's hash", st.Outline.Retired, retired)
	}
	if a, ok := path.outlineOf("dad"); !ok || a.Off != "" || a.Secret != dad.Secret.Reveal() {
		t.Errorf("dad's key after mom's removal: %+v", a)
	}

	// Off, or with an untrusted certificate, no key is handed out.
	trusted = fmt.Errorf("%w: the certificate is self-signed", ErrUntrustedCert)
	if _, err := s.OutlineKey("dad"); !errors.Is(err, ErrUntrustedCert) || !strings.Contains(err.Error(), "self-signed") {
		t.Errorf("OutlineKey with a self-signed certificate: %v", err)
	}
	trusted = nil
	cfg.VPN.Outline.Enabled = false
	if _, err := s.OutlineKey("dad"); !errors.Is(err, ErrOutlineOff) {
		t.Errorf("OutlineKey with the path off: %v", err)
	}
}

// TestOutlineKeyPort: the key names the HTTPS port unless it is 443, and
// an IPv6 public host in brackets.
func TestOutlineKeyPort(t *testing.T) {
	var trusted error
	s, _, _, cfg := outlineLab(t, &trusted)
	must(s.Add(AddRequest{Name: "mom"}))
	for _, tc := range []struct{ host, listen, want string }{
		{"vpn.example.com", ":443", "ssconf://vpn.example.com/"},
		{"vpn.example.com", "127.0.0.1:8443", "ssconf://vpn.example.com:8443/"},
		{"2001:db8::7", ":443", "ssconf://[2001:db8::7]/"},
		{"2001:db8::7", "[::]:8443", "ssconf://[2001:db8::7]:8443/"},
	} {
		cfg.Server.PublicHost, cfg.Web.Listen = tc.host, []string{tc.listen}
		k, err := s.OutlineKey("mom")
		if err != nil || !strings.HasPrefix(k.Key, tc.want) || !strings.HasSuffix(k.Key, "#mom") {
			t.Errorf("%s on %s: %q %v, want %s<token>#mom", tc.host, tc.listen, k.Key, err, tc.want)
		}
	}
}

// TestOutlineKeysForOlderStates: members from a format-3 state get their
// Outline keys when the daemon starts, and keep them.
func TestOutlineKeysForOlderStates(t *testing.T) {
	cfg := testConfig(t)
	const v3 = `{"version": 3, "relay": {"secret": "ab"},
  "vpn": {"private_key": "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="},
  "members": [{"name": "mom", "created_at": "2026-01-01T00:00:00Z"}],
  "peers": [{"name": "mom", "member": "mom", "public_key": "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=",
    "private_key": "UAXo5nAr0kBH+HXVx1UMMyYbF/bYQA6Cbi1+Gd2RMEU=", "preshared_key": "FpCyhws9cxwWoV4xELtfJvjJN+zmVOPcCGVqt6qfIrE=",
    "ipv4": "10.77.0.2", "created_at": "2026-01-01T00:00:00Z"}]}`
	if err := os.WriteFile(filepath.Join(cfg.Server.DataDir, "state.json"), []byte(v3), 0o600); err != nil {
		t.Fatal(err)
	}
	path := &fakePath{}
	s := testService(t, cfg, path)
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	st := mustLoad(t, s)
	if st.Version != store.Version || st.Member("mom").Outline == nil || st.Outline.Prefix == "" {
		t.Fatalf("after start: version %d, mom's key %+v", st.Version, st.Member("mom").Outline)
	}
	if a, ok := path.outlineOf("mom"); !ok || a.Off != "" || a.Secret != st.Member("mom").Outline.Secret.Reveal() {
		t.Errorf("the path has %+v", a)
	}
	id, err := s.Identity()
	if err != nil || id.OutlinePrefix != st.Outline.Prefix.Reveal() {
		t.Errorf("identity's Outline prefix %v", err)
	}
	again := mustLoad(t, testService(t, cfg))
	if *again.Member("mom").Outline != *st.Member("mom").Outline || again.Outline.Prefix != st.Outline.Prefix {
		t.Error("the Outline material changed on the next load")
	}
}

// TestOutlineInvite: an invite offers the Outline form when the server
// hands out keys; its reveal hands out the member's key (and a QR code
// of it), burns the link and leaves the device's own form. A used link
// whose device never connected switches to it once, within the hour.
func TestOutlineInvite(t *testing.T) {
	var trusted error
	s, _, clk, _ := outlineLab(t, &trusted)
	must(s.Add(AddRequest{Name: "mom"}))
	newInvite := func() string {
		inv := must(s.CreateInvite("mom", 0))
		return inv.URL[strings.LastIndex(inv.URL, "/")+1:]
	}
	tok := newInvite()
	inv := must(s.Peek(tok))
	if !slices.Contains(inv.Alternatives, Form{Outline: true}) {
		t.Fatalf("the invite offers %+v, not the Outline form", inv.Alternatives)
	}
	trusted = ErrUntrustedCert
	if inv := must(s.Peek(tok)); slices.Contains(inv.Alternatives, Form{Outline: true}) {
		t.Error("the Outline form offered with an untrusted certificate")
	}
	if _, err := s.Redeem(tok, &Form{Outline: true}); !errors.Is(err, ErrFormNotOffered) {
		t.Errorf("reveal of the Outline form with an untrusted certificate: %v", err)
	}
	trusted = nil
	set, err := s.Redeem(tok, &Form{Outline: true})
	key := must(s.OutlineKey("mom")).Key
	if err != nil || set.Config != key || set.Form.Key() != "outline" || len(set.QRPNG) == 0 {
		t.Fatalf("reveal of the Outline form: %+v %v, want mom's key %s", set, err, key)
	}
	for _, f := range []*Form{{Outline: true}, {AmneziaWG: true}, nil} {
		if _, err := s.Redeem(tok, f); !errors.Is(err, ErrInviteUsed) {
			t.Errorf("a reveal (%+v) after the Outline reveal: %v", f, err)
		}
	}
	if p := must(peerOf(t, s, "mom")); p.Obfuscated || p.Port != 0 {
		t.Errorf("the Outline reveal changed the device's form: %+v", p)
	}

	// A stock reveal whose device never connected switches once.
	tok = newInvite()
	if _, err := s.Redeem(tok, nil); err != nil {
		t.Fatal(err)
	}
	clk.advance(time.Minute)
	set, err = s.Redeem(tok, &Form{Outline: true})
	if err != nil || set.Config != key {
		t.Fatalf("the switch to Outline: %+v %v", set, err)
	}
	if r := must(peerOf(t, s, "mom")).Reach; r == nil || r.Verdict != VerdictOutline || r.SwitchedFrom != VerdictWireGuard {
		t.Errorf("the switch is not recorded: %+v", r)
	}
	for _, f := range []*Form{{Outline: true}, {AmneziaWG: true}, nil} {
		if _, err := s.Redeem(tok, f); !errors.Is(err, ErrInviteUsed) {
			t.Errorf("a reveal (%+v) after the switch: %v", f, err)
		}
	}
	// Past the hour, no switch.
	tok = newInvite()
	must(s.Redeem(tok, nil))
	clk.advance(2 * time.Hour)
	if _, err := s.Redeem(tok, &Form{Outline: true}); !errors.Is(err, ErrInviteUsed) {
		t.Errorf("a switch two hours after the reveal: %v", err)
	}
}
