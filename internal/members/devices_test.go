package members

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tariq-vpn/tariq/config"
	"github.com/tariq-vpn/tariq/internal/store"
	"github.com/tariq-vpn/tariq/internal/wgconf"
)

// testConfig is the default config with a temporary data directory and a
// public host.
func testConfig(t *testing.T) *config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.Server.DataDir = t.TempDir()
	cfg.Server.PublicHost = "vpn.example.com"
	return cfg
}

// testService is a members model without paths (as the CLI has it with no
// daemon running) over cfg's data directory.
func testService(t *testing.T, cfg *config.Config, paths ...Path) *Service {
	t.Helper()
	st, err := store.Open(cfg.Server.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Deps{Store: st, Config: func() *config.Config { return cfg }, Paths: paths})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func serverPub(s *Service) (string, error) {
	id, err := s.Identity()
	return id.PrivateKey.PublicKey().String(), err
}

func peerOf(t *testing.T, s *Service, name string) (store.Peer, error) {
	t.Helper()
	st := mustLoad(t, s)
	if p := st.Peer(name); p != nil {
		return *p, nil
	}
	return store.Peer{}, fmt.Errorf("peer %q: %w", name, ErrPeerNotFound)
}

// stateBytes returns the state file as written, to prove a failed
// operation wrote nothing.
func stateBytes(t *testing.T, s *Service) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.deps.Store.(*store.Store).Dir(), "state.json"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return b
}

func mustLoad(t *testing.T, s *Service) *store.State {
	t.Helper()
	st, err := s.deps.Store.Load()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func addr(s string) netip.Addr  { return netip.MustParseAddr(s) }

func stringOf(v any) string { return fmt.Sprintf("%v %+v %#v", v, v, v) }

func TestValidateName(t *testing.T) {
	good := []string{"mom", "Mom-Phone_2.0", "a", "7", strings.Repeat("x", 32), "dad.laptop"}
	bad := []string{"", strings.Repeat("x", 33), "a b", "../x", "..", ".hidden", "-rf", "_x", "émile",
		"a/b", "a\x00b", "mom\n", "tab\t", "a:b", "a*"}
	for _, n := range good {
		if err := ValidateName(n); err != nil {
			t.Errorf("ValidateName(%q) = %v, want nil", n, err)
		}
	}
	for _, n := range bad {
		if err := ValidateName(n); !errors.Is(err, ErrBadName) {
			t.Errorf("ValidateName(%q) = %v, want ErrBadName", n, err)
		}
	}
}

// TestAddRefusals: every refusal names what and where, matches
// its sentinel, and leaves the state file byte for byte as it was.
func TestAddRefusals(t *testing.T) {
	cfg := testConfig(t)
	s := testService(t, cfg)
	mom, err := s.Add(AddRequest{Name: "mom"})
	if err != nil {
		t.Fatal(err)
	}
	serverPub, err := serverPub(s)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		req  AddRequest
		want error
		msg  string
	}{
		{"duplicate name", AddRequest{Name: "mom"}, ErrPeerExists, `peer "mom": already exists`},
		{"bad name", AddRequest{Name: "../etc"}, ErrBadName, `peer name "../etc": must be 1-32 letters, digits, '-', '_' or '.', starting with a letter or digit`},
		{"malformed key", AddRequest{Name: "dad", PublicKey: "abc"}, wgconf.ErrBadKey, `peer "dad": public key: must be 32 bytes base64`},
		{"key in use", AddRequest{Name: "dad", PublicKey: mom.PublicKey}, ErrKeyInUse, `peer "dad": public key: already in use by peer "mom"`},
		{"server's key", AddRequest{Name: "dad", PublicKey: serverPub}, wgconf.ErrBadKey, `peer "dad": public key: is the server's own key`},
		{"all-zero key", AddRequest{Name: "dad", PublicKey: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}, wgconf.ErrBadKey, `peer "dad": public key: is all zeros, never a real key`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := stateBytes(t, s)
			_, err := s.Add(tt.req)
			if !errors.Is(err, tt.want) || err.Error() != tt.msg {
				t.Errorf("got %v, want %v saying %q", err, tt.want, tt.msg)
			}
			if !bytes.Equal(before, stateBytes(t, s)) {
				t.Error("a refused add changed the state file")
			}
		})
	}
}

