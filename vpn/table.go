package vpn

import (
	"net/netip"
	"slices"

	"github.com/tariq-vpn/tariq/config"
	"github.com/tariq-vpn/tariq/internal/addrpolicy"
)

// Table is the nftables table tariq keeps its rules in ("table inet
// tariq"): where members' traffic may go, what of the server it may reach,
// and NAT. tariq creates, replaces and deletes this table as a whole (one
// transaction each time, so there is never a moment without it) and never
// touches any other table, so the host's own rules (firewalld, ufw,
// Docker, hand-written nft files) stay as they are. A drop here is final
// whatever other tables say; an accept here decides nothing for them.
//
// The destination policy is internal/addrpolicy's Destinations, the same
// one the Outline path asks (internal/egress), rendered rule by rule in
// its order. Only the server's own addresses (set host4/host6) change
// without a reload: they are followed live and the two sets rewritten in
// one transaction.
//
// Layout, for vpn.address 10.77.0.1/24, its ULA and the default ports:
//
//	table inet tariq {
//		set host4 { type ipv4_addr; flags interval; elements = { 0.0.0.0/8, 10.77.0.1, 127.0.0.0/8, 203.0.113.7 } }
//		set host6 { type ipv6_addr; flags interval; elements = { ::, ::1, fdxx::1, 2001:db8::7 } }
//		set allow4, allow6, deny4, deny6 { … flags interval; elements = vpn.allow_destinations, vpn.deny_destinations }
//		set special4, special6 { … flags interval; elements = the built-in list }
//		set udp_services, tcp_services { type inet_service; flags interval; elements = tariq's own ports }
//
//		chain forward {
//			type filter hook forward priority filter; policy accept;
//			iifname "tariq0" jump member_out
//		}
//		chain member_out {	# where members' traffic may go; first match wins
//			ip daddr @deny4 counter drop comment "deny_destinations"
//			ip6 daddr @deny6 counter drop comment "deny_destinations"
//			ip6 daddr 64:ff9b::/96 @nh,288,32 @deny4 counter drop comment "deny_destinations"	# and 6to4, Teredo, …
//			ip6 daddr ::ffff:0.0.0.0/96 counter drop comment "ipv4-mapped"
//			ip daddr @host4 counter drop comment "server"
//			ip6 daddr @host6 counter drop comment "server"
//			ip daddr 10.77.0.0/24 counter drop comment "member-to-member"	# accept with vpn.member_to_member
//			ip6 daddr fdxx::/64 counter drop comment "member-to-member"
//			ip daddr @allow4 counter accept comment "allow_destinations"
//			ip6 daddr @allow6 counter accept comment "allow_destinations"
//			ip daddr @special4 counter drop comment "special-purpose"
//			ip6 daddr @special6 counter drop comment "special-purpose"
//		}
//		chain input {
//			type filter hook input priority filter; policy accept;
//			iifname "tariq0" jump member_in
//		}
//		chain member_in {	# what of the server members reach
//			ct state established,related accept
//			ip daddr 10.77.0.1 icmp type echo-request counter accept comment "ping"
//			ip6 daddr fdxx::1 icmpv6 type echo-request counter accept comment "ping"
//			ip daddr 10.77.0.1 udp dport 53 counter accept comment "dns"	# and tcp, and IPv6
//			udp dport @udp_services counter accept comment "tariq"
//			tcp dport @tcp_services counter accept comment "tariq"
//			counter drop comment "server"
//		}
//		chain postrouting {	# with vpn.nat
//			type nat hook postrouting priority srcnat; policy accept;
//			oifname "eth0" ip saddr 10.77.0.0/24 counter masquerade comment "tariq vpn clients"
//			oifname "eth0" ip6 saddr fdxx:xxxx:xxxx::/64 counter masquerade comment "tariq vpn clients"
//		}
//	}
//
// Every packet a member sends to the server itself arrives on the tunnel
// interface and meets member_in, whichever of the server's addresses it
// names (its public one, another interface's, one added a second ago): the
// server answers members as the internet sees it — on tariq's own ports
// (config.ServicePorts: WireGuard, TURN and its relayed ports, the HTTPS
// page), so a member with the tunnel up still reaches the relay and the
// invite page — and, on its tunnel addresses, ping and DNS (if something
// serves it there). host4/host6 in member_out refuse, too, the public
// addresses that are on no interface (1:1 NAT: relay.relay_ip,
// server.public_host), which a packet would otherwise reach by hairpin.
//
// nftables cannot canonicalise an address as addrpolicy does, so the
// IPv6 forms carrying an IPv4 address are handled by their fixed places:
// the built-in list refuses each form as a range, and
// vpn.deny_destinations' IPv4 ranges are matched against the IPv4 address
// inside each (addrpolicy.Embeddings), so a NAT64 prefix opened by
// vpn.allow_destinations still cannot reach a denied IPv4 range.
// IPv4-mapped addresses are never valid on the wire (RFC 4291 §2.5.5.2)
// and are dropped whatever the lists say.
const Table = "tariq"

