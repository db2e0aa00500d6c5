package relay

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// sockFD is a UDP socket the data path reads and writes with raw system
// calls (recvmmsg, sendmmsg, sendto, all with MSG_DONTWAIT), outside Go's
// poller: the poller's edge-triggered epoll would wake the runtime for
// every datagram on top of the data loop's own epoll. The descriptor is in
// blocking mode, so os and net never register it.
//
// Every call holds a reference, so close never closes the number (which
// the kernel would hand to the next socket) while a call is under way: the
// last reference out closes it, as internal/poll's fdMutex does.
type sockFD struct {
	fd    int
	state atomic.Int64 // references << 1 | closed
}

func (s *sockFD) acquire() bool {
	for {
		old := s.state.Load()
		if old&1 != 0 {
			return false
		}
		if s.state.CompareAndSwap(old, old+2) {
			return true
		}
	}
}

func (s *sockFD) release() {
	if s.state.Add(-2) == 1 {
		unix.Close(s.fd)
	}
}

// close closes the socket now, or when the last call under way returns.
// It reports whether it was open.
func (s *sockFD) close() bool {
	for {
		old := s.state.Load()
		if old&1 != 0 {
			return false
		}
		if s.state.CompareAndSwap(old, old|1) {
			if old == 0 {
				unix.Close(s.fd)
			}
			return true
		}
	}
}

// rawSockaddr is a socket address as the kernel reads and writes it.
type rawSockaddr struct {
	b [unix.SizeofSockaddrInet6]byte
	n uint32
}

// sockaddrOf returns ap as a sockaddr for a socket of family AF_INET6 (an
// IPv4 address mapped) if inet6, else AF_INET.
func sockaddrOf(ap netip.AddrPort, inet6 bool) rawSockaddr {
	var sa rawSockaddr
	a := ap.Addr()
	if !inet6 {
		binary.NativeEndian.PutUint16(sa.b[0:2], unix.AF_INET)
		binary.BigEndian.PutUint16(sa.b[2:4], ap.Port())
		ip := a.Unmap().As4()
		copy(sa.b[4:8], ip[:])
		sa.n = unix.SizeofSockaddrInet4
		return sa
	}
	binary.NativeEndian.PutUint16(sa.b[0:2], unix.AF_INET6)
	binary.BigEndian.PutUint16(sa.b[2:4], ap.Port())
	ip := a.As16()
	copy(sa.b[8:24], ip[:])
	if z := a.Zone(); z != "" {
		if ifi, err := net.InterfaceByName(z); err == nil {
			binary.NativeEndian.PutUint32(sa.b[24:28], uint32(ifi.Index))
		}
	}
	sa.n = unix.SizeofSockaddrInet6
	return sa
}

// addrPortOf reads the sockaddr in b (unmapped, without zone); ok is false
// for another family.
func addrPortOf(b *[unix.SizeofSockaddrInet6]byte) (netip.AddrPort, bool) {
	port := binary.BigEndian.Uint16(b[2:4])
	switch binary.NativeEndian.Uint16(b[0:2]) {
	case unix.AF_INET:
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), port), true
	case unix.AF_INET6:
		return netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[8:24])).Unmap(), port), true
	}
	return netip.AddrPort{}, false
}

// mmsgBatch is a recvmmsg or sendmmsg vector: headers, each with one
// buffer, an address and a control-message buffer.
type mmsgBatch struct {
	hdrs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []rawSockaddr
	oob   []byte // oobLen bytes per message
	oobN  int
}

func newMmsgBatch(n, oobLen int) *mmsgBatch {
	b := &mmsgBatch{
		hdrs:  make([]unix.Mmsghdr, n),
		iovs:  make([]unix.Iovec, n),
		names: make([]rawSockaddr, n),
		oob:   make([]byte, n*oobLen),
		oobN:  oobLen,
	}
	for i := range b.hdrs {
		h := &b.hdrs[i].Hdr
		h.Iov = &b.iovs[i]
		h.SetIovlen(1)
		h.Name = &b.names[i].b[0]
	}
	return b
}

// prepRecv readies message i to receive into buf.
func (b *mmsgBatch) prepRecv(i int, buf []byte) {
	m := &b.hdrs[i]
	b.iovs[i].Base = &buf[0]
	b.iovs[i].SetLen(len(buf))
	m.Hdr.Namelen = unix.SizeofSockaddrInet6
	if b.oobN > 0 {
		m.Hdr.Control = &b.oob[i*b.oobN]
		m.Hdr.SetControllen(b.oobN)
	}
	m.Hdr.Flags = 0
	m.Len = 0
}

// control returns the control messages received with message i.
func (b *mmsgBatch) control(i int) []byte {
	if b.oobN == 0 {
		return nil
	}
	return b.oob[i*b.oobN : i*b.oobN+int(b.hdrs[i].Hdr.Controllen)]
}

