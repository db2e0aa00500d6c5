package vpn

import (
	"crypto/rand"
	"encoding/hex"
	"flag"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/tariq-vpn/tariq/config"
	"github.com/tariq-vpn/tariq/internal/members"
	"github.com/tariq-vpn/tariq/internal/store"
	"github.com/tariq-vpn/tariq/internal/wgconf"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

// testConfig is the default config with a temporary data directory, a
// public host, and a unique interface name (the UAPI socket directory is
// shared by the whole host).
func testConfig(t *testing.T) *config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.Server.DataDir = t.TempDir()
	cfg.Server.PublicHost = "vpn.example.com"
	cfg.VPN.Interface = uniqueIface()
	cfg.Relay.Enabled = false
	cfg.Web.Enabled = false
	return cfg
}

func uniqueIface() string {
	var b [4]byte
	rand.Read(b[:])
	return "tqt" + hex.EncodeToString(b[:])
}

func testStore(t *testing.T, cfg *config.Config) *store.Store {
	t.Helper()
	st, err := store.Open(cfg.Server.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// AddPeerRequest asks the members model for a device.
type AddPeerRequest = members.AddRequest

// newMembers is the members model over st; with s, it applies its
// changes to s as the daemon wires them (tests' own adapter: only the
// daemon imports both packages).
func newMembers(t *testing.T, cfg *config.Config, st *store.Store, s *Service) *members.Service {
	t.Helper()
	d := members.Deps{Store: st, Config: func() *config.Config { return cfg }}
	if s != nil {
		// The config in force, as the daemon keeps it after a reload.
		d.Config = s.Config
		d.Paths = []members.Path{&testPath{s: s}}
	}
	m, err := members.New(d)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// identity is the server's identity kept in st, generated on first use.
func identity(t *testing.T, cfg *config.Config, st *store.Store) Identity {
	t.Helper()
	id, err := newMembers(t, cfg, st, nil).Identity()
	if err != nil {
		t.Fatal(err)
	}
	return Identity{PrivateKey: id.PrivateKey, ULA: id.ULA, AmneziaWG: id.AmneziaWG}
}

// testPath is the Service as the members model sees it.
type testPath struct {
	s    *Service
	mu   sync.Mutex
	read map[string]Traffic
}

func (p *testPath) Apply(d members.Desired) error {
	peers := make([]Peer, len(d.Devices))
	for i, dev := range d.Devices {
		peers[i] = Peer{Name: dev.Name, Group: dev.Member, PublicKey: dev.PublicKey, PresharedKey: dev.PresharedKey, IPv4: dev.IPv4, IPv6: dev.IPv6}
	}
	if err := p.s.SetPeers(peers); err != nil {
		return err
	}
	limits := map[string]GroupLimits{}
	p.mu.Lock()
	for name, l := range d.Limits {
		limits[name] = GroupLimits{Rate: l.Rate, Budgeted: l.Budgeted, Remaining: l.Remaining, AsOf: p.read[name].Total()}
	}
	p.mu.Unlock()
	p.s.SetLimits(limits)
	return nil
}

func (p *testPath) Usage() map[string]members.Traffic {
	u := p.s.Usage()
	p.mu.Lock()
	p.read = u
	p.mu.Unlock()
	out := map[string]members.Traffic{}
	for k, v := range u {
		out[k] = members.Traffic{In: v.In, Out: v.Out}
	}
	return out
}

func (p *testPath) Live() map[string]members.Live {
	out := map[string]members.Live{}
	for _, ps := range p.s.PeerStatus() {
		out[ps.Name] = members.Live{Endpoint: ps.Endpoint, LastHandshake: ps.LastHandshake, RxBytes: ps.RxBytes, TxBytes: ps.TxBytes}
	}
	return out
}

// wired is a Service with the members model driving it, offering what the
// tests used to ask the service itself: add, remove, enable and disable
// devices, and their configs.
type wired struct {
	*Service
	m *members.Service
}

// wire builds the members model over st driving s; call start once s is
// open.
func wire(t *testing.T, cfg *config.Config, st *store.Store, s *Service) *wired {
	return &wired{Service: s, m: newMembers(t, cfg, st, s)}
}

func (w *wired) start(t *testing.T) {
	t.Helper()
	if err := w.m.Start(); err != nil {
		t.Fatal(err)
	}
}

func (w *wired) AddPeer(req AddPeerRequest) (store.Peer, error) { return w.m.Add(req) }
func (w *wired) RemovePeer(name string) error                   { return w.m.Remove(name) }
func (w *wired) SetPeerEnabled(name string, on bool) error      { return w.m.SetEnabled(name, on) }
func (w *wired) ClientConfig(name string) (string, error) {
	text, _, err := w.m.Config(name)
	return text, err
}
func (w *wired) Device(name string) (members.DeviceStatus, error) { return w.m.Device(name) }
func (w *wired) Devices() []members.DeviceStatus {
	d, _ := w.m.Devices()
	return d
}

// parseWGQuick reads a wg-quick file into "Section.Key" → value.
func parseWGQuick(t *testing.T, text string) map[string]string {
	t.Helper()
	out := map[string]string{}
	section := ""
	for line := range strings.Lines(text) {
		line, _, _ = strings.Cut(line, "#")
		line = strings.TrimSpace(line)
		switch {
		case line == "":
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[]")
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("bad line %q", line)
			}
			out[section+"."+strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return out
}

// goldenAWG are fixed obfuscation parameters.
func goldenAWG() wgconf.AmneziaWG {
	return wgconf.AmneziaWG{Jc: 5, Jmin: 47, Jmax: 812, S1: 71, S2: 133, H1: 1418275903, H2: 372048221, H3: 2075731890, H4: 955613077}
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// stateBytes returns the state file as written, to prove a failed
// operation wrote nothing.
func stateBytes(t *testing.T, st *store.Store) []byte {
	t.Helper()
	b, err := os.ReadFile(st.Path("state.json"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return b
}

func mustLoad(t *testing.T, st *store.Store) *store.State {
	t.Helper()
	s, err := st.Load()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func addr(s string) netip.Addr  { return netip.MustParseAddr(s) }

func execOutput(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}
