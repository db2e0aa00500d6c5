package relay

import (
	"maps"
	"net/netip"
	"slices"
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

// namedPrefix is one entry of the built-in deny list.
type namedPrefix struct {
	prefix netip.Prefix
	name   string
}

// builtinDeny is the IANA special-purpose registries for IPv4 (RFC 6890,
// iana.org/assignments/iana-ipv4-special-registry) and IPv6
// (iana-ipv6-special-registry), plus cloud metadata endpoints: everything a
// relay on a VPS must never reach on a client's say-so. ::ffff:0:0/96 is
// absent because addresses are unmapped before any check.
var builtinDeny = func() []namedPrefix {
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
	out := make([]namedPrefix, len(list))
	for i, e := range list {
		out[i] = namedPrefix{netip.MustParsePrefix(e.p), e.name}
	}
	return out
}()

// Filter decides which peer addresses the relay may reach. It is immutable;
// a reload builds a new one.
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
	allow []netip.Prefix
	deny  []netip.Prefix
	local []namedPrefix // built-in list plus the VPN subnets
	own   map[netip.Addr]bool
}

// NewFilter returns a filter with the built-in list, the operator's allow and
// deny lists, the VPN subnets (denied as the built-in list is) and the
// server's own addresses.
func NewFilter(allow, deny, vpnSubnets []netip.Prefix, own []netip.Addr) *Filter {
	f := &Filter{
		allow: canonPrefixes(allow),
		deny:  canonPrefixes(deny),
		local: append([]namedPrefix(nil), builtinDeny...),
	}
	for _, p := range canonPrefixes(vpnSubnets) {
		f.local = append(f.local, namedPrefix{p.Masked(), "vpn-subnet"})
	}
	f.own = ownSet(own)
	return f
}

func ownSet(own []netip.Addr) map[netip.Addr]bool {
	m := make(map[netip.Addr]bool, len(own))
	for _, a := range own {
		m[a.Unmap().WithZone("")] = true
	}
	return m
}

// WithOwn returns a filter like f but with own as the server's own
// addresses, and whether that set differs from f's (if not, f itself).
func (f *Filter) WithOwn(own []netip.Addr) (*Filter, bool) {
	m := ownSet(own)
	if maps.Equal(m, f.own) {
		return f, false
	}
	g := *f
	g.own = m
	return &g, true
}

// Own returns the server's own addresses, sorted.
func (f *Filter) Own() []netip.Addr {
	out := slices.Collect(maps.Keys(f.own))
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

func canonPrefixes(in []netip.Prefix) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(in))
	for _, p := range in {
		if !p.IsValid() {
			continue
		}
		a := p.Addr()
		if a.Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		out = append(out, p.Masked())
	}
	return out
}

// Check returns the verdict for ip and, when denied, a short reason naming
// the rule (a built-in range's name, "deny_peers", "invalid").
func (f *Filter) Check(ip netip.Addr) (Verdict, string) {
	if !ip.IsValid() {
		return Deny, "invalid"
	}
	a, embedded := Canonical(ip)
	if contains(f.deny, a) || (embedded.IsValid() && contains(f.deny, embedded)) {
		return Deny, "deny_peers"
	}
	if contains(f.allow, a) {
		return Allow, ""
	}
	if f.own[a] {
		return AllowOwn, ""
	}
	if embedded.IsValid() {
		if name, denied := lookup(builtinDeny, embedded); denied {
			return Deny, "embedded-" + name
		}
	}
	if name, denied := lookup(f.local, a); denied {
		return Deny, name
	}
	return Allow, ""
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
	v4 := func(o int) netip.Addr { return netip.AddrFrom4([4]byte(b[o : o+4])) }
	switch {
	case isZero(b[:12]) && !isZero(b[12:14]): // ::a.b.c.d, but not :: or ::1
		return canon, v4(12)
	case isZero(b[:8]) && b[8] == 0xff && b[9] == 0xff && b[10] == 0 && b[11] == 0: // ::ffff:0:a.b.c.d
		return canon, v4(12)
	case b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b && isZero(b[4:12]):
		return canon, v4(12)
	case b[0] == 0x20 && b[1] == 0x02:
		return canon, v4(2)
	case b[0] == 0x20 && b[1] == 0x01 && b[2] == 0 && b[3] == 0:
		// Teredo: the client's address is stored inverted (RFC 4380 §4).
		return canon, netip.AddrFrom4([4]byte{^b[12], ^b[13], ^b[14], ^b[15]})
	}
	return canon, netip.Addr{}
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func contains(list []netip.Prefix, a netip.Addr) bool {
	for _, p := range list {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func lookup(list []namedPrefix, a netip.Addr) (string, bool) {
	for _, e := range list {
		if e.prefix.Contains(a) {
			return e.name, true
		}
	}
	return "", false
}
