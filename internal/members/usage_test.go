package members

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tariq-vpn/tariq/config"
	"github.com/tariq-vpn/tariq/internal/store"
)

// fakePath is a live path in memory: it records what it is told to be and
// reports the usage the test sets.
type fakePath struct {
	mu      sync.Mutex
	desired Desired
	applies int
	usage   map[string]Traffic
	fail    error
}

func (p *fakePath) Apply(d Desired) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fail != nil {
		return p.fail
	}
	p.desired = d
	p.applies++
	return nil
}

func (p *fakePath) Usage() map[string]Traffic {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string]Traffic{}
	for k, v := range p.usage {
		out[k] = v
	}
	return out
}

func (p *fakePath) Live() map[string]Live { return nil }

// count adds to member's counters on the path.
func (p *fakePath) count(member string, in, out uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.usage == nil {
		p.usage = map[string]Traffic{}
	}
	t := p.usage[member]
	t.In += in
	t.Out += out
	p.usage[member] = t
}

// devices returns the names of the devices the path was last told to have.
func (p *fakePath) devices() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, d := range p.desired.Devices {
		out = append(out, d.Name)
	}
	slices.Sort(out)
	return out
}

func (p *fakePath) limits(member string) (PathLimits, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	l, ok := p.desired.Limits[member]
	return l, ok
}

