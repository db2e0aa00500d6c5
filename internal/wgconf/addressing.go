package wgconf

import (
	"crypto/rand"
	"errors"
	"net/netip"

	"github.com/tariq-vpn/tariq/config"
)

// Plan is the VPN's address plan: one IPv4 and one IPv6 prefix, each with
// the server's own address in it (10.77.0.1/24, fd…::1/64). Devices get
// /32 and /128 host addresses out of them.
type Plan struct {
	V4, V6 netip.Prefix
}

// PlanFor returns the address plan of cfg: vpn.address, plus ula (server
// ::1) when vpn.address has no IPv6 prefix.
func PlanFor(cfg *config.Config, ula netip.Prefix) (Plan, error) {
	var p Plan
	for _, a := range cfg.VPN.Address {
		if a.Addr().Is4() && !p.V4.IsValid() {
			p.V4 = a
		} else if a.Addr().Is6() && !p.V6.IsValid() {
			p.V6 = a
		}
	}
	if !p.V4.IsValid() {
		return p, errors.New("vpn.address: no IPv4 prefix")
	}
	if !p.V6.IsValid() {
		if !ula.IsValid() {
			return p, errors.New("vpn.address: no IPv6 prefix and no ULA in the state")
		}
		p.V6 = netip.PrefixFrom(ula.Masked().Addr().Next(), ula.Bits())
	}
	return p, nil
}

// NeedsULA reports whether cfg's vpn.address lacks an IPv6 prefix, so the
// server keeps a generated ULA instead.
func NeedsULA(cfg *config.Config) bool {
	for _, a := range cfg.VPN.Address {
		if a.Addr().Is6() {
			return false
		}
	}
	return true
}

// Prefixes returns the server's prefixes (10.77.0.1/24, fd…::1/64).
func (p Plan) Prefixes() []netip.Prefix { return []netip.Prefix{p.V4, p.V6} }

// Networks returns the masked prefixes (10.77.0.0/24, fd…::/64).
func (p Plan) Networks() []netip.Prefix { return []netip.Prefix{p.V4.Masked(), p.V6.Masked()} }

// NewULA returns a random RFC 4193 unique local /64: fd00::/8, a 40-bit
// pseudo-random global ID (section 3.2.1) and subnet ID 0.
func NewULA() netip.Prefix {
	var b [16]byte
	b[0] = 0xfd
	rand.Read(b[1:6])
	return netip.PrefixFrom(netip.AddrFrom16(b), 64)
}
