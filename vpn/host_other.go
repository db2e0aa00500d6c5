//go:build !linux

package vpn

import (
	"net/netip"

	"golang.zx2c4.com/wireguard/tun"
)

// The kernel side of the tunnel is Linux only; elsewhere a Service runs
// only over an injected TUN (Deps.TUN), as the tests do.

func createTUN(name string, mtu int) (tun.Device, error) { return nil, ErrNotSupported }

type host struct{}

func openHost(ifname string) (*host, error)               { return nil, ErrNotSupported }
func (h *host) configure(prefixes []netip.Prefix) error   { return ErrNotSupported }
func (h *host) setMTU(mtu int) error                      { return ErrNotSupported }
func (h *host) uplinks(configured string) (v4, v6 string) { return configured, configured }
func (h *host) applyTable(spec tableSpec) error           { return ErrNotSupported }
func (h *host) setHost(host []netip.Prefix) error         { return ErrNotSupported }
func (h *host) removeTable() error                        { return nil }
func (h *host) close() error                              { return nil }
func (h *host) enableForwarding(v4, v6 bool, uplink6 string) ([]string, error) {
	return nil, ErrNotSupported
}
