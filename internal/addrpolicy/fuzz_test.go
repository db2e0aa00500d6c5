package addrpolicy

import (
	"net/netip"
	"testing"
)

// The operator rules of the second lists and policy FuzzPolicies checks.
var (
	fuzzAllow   = prefixes("127.0.0.1/32", "::ffff:10.0.0.0/104", "2001:db8::/48", "0.0.0.0/0", "::/0")
	fuzzDeny    = prefixes("8.8.8.0/24", "::ffff:1.1.1.1/128", "2606:4700::/32", "192.168.1.7/32", "10.77.0.9/32")
	fuzzMembers = prefixes("10.77.0.1/24", "fd1e:77::1/64", "44.31.0.1/24")
	fuzzOwn     = addrs("192.168.1.7", "::ffff:203.0.113.9", "fe80::1%eth0", "2a0e:8f02:f017::1", "10.77.0.1")
)

// fuzzLists are the lists FuzzPolicies checks: the built-in list alone,
// and one with an allow list of IPv4 and documentation ranges only.
var fuzzLists = []*Lists{
	NewLists(nil, nil, nil),
	NewLists(prefixes("127.0.0.1/32", "::ffff:10.0.0.0/104", "2001:db8::/48"), fuzzDeny, nil),
}

// fuzzDests are the destination policies it checks: the defaults, and one
// that allows everything the rules can allow.
var fuzzDests = []*Destinations{
	NewDestinations(DestinationRules{Members: fuzzMembers}, fuzzOwn),
	NewDestinations(DestinationRules{Allow: fuzzAllow, Deny: fuzzDeny, Members: fuzzMembers, MemberToMember: true}, fuzzOwn),
}

// FuzzPolicies feeds arbitrary 4- and 16-byte addresses (and zones) to
// Canonical, Lists and Destinations and checks the invariants every
// encoding must respect.
func FuzzPolicies(f *testing.F) {
	for _, s := range []string{
		"0.0.0.0", "127.0.0.1", "10.0.0.1", "169.254.169.254", "100.100.100.200", "168.63.129.16",
		"255.255.255.255", "224.0.0.1", "8.8.8.8", "192.168.1.7", "203.0.113.9", "44.31.0.9", "10.77.0.9",
		"::", "::1", "::ffff:127.0.0.1", "::127.0.0.1", "64:ff9b::7f00:1", "2002:7f00:1::", "::ffff:0:7f00:1",
		"2001:0:4136:e378:8000:63bf:80ff:fffe", "fe80::1", "fd00:ec2::254", "fec0::1", "ff02::1",
		"2001:db8::1", "2606:4700::1111", "::ffff:192.168.1.7", "::ffff:203.0.113.9", "fd1e:77::5",
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
		canon, emb := Canonical(a)
		if canon.Zone() != "" || canon.Is4In6() || (emb.IsValid() && !emb.Is4()) {
			t.Fatalf("Canonical(%s) = %v, %v: zone, mapped or non-IPv4 embedded", a, canon, emb)
		}
		// The same address in its other forms: IPv4-mapped or plain, and
		// with a zone.
		var others []netip.Addr
		switch {
		case a.Is4():
			others = append(others, netip.AddrFrom16(a.As16()))
		case a.Is4In6():
			others = append(others, a.Unmap())
		}
		if a.Is6() {
			others = append(others, a.WithZone(zone))
		}

		for i, l := range fuzzLists {
			m := l.Match(a)
			if m.Kind == Reserved && m.Rule == "" {
				t.Fatalf("lists %d: Match(%s) reserved without a rule", i, a)
			}
			if m.Addr != canon {
				t.Fatalf("lists %d: Match(%s).Addr = %v, want %v", i, a, m.Addr, canon)
			}
			for _, o := range others {
				if m2 := l.Match(o); m2.Kind != m.Kind || m2.Rule != m.Rule {
					t.Fatalf("lists %d: Match(%s) = %+v but Match(%s) = %+v", i, a, m, o, m2)
				}
			}
			// An IPv6 form carrying a loopback, private, link-local,
			// multicast or unspecified IPv4 address is never let through
			// (these lists' allow entries are IPv4 or documentation only).
			if canon.Is6() && emb.IsValid() && forbiddenIPv4(emb) && (m.Kind == Allowed || m.Kind == Unlisted) {
				t.Fatalf("lists %d: Match(%s) = %+v, but it carries %s", i, a, m, emb)
			}
		}
		// The built-in list alone refuses every translation form, and
		// every address Go itself classes as internal.
		if m := fuzzLists[0].Match(a); m.Kind == Unlisted && (emb.IsValid() || internal(canon)) {
			t.Fatalf("the built-in list lets %s through (canonical %s, embedded %v)", a, canon, emb)
		}

		denied := false
		for _, p := range CanonicalPrefixes(fuzzDeny) {
			denied = denied || p.Contains(canon) || (emb.IsValid() && p.Contains(emb))
		}
		own := false
		for _, o := range fuzzOwn {
			own = own || o.Unmap().WithZone("") == canon
		}
		for i, d := range fuzzDests {
			ok, rule := d.Allow(a)
			if !ok && rule == "" {
				t.Fatalf("destinations %d: Allow(%s) refused without a rule", i, a)
			}
			for _, o := range others {
				if ok2, rule2 := d.Allow(o); ok2 != ok || rule2 != rule {
					t.Fatalf("destinations %d: Allow(%s) = %v %q but Allow(%s) = %v %q", i, a, ok, rule, o, ok2, rule2)
				}
			}
			// The server itself is never a destination, whatever the
			// allow list says (the second policy allows 0.0.0.0/0, ::/0).
			if ok && (own || canon.IsLoopback() || canon.IsUnspecified() || (canon.Is4() && canon.As4()[0] == 0)) {
				t.Fatalf("destinations %d: Allow(%s) lets a member reach the server itself", i, a)
			}
		}
		// The defaults let through exactly what the built-in list leaves
		// unlisted, less the server and the members.
		ok, _ = fuzzDests[0].Allow(a)
		member := false
		for _, p := range CanonicalPrefixes(fuzzMembers) {
			member = member || p.Contains(canon)
		}
		if want := fuzzLists[0].Match(a).Kind == Unlisted && !own && !member; ok != want {
			t.Fatalf("default destinations: Allow(%s) = %v, want %v", a, ok, want)
		}
		// deny_destinations wins over everything.
		if ok, rule := fuzzDests[1].Allow(a); denied && a.IsValid() && (ok || rule != RuleDeny) {
			t.Fatalf("Allow(%s) = %v %q, want refused by deny_destinations", a, ok, rule)
		}
	})
}

func forbiddenIPv4(a netip.Addr) bool {
	return a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsMulticast() || a.IsUnspecified()
}

func internal(a netip.Addr) bool {
	return a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsMulticast() || a.IsUnspecified() || a.IsLinkLocalMulticast()
}
