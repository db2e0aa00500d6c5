package addrpolicy

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

func parseAddr(s string) netip.Addr {
	if s == "" {
		return netip.Addr{}
	}
	return netip.MustParseAddr(s)
}

// matchCase is one address and what Lists.Match must find for it.
type matchCase struct {
	addr string // "" for the zero Addr
	kind Kind
	rule string
}

func checkMatches(t *testing.T, l *Lists, cases []matchCase) {
	t.Helper()
	for _, tc := range cases {
		name := tc.addr
		if name == "" {
			name = "invalid"
		}
		t.Run(name, func(t *testing.T) {
			m := l.Match(parseAddr(tc.addr))
			if m.Kind != tc.kind || m.Rule != tc.rule {
				t.Errorf("Match(%s) = %v %q, want %v %q", tc.addr, m.Kind, m.Rule, tc.kind, tc.rule)
			}
		})
	}
}

// TestSpecial runs the built-in list alone (no allow or deny list) against
// every encoding of a forbidden address we know of, and against public
// addresses that must stay reachable.
func TestSpecial(t *testing.T) {
	checkMatches(t, NewLists(nil, nil, nil), []matchCase{
		{"", Invalid, "invalid"},

		// IPv4.
		{"0.0.0.0", Reserved, "this-network"},
		{"0.1.2.3", Reserved, "this-network"},
		{"10.0.0.1", Reserved, "private"},
		{"10.255.255.255", Reserved, "private"},
		{"100.64.0.1", Reserved, "shared-cgnat"},
		{"100.100.100.200", Reserved, "shared-cgnat"}, // Alibaba metadata
		{"100.127.255.255", Reserved, "shared-cgnat"},
		{"100.128.0.1", Unlisted, ""},
		{"127.0.0.1", Reserved, "loopback"},
		{"127.0.0.2", Reserved, "loopback"},
		{"127.255.255.254", Reserved, "loopback"},
		{"169.254.169.254", Reserved, "link-local"}, // AWS, GCP, Azure metadata
		{"169.254.0.1", Reserved, "link-local"},
		{"172.15.255.255", Unlisted, ""},
		{"172.16.0.1", Reserved, "private"},
		{"172.31.255.255", Reserved, "private"},
		{"172.32.0.1", Unlisted, ""},
		{"192.0.0.192", Reserved, "ietf-protocol"}, // Oracle metadata
		{"192.0.2.1", Reserved, "documentation"},
		{"192.88.99.1", Reserved, "6to4-relay"},
		{"192.168.1.1", Reserved, "private"},
		{"198.18.0.1", Reserved, "benchmarking"},
		{"198.19.255.255", Reserved, "benchmarking"},
		{"198.20.0.1", Unlisted, ""},
		{"198.51.100.1", Reserved, "documentation"},
		{"203.0.113.1", Reserved, "documentation"},
		{"224.0.0.1", Reserved, "multicast"},
		{"239.255.255.250", Reserved, "multicast"}, // SSDP
		{"240.0.0.1", Reserved, "reserved"},
		{"255.255.255.255", Reserved, "reserved"}, // limited broadcast
		{"168.63.129.16", Reserved, "metadata"},   // Azure WireServer
		{"168.63.129.17", Unlisted, ""},
		{"8.8.8.8", Unlisted, ""},
		{"1.1.1.1", Unlisted, ""},
		{"93.184.216.34", Unlisted, ""},

		// IPv4-mapped: judged as the IPv4 address (CVE-2026-27624).
		{"::ffff:127.0.0.1", Reserved, "loopback"},
		{"::ffff:127.0.0.1%eth0", Reserved, "loopback"},
		{"::ffff:0.0.0.0", Reserved, "this-network"},
		{"::ffff:10.0.0.1", Reserved, "private"},
		{"::ffff:169.254.169.254", Reserved, "link-local"},
		{"::ffff:100.100.100.200", Reserved, "shared-cgnat"},
		{"::ffff:255.255.255.255", Reserved, "reserved"},
		{"::ffff:8.8.8.8", Unlisted, ""},

		// IPv6 proper.
		{"::", Reserved, "unspecified"},
		{"::1", Reserved, "loopback"},
		{"fe80::1", Reserved, "link-local"},
		{"fe80::1%eth0", Reserved, "link-local"},
		{"febf:ffff::1", Reserved, "link-local"},
		{"fd00:ec2::254", Reserved, "unique-local"}, // AWS IMDS over IPv6
		{"fc00::1", Reserved, "unique-local"},
		{"fdff:ffff:ffff:ffff::1", Reserved, "unique-local"},
		{"fec0::1", Reserved, "site-local"},
		{"ff02::1", Reserved, "multicast"},
		{"ff05::1:3", Reserved, "multicast"},
		{"ff02::1%eth0", Reserved, "multicast"},
		{"2001:db8::1", Reserved, "documentation"},
		{"3fff::1", Reserved, "documentation"},
		{"100::1", Reserved, "discard"},
		{"5f00::1", Reserved, "srv6"},
		{"2620:4f:8000::1", Reserved, "as112"},
		{"2001:1ff:ffff::1", Reserved, "ietf-protocol"},
		{"2001:200::1", Unlisted, ""},
		{"2606:4700::1111", Unlisted, ""},
		{"2001:4860:4860::8888", Unlisted, ""},
		{"2a00:1450:4001:830::200e", Unlisted, ""},

		// IPv6 forms carrying an IPv4 address (coturn#1945).
		{"::127.0.0.1", Reserved, "embedded-loopback"},         // IPv4-compatible
		{"::ffff:0:7f00:1", Reserved, "embedded-loopback"},     // IPv4-translated (SIIT)
		{"::ffff:0:808:808", Reserved, "ipv4-translated"},      // never relayed, even to a public IPv4
		{"::169.254.169.254", Reserved, "embedded-link-local"}, // IPv4-compatible
		{"::8.8.8.8", Reserved, "ipv4-compatible"},             // deprecated form, denied whatever it carries
		{"::0.0.1.1", Reserved, "ipv4-compatible"},
		{"64:ff9b::7f00:1", Reserved, "embedded-loopback"}, // NAT64
		{"64:ff9b::a9fe:a9fe", Reserved, "embedded-link-local"},
		{"64:ff9b::808:808", Reserved, "nat64"},
		{"64:ff9b:1::7f00:1", Reserved, "nat64"},               // local-use NAT64 (RFC 8215)
		{"2002:7f00:1::", Reserved, "embedded-loopback"},       // 6to4
		{"2002:a9fe:a9fe::1", Reserved, "embedded-link-local"}, // 6to4
		{"2002:a00:1::", Reserved, "embedded-private"},         // 6to4
		{"2002:808:808::1", Reserved, "6to4"},
		// Teredo: 2001:0:<server>:<flags>:<port^ffff>:<client^ffffffff> (RFC 4380 §4).
		{"2001:0:4136:e378:8000:63bf:80ff:fffe", Reserved, "embedded-loopback"},      // client 127.0.0.1
		{"2001:0:4136:e378:8000:63bf:3fff:fdd2", Reserved, "embedded-documentation"}, // RFC 4380's 192.0.2.45
		{"2001:0:4136:e378:8000:63bf:5601:5601", Reserved, "embedded-link-local"},    // client 169.254.169.254
		{"2001:0:4136:e378:8000:63bf:f7f7:f7f7", Reserved, "ietf-protocol"},          // client 8.8.8.8
	})
}