// natRule masquerades traffic from src leaving through out.
type natRule struct {
	src netip.Prefix
	out string
}

// tableSpec is everything the table says.
type tableSpec struct {
	// tunnel is the interface members' traffic comes in on.
	tunnel string
	// tunnelAddrs are the server's own tunnel addresses, which answer ping
	// and DNS.
	tunnelAddrs []netip.Addr
	// dest is the destination policy's rules.
	dest addrpolicy.DestinationRules
	// host is the server itself: its own addresses and the ranges that
	// always mean it (addrpolicy.ServerItself).
	host []netip.Prefix
	// services are tariq's own ports.
	services []config.ServicePort
	// nat is the masquerading, empty with vpn.nat off.
	nat []natRule
}

// hostPrefixes returns the server itself as d sees it: its own addresses
// and the ranges that always mean it.
func hostPrefixes(d *addrpolicy.Destinations) []netip.Prefix {
	var out []netip.Prefix
	for _, r := range addrpolicy.ServerItself() {
		out = append(out, r.Prefix)
	}
	for _, a := range d.Own() {
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out
}

// equal reports whether a and b say the same.
func (a tableSpec) equal(b tableSpec) bool {
	r, s := a.dest, b.dest
	return a.tunnel == b.tunnel && slices.Equal(a.tunnelAddrs, b.tunnelAddrs) &&
		slices.Equal(r.Allow, s.Allow) && slices.Equal(r.Deny, s.Deny) && slices.Equal(r.Members, s.Members) &&
		r.MemberToMember == s.MemberToMember && slices.Equal(a.host, b.host) &&
		slices.Equal(a.services, b.services) && slices.Equal(a.nat, b.nat)
}

// split returns the IPv4 and the IPv6 prefixes of ps.
func split(ps []netip.Prefix) (v4, v6 []netip.Prefix) {
	for _, p := range ps {
		if p.Addr().Is4() {
			v4 = append(v4, p)
		} else {
			v6 = append(v6, p)
		}
	}
	return v4, v6
}

// span is an inclusive range of addresses.
type span struct{ first, last netip.Addr }

// spans merges ps (all of one family) into sorted, disjoint ranges, as an
// nftables interval set needs them (the kernel refuses overlapping
// elements).
func spans(ps []netip.Prefix) []span {
	var out []span
	for _, p := range ps {
		p = p.Masked()
		out = append(out, span{p.Addr(), lastAddr(p)})
	}
	slices.SortFunc(out, func(a, b span) int { return a.first.Compare(b.first) })
	merged := out[:0]
	for _, s := range out {
		if n := len(merged); n > 0 {
			prev := &merged[n-1]
			if next := prev.last.Next(); !next.IsValid() || s.first.Compare(next) <= 0 {
				if s.last.Compare(prev.last) > 0 {
					prev.last = s.last
				}
				continue
			}
		}
		merged = append(merged, s)
	}
	return merged
}

// lastAddr returns the last address of the masked prefix p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// mergePorts merges inclusive port ranges into sorted, disjoint ones.
func mergePorts(ranges [][2]uint16) [][2]uint16 {
	rs := slices.Clone(ranges)
	slices.SortFunc(rs, func(a, b [2]uint16) int { return int(a[0]) - int(b[0]) })
	var out [][2]uint16
	for _, r := range rs {
		if n := len(out); n > 0 && int(r[0]) <= int(out[n-1][1])+1 {
			out[n-1][1] = max(out[n-1][1], r[1])
			continue
		}
		out = append(out, r)
	}
	return out
}