func TestStorePeerLifecycle(t *testing.T) {
	cfg := testConfig(t)
	s := testService(t, cfg)
	start := time.Now().Add(-time.Second)
	mom, err := s.Add(AddRequest{Name: "mom"})
	if err != nil {
		t.Fatal(err)
	}
	own := wgconf.NewPrivateKey()
	kid, err := s.Add(AddRequest{Name: "kid", PublicKey: own.PublicKey().String()})
	if err != nil {
		t.Fatal(err)
	}
	// A generated peer: its private key matches its public key.
	priv, err := wgconf.ParseKey(mom.PrivateKey.Reveal())
	if err != nil || priv.PublicKey().String() != mom.PublicKey {
		t.Errorf("mom's key pair does not match: %v", err)
	}
	// A peer with its own key: the server holds no private key.
	if kid.PrivateKey != "" || kid.PublicKey != own.PublicKey().String() {
		t.Errorf("kid = %+v, want its own public key and no private key", kid)
	}
	for _, p := range []store.Peer{mom, kid} {
		if _, err := wgconf.ParseKey(p.PresharedKey.Reveal()); err != nil || !p.IPv4.Is4() || !p.IPv6.Is6() {
			t.Errorf("%s: PSK %v, addresses %s %s", p.Name, err, p.IPv4, p.IPv6)
		}
		if p.PresharedKey == mom.PresharedKey && p.Name != "mom" {
			t.Error("two peers share a preshared key")
		}
		if p.CreatedAt.Before(start) {
			t.Errorf("%s: created at %v", p.Name, p.CreatedAt)
		}
	}

	if err := s.SetEnabled("mom", false); err != nil {
		t.Fatal(err)
	}
	if p, _ := peerOf(t, s, "mom"); !p.Disabled || p.IPv4 != mom.IPv4 || p.PrivateKey != mom.PrivateKey {
		t.Errorf("disabled mom = %+v, want same keys and addresses, disabled", p)
	}
	if err := s.SetEnabled("mom", true); err != nil {
		t.Fatal(err)
	}
	if p, _ := peerOf(t, s, "mom"); p.Disabled {
		t.Error("mom still disabled")
	}
	if err := s.SetEnabled("nobody", true); !errors.Is(err, ErrPeerNotFound) {
		t.Errorf("enable unknown: got %v", err)
	}
	if err := s.Remove("mom"); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove("mom"); !errors.Is(err, ErrPeerNotFound) || err.Error() != `peer "mom": no such peer` {
		t.Errorf("remove twice: got %v", err)
	}
	if _, err := peerOf(t, s, "mom"); !errors.Is(err, ErrPeerNotFound) {
		t.Errorf("removed peer still found: %v", err)
	}

	// The server key is made once and kept.
	k1, err := serverPub(s)
	if err != nil {
		t.Fatal(err)
	}
	k2, _ := serverPub(s)
	if k1 != k2 {
		t.Errorf("server key changed: %s, %s", k1, k2)
	}
	// Secrets never reach a formatted state.
	state := mustLoad(t, s)
	for _, s := range []string{state.VPN.PrivateKey.Reveal(), state.Peers[0].PresharedKey.Reveal()} {
		if strings.Contains(strings.Join([]string{stringOf(state), stringOf(state.Peers)}, ""), s) {
			t.Error("a secret shows in fmt output")
		}
	}
}

