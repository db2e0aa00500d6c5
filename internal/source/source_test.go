package source

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

func TestKey(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string
	}{
		{"192.0.2.7", "192.0.2.7/32"},
		{"127.0.0.2", "127.0.0.2/32"},
		{"0.0.0.0", "0.0.0.0/32"},
		{"::ffff:192.0.2.7", "192.0.2.7/32"}, // a dual-stack socket's IPv4 client
		{"::ffff:127.0.0.1", "127.0.0.1/32"},
		{"2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"},
		{"2001:db8:1:2::1", "2001:db8:1:2::/64"},
		{"2001:db8:1:3::1", "2001:db8:1:3::/64"},
		{"fe80::1%eth0", "fe80::/64"},
		{"::1", "::/64"},
		{"::", "::/64"},
		{"::192.0.2.7", "::/64"}, // IPv4-compatible (deprecated) is plain IPv6
		{"64:ff9b::c000:207", "64:ff9b::/64"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			if got := Key(netip.MustParseAddr(tc.in)); got.String() != tc.want {
				t.Errorf("Key(%s) = %s, want %s", tc.in, got, tc.want)
			}
		})
	}
	if got := Key(netip.Addr{}); got != (netip.Prefix{}) {
		t.Errorf("Key(invalid) = %v, want the zero Prefix", got)
	}
}

func TestKeyOf(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   net.Addr
		want string
	}{
		{"tcp4", &net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 1}, "192.0.2.7/32"},
		{"tcp4 in 16 bytes", &net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.7"), Port: 1}, "192.0.2.7/32"},
		{"tcp4 in 4 bytes", &net.TCPAddr{IP: net.IP{192, 0, 2, 7}, Port: 1}, "192.0.2.7/32"},
		{"udp6", &net.UDPAddr{IP: net.ParseIP("2001:db8::9"), Port: 1, Zone: ""}, "2001:db8::/64"},
		{"udp6 zone", &net.UDPAddr{IP: net.ParseIP("fe80::9"), Port: 1, Zone: "eth0"}, "fe80::/64"},
		{"other", &net.UnixAddr{Name: "/x", Net: "unix"}, "invalid Prefix"},
		{"host:port string", fakeAddr("[::ffff:10.1.2.3]:443"), "10.1.2.3/32"},
		{"nil", nil, "invalid Prefix"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := KeyOf(tc.in); got.String() != tc.want {
				t.Errorf("KeyOf(%v) = %s, want %s", tc.in, got, tc.want)
			}
		})
	}
}

type fakeAddr string

func (a fakeAddr) Network() string { return "fake" }
func (a fakeAddr) String() string  { return string(a) }

// FuzzKey: for any 16 bytes taken as an IPv6 address, and for its IPv4
// form when it is IPv4-mapped, Key never panics, the key contains the
// address, IPv4 keys are /32 and IPv6 ones /64, the mapped and plain forms
// of an IPv4 address share a key, and so do two IPv6 addresses exactly
// when their first 64 bits agree.
func FuzzKey(f *testing.F) {
	f.Add([]byte(net.ParseIP("::ffff:192.0.2.1")), []byte(net.ParseIP("2001:db8::1")))
	f.Add([]byte(net.ParseIP("2001:db8:0:1::1")), []byte(net.ParseIP("2001:db8:0:1::2")))
	f.Add(make([]byte, 16), make([]byte, 16))
	f.Fuzz(func(t *testing.T, a, b []byte) {
		if len(a) != 16 || len(b) != 16 {
			return
		}
		x, y := netip.AddrFrom16([16]byte(a)), netip.AddrFrom16([16]byte(b))
		kx, ky := Key(x), Key(y)
		if !kx.Contains(x.Unmap()) {
			t.Fatalf("Key(%s) = %s does not contain it", x, kx)
		}
		if x.Is4In6() {
			if kx.Bits() != 32 || !kx.Addr().Is4() || Key(x.Unmap()) != kx {
				t.Fatalf("Key(%s) = %s, Key(%s) = %s", x, kx, x.Unmap(), Key(x.Unmap()))
			}
		} else if kx.Bits() != 64 || !kx.Addr().Is6() {
			t.Fatalf("Key(%s) = %s, want a /64", x, kx)
		}
		same := kx == ky
		var want bool
		switch {
		case x.Is4In6() && y.Is4In6():
			want = x == y
		case !x.Is4In6() && !y.Is4In6():
			want = [8]byte(a[:8]) == [8]byte(b[:8])
		}
		if same != want {
			t.Fatalf("Key(%s) = %s, Key(%s) = %s: same %v, want %v", x, kx, y, ky, same, want)
		}
	})
}

// TestLimiter: each key has its own bucket, refilled on the clock it is
// given; memory stays bounded by forgetting the least recently used key,
// which then starts again with a full bucket.
func TestLimiter(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	l := NewLimiter(rate.Every(100*time.Millisecond), 3, 2)
	a, b, c := Key(netip.MustParseAddr("192.0.2.1")), Key(netip.MustParseAddr("192.0.2.2")), Key(netip.MustParseAddr("2001:db8::1"))
	allowed := func(k netip.Prefix, n int) int {
		got := 0
		for range n {
			if l.Allow(k, now) {
				got++
			}
		}
		return got
	}
	if got := allowed(a, 10); got != 3 {
		t.Fatalf("a: %d of 10 allowed at once, want the burst of 3", got)
	}
	if got := allowed(b, 10); got != 3 {
		t.Fatalf("b, after a used its budget: %d of 10 allowed, want 3", got)
	}
	now = now.Add(100 * time.Millisecond)
	if got := allowed(a, 10); got != 1 {
		t.Fatalf("a, 100ms later: %d allowed, want 1", got)
	}
	if l.Len() != 2 {
		t.Fatalf("tracking %d keys, want 2", l.Len())
	}
	// c makes room by forgetting b, the least recently used; a keeps its
	// (empty) bucket.
	if got := allowed(c, 1); got != 1 || l.Len() != 2 {
		t.Fatalf("c: %d allowed, %d keys tracked", got, l.Len())
	}
	if got := allowed(a, 10); got != 0 {
		t.Fatalf("a, still tracked: %d allowed, want 0", got)
	}
	if got := allowed(b, 10); got != 3 {
		t.Fatalf("b, forgotten: %d allowed, want a full burst of 3", got)
	}
}