// clock is a settable clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// limitsLab is a members model with one fake path and a settable clock.
func limitsLab(t *testing.T) (*Service, *fakePath, *clock, *config.Config) {
	t.Helper()
	cfg := testConfig(t)
	path := &fakePath{}
	clk := &clock{now: time.Date(2026, 12, 30, 12, 0, 0, 0, time.UTC)}
	st, err := store.Open(cfg.Server.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Deps{Store: st, Config: func() *config.Config { return cfg }, Paths: []Path{path}, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	return s, path, clk, cfg
}

func u64(n uint64) *uint64      { return &n }
func at(t time.Time) *time.Time { return &t }
func member(t *testing.T, s *Service, name string) MemberStatus {
	t.Helper()
	ms, err := s.Members()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.Name == name {
			return m
		}
	}
	t.Fatalf("no member %q in %+v", name, ms)
	return MemberStatus{}
}

// TestDataLimit: a member's devices (both of them) count toward one
// monthly limit; past it the member is cut off, and others are not; the
// budget handed to the path is what is left; raising the limit lets them
// back in at once, and so does the next month.
func TestDataLimit(t *testing.T) {
	s, path, clk, _ := limitsLab(t)
	if _, err := s.Add(AddRequest{Name: "mom", Limits: LimitsChange{DataLimit: u64(10_000)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Add(AddRequest{Name: "mom-laptop", Member: "mom"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Add(AddRequest{Name: "dad"}); err != nil {
		t.Fatal(err)
	}
	if got := path.devices(); !slices.Equal(got, []string{"dad", "mom", "mom-laptop"}) {
		t.Fatalf("devices on the path: %v", got)
	}
	if l, _ := path.limits("mom"); !l.Budgeted || l.Remaining != 10_000 {
		t.Errorf("mom's budget %+v, want 10000 remaining", l)
	}
	if l, _ := path.limits("dad"); l.Budgeted {
		t.Errorf("dad has a budget %+v", l)
	}

	path.count("mom", 3000, 4000)
	path.count("dad", 50_000, 50_000)
	if err := s.Tick(); err != nil {
		t.Fatal(err)
	}
	if l, _ := path.limits("mom"); l.Remaining != 3000 {
		t.Errorf("mom's budget after 7000 bytes: %+v, want 3000 remaining", l)
	}
	path.count("mom", 0, 3000)
	if err := s.Tick(); err != nil {
		t.Fatal(err)
	}
	if got := path.devices(); !slices.Equal(got, []string{"dad"}) {
		t.Errorf("after mom reached her limit, devices on the path: %v", got)
	}
	m := member(t, s, "mom")
	if m.Blocked != BlockOverLimit || m.Usage.Total() != 10_000 || m.Usage.Month != "2026-12" {
		t.Errorf("mom %+v", m)
	}
	for _, d := range must(s.Devices()) {
		if want := map[string]string{"mom": BlockOverLimit, "mom-laptop": BlockOverLimit, "dad": ""}[d.Name]; d.Blocked != want {
			t.Errorf("device %s blocked %q, want %q", d.Name, d.Blocked, want)
		}
	}

	// Raising the limit lets her back in at once, with the same devices.
	if _, err := s.SetLimits("mom-laptop", LimitsChange{DataLimit: u64(20_000)}); err != nil {
		t.Fatal(err)
	}
	if got := path.devices(); !slices.Equal(got, []string{"dad", "mom", "mom-laptop"}) {
		t.Errorf("after raising the limit: %v", got)
	}
	if l, _ := path.limits("mom"); l.Remaining != 10_000 {
		t.Errorf("mom's budget after raising: %+v", l)
	}
	path.count("mom", 10_000, 0)
	s.Tick()
	if got := path.devices(); !slices.Equal(got, []string{"dad"}) {
		t.Errorf("over the raised limit: %v", got)
	}

	// A new month: usage starts again and she is back, with no change.
	clk.advance(2 * 24 * time.Hour) // 2027-01-01
	if err := s.Tick(); err != nil {
		t.Fatal(err)
	}
	if got := path.devices(); !slices.Equal(got, []string{"dad", "mom", "mom-laptop"}) {
		t.Errorf("in the new month: %v", got)
	}
	if m := member(t, s, "mom"); m.Blocked != "" || m.Usage.Total() != 0 || m.Usage.Month != "2027-01" {
		t.Errorf("mom in the new month %+v", m)
	}
	// Lifting the limit takes the budget off.
	if _, err := s.SetLimits("mom", LimitsChange{DataLimit: u64(0)}); err != nil {
		t.Fatal(err)
	}
	if l, _ := path.limits("mom"); l.Budgeted {
		t.Errorf("limit lifted, budget %+v", l)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestExpiry: a member is cut off once their expiry passes, and let back
// in when it is moved or lifted.
func TestExpiry(t *testing.T) {
	s, path, clk, _ := limitsLab(t)
	if _, err := s.Add(AddRequest{Name: "guest", Limits: LimitsChange{Expires: at(clk.Now().Add(20 * time.Second))}}); err != nil {
		t.Fatal(err)
	}
	if got := path.devices(); !slices.Equal(got, []string{"guest"}) {
		t.Fatalf("before expiry: %v", got)
	}
	clk.advance(19 * time.Second)
	s.Tick()
	if got := path.devices(); len(got) != 1 {
		t.Errorf("a second before expiry: %v", got)
	}
	clk.advance(time.Second)
	s.Tick()
	if got := path.devices(); len(got) != 0 {
		t.Errorf("at expiry: %v", got)
	}
	if m := member(t, s, "guest"); m.Blocked != BlockExpired {
		t.Errorf("guest %+v", m)
	}
	if _, err := s.SetLimits("guest", LimitsChange{Expires: &time.Time{}}); err != nil {
		t.Fatal(err)
	}
	if got := path.devices(); len(got) != 1 {
		t.Errorf("expiry lifted: %v", got)
	}
}

// TestRateHandedOver: --rate is in bits per second; the path gets bytes.
func TestRateHandedOver(t *testing.T) {
	s, path, _, _ := limitsLab(t)
	if _, err := s.Add(AddRequest{Name: "kid", Limits: LimitsChange{Rate: u64(8_000_000)}}); err != nil {
		t.Fatal(err)
	}
	if l, _ := path.limits("kid"); l.Rate != 1_000_000 || l.Budgeted {
		t.Errorf("kid's limits on the path: %+v", l)
	}
}

// TestUsageSurvivesRestart: usage is stored by Flush, a new model over the
// same state carries on from it, and a path whose counters start again
// from zero (the daemon restarted) is counted from there.
func TestUsageSurvivesRestart(t *testing.T) {
	s, path, clk, cfg := limitsLab(t)
	if _, err := s.Add(AddRequest{Name: "mom", Limits: LimitsChange{DataLimit: u64(1 << 20)}}); err != nil {
		t.Fatal(err)
	}
	path.count("mom", 1000, 2000)
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	path.count("mom", 500, 0) // counted, not stored: a kill -9 loses this much
	s.Tick()

	st, _ := store.Open(cfg.Server.DataDir)
	path2 := &fakePath{}
	s2, err := New(Deps{Store: st, Config: func() *config.Config { return cfg }, Paths: []Path{path2}, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.Start(); err != nil {
		t.Fatal(err)
	}
	if m := member(t, s2, "mom"); m.Usage != (store.Usage{Month: "2026-12", In: 1000, Out: 2000}) {
		t.Errorf("after a restart: %+v", m.Usage)
	}
	if l, _ := path2.limits("mom"); l.Remaining != 1<<20-3000 {
		t.Errorf("budget after a restart: %+v", l)
	}
	path2.count("mom", 100, 100)
	if err := s2.Flush(); err != nil {
		t.Fatal(err)
	}
	if m := member(t, s2, "mom"); m.Usage.Total() != 3200 {
		t.Errorf("usage after counting on: %+v", m.Usage)
	}
	// A path's counters that went backwards (restarted) count from zero.
	path2.mu.Lock()
	path2.usage["mom"] = Traffic{In: 10, Out: 0}
	path2.mu.Unlock()
	s2.Flush()
	if m := member(t, s2, "mom"); m.Usage.Total() != 3210 {
		t.Errorf("usage after the path restarted: %+v", m.Usage)
	}
}

// TestPathRefusalRollsBack: a change the live path refuses changes nothing
// in the store.
func TestPathRefusalRollsBack(t *testing.T) {
	s, path, _, _ := limitsLab(t)
	if _, err := s.Add(AddRequest{Name: "mom"}); err != nil {
		t.Fatal(err)
	}
	before := stateBytes(t, s)
	path.fail = errors.New("device refused")
	if _, err := s.Add(AddRequest{Name: "dad"}); err == nil || err.Error() != "device refused" {
		t.Errorf("add refused by the path: %v", err)
	}
	if err := s.Remove("mom"); err == nil {
		t.Error("remove refused by the path: no error")
	}
	if _, err := s.SetLimits("mom", LimitsChange{Rate: u64(1e6)}); err == nil {
		t.Error("limits refused by the path: no error")
	}
	if !bytes.Equal(before, stateBytes(t, s)) {
		t.Error("a refused change altered the state")
	}
	path.fail = nil
	if _, err := s.Add(AddRequest{Name: "dad"}); err != nil {
		t.Fatal(err)
	}
}

// TestFormat2LoadsWhole: a state written by the release before members
// (format 2: peers, invites, a reachability check, retired addresses, the
// obfuscation parameters) loads whole: every peer becomes a device of a
// member of its own name, and nothing else changes.
func TestFormat2LoadsWhole(t *testing.T) {
	cfg := testConfig(t)
	cfg.Server.PublicHost = "vpn.example.org"
	cfg.VPN.ExtraPorts = []int{443}
	cfg.VPN.Obfuscation = config.ObfuscationConfig{Enabled: true, ListenPort: 51821}
	fixture, err := os.ReadFile(filepath.Join("..", "store", "testdata", "state-v2.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cfg.Server.DataDir, "state.json"), fixture, 0o600); err != nil {
		t.Fatal(err)
	}
	s := testService(t, cfg)
	st := mustLoad(t, s)
	if st.Version != store.Version || len(st.Peers) != 4 || len(st.Invites) != 2 || len(st.VPN.Retired) != 2 ||
		st.VPN.AmneziaWG == nil || st.VPN.AmneziaWG.H1 != 1809309834 || st.Relay.Secret.Reveal() == "" {
		t.Fatalf("state %+v", st)
	}
	devices := must(s.Devices())
	want := map[string]struct {
		enabled, own, obf bool
		port              int
	}{
		"mom": {true, false, false, 51820}, "dad": {false, false, false, 443},
		"grandma": {true, false, true, 51821}, "laptop": {true, true, false, 51820},
	}
	for _, d := range devices {
		w := want[d.Name]
		if d.Member != d.Name || d.Enabled != w.enabled || d.OwnKey != w.own || d.Obfuscated != w.obf || d.Port != w.port {
			t.Errorf("device %+v, want %+v", d, w)
		}
	}
	if r := devices[0].Reach; r == nil || r.Verdict != VerdictWireGuard || r.Confirmed != ConfirmedConnected {
		t.Errorf("mom's reachability check lost: %+v", r)
	}
	if ms := must(s.Members()); len(ms) != 4 {
		t.Errorf("members %+v", ms)
	}
	// The same keys hand out the same configs.
	text, _, err := s.Config("grandma")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{"PrivateKey = QIK4nIMxb9U+GUQ726D9hcLyJ5ichREaMkGpmE+cLU8=", "H1 = 1809309834",
		"Endpoint = vpn.example.org:51821", "Address = 10.77.0.4/32, fdb1:e87f:58b3::4/128"} {
		if !bytes.Contains([]byte(text), []byte(line)) {
			t.Errorf("grandma's config lacks %q:\n%s", line, text)
		}
	}
	id, err := s.Identity()
	if err != nil || id.PrivateKey.String() != "sA14M88VuKJjy5vHj9zSnMdlghYUqy4QCa8xyg0j1FE=" || id.ULA != pfx("fdb1:e87f:58b3::/64") {
		t.Errorf("identity changed: %v %v", id.ULA, err)
	}
	// The next device takes the next free address, not a retired one.
	p, err := s.Add(AddRequest{Name: "kid"})
	if err != nil || p.IPv4 != addr("10.77.0.7") {
		t.Errorf("next device %s %v", p.IPv4, err)
	}
}
