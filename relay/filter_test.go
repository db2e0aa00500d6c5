package relay

import (
	"net/netip"
	"testing"

	"github.com/tariq-vpn/tariq/internal/addrpolicy"
)

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

// filterCase is one address and the verdict and reason the filter must give.
type filterCase struct {
	addr   string // "" for the zero Addr
	want   Verdict
	reason string
}

func checkCases(t *testing.T, f *Filter, cases []filterCase) {
	t.Helper()
	for _, tc := range cases {
		name := tc.addr
		if name == "" {
			name = "invalid"
		}
		t.Run(name, func(t *testing.T) {
			var a netip.Addr
			if tc.addr != "" {
				a = netip.MustParseAddr(tc.addr)
			}
			v, reason := f.Check(a)
			if v != tc.want || reason != tc.reason {
				t.Errorf("Check(%s) = %v %q, want %v %q", tc.addr, v, reason, tc.want, tc.reason)
			}
		})
	}
}

// TestFilterBuiltin: the relay refuses what the shared address policy's
// built-in list refuses, under the same names (internal/addrpolicy tests
// the list itself, encoding by encoding).
func TestFilterBuiltin(t *testing.T) {
	checkCases(t, NewFilter(nil, nil, nil, nil), []filterCase{
		{"", Deny, "invalid"},
		{"169.254.169.254", Deny, "link-local"},
		{"::ffff:127.0.0.1", Deny, "loopback"},
		{"fd00:ec2::254", Deny, "unique-local"},
		{"::127.0.0.1", Deny, "embedded-loopback"},
		{"2001:0:4136:e378:8000:63bf:5601:5601", Deny, "embedded-link-local"},
		{"64:ff9b::808:808", Deny, "nat64"},
		{"8.8.8.8", Allow, ""},
		{"2606:4700::1111", Allow, ""},
	})
}

