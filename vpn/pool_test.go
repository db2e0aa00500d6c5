package vpn

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

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
			st := testStore(t, cfg)
			var got4, got6 []string
			for i := range len(tt.want4) {
				p, err := AddPeerToStore(st, cfg, AddPeerRequest{Name: fmt.Sprint("p", i)})
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
			before := stateBytes(t, st)
			_, err := AddPeerToStore(st, cfg, AddPeerRequest{Name: "one-too-many"})
			if !errors.Is(err, ErrPoolExhausted) {
				t.Fatalf("add to a full pool: got %v, want ErrPoolExhausted", err)
			}
			if !bytes.Equal(before, stateBytes(t, st)) {
				t.Error("a failed add changed the state file")
			}
		})
	}
}

func TestPoolULA(t *testing.T) {
	cfg := testConfig(t) // vpn.address has no IPv6 prefix
	st := testStore(t, cfg)
	a, err := AddPeerToStore(st, cfg, AddPeerRequest{Name: "a"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := AddPeerToStore(st, cfg, AddPeerRequest{Name: "b"})
	if err != nil {
		t.Fatal(err)
	}
	ula := mustLoad(t, st).VPN.ULA
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
	if _, err := AddPeerToStore(st, cfg, AddPeerRequest{Name: "c"}); err != nil {
		t.Fatal(err)
	}
	if got := mustLoad(t, st).VPN.ULA; got != ula {
		t.Errorf("ULA changed from %s to %s", ula, got)
	}
	// Two stores get different ULAs (40 random bits).
	cfg2 := testConfig(t)
	st2 := testStore(t, cfg2)
	if _, err := ServerPublicKeyFromStore(st2, cfg2); err != nil {
		t.Fatal(err)
	}
	if mustLoad(t, st2).VPN.ULA == ula {
		t.Error("two data directories generated the same ULA")
	}
}

// TestPoolNeverTwice: removed peers' addresses are reused only when no
// never-used address is left, oldest retired first, and never while a
// live peer holds them.
func TestPoolNeverTwice(t *testing.T) {
	cfg := testConfig(t)
	cfg.VPN.Address = []netip.Prefix{pfx("10.0.0.1/29"), pfx("fd00:9::1/125")} // IPv4 clients .2-.6, IPv6 ::2-::7
	st := testStore(t, cfg)
	add := func(name string) (netip.Addr, netip.Addr) {
		t.Helper()
		p, err := AddPeerToStore(st, cfg, AddPeerRequest{Name: name})
		if err != nil {
			t.Fatalf("add %s: %v", name, err)
		}
		return p.IPv4, p.IPv6
	}
	remove := func(name string) {
		t.Helper()
		if err := RemovePeerFromStore(st, name); err != nil {
			t.Fatalf("remove %s: %v", name, err)
		}
	}
	add("a") // .2
	add("b") // .3
	add("c") // .4
	remove("b")
	remove("a")
	if got, want := mustLoad(t, st).VPN.Retired, []netip.Addr{
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
	state := mustLoad(t, st)
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
	before := stateBytes(t, st)
	_, err := AddPeerToStore(st, cfg, AddPeerRequest{Name: "h"})
	if !errors.Is(err, ErrPoolExhausted) || err.Error() != `peer "h": no free IPv4 address left in 10.0.0.0/29: address pool exhausted` {
		t.Errorf("got %v", err)
	}
	if !bytes.Equal(before, stateBytes(t, st)) {
		t.Error("a failed add changed the state file")
	}
}

func TestPoolIPv6Exhausted(t *testing.T) {
	cfg := testConfig(t)
	cfg.VPN.Address = []netip.Prefix{pfx("10.0.0.1/24"), pfx("fd00:9::1/126")} // IPv6: ::2, ::3
	st := testStore(t, cfg)
	for _, n := range []string{"a", "b"} {
		if _, err := AddPeerToStore(st, cfg, AddPeerRequest{Name: n}); err != nil {
			t.Fatal(err)
		}
	}
	before := stateBytes(t, st)
	_, err := AddPeerToStore(st, cfg, AddPeerRequest{Name: "c"})
	if !errors.Is(err, ErrPoolExhausted) || err.Error() != `peer "c": no free IPv6 address left in fd00:9::/126: address pool exhausted` {
		t.Errorf("got %v", err)
	}
	if !bytes.Equal(before, stateBytes(t, st)) {
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
