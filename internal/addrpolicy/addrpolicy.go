// Package addrpolicy judges the addresses a client asks the server to
// reach: the TURN relay's peers and the destinations of members' traffic
// on every VPN path. It turns an address into its canonical form (no zone,
// IPv4-mapped unmapped, the IPv4 address found inside the IPv6 forms that
// carry one) and checks it against the IANA special-purpose registries,
// cloud metadata endpoints and an operator's allow and deny lists.
//
// The relay's peer filter (relay/filter.go), the WireGuard forward filter
// (vpn's nftables table) and the Outline dialer (through internal/egress)
// are all built on it, so every path refuses the same ranges, under the same
// names.
package addrpolicy

import (
	"net/netip"
)

// Range is a named range of addresses.
type Range struct {
	Prefix netip.Prefix
	// Name is a short stable name ("private", "link-local"): the reason a
	// refusal gives and a metric label.
	Name string
}

// special is the IANA special-purpose registries for IPv4 (RFC 6890,
// iana.org/assignments/iana-ipv4-special-registry) and IPv6
// (iana-ipv6-special-registry), plus cloud metadata endpoints: everything a
// server on a VPS must never reach on a client's say-so. ::ffff:0:0/96 is
// absent because addresses are unmapped before any check.
var special = func() []Range {
	list := []struct{ p, name string }{
		{"0.0.0.0/8", "this-network"},
		{"10.0.0.0/8", "private"},
		{"100.64.0.0/10", "shared-cgnat"}, // also Alibaba's metadata 100.100.100.200
		{"127.0.0.0/8", "loopback"},
		{"169.254.0.0/16", "link-local"}, // AWS, GCP, Azure, OpenStack metadata 169.254.169.254
		{"172.16.0.0/12", "private"},
		{"192.0.0.0/24", "ietf-protocol"}, // includes Oracle's metadata 192.0.0.192
		{"192.0.2.0/24", "documentation"},
		{"192.31.196.0/24", "as112"},
		{"192.52.193.0/24", "amt"},
		{"192.88.99.0/24", "6to4-relay"},
		{"192.168.0.0/16", "private"},
		{"192.175.48.0/24", "as112"},
		{"198.18.0.0/15", "benchmarking"},
		{"198.51.100.0/24", "documentation"},
		{"203.0.113.0/24", "documentation"},
		{"224.0.0.0/4", "multicast"},
		{"240.0.0.0/4", "reserved"}, // includes 255.255.255.255
		{"168.63.129.16/32", "metadata"},
		{"::/128", "unspecified"},
		{"::1/128", "loopback"},
		{"::/96", "ipv4-compatible"},
		{"::ffff:0:0:0/96", "ipv4-translated"}, // RFC 2765 SIIT
		{"64:ff9b::/96", "nat64"},
		{"64:ff9b:1::/48", "nat64"},
		{"100::/64", "discard"},
		{"100:0:0:1::/64", "dummy"},
		{"2001::/23", "ietf-protocol"}, // includes Teredo 2001::/32, benchmarking, ORCHID
		{"2001:db8::/32", "documentation"},
		{"2002::/16", "6to4"}, // RFC 6156 §9.1: MUST NOT relay to 6to4 or Teredo
		{"2620:4f:8000::/48", "as112"},
		{"3fff::/20", "documentation"},
		{"5f00::/16", "srv6"},
		{"fc00::/7", "unique-local"}, // includes AWS's metadata fd00:ec2::254
		{"fe80::/10", "link-local"},
		{"fec0::/10", "site-local"},
		{"ff00::/8", "multicast"},
	}
	out := make([]Range, len(list))
	for i, e := range list {
		out[i] = Range{netip.MustParsePrefix(e.p), e.name}
	}
	return out
}()

// Special returns the built-in list: the IANA special-purpose registries
// for IPv4 and IPv6 and the cloud metadata endpoints, in a fresh slice.
// IPv4-mapped ::ffff:0:0/96 is not on it: Canonical unmaps those first.
func Special() []Range { return append([]Range(nil), special...) }

// serverItself names the ranges that are always the server itself, however
// an operator's allow list reads: a connection to 127.0.0.1, ::1, 0.0.0.0
// or :: from the server's own process reaches its own services.
var serverItself = map[string]bool{"this-network": true, "loopback": true, "unspecified": true}

// ServerItself returns the ranges of Special that always mean the server
// itself (this network, loopback, unspecified).
func ServerItself() []Range {
	var out []Range
	for _, r := range special {
		if serverItself[r.Name] {
			out = append(out, r)
		}
	}
	return out
}

// Kind says which list decided a Match.
type Kind uint8

// The kinds, in the order Lists.Match tries them.
const (
	Unlisted Kind = iota // on no list
	Invalid              // not an IP address
	Denied               // the operator's deny list, by the address or the IPv4 address inside it
	Allowed              // the operator's allow list
	Reserved             // the built-in list, an extra range, or an IPv6 form carrying an IPv4 address on the built-in list
)

// Match is what Lists found for one address.
type Match struct {
	// Addr is the address in canonical form (Canonical).
	Addr netip.Addr
	Kind Kind
	// Rule names the range for Reserved: its name, or "embedded-" and the
	// name of the built-in range holding the IPv4 address inside an IPv6
	// form.
	Rule string
}

// Lists is an operator's allow and deny lists over the built-in list and
// any extra ranges. It is immutable.
//
// Precedence, first match wins:
//  1. an address that is not a valid IP is Invalid;
//  2. the deny list, matched against the address and any IPv4 address
//     embedded in it, gives Denied;
//  3. the allow list gives Allowed;
//  4. a translation form (IPv4-compatible, IPv4-translated, NAT64, 6to4,
//     Teredo) whose embedded IPv4 address is on the built-in list is
//     Reserved, as "embedded-" and the range's name;
//  5. the built-in list and the extra ranges give Reserved;
//  6. anything else is Unlisted.
//
// Callers put their own rules between these steps (the relay's own
// addresses between 3 and 4, a member path's server and members between 2
// and 3): Match returns the canonical address for them to look up.
type Lists struct {
	allow, deny []netip.Prefix
	reserved    []Range // the built-in list, then the extra ranges
}