// prepSend readies message i to send frame to sa with control messages
// oob (nil for none). frame and oob must stay untouched until the send.
func (b *mmsgBatch) prepSend(i int, frame []byte, sa *rawSockaddr, oob []byte) {
	m := &b.hdrs[i]
	b.iovs[i].Base = &frame[0]
	b.iovs[i].SetLen(len(frame))
	b.names[i] = *sa
	m.Hdr.Namelen = sa.n
	if len(oob) > 0 {
		m.Hdr.Control = &oob[0]
		m.Hdr.SetControllen(len(oob))
	} else {
		m.Hdr.Control = nil
		m.Hdr.SetControllen(0)
	}
	m.Hdr.Flags = 0
}

var errAgain = errors.New("would block")

func errnoErr(e syscall.Errno) error {
	if e == unix.EAGAIN {
		return errAgain
	}
	return e
}

// The system calls below never block (MSG_DONTWAIT), so they run as raw
// system calls, without telling the scheduler.

func recvmmsg(s *sockFD, hdrs []unix.Mmsghdr) (int, error) {
	if !s.acquire() {
		return 0, net.ErrClosed
	}
	n, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, uintptr(s.fd), uintptr(unsafe.Pointer(&hdrs[0])), uintptr(len(hdrs)), unix.MSG_DONTWAIT, 0, 0)
	s.release()
	if e != 0 {
		return 0, errnoErr(e)
	}
	return int(n), nil
}

// sendmmsg sends every message of hdrs, retrying after a partial send; it
// returns how many went out.
func sendmmsg(s *sockFD, hdrs []unix.Mmsghdr) (int, error) {
	if !s.acquire() {
		return 0, net.ErrClosed
	}
	defer s.release()
	sent := 0
	for sent < len(hdrs) {
		n, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, uintptr(s.fd), uintptr(unsafe.Pointer(&hdrs[sent])), uintptr(len(hdrs)-sent), unix.MSG_DONTWAIT, 0, 0)
		switch {
		case e == unix.EINTR:
			continue
		case e == unix.EAGAIN:
			return sent, errAgain
		case e == unix.EIO || e == unix.EINVAL:
			return sent, e // the caller may send that message another way
		case e != 0:
			// The first message failed (an unreachable destination, say):
			// drop it, as a UDP socket would, and go on.
			sent++
			continue
		}
		sent += int(n)
	}
	return sent, nil
}

func sendto(s *sockFD, b []byte, sa *rawSockaddr) bool {
	if !s.acquire() {
		return false
	}
	var p unsafe.Pointer
	if len(b) > 0 {
		p = unsafe.Pointer(&b[0])
	} else {
		p = unsafe.Pointer(&sa.b[0]) // any valid address: nothing is read
	}
	_, _, e := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(s.fd), uintptr(p), uintptr(len(b)), unix.MSG_DONTWAIT, uintptr(unsafe.Pointer(&sa.b[0])), uintptr(sa.n))
	s.release()
	return e == 0
}

// openUDP opens a UDP socket bound to addr as net.ListenPacket("udp",
// addr) would: a wildcard (":3478", "0.0.0.0:3478", "[::]:3478") as a
// dual-stack IPv6 socket where the host has IPv6, else the address's own
// family. reuse sets SO_REUSEPORT.
func openUDP(addr netip.AddrPort, network string, reuse bool) (*sockFD, *net.UDPAddr, bool, error) {
	a := addr.Addr().Unmap()
	inet6 := a.Is6()
	dual := network == "udp" && a.IsUnspecified()
	if dual {
		inet6 = true
	}
	fd, err := socketFor(inet6)
	if err != nil && dual {
		inet6, dual = false, false
		fd, err = socketFor(false)
	}
	if err != nil {
		return nil, nil, false, os.NewSyscallError("socket", err)
	}
	fail := func(err error) (*sockFD, *net.UDPAddr, bool, error) {
		unix.Close(fd)
		return nil, nil, false, err
	}
	if inet6 {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, boolInt(!dual)); err != nil {
			return fail(os.NewSyscallError("setsockopt", err))
		}
	}
	if reuse {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
			return fail(os.NewSyscallError("setsockopt", err))
		}
	}
	var sa unix.Sockaddr
	if inet6 {
		s6 := &unix.SockaddrInet6{Port: int(addr.Port())}
		if !dual {
			s6.Addr = a.As16()
		}
		sa = s6
	} else {
		sa = &unix.SockaddrInet4{Port: int(addr.Port()), Addr: a.As4()}
	}
	if err := unix.Bind(fd, sa); err != nil {
		return fail(os.NewSyscallError("bind", err))
	}
	got, err := unix.Getsockname(fd)
	if err != nil {
		return fail(os.NewSyscallError("getsockname", err))
	}
	var local *net.UDPAddr
	switch g := got.(type) {
	case *unix.SockaddrInet4:
		local = &net.UDPAddr{IP: append(net.IP(nil), g.Addr[:]...), Port: g.Port}
	case *unix.SockaddrInet6:
		local = &net.UDPAddr{IP: append(net.IP(nil), g.Addr[:]...), Port: g.Port}
	}
	return &sockFD{fd: fd}, local, inet6, nil
}

func socketFor(inet6 bool) (int, error) {
	domain := unix.AF_INET
	if inet6 {
		domain = unix.AF_INET6
	}
	return unix.Socket(domain, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
