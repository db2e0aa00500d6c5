package members

import (
	"fmt"
	"net/netip"

	"github.com/tariq-vpn/tariq/internal/store"
	"github.com/tariq-vpn/tariq/internal/wgconf"
)

// allocate picks the next free IPv4 and IPv6 address for a new device from
// the state: never-used addresses first (lowest first), then retired ones
// (oldest first). It removes any retired address it takes from
// st.VPN.Retired. On error st is unchanged.
func allocate(plan wgconf.Plan, st *store.State) (v4, v6 netip.Addr, err error) {
	used := map[netip.Addr]bool{}
	for _, p := range st.Peers {
		used[p.IPv4] = true
		used[p.IPv6] = true
	}
	retired := map[netip.Addr]bool{}
	for _, r := range st.VPN.Retired {
		retired[r] = true
	}
	v4, i4, err := nextFree(plan.V4, used, retired, st.VPN.Retired)
	if err != nil {
		return v4, v6, err
	}
	v6, i6, err := nextFree(plan.V6, used, retired, st.VPN.Retired)
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

// nextFree returns the lowest address in server's prefix that no device
// holds and that was never handed out (not retired), skipping the network
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
	return netip.Addr{}, -1, fmt.Errorf("%s %w (every address in %s is taken or reserved)", fam, ErrPoolExhausted, network)
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