// TestFilterPrecedence checks the order in the Filter doc comment: deny_peers
// beats everything, then allow_peers, then own addresses, then the built-in
// list (with embedded IPv4) and the VPN subnets.
func TestFilterPrecedence(t *testing.T) {
	for _, tc := range []struct {
		name             string
		allow, deny, vpn []netip.Prefix
		own              []netip.Addr
		cases            []filterCase
	}{
		{
			name: "deny_peers beats own addresses",
			deny: prefixes("8.8.4.0/24"), own: addrs("8.8.4.4"),
			cases: []filterCase{{"8.8.4.4", Deny, "deny_peers"}, {"::ffff:8.8.4.4", Deny, "deny_peers"}},
		},
		{
			name:  "deny_peers beats allow_peers",
			allow: prefixes("10.0.0.0/8"), deny: prefixes("10.1.0.0/16"),
			cases: []filterCase{{"10.1.2.3", Deny, "deny_peers"}, {"10.2.0.1", Allow, ""}, {"::ffff:10.1.2.3", Deny, "deny_peers"}},
		},
		{
			name: "deny_peers matches embedded IPv4",
			deny: prefixes("93.184.216.0/24"),
			cases: []filterCase{
				{"93.184.216.34", Deny, "deny_peers"},
				{"::ffff:93.184.216.34", Deny, "deny_peers"},
				{"::93.184.216.34", Deny, "deny_peers"},
				{"64:ff9b::5db8:d822", Deny, "deny_peers"},
				{"2002:5db8:d822::1", Deny, "deny_peers"},
				{"93.184.217.1", Allow, ""},
			},
		},
		{
			name:  "deny_peers given IPv4-mapped",
			deny:  prefixes("::ffff:93.184.216.0/120"),
			cases: []filterCase{{"93.184.216.34", Deny, "deny_peers"}, {"::ffff:93.184.216.34", Deny, "deny_peers"}, {"93.184.217.1", Allow, ""}},
		},
		{
			name:  "deny_peers IPv6",
			deny:  prefixes("2606:4700::/32"),
			cases: []filterCase{{"2606:4700::1111", Deny, "deny_peers"}, {"2606:4701::1", Allow, ""}},
		},
		{
			name: "own addresses, even in the built-in list",
			own:  addrs("10.0.0.5", "::ffff:192.168.1.7", "fe80::1%eth0", "203.0.113.9", "127.0.0.1"),
			cases: []filterCase{
				{"10.0.0.5", AllowOwn, ""},
				{"::ffff:10.0.0.5", AllowOwn, ""},
				{"192.168.1.7", AllowOwn, ""},
				{"fe80::1", AllowOwn, ""},
				{"fe80::1%eth1", AllowOwn, ""},
				{"203.0.113.9", AllowOwn, ""},
				{"127.0.0.1", AllowOwn, ""},
				{"10.0.0.6", Deny, "private"},
				{"127.0.0.2", Deny, "loopback"},
				{"::127.0.0.1", Deny, "embedded-loopback"}, // only the exact address is own
				{"64:ff9b::a00:5", Deny, "embedded-private"},
			},
		},
		{
			name:  "allow_peers lifts the own-address rule",
			allow: prefixes("10.0.0.0/8"), own: addrs("10.0.0.5", "10.1.0.5"),
			cases: []filterCase{{"10.0.0.5", Allow, ""}, {"10.0.0.6", Allow, ""}, {"10.1.0.5", Allow, ""}, {"10.2.0.5", Allow, ""}, {"11.0.0.5", Allow, ""}},
		},
		{
			name:  "allow_peers lifts the built-in list",
			allow: prefixes("127.0.0.1/32", "fd00::/8", "169.254.169.254/32"),
			cases: []filterCase{
				{"127.0.0.1", Allow, ""},
				{"::ffff:127.0.0.1", Allow, ""},
				{"127.0.0.2", Deny, "loopback"},
				{"::127.0.0.1", Deny, "embedded-loopback"},
				{"64:ff9b::7f00:1", Deny, "embedded-loopback"},
				{"fd00:ec2::254", Allow, ""},
				{"fc00::1", Deny, "unique-local"},
				{"169.254.169.254", Allow, ""},
				{"169.254.169.253", Deny, "link-local"},
			},
		},
		{
			name:  "allow_peers given IPv4-mapped is the IPv4 prefix",
			allow: prefixes("::ffff:127.0.0.1/128"),
			cases: []filterCase{
				{"127.0.0.1", Allow, ""},
				{"::ffff:127.0.0.1", Allow, ""},
				{"127.0.0.2", Deny, "loopback"},
				{"::127.0.0.1", Deny, "embedded-loopback"},
			},
		},
		{
			name:  "allow_peers of a translation prefix precedes the embedded check",
			allow: prefixes("64:ff9b::/96"),
			cases: []filterCase{{"64:ff9b::808:808", Allow, ""}, {"64:ff9b::7f00:1", Allow, ""}, {"2002:7f00:1::", Deny, "embedded-loopback"}},
		},
		{
			name: "VPN subnets are denied",
			vpn:  prefixes("44.31.0.1/24", "2a0e:8f02:f017::1/64", "::ffff:44.32.0.1/120"),
			cases: []filterCase{
				{"44.31.0.77", Deny, "vpn-subnet"},
				{"::ffff:44.31.0.77", Deny, "vpn-subnet"},
				{"44.31.1.1", Allow, ""},
				{"2a0e:8f02:f017::42", Deny, "vpn-subnet"},
				{"2a0e:8f02:f018::42", Allow, ""},
				{"44.32.0.9", Deny, "vpn-subnet"},
				{"10.77.0.2", Deny, "private"},
			},
		},
		{
			name:  "invalid prefixes are ignored",
			allow: []netip.Prefix{{}}, deny: []netip.Prefix{{}},
			cases: []filterCase{{"8.8.8.8", Allow, ""}, {"127.0.0.1", Deny, "loopback"}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkCases(t, NewFilter(tc.allow, tc.deny, tc.vpn, tc.own), tc.cases)
		})
	}
}

