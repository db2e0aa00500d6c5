package relay

import (
	"net/netip"

	"github.com/tariq-vpn/tariq/internal/addrpolicy"
)

// Verdict is the peer filter's answer for one peer address.
type Verdict uint8

// The verdicts.
const (
	Deny     Verdict = iota // never relay to or from this address
	Allow                   // relay on any port
	AllowOwn                // one of the server's own addresses: relay ports only
)

func (v Verdict) String() string {
	switch v {
	case Allow:
		return "allow"
	case AllowOwn:
		return "allow-own"
	}
	return "deny"
}

// Filter decides which peer addresses the relay may reach: the address
// policy every path shares (internal/addrpolicy: canonical forms, the
// built-in list of special-purpose ranges, the operator's lists) with the
// relay's own rules on top. It is immutable; a reload builds a new one.
//
// Precedence, first match wins:
//  1. an address that is not a valid IP is denied;
//  2. relay.deny_peers, matched against the address and any IPv4 address
//     embedded in it, denies;
//  3. relay.allow_peers allows, on every port (the operator's explicit
//     choice lifts both the built-in list and the own-address rule);
//  4. the server's own addresses are allowed on live relayed ports only
//     (the service checks the port; the filter answers AllowOwn);
//  5. a translation form (IPv4-compatible, IPv4-translated, NAT64, 6to4,
//     Teredo) whose embedded IPv4 address is denied by the built-in list
//     is denied;
//  6. the built-in list (IANA special-purpose registries, cloud metadata) and
//     the VPN's own subnets deny;
//  7. anything else is allowed.
//
// IPv4-mapped addresses (::ffff:a.b.c.d) are unmapped first and judged as the
// IPv4 address they are.
type Filter struct {
	lists *addrpolicy.Lists // allow_peers, deny_peers, the built-in list and the VPN subnets
	own   addrpolicy.AddrSet
}

// NewFilter returns a filter with the built-in list, the operator's allow and
// deny lists, the VPN subnets (denied as the built-in list is) and the
// server's own addresses.
func NewFilter(allow, deny, vpnSubnets []netip.Prefix, own []netip.Addr) *Filter {
	extra := make([]addrpolicy.Range, len(vpnSubnets))
	for i, p := range vpnSubnets {
		extra[i] = addrpolicy.Range{Prefix: p, Name: "vpn-subnet"}
	}
	return &Filter{lists: addrpolicy.NewLists(allow, deny, extra), own: addrpolicy.NewAddrSet(own)}
}

// WithOwn returns a filter like f but with own as the server's own
// addresses, and whether that set differs from f's (if not, f itself).
func (f *Filter) WithOwn(own []netip.Addr) (*Filter, bool) {
	s := addrpolicy.NewAddrSet(own)
	if s.Equal(f.own) {
		return f, false
	}
	g := *f
	g.own = s
	return &g, true
}

// Own returns the server's own addresses, sorted.
func (f *Filter) Own() []netip.Addr { return f.own.Sorted() }

// Check returns the verdict for ip and, when denied, a short reason naming
// the rule (a built-in range's name, "deny_peers", "invalid").
func (f *Filter) Check(ip netip.Addr) (Verdict, string) {
	m := f.lists.Match(ip)
	switch m.Kind {
	case addrpolicy.Invalid:
		return Deny, "invalid"
	case addrpolicy.Denied:
		return Deny, "deny_peers"
	case addrpolicy.Allowed:
		return Allow, ""
	}
	if f.own.Has(m.Addr) {
		return AllowOwn, ""
	}
	if m.Kind == addrpolicy.Reserved {
		return Deny, m.Rule
	}
	return Allow, ""
}
