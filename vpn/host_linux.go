package vpn

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"
)

// createTUN creates the kernel TUN device with wireguard-go's own code, so
// its offloads (virtio-net header, TSO, UDP GSO/GRO) stay on.
func createTUN(name string, mtu int) (tun.Device, error) {
	return tun.CreateTUN(name, mtu)
}

// host is the kernel side of the tunnel interface: its addresses, link
// state and MTU, IP forwarding, and tariq's nftables table. Its netlink
// sockets are opened by openHost in the caller's network namespace and
// serve every later call from any thread.
type host struct {
	ifname string
	nl     *netlink.Handle
	nft    *nft
}

// openHost opens the netlink sockets (rtnetlink and nftables) in the
// caller's network namespace.
func openHost(ifname string) (*host, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("opening netlink socket: %w", err)
	}
	n, err := openNFT()
	if err != nil {
		h.Close()
		return nil, err
	}
	return &host{ifname: ifname, nl: h, nft: n}, nil
}

func (h *host) link() (netlink.Link, error) {
	l, err := h.nl.LinkByName(h.ifname)
	if err != nil {
		return nil, fmt.Errorf("finding interface %s: %w", h.ifname, err)
	}
	return l, nil
}

// configure gives the tunnel interface its addresses and brings it up.
func (h *host) configure(prefixes []netip.Prefix) error {
	l, err := h.link()
	if err != nil {
		return err
	}
	for _, p := range prefixes {
		a := &netlink.Addr{
			IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())},
		}
		if p.Addr().Is6() {
			a.Flags = unix.IFA_F_NODAD // a point-to-point TUN has no neighbours to collide with
		}
		if err := h.nl.AddrReplace(l, a); err != nil {
			return fmt.Errorf("setting address %s on %s: %w", p, h.ifname, err)
		}
	}
	if err := h.nl.LinkSetUp(l); err != nil {
		return fmt.Errorf("bringing %s up: %w", h.ifname, err)
	}
	return nil
}

// setMTU changes the interface's MTU; wireguard-go follows through the
// TUN's netlink events.
func (h *host) setMTU(mtu int) error {
	l, err := h.link()
	if err != nil {
		return err
	}
	if err := h.nl.LinkSetMTU(l, mtu); err != nil {
		return fmt.Errorf("setting MTU %d on %s: %w", mtu, h.ifname, err)
	}
	return nil
}

// Probe destinations for finding the default-route interface; asking the
// kernel for a route sends nothing.
var (
	probe4 = net.IPv4(1, 1, 1, 1)
	probe6 = net.ParseIP("2606:4700:4700::1111")
)

// uplinks returns the interfaces IPv4 and IPv6 traffic leaves through:
// configured (vpn.uplink, both families) or the default route's for each
// family; "" for a family with no default route.
func (h *host) uplinks(configured string) (v4, v6 string) {
	if configured != "" {
		return configured, configured
	}
	return h.routeIface(probe4), h.routeIface(probe6)
}

func (h *host) routeIface(dst net.IP) string {
	routes, err := h.nl.RouteGet(dst)
	if err != nil || len(routes) == 0 {
		return ""
	}
	l, err := h.nl.LinkByIndex(routes[0].LinkIndex)
	if err != nil || l.Attrs().Name == h.ifname {
		return ""
	}
	return l.Attrs().Name
}

const (
	forward4Path = "/proc/sys/net/ipv4/ip_forward"
	forward6Path = "/proc/sys/net/ipv6/conf/all/forwarding"
)

// enableForwarding switches IPv4 and/or IPv6 forwarding on (writing only
// when off, so a read-only /proc/sys with forwarding already on is fine).
// Switching IPv6 forwarding on makes the kernel ignore router
// advertisements on interfaces with accept_ra=1, which would drop a VPS's
// SLAAC default route some minutes later; so when tariq turns it on, the
// IPv6 uplink's accept_ra goes from 1 to 2 ("accept even when forwarding").
// It returns what it changed, for the log.
func (h *host) enableForwarding(v4, v6 bool, uplink6 string) (changed []string, err error) {
	if v4 {
		on, err := setSysctl(forward4Path, "1")
		if err != nil {
			return changed, fmt.Errorf("enabling IPv4 forwarding: %w", err)
		}
		if on {
			changed = append(changed, "net.ipv4.ip_forward=1")
		}
	}
	if v6 {
		ra := ""
		if uplink6 != "" {
			ra = filepath.Join("/proc/sys/net/ipv6/conf", uplink6, "accept_ra")
		}
		was, _ := os.ReadFile(forward6Path)
		if strings.TrimSpace(string(was)) != "1" && ra != "" {
			if b, err := os.ReadFile(ra); err == nil && strings.TrimSpace(string(b)) == "1" {
				if _, err := setSysctl(ra, "2"); err != nil {
					return changed, fmt.Errorf("keeping router advertisements on %s: %w", uplink6, err)
				}
				changed = append(changed, "net.ipv6.conf."+uplink6+".accept_ra=2")
			}
		}
		on, err := setSysctl(forward6Path, "1")
		if err != nil {
			return changed, fmt.Errorf("enabling IPv6 forwarding: %w", err)
		}
		if on {
			changed = append(changed, "net.ipv6.conf.all.forwarding=1")
		}
	}
	return changed, nil
}

// setSysctl writes val to path unless it already holds it; it reports
// whether it wrote.
func setSysctl(path, val string) (bool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return false, err
	}
	if strings.TrimSpace(string(b)) == val {
		return false, nil
	}
	if err := os.WriteFile(path, []byte(val+"\n"), 0o644); err != nil {
		return false, err
	}
	return true, nil
}

// applyTable replaces tariq's nftables table with what spec says.
func (h *host) applyTable(spec tableSpec) error { return h.nft.apply(spec) }

// setHost rewrites the table's sets of the server itself.
func (h *host) setHost(host []netip.Prefix) error { return h.nft.setHost(host) }

// removeTable deletes tariq's nftables table if it exists.
func (h *host) removeTable() error { return h.nft.remove() }

// close releases the netlink sockets. The interface itself goes away when
// the TUN is closed.
func (h *host) close() error {
	err := h.nft.close()
	h.nl.Close()
	return err
}
