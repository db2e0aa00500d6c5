package relay

import (
	"encoding/binary"
	"net"
	"net/netip"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// packetInfoSpace is room for the control messages enablePacketInfo asks
// for: IP_PKTINFO and, on a dual-stack socket, IPV6_PKTINFO as well.
var packetInfoSpace = unix.CmsgSpace(unix.SizeofInet4Pktinfo) + unix.CmsgSpace(unix.SizeofInet6Pktinfo)

// enablePacketInfo asks the kernel to tell, with every datagram uc reads,
// the local address it arrived on: IP_PKTINFO on an IPv4 socket;
// IPV6_RECVPKTINFO on an IPv6 one, and IP_PKTINFO too for the IPv4
// datagrams of a dual-stack socket (its ipi_spec_dst is the address routing
// picks for a reply, which for a broadcast is the interface's own).
func enablePacketInfo(uc *net.UDPConn) error {
	rc, err := uc.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) { serr = packetInfoOn(int(fd)) })
	if err != nil {
		return err
	}
	return serr
}

// packetInfoOn is enablePacketInfo on the socket fd.
func packetInfoOn(fd int) error {
	domain, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return err
	}
	if domain == unix.AF_INET6 {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1); err != nil {
			return err
		}
		if v6only, err := unix.GetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY); err != nil || v6only == 1 {
			return nil
		}
	}
	return unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
}

// packetDst returns the local address in the control messages oob, and
// its interface: IP_PKTINFO's ipi_spec_dst if there is one, else
// IPV6_PKTINFO's address (unmapped). It allocates nothing.
func packetDst(oob []byte) (dst netip.Addr, ifindex int32, ok bool) {
	for len(oob) > 0 {
		h, data, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			break
		}
		switch {
		case h.Level == unix.IPPROTO_IP && h.Type == unix.IP_PKTINFO && len(data) >= unix.SizeofInet4Pktinfo:
			// struct in_pktinfo { int ipi_ifindex; struct in_addr ipi_spec_dst, ipi_addr; }
			if a := netip.AddrFrom4([4]byte(data[4:8])); !a.IsUnspecified() {
				return a, int32(binary.NativeEndian.Uint32(data[0:4])), true
			}
		case h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_PKTINFO && len(data) >= unix.SizeofInet6Pktinfo:
			// struct in6_pktinfo { struct in6_addr ipi6_addr; int ipi6_ifindex; }
			dst = netip.AddrFrom16([16]byte(data[0:16])).Unmap()
			ifindex = int32(binary.NativeEndian.Uint32(data[16:20]))
			ok = true
		}
		oob = rest
	}
	return dst, ifindex, ok
}

// sourceControl returns the control message that sends a datagram from
// src: IP_PKTINFO's ipi_spec_dst for IPv4 (which the kernel honours on
// dual-stack sockets too, ip_cmsg_send), IPV6_PKTINFO's address for IPv6,
// with the interface only where a link-local address needs one.
func sourceControl(src netip.Addr, ifindex int32) []byte {
	if src.Is4() {
		return (&ipv4.ControlMessage{Src: src.AsSlice()}).Marshal()
	}
	return (&ipv6.ControlMessage{Src: src.AsSlice(), IfIndex: int(ifindex)}).Marshal()
}

// msgCtrunc is the flag saying control messages did not fit.
const msgCtrunc = unix.MSG_CTRUNC
