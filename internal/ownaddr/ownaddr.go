// Package ownaddr lists the server's own addresses and follows them as they
// change (a floating IP, a new interface, a DHCP lease), so the policies
// that refuse the server itself (the relay's own-address rule, the
// destination policy of the VPN paths) guard an address the moment it
// appears. A Host is bound to the network namespace it was opened in and
// may be used from any goroutine.
package ownaddr

import (
	"log/slog"
	"net"
	"net/netip"
)

// Host is one network namespace's view of its own addresses.
type Host struct {
	*host // per platform
}

// Open opens the netlink sockets of the caller's network namespace.
func Open() (*Host, error) {
	h, err := openHost()
	if err != nil {
		return nil, err
	}
	return &Host{h}, nil
}

// List returns every address on the namespace's interfaces (loopback and
// link-local included), each once.
func (h *Host) List() ([]netip.Addr, error) { return h.list() }

// Watch calls changed after every burst of address events (added or
// removed, on any interface), on a goroutine of its own, until Close. If
// the subscription breaks (events overflowed the socket buffer), events may
// have been lost: it subscribes again, with backoff, and calls changed once
// more. changed must not call Close.
func (h *Host) Watch(log *slog.Logger, changed func()) error { return h.watch(log, changed) }

// Close stops the watch, waiting for changed to return, and closes the
// sockets. It is idempotent.
func (h *Host) Close() error { return h.close() }

// InterfaceAddrs lists the addresses of the calling thread's network
// namespace with the standard library: for callers with no Host.
func InterfaceAddrs() ([]netip.Addr, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	out := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(ipn.IP); ok {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out, nil
}
