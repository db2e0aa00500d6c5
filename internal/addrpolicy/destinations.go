package addrpolicy

import (
	"maps"
	"net/netip"
	"slices"
)

// DestinationRules are the operator's rules for where members' traffic may
// go (vpn.allow_destinations, vpn.deny_destinations, vpn.member_to_member)
// and the tunnel subnets members' devices have addresses in.
type DestinationRules struct {
	Allow, Deny []netip.Prefix
	// Members are the tunnel subnets (vpn.address and the IPv6 /64).
	Members []netip.Prefix
	// MemberToMember lets members' devices reach each other.
	MemberToMember bool
}

// The rules Destinations names besides the built-in ranges' own names.
const (
	RuleInvalid   = "invalid"
	RuleDeny      = "deny_destinations"
	RuleOwn       = "own-address"      // one of the server's own addresses
	RuleMember    = "member-to-member" // another member's device
	RuleAllowList = "allow_destinations"
)

// Destinations is where members' traffic may go, on every VPN path. It is
// immutable; a reload or an address change builds a new one.
//
// Precedence, first match wins:
//  1. an address that is not a valid IP is refused ("invalid");
//  2. vpn.deny_destinations, matched against the address and any IPv4
//     address embedded in it, refuses ("deny_destinations");
//  3. the server itself is refused: its own addresses ("own-address") and
//     the ranges that always mean it (ServerItself: "loopback",
//     "this-network", "unspecified"), whatever the allow list says;
//  4. the tunnel subnets are other members' devices: allowed with
//     vpn.member_to_member, else refused ("member-to-member");
//  5. vpn.allow_destinations allows;
//  6. an IPv6 form carrying an IPv4 address on the built-in list is
//     refused ("embedded-" and the range's name);
//  7. the built-in list refuses (the range's name: "private",
//     "link-local", …);
//  8. anything else, the internet, is allowed.
//
// IPv4-mapped addresses (::ffff:a.b.c.d) are unmapped first and judged as
// the IPv4 address they are.
type Destinations struct {
	lists   *Lists
	rules   DestinationRules // canonical
	own     AddrSet
	members []netip.Prefix
}

// NewDestinations returns the policy for rules with own as the server's
// own addresses.
func NewDestinations(rules DestinationRules, own []netip.Addr) *Destinations {
	d := &Destinations{
		lists:   NewLists(rules.Allow, rules.Deny, nil),
		members: CanonicalPrefixes(rules.Members),
		own:     NewAddrSet(own),
	}
	d.rules = DestinationRules{
		Allow:          d.lists.Allow(),
		Deny:           d.lists.Deny(),
		Members:        d.members,
		MemberToMember: rules.MemberToMember,
	}
	return d
}

// Allow reports whether a member may reach ip and, when not, the rule that
// refused it. It has the signature of internal/outline's Deps.Allow.
func (d *Destinations) Allow(ip netip.Addr) (ok bool, rule string) {
	m := d.lists.Match(ip)
	switch m.Kind {
	case Invalid:
		return false, RuleInvalid
	case Denied:
		return false, RuleDeny
	}
	if d.own.Has(m.Addr) {
		return false, RuleOwn
	}
	for _, r := range special {
		if serverItself[r.Name] && r.Prefix.Contains(m.Addr) {
			return false, r.Name
		}
	}
	if contains(d.members, m.Addr) {
		if d.rules.MemberToMember {
			return true, ""
		}
		return false, RuleMember
	}
	if m.Kind == Reserved {
		return false, m.Rule
	}
	return true, ""
}

// Rules returns the rules in canonical form (prefixes masked, IPv4-mapped
// ones as IPv4), for rendering them elsewhere (the nftables table).
func (d *Destinations) Rules() DestinationRules {
	r := d.rules
	r.Allow = slices.Clone(r.Allow)
	r.Deny = slices.Clone(r.Deny)
	r.Members = slices.Clone(r.Members)
	return r
}

// Own returns the server's own addresses, sorted.
func (d *Destinations) Own() []netip.Addr { return d.own.Sorted() }

// WithOwn returns a policy like d but with own as the server's own
// addresses, and whether that set differs from d's (if not, d itself).
func (d *Destinations) WithOwn(own []netip.Addr) (*Destinations, bool) {
	s := NewAddrSet(own)
	if s.Equal(d.own) {
		return d, false
	}
	e := *d
	e.own = s
	return &e, true
}

// AddrSet is an immutable set of addresses in canonical form (no zone,
// IPv4-mapped unmapped), such as the server's own addresses.
type AddrSet struct{ m map[netip.Addr]bool }

// NewAddrSet returns the set of the valid addresses of addrs, canonical.
func NewAddrSet(addrs []netip.Addr) AddrSet {
	m := make(map[netip.Addr]bool, len(addrs))
	for _, a := range addrs {
		if a.IsValid() {
			m[a.Unmap().WithZone("")] = true
		}
	}
	return AddrSet{m}
}

// Has reports whether the canonical address a is in s.
func (s AddrSet) Has(a netip.Addr) bool { return s.m[a] }

// Equal reports whether s and t hold the same addresses.
func (s AddrSet) Equal(t AddrSet) bool { return maps.Equal(s.m, t.m) }

// Sorted returns the addresses, sorted.
func (s AddrSet) Sorted() []netip.Addr {
	out := slices.Collect(maps.Keys(s.m))
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}
