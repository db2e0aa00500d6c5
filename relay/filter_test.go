package relay

import (
	"net/netip"
	"testing"
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

// TestFilterBuiltin runs the default filter (no allow, deny, VPN or own
// addresses) against every encoding of a forbidden address we know of, and
// against public addresses that must stay reachable.
func TestFilterBuiltin(t *testing.T) {
	checkCases(t, NewFilter(nil, nil, nil, nil), []filterCase{
		{"", Deny, "invalid"},

		// IPv4.
		{"0.0.0.0", Deny, "this-network"},
		{"0.1.2.3", Deny, "this-network"},
		{"10.0.0.1", Deny, "private"},
		{"10.255.255.255", Deny, "private"},
		{"100.64.0.1", Deny, "shared-cgnat"},
		{"100.100.100.200", Deny, "shared-cgnat"}, // Alibaba metadata
		{"100.127.255.255", Deny, "shared-cgnat"},
		{"100.128.0.1", Allow, ""},
		{"127.0.0.1", Deny, "loopback"},
		{"127.0.0.2", Deny, "loopback"},
		{"127.255.255.254", Deny, "loopback"},
		{"169.254.169.254", Deny, "link-local"}, // AWS, GCP, Azure metadata
		{"169.254.0.1", Deny, "link-local"},
		{"172.15.255.255", Allow, ""},
		{"172.16.0.1", Deny, "private"},
		{"172.31.255.255", Deny, "private"},
		{"172.32.0.1", Allow, ""},
		{"192.0.0.192", Deny, "ietf-protocol"}, // Oracle metadata
		{"192.0.2.1", Deny, "documentation"},
		{"192.88.99.1", Deny, "6to4-relay"},
		{"192.168.1.1", Deny, "private"},
		{"198.18.0.1", Deny, "benchmarking"},
		{"198.19.255.255", Deny, "benchmarking"},
		{"198.20.0.1", Allow, ""},
		{"198.51.100.1", Deny, "documentation"},
		{"203.0.113.1", Deny, "documentation"},
		{"224.0.0.1", Deny, "multicast"},
		{"239.255.255.250", Deny, "multicast"}, // SSDP
		{"240.0.0.1", Deny, "reserved"},
		{"255.255.255.255", Deny, "reserved"}, // limited broadcast
		{"168.63.129.16", Deny, "metadata"},   // Azure WireServer
		{"168.63.129.17", Allow, ""},
		{"8.8.8.8", Allow, ""},
		{"1.1.1.1", Allow, ""},
		{"93.184.216.34", Allow, ""},

		// IPv4-mapped: judged as the IPv4 address (CVE-2026-27624).
		{"::ffff:127.0.0.1", Deny, "loopback"},
		{"::ffff:127.0.0.1%eth0", Deny, "loopback"},
		{"::ffff:0.0.0.0", Deny, "this-network"},
		{"::ffff:10.0.0.1", Deny, "private"},
		{"::ffff:169.254.169.254", Deny, "link-local"},
		{"::ffff:100.100.100.200", Deny, "shared-cgnat"},
		{"::ffff:255.255.255.255", Deny, "reserved"},
		{"::ffff:8.8.8.8", Allow, ""},

		// IPv6 proper.
		{"::", Deny, "unspecified"},
		{"::1", Deny, "loopback"},
		{"fe80::1", Deny, "link-local"},
		{"fe80::1%eth0", Deny, "link-local"},
		{"febf:ffff::1", Deny, "link-local"},
		{"fd00:ec2::254", Deny, "unique-local"}, // AWS IMDS over IPv6
		{"fc00::1", Deny, "unique-local"},
		{"fdff:ffff:ffff:ffff::1", Deny, "unique-local"},
		{"fec0::1", Deny, "site-local"},
		{"ff02::1", Deny, "multicast"},
		{"ff05::1:3", Deny, "multicast"},
		{"ff02::1%eth0", Deny, "multicast"},
		{"2001:db8::1", Deny, "documentation"},
		{"3fff::1", Deny, "documentation"},
		{"100::1", Deny, "discard"},
		{"5f00::1", Deny, "srv6"},
		{"2620:4f:8000::1", Deny, "as112"},
		{"2001:1ff:ffff::1", Deny, "ietf-protocol"},
		{"2001:200::1", Allow, ""},
		{"2606:4700::1111", Allow, ""},
		{"2001:4860:4860::8888", Allow, ""},
		{"2a00:1450:4001:830::200e", Allow, ""},

		// IPv6 forms carrying an IPv4 address (coturn#1945).
		{"::127.0.0.1", Deny, "embedded-loopback"},         // IPv4-compatible
		{"::ffff:0:7f00:1", Deny, "embedded-loopback"},     // IPv4-translated (SIIT)
		{"::ffff:0:808:808", Deny, "ipv4-translated"},      // never relayed, even to a public IPv4
		{"::169.254.169.254", Deny, "embedded-link-local"}, // IPv4-compatible
		{"::8.8.8.8", Deny, "ipv4-compatible"},             // deprecated form, denied whatever it carries
		{"::0.0.1.1", Deny, "ipv4-compatible"},
		{"64:ff9b::7f00:1", Deny, "embedded-loopback"}, // NAT64
		{"64:ff9b::a9fe:a9fe", Deny, "embedded-link-local"},
		{"64:ff9b::808:808", Deny, "nat64"},
		{"64:ff9b:1::7f00:1", Deny, "nat64"},               // local-use NAT64 (RFC 8215)
		{"2002:7f00:1::", Deny, "embedded-loopback"},       // 6to4
		{"2002:a9fe:a9fe::1", Deny, "embedded-link-local"}, // 6to4
		{"2002:a00:1::", Deny, "embedded-private"},         // 6to4
		{"2002:808:808::1", Deny, "6to4"},
		// Teredo: 2001:0:<server>:<flags>:<port^ffff>:<client^ffffffff> (RFC 4380 §4).
		{"2001:0:4136:e378:8000:63bf:80ff:fffe", Deny, "embedded-loopback"},      // client 127.0.0.1
		{"2001:0:4136:e378:8000:63bf:3fff:fdd2", Deny, "embedded-documentation"}, // RFC 4380's 192.0.2.45
		{"2001:0:4136:e378:8000:63bf:5601:5601", Deny, "embedded-link-local"},    // client 169.254.169.254
		{"2001:0:4136:e378:8000:63bf:f7f7:f7f7", Deny, "ietf-protocol"},          // client 8.8.8.8
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

func TestCanonical(t *testing.T) {
	for _, tc := range []struct{ in, canon, embedded string }{
		{"127.0.0.1", "127.0.0.1", ""},
		{"::ffff:127.0.0.1", "127.0.0.1", ""},
		{"::ffff:127.0.0.1%eth0", "127.0.0.1", ""},
		{"fe80::1%eth0", "fe80::1", ""},
		{"::", "::", ""},
		{"::1", "::1", ""},
		{"::127.0.0.1", "::7f00:1", "127.0.0.1"},
		{"::0.0.1.1", "::101", ""},
		{"64:ff9b::7f00:1", "64:ff9b::7f00:1", "127.0.0.1"},
		{"64:ff9b:0:0:1::7f00:1", "64:ff9b::1:0:7f00:1", ""},
		{"2002:7f00:1::", "2002:7f00:1::", "127.0.0.1"},
		{"2002:c000:22d:1::5", "2002:c000:22d:1::5", "192.0.2.45"},
		{"2001:0:4136:e378:8000:63bf:3fff:fdd2", "2001:0:4136:e378:8000:63bf:3fff:fdd2", "192.0.2.45"},
		{"2001:1::1", "2001:1::1", ""},
		{"2606:4700::1111", "2606:4700::1111", ""},
	} {
		t.Run(tc.in, func(t *testing.T) {
			canon, emb := Canonical(netip.MustParseAddr(tc.in))
			var want netip.Addr
			if tc.embedded != "" {
				want = netip.MustParseAddr(tc.embedded)
			}
			if canon.String() != tc.canon || emb != want {
				t.Errorf("Canonical(%s) = %v, %v; want %s, %v", tc.in, canon, emb, tc.canon, want)
			}
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
// filter and checks the invariants every encoding must respect.
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
			canon, emb := Canonical(a)
			if canon.Zone() != "" || canon.Is4In6() || (emb.IsValid() && !emb.Is4()) {
				t.Fatalf("Canonical(%s) = %v, %v: zone, mapped or non-IPv4 embedded", a, canon, emb)
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

			// An IPv6 form carrying a loopback, private, link-local,
			// multicast or unspecified IPv4 address is always denied (the
			// second filter's allow_peers are IPv4 or documentation only).
			if canon.Is6() && emb.IsValid() && forbiddenIPv4(emb) && v != Deny {
				t.Fatalf("filter %d: Check(%s) = %v, but it carries %s", i, a, v, emb)
			}
		}

		// deny_peers wins over everything, own addresses over the rest,
		// whatever the encoding.
		canon, emb := Canonical(a)
		v, reason := fuzzFilters[1].Check(a)
		denied := false
		for _, p := range canonPrefixes(fuzzDeny) {
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

		// The default filter denies every translation form, and every
		// address Go itself classes as internal.
		if v, _ := fuzzFilters[0].Check(a); v != Deny && (emb.IsValid() || canon.IsLoopback() || canon.IsPrivate() || canon.IsLinkLocalUnicast() ||
			canon.IsMulticast() || canon.IsUnspecified() || canon.IsLinkLocalMulticast()) {
			t.Fatalf("default filter allows %s (canonical %s, embedded %v)", a, canon, emb)
		}
	})
}

func forbiddenIPv4(a netip.Addr) bool {
	return a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsMulticast() || a.IsUnspecified()
}