// The operator rules of the second filter FuzzFilter checks.
var (
	fuzzAllow = prefixes("127.0.0.1/32", "::ffff:10.0.0.0/104", "2001:db8::/48")
	fuzzDeny  = prefixes("8.8.8.0/24", "::ffff:1.1.1.1/128", "2606:4700::/32", "192.168.1.7/32")
	fuzzVPN   = prefixes("10.77.0.1/24", "fd1e:77::1/64", "44.31.0.1/24")
	fuzzOwn   = addrs("192.168.1.7", "::ffff:203.0.113.9", "fe80::1%eth0", "2a0e:8f02:f017::1")
)

// fuzzFilters are the filters FuzzFilter checks: the default, and one with
// every kind of operator rule.
var fuzzFilters = []*Filter{
	NewFilter(nil, nil, nil, nil),
	NewFilter(fuzzAllow, fuzzDeny, fuzzVPN, fuzzOwn),
}

// FuzzFilter feeds arbitrary 4- and 16-byte addresses (and zones) to the
// filter and checks the relay's own rules: deny_peers first, then own
// addresses, whatever the encoding (FuzzPolicies in internal/addrpolicy
// checks the shared policy underneath).
func FuzzFilter(f *testing.F) {
	for _, s := range []string{
		"0.0.0.0", "127.0.0.1", "10.0.0.1", "169.254.169.254", "100.100.100.200", "168.63.129.16",
		"255.255.255.255", "224.0.0.1", "8.8.8.8", "192.168.1.7", "203.0.113.9", "44.31.0.9",
		"::", "::1", "::ffff:127.0.0.1", "::127.0.0.1", "64:ff9b::7f00:1", "2002:7f00:1::",
		"2001:0:4136:e378:8000:63bf:80ff:fffe", "fe80::1", "fd00:ec2::254", "fec0::1", "ff02::1",
		"2001:db8::1", "2606:4700::1111", "::ffff:192.168.1.7", "::ffff:203.0.113.9",
	} {
		a := netip.MustParseAddr(s)
		f.Add(a.AsSlice(), "")
		if a.Is6() {
			f.Add(a.AsSlice(), "eth0")
		}
	}
	f.Fuzz(func(t *testing.T, b []byte, zone string) {
		a, ok := netip.AddrFromSlice(b)
		if !ok {
			return
		}
		for i, fl := range fuzzFilters {
			v, reason := fl.Check(a)
			if v == Deny && reason == "" {
				t.Fatalf("filter %d: Check(%s) denied without a reason", i, a)
			}
			// IPv4-mapped and plain IPv4 get the same answer.
			var other netip.Addr
			switch {
			case a.Is4():
				other = netip.AddrFrom16(a.As16())
			case a.Is4In6():
				other = a.Unmap()
			}
			if other.IsValid() {
				if v2, r2 := fl.Check(other); v2 != v || r2 != reason {
					t.Fatalf("filter %d: Check(%s) = %v %q but Check(%s) = %v %q", i, a, v, reason, other, v2, r2)
				}
			}
			// A zone never changes the verdict.
			if a.Is6() {
				if v2, r2 := fl.Check(a.WithZone(zone)); v2 != v || r2 != reason {
					t.Fatalf("filter %d: Check(%s) = %v %q but with zone %q: %v %q", i, a, v, reason, zone, v2, r2)
				}
			}
		}

		// deny_peers wins over everything, own addresses over the rest,
		// whatever the encoding.
		canon, emb := addrpolicy.Canonical(a)
		v, reason := fuzzFilters[1].Check(a)
		denied := false
		for _, p := range addrpolicy.CanonicalPrefixes(fuzzDeny) {
			denied = denied || p.Contains(canon) || (emb.IsValid() && p.Contains(emb))
		}
		own := false
		for _, o := range fuzzOwn {
			own = own || o.Unmap().WithZone("") == canon
		}
		switch {
		case denied && (v != Deny || reason != "deny_peers"):
			t.Fatalf("Check(%s) = %v %q, want deny by deny_peers", a, v, reason)
		case !denied && own && v != AllowOwn:
			t.Fatalf("Check(%s) = %v %q, want allow-own", a, v, reason)
		case !own && v == AllowOwn:
			t.Fatalf("Check(%s) = allow-own for an address not the server's", a)
		}
	})
}