func TestPoolOrder(t *testing.T) {
	tests := []struct {
		name    string
		address []netip.Prefix
		want4   []string // addresses of consecutive peers
		want6   []string
	}{
		{
			name:    "server first",
			address: []netip.Prefix{pfx("10.0.0.1/29"), pfx("fd00:1::1/64")},
			want4:   []string{"10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"},
			want6:   []string{"fd00:1::2", "fd00:1::3", "fd00:1::4", "fd00:1::5", "fd00:1::6"},
		},
		{
			name:    "server in the middle",
			address: []netip.Prefix{pfx("10.0.0.4/29"), pfx("fd00:1::3/64")},
			want4:   []string{"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.5", "10.0.0.6"},
			want6:   []string{"fd00:1::1", "fd00:1::2", "fd00:1::4", "fd00:1::5", "fd00:1::6"},
		},
		{
			name:    "slash 30 has one client",
			address: []netip.Prefix{pfx("192.168.7.1/30"), pfx("fd00:1::1/64")},
			want4:   []string{"192.168.7.2"},
			want6:   []string{"fd00:1::2"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.VPN.Address = tt.address
			s := testService(t, cfg)
			var got4, got6 []string
			for i := range len(tt.want4) {
				p, err := s.Add(AddRequest{Name: fmt.Sprint("p", i)})
				if err != nil {
					t.Fatal(err)
				}
				got4 = append(got4, p.IPv4.String())
				got6 = append(got6, p.IPv6.String())
			}
			if diff := cmp.Diff(tt.want4, got4); diff != "" {
				t.Errorf("IPv4 (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.want6, got6); diff != "" {
				t.Errorf("IPv6 (-want +got):\n%s", diff)
			}
			// The pool is now full: the next add fails and writes nothing.
			before := stateBytes(t, s)
			_, err := s.Add(AddRequest{Name: "one-too-many"})
			if !errors.Is(err, ErrPoolExhausted) {
				t.Fatalf("add to a full pool: got %v, want ErrPoolExhausted", err)
			}
			if !bytes.Equal(before, stateBytes(t, s)) {
				t.Error("a failed add changed the state file")
			}
		})
	}
}

func TestPoolULA(t *testing.T) {
	cfg := testConfig(t) // vpn.address has no IPv6 prefix
	s := testService(t, cfg)
	a, err := s.Add(AddRequest{Name: "a"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Add(AddRequest{Name: "b"})
	if err != nil {
		t.Fatal(err)
	}
	ula := mustLoad(t, s).VPN.ULA
	// RFC 4193: fd00::/8 with a random 40-bit global ID, one /64.
	if ula.Bits() != 64 || ula.Addr().As16()[0] != 0xfd || ula.Masked() != ula {
		t.Fatalf("ULA %s is not an fd00::/8 /64", ula)
	}
	if g := ula.Addr().As16(); g[1]|g[2]|g[3]|g[4]|g[5] == 0 {
		t.Errorf("ULA %s has an all-zero global ID", ula)
	}
	base := ula.Addr()
	want := []netip.Addr{base.Next().Next(), base.Next().Next().Next()} // ::1 is the server's
	if a.IPv6 != want[0] || b.IPv6 != want[1] {
		t.Errorf("peers got %s, %s; want %s, %s", a.IPv6, b.IPv6, want[0], want[1])
	}
	// Kept: a second ULA is never generated.
	if _, err := s.Add(AddRequest{Name: "c"}); err != nil {
		t.Fatal(err)
	}
	if got := mustLoad(t, s).VPN.ULA; got != ula {
		t.Errorf("ULA changed from %s to %s", ula, got)
	}
	// Two stores get different ULAs (40 random bits).
	cfg2 := testConfig(t)
	s2 := testService(t, cfg2)
	if _, err := serverPub(s2); err != nil {
		t.Fatal(err)
	}
	if mustLoad(t, s2).VPN.ULA == ula {
		t.Error("two data directories generated the same ULA")
	}
}

// TestPoolNeverTwice: removed peers' addresses are reused only when no
// never-used address is left, oldest retired first, and never while a
// live peer holds them.
func TestPoolNeverTwice(t *testing.T) {
	cfg := testConfig(t)
	cfg.VPN.Address = []netip.Prefix{pfx("10.0.0.1/29"), pfx("fd00:9::1/125")} // IPv4 clients .2-.6, IPv6 ::2-::7
	s := testService(t, cfg)
	add := func(name string) (netip.Addr, netip.Addr) {
		t.Helper()
		p, err := s.Add(AddRequest{Name: name})
		if err != nil {
			t.Fatalf("add %s: %v", name, err)
		}
		return p.IPv4, p.IPv6
	}
	remove := func(name string) {
		t.Helper()
		if err := s.Remove(name); err != nil {
			t.Fatalf("remove %s: %v", name, err)
		}
	}
	add("a") // .2
	add("b") // .3
	add("c") // .4
	remove("b")
	remove("a")
	if got, want := mustLoad(t, s).VPN.Retired, []netip.Addr{
		addr("10.0.0.3"), addr("fd00:9::3"), addr("10.0.0.2"), addr("fd00:9::2")}; !slices.Equal(got, want) {
		t.Fatalf("retired = %v, want %v (removal order)", got, want)
	}
	// Never-used addresses first, even though lower retired ones exist.
	if v4, v6 := add("d"); v4 != addr("10.0.0.5") || v6 != addr("fd00:9::5") {
		t.Errorf("d got %s %s, want the never-used 10.0.0.5 fd00:9::5", v4, v6)
	}
	if v4, _ := add("e"); v4 != addr("10.0.0.6") {
		t.Errorf("e got %s, want the never-used 10.0.0.6", v4)
	}
	// IPv4 is out of never-used addresses: the oldest retired (b's) comes
	// back; IPv6 still has a never-used one (::7).
	if v4, v6 := add("f"); v4 != addr("10.0.0.3") || v6 != addr("fd00:9::7") {
		t.Errorf("f got %s %s, want b's retired 10.0.0.3 and the never-used fd00:9::7", v4, v6)
	}
	// Both families are out now: a's IPv4 and b's IPv6, oldest first.
	if v4, v6 := add("g"); v4 != addr("10.0.0.2") || v6 != addr("fd00:9::3") {
		t.Errorf("g got %s %s, want a's retired 10.0.0.2 and b's retired fd00:9::3", v4, v6)
	}
	state := mustLoad(t, s)
	if want := []netip.Addr{addr("fd00:9::2")}; !slices.Equal(state.VPN.Retired, want) {
		t.Errorf("retired = %v, want %v", state.VPN.Retired, want)
	}
	// No address is held twice.
	seen := map[netip.Addr]string{}
	for _, p := range state.Peers {
		for _, a := range []netip.Addr{p.IPv4, p.IPv6} {
			if other, dup := seen[a]; dup {
				t.Errorf("%s held by both %s and %s", a, other, p.Name)
			}
			seen[a] = p.Name
		}
	}
	// IPv4 is full now: a clear error, nothing written.
	before := stateBytes(t, s)
	_, err := s.Add(AddRequest{Name: "h"})
	if !errors.Is(err, ErrPoolExhausted) || err.Error() != `peer "h": IPv4 address pool exhausted (every address in 10.0.0.0/29 is taken or reserved)` {
		t.Errorf("got %v", err)
	}
	if !bytes.Equal(before, stateBytes(t, s)) {
		t.Error("a failed add changed the state file")
	}
}

func TestPoolIPv6Exhausted(t *testing.T) {
	cfg := testConfig(t)
	cfg.VPN.Address = []netip.Prefix{pfx("10.0.0.1/24"), pfx("fd00:9::1/126")} // IPv6: ::2, ::3
	s := testService(t, cfg)
	for _, n := range []string{"a", "b"} {
		if _, err := s.Add(AddRequest{Name: n}); err != nil {
			t.Fatal(err)
		}
	}
	before := stateBytes(t, s)
	_, err := s.Add(AddRequest{Name: "c"})
	if !errors.Is(err, ErrPoolExhausted) || err.Error() != `peer "c": IPv6 address pool exhausted (every address in fd00:9::/126 is taken or reserved)` {
		t.Errorf("got %v", err)
	}
	if !bytes.Equal(before, stateBytes(t, s)) {
		t.Error("a failed add changed the state file")
	}
}

func TestIsBroadcast(t *testing.T) {
	tests := []struct {
		network, a string
		want       bool
	}{
		{"10.0.0.0/24", "10.0.0.255", true},
		{"10.0.0.0/24", "10.0.0.254", false},
		{"10.0.0.0/30", "10.0.0.3", true},
		{"10.0.0.0/31", "10.0.0.1", false}, // RFC 3021: no broadcast
		{"10.0.0.0/8", "10.255.255.255", true},
		{"fd00::/64", "fd00::ffff:ffff:ffff:ffff", false},
	}
	for _, tt := range tests {
		t.Run(tt.network+" "+tt.a, func(t *testing.T) {
			if got := isBroadcast(pfx(tt.network), addr(tt.a)); got != tt.want {
				t.Errorf("got %v", got)
			}
		})
	}
}