// TestListsPrecedence checks the order in the Lists doc comment: the deny
// list beats everything, then the allow list, then the built-in list (with
// embedded IPv4) and the extra ranges.
func TestListsPrecedence(t *testing.T) {
	for _, tc := range []struct {
		name        string
		allow, deny []netip.Prefix
		extra       []Range
		cases       []matchCase
	}{
		{
			name:  "deny beats allow",
			allow: prefixes("10.0.0.0/8"), deny: prefixes("10.1.0.0/16"),
			cases: []matchCase{{"10.1.2.3", Denied, ""}, {"10.2.0.1", Allowed, ""}, {"::ffff:10.1.2.3", Denied, ""}},
		},
		{
			name: "deny matches embedded IPv4",
			deny: prefixes("93.184.216.0/24"),
			cases: []matchCase{
				{"93.184.216.34", Denied, ""},
				{"::ffff:93.184.216.34", Denied, ""},
				{"::93.184.216.34", Denied, ""},
				{"64:ff9b::5db8:d822", Denied, ""},
				{"2002:5db8:d822::1", Denied, ""},
				{"2001:0:4136:e378:8000:63bf:a247:27dd", Denied, ""}, // Teredo client 93.184.216.34
				{"93.184.217.1", Unlisted, ""},
			},
		},
		{
			name:  "deny given IPv4-mapped",
			deny:  prefixes("::ffff:93.184.216.0/120"),
			cases: []matchCase{{"93.184.216.34", Denied, ""}, {"::ffff:93.184.216.34", Denied, ""}, {"93.184.217.1", Unlisted, ""}},
		},
		{
			name:  "deny IPv6",
			deny:  prefixes("2606:4700::/32"),
			cases: []matchCase{{"2606:4700::1111", Denied, ""}, {"2606:4701::1", Unlisted, ""}},
		},
		{
			name:  "allow lifts the built-in list",
			allow: prefixes("127.0.0.1/32", "fd00::/8", "169.254.169.254/32"),
			cases: []matchCase{
				{"127.0.0.1", Allowed, ""},
				{"::ffff:127.0.0.1", Allowed, ""},
				{"127.0.0.2", Reserved, "loopback"},
				{"::127.0.0.1", Reserved, "embedded-loopback"},
				{"64:ff9b::7f00:1", Reserved, "embedded-loopback"},
				{"fd00:ec2::254", Allowed, ""},
				{"fc00::1", Reserved, "unique-local"},
				{"169.254.169.254", Allowed, ""},
				{"169.254.169.253", Reserved, "link-local"},
			},
		},
		{
			name:  "allow given IPv4-mapped is the IPv4 prefix",
			allow: prefixes("::ffff:127.0.0.1/128"),
			cases: []matchCase{
				{"127.0.0.1", Allowed, ""},
				{"::ffff:127.0.0.1", Allowed, ""},
				{"127.0.0.2", Reserved, "loopback"},
				{"::127.0.0.1", Reserved, "embedded-loopback"},
			},
		},
		{
			name:  "allow of a translation prefix precedes the embedded check",
			allow: prefixes("64:ff9b::/96"),
			cases: []matchCase{{"64:ff9b::808:808", Allowed, ""}, {"64:ff9b::7f00:1", Allowed, ""}, {"2002:7f00:1::", Reserved, "embedded-loopback"}},
		},
		{
			name:  "extra ranges",
			extra: []Range{{netip.MustParsePrefix("44.31.0.1/24"), "vpn-subnet"}, {netip.MustParsePrefix("::ffff:44.32.0.1/120"), "vpn-subnet"}},
			cases: []matchCase{
				{"44.31.0.77", Reserved, "vpn-subnet"},
				{"::ffff:44.31.0.77", Reserved, "vpn-subnet"},
				{"44.31.1.1", Unlisted, ""},
				{"44.32.0.9", Reserved, "vpn-subnet"},
				{"10.77.0.2", Reserved, "private"},
			},
		},
		{
			name:  "invalid prefixes are ignored",
			allow: []netip.Prefix{{}}, deny: []netip.Prefix{{}},
			cases: []matchCase{{"8.8.8.8", Unlisted, ""}, {"127.0.0.1", Reserved, "loopback"}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkMatches(t, NewLists(tc.allow, tc.deny, tc.extra), tc.cases)
		})
	}
}

func TestMatchCanonicalAddr(t *testing.T) {
	for in, want := range map[string]string{
		"::ffff:10.0.0.5": "10.0.0.5",
		"fe80::1%eth0":    "fe80::1",
		"2606:4700::1111": "2606:4700::1111",
		"64:ff9b::7f00:1": "64:ff9b::7f00:1",
		"198.20.0.7":      "198.20.0.7",
	} {
		if got := NewLists(nil, nil, nil).Match(netip.MustParseAddr(in)).Addr; got.String() != want {
			t.Errorf("Match(%s).Addr = %v, want %s", in, got, want)
		}
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
		{"::ffff:0:7f00:1", "::ffff:0:7f00:1", "127.0.0.1"},
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
			if canon.String() != tc.canon || emb != parseAddr(tc.embedded) {
				t.Errorf("Canonical(%s) = %v, %v; want %s, %s", tc.in, canon, emb, tc.canon, tc.embedded)
			}
		})
	}
}
