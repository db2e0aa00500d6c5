package vpn

import "net/netip"

// NATTable is the nftables table tariq keeps its NAT rules in ("table inet
// tariq"). tariq creates, replaces and deletes this table as a whole and
// never touches any other table, so the host's own rules (firewalld, ufw,
// Docker, hand-written nft files) stay as they are.
//
// Layout:
//
//	table inet tariq {
//		chain postrouting {
//			type nat hook postrouting priority srcnat; policy accept;
//			oifname "eth0" ip saddr 10.77.0.0/24 counter masquerade comment "tariq vpn clients"
//			oifname "eth0" ip6 saddr fdxx:xxxx:xxxx::/64 counter masquerade comment "tariq vpn clients"
//		}
//	}
//
// There is no forward chain: in nftables an accept in one table does not
// override a drop in another table's chain on the same hook, so a host
// firewall that drops forwarded traffic must let the tunnel interface
// through itself, and tariq cannot do that for it without editing it.
const NATTable = "tariq"

// natRule masquerades traffic from src leaving through out.
type natRule struct {
	src netip.Prefix
	out string
}