// NewLists returns the lists, the prefixes canonicalised (CanonicalPrefixes).
func NewLists(allow, deny []netip.Prefix, extra []Range) *Lists {
	l := &Lists{
		allow:    CanonicalPrefixes(allow),
		deny:     CanonicalPrefixes(deny),
		reserved: Special(),
	}
	for _, r := range extra {
		for _, p := range CanonicalPrefixes([]netip.Prefix{r.Prefix}) {
			l.reserved = append(l.reserved, Range{p, r.Name})
		}
	}
	return l
}

// Allow returns the allow list, canonical.
func (l *Lists) Allow() []netip.Prefix { return append([]netip.Prefix(nil), l.allow...) }

// Deny returns the deny list, canonical.
func (l *Lists) Deny() []netip.Prefix { return append([]netip.Prefix(nil), l.deny...) }

// Match returns which list decides ip.
func (l *Lists) Match(ip netip.Addr) Match {
	if !ip.IsValid() {
		return Match{Kind: Invalid, Rule: "invalid"}
	}
	a, embedded := Canonical(ip)
	m := Match{Addr: a}
	switch {
	case contains(l.deny, a) || (embedded.IsValid() && contains(l.deny, embedded)):
		m.Kind = Denied
	case contains(l.allow, a):
		m.Kind = Allowed
	default:
		if embedded.IsValid() {
			if name, ok := lookup(special, embedded); ok {
				m.Kind, m.Rule = Reserved, "embedded-"+name
				return m
			}
		}
		if name, ok := lookup(l.reserved, a); ok {
			m.Kind, m.Rule = Reserved, name
		}
	}
	return m
}

// CanonicalPrefixes returns the valid prefixes of in, masked, with an
// IPv4-mapped prefix of /96 or longer turned into the IPv4 prefix it
// covers (::ffff:10.0.0.0/104 is 10.0.0.0/8), since addresses are unmapped
// before they are checked.
func CanonicalPrefixes(in []netip.Prefix) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(in))
	for _, p := range in {
		if !p.IsValid() {
			continue
		}
		if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		out = append(out, p.Masked())
	}
	return out
}

// Canonical returns ip without zone and unmapped from ::ffff:0:0/96, and,
// for the IPv6 forms that carry an IPv4 address (IPv4-compatible ::/96,
// IPv4-translated ::ffff:0:0:0/96, NAT64 64:ff9b::/96, 6to4 2002::/16,
// Teredo 2001::/32), that IPv4 address
// (coturn ns_turn_ioaddr.c, ioa_addr_get_embedded_ipv4). For anything else
// embedded is the zero Addr.
func Canonical(ip netip.Addr) (canon, embedded netip.Addr) {
	canon = ip.WithZone("").Unmap()
	if !canon.Is6() {
		return canon, netip.Addr{}
	}
	b := canon.As16()
	for _, f := range embeddings {
		if f.has(b) {
			v := [4]byte(b[f.Offset : f.Offset+4])
			if f.Inverted {
				v = [4]byte{^v[0], ^v[1], ^v[2], ^v[3]}
			}
			return canon, netip.AddrFrom4(v)
		}
	}
	return canon, netip.Addr{}
}

// Embedding is one IPv6 form that carries an IPv4 address at a fixed
// place. Canonical reads them in order; the nftables forward filter
// matches the same bytes in the packet's destination.
type Embedding struct {
	// Name is the form's name.
	Name string
	// Prefix is the form's IPv6 prefix.
	Prefix netip.Prefix
	// NotPrefix, if valid, is a part of Prefix that is not the form (the
	// IPv4-compatible form leaves out :: and ::1, whose IPv4 part would be
	// 0.0.0.0 and 0.0.0.1).
	NotPrefix netip.Prefix
	// Offset is where in the 16 bytes the IPv4 address starts.
	Offset int
	// Inverted says the IPv4 address is stored with every bit flipped
	// (Teredo, RFC 4380 §4).
	Inverted bool
}

func (e Embedding) has(b [16]byte) bool {
	a := netip.AddrFrom16(b)
	return e.Prefix.Contains(a) && !(e.NotPrefix.IsValid() && e.NotPrefix.Contains(a))
}

// Embeddings returns the IPv6 forms carrying an IPv4 address, in the order
// Canonical tries them.
func Embeddings() []Embedding { return append([]Embedding(nil), embeddings...) }

var embeddings = []Embedding{
	{Name: "ipv4-compatible", Prefix: netip.MustParsePrefix("::/96"), NotPrefix: netip.MustParsePrefix("::/112"), Offset: 12},
	{Name: "ipv4-translated", Prefix: netip.MustParsePrefix("::ffff:0:0:0/96"), Offset: 12},
	{Name: "nat64", Prefix: netip.MustParsePrefix("64:ff9b::/96"), Offset: 12},
	{Name: "6to4", Prefix: netip.MustParsePrefix("2002::/16"), Offset: 2},
	{Name: "teredo", Prefix: netip.MustParsePrefix("2001::/32"), Offset: 12, Inverted: true},
}

func contains(list []netip.Prefix, a netip.Addr) bool {
	for _, p := range list {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func lookup(list []Range, a netip.Addr) (string, bool) {
	for _, e := range list {
		if e.Prefix.Contains(a) {
			return e.Name, true
		}
	}
	return "", false
}
