package vpn

import (
	"crypto/rand"
	"fmt"
	"net/netip"

	"github.com/tariq-vpn/tariq/config"
	"github.com/tariq-vpn/tariq/internal/store"
)

// addressing is the VPN's address plan: one IPv4 and one IPv6 prefix, each
// with the server's own address in it. Peers get /32 and /128 host
// addresses out of these prefixes.
type addressing struct {
	v4, v6 netip.Prefix // the server's address with the prefix length, like 10.77.0.1/24
}

// addressingFor returns the address plan of cfg: vpn.address, plus the
// ULA /64 kept in the state (server ::1) when vpn.address has no IPv6
// prefix. The ULA must already exist (ensureServerState).
func addressingFor(cfg *config.Config, st *store.State) (addressing, error) {
	var a addressing
	for _, p := range cfg.VPN.Address {
		if p.Addr().Is4() && !a.v4.IsValid() {
			a.v4 = p
		} else if p.Addr().Is6() && !a.v6.IsValid() {
			a.v6 = p
		}
	}
	if !a.v4.IsValid() {
		return a, fmt.Errorf("vpn.address: no IPv4 prefix")
	}
	if !a.v6.IsValid() {
		if !st.VPN.ULA.IsValid() {
			return a, fmt.Errorf("vpn.address: no IPv6 prefix and no ULA in the state")
		}
		a.v6 = netip.PrefixFrom(st.VPN.ULA.Masked().Addr().Next(), st.VPN.ULA.Bits())
	}
	return a, nil
}

// prefixes returns the server's prefixes (10.77.0.1/24, fd..::1/64).
func (a addressing) prefixes() []netip.Prefix { return []netip.Prefix{a.v4, a.v6} }

// networks returns the masked prefixes (10.77.0.0/24, fd..::/64).
func (a addressing) networks() []netip.Prefix {
	return []netip.Prefix{a.v4.Masked(), a.v6.Masked()}
}

// newULA returns a random RFC 4193 unique local /64: fd00::/8, a 40-bit
// pseudo-random global ID (section 3.2.1) and subnet ID 0.
func newULA() netip.Prefix {
	var b [16]byte
	b[0] = 0xfd
	rand.Read(b[1:6])
	return netip.PrefixFrom(netip.AddrFrom16(b), 64)
}

// allocate picks the next free IPv4 and IPv6 address for a new peer from
// the state: never-used addresses first (lowest first), then retired ones
// (oldest first). It removes any retired address it takes from
// st.VPN.Retired. On error st is unchanged.
func (a addressing) allocate(st *store.State) (v4, v6 netip.Addr, err error) {
	used := map[netip.Addr]bool{}
	for _, p := range st.Peers {
		used[p.IPv4] = true
		used[p.IPv6] = true
	}
	retired := map[netip.Addr]bool{}
	for _, r := range st.VPN.Retired {
		retired[r] = true
	}
	v4, i4, err := nextFree(a.v4, used, retired, st.VPN.Retired)
	if err != nil {
		return v4, v6, err
	}
	v6, i6, err := nextFree(a.v6, used, retired, st.VPN.Retired)
	if err != nil {
		return v4, v6, err
	}
	// Remove taken retired entries, higher index first.
	for _, i := range []int{max(i4, i6), min(i4, i6)} {
		if i >= 0 {
			st.VPN.Retired = append(st.VPN.Retired[:i:i], st.VPN.Retired[i+1:]...)
		}
	}
	return v4, v6, nil
}

// nextFree returns the lowest address in server's prefix that no peer holds
// and that was never handed out (not retired), skipping the network
// address, the server's own address and, for IPv4, the broadcast address.
// When there is none it returns the oldest retired address in the prefix
// and its index in retiredList; otherwise the index is -1.
func nextFree(server netip.Prefix, used, retired map[netip.Addr]bool, retiredList []netip.Addr) (netip.Addr, int, error) {
	network := server.Masked()
	for a := network.Addr().Next(); a.IsValid() && network.Contains(a); a = a.Next() {
		if a == server.Addr() || used[a] || retired[a] || isBroadcast(network, a) {
			continue
		}
		return a, -1, nil
	}
	for i, r := range retiredList {
		if network.Contains(r) && r != server.Addr() && !used[r] && r != network.Addr() && !isBroadcast(network, r) {
			return r, i, nil
		}
	}
	fam := "IPv4"
	if server.Addr().Is6() {
		fam = "IPv6"
	}
	return netip.Addr{}, -1, fmt.Errorf("no free %s address left in %s: %w", fam, network, ErrPoolExhausted)
}

// isBroadcast reports whether a is the IPv4 broadcast address of network.
func isBroadcast(network netip.Prefix, a netip.Addr) bool {
	if !a.Is4() || network.Bits() >= 31 {
		return false
	}
	b := a.As4()
	host := 32 - network.Bits()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	mask := uint32(1)<<host - 1
	return v&mask == mask
}
