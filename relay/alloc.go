package relay

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/pion/transport/v5/reuseport"
	"github.com/pion/turn/v5"
)

// allocator is a listener's relay address generator. It binds relayed
// sockets in relay.relay_ports, advertises relay.relay_ip (or the bound
// address) and wraps each socket so the peer filter and the own-address
// port rule hold on every packet, not only when a permission is made.
//
// With tariq's data path, the relayed socket of a UDP listener socket's
// allocation is read by that socket's data loop (lis), and that of a TCP
// or TLS client's allocation relays from pion's goroutine (stream);
// otherwise pion relays through a relayPacketConn.
type allocator struct {
	s      *Service
	lis    *loopListener
	stream bool
}

var _ turn.RelayAddressGenerator = allocator{}

func (a allocator) Validate() error { return nil }

// relayFamily is where relayed sockets of one family bind, and what address
// the relay advertises for them.
type relayFamily struct {
	bind netip.Addr // zero if the family is unsupported
	adv  netip.Addr
}

func (a allocator) family(network string) (relayFamily, error) {
	f := a.s.fam4
	if network == "udp6" || network == "tcp6" {
		f = a.s.fam6
	}
	if !f.bind.IsValid() {
		return f, ErrFamilyUnsupported
	}
	return f, nil
}

// ports yields the ports to try for one allocation: the requested one
// (EVEN-PORT reservations), if it is in range, else random ones.
func (a allocator) tryPorts(requested int, try func(port int) error) error {
	r := a.s.ports
	if requested != 0 {
		if !r.Contains(requested) {
			return fmt.Errorf("requested port %d: %w", requested, ErrNoRelayPort)
		}
		return try(requested)
	}
	span := int(r.Max) - int(r.Min) + 1
	for range 64 {
		if try(int(r.Min)+rand.IntN(span)) == nil {
			return nil
		}
	}
	return ErrNoRelayPort
}

func (a allocator) AllocatePacketConn(conf turn.AllocateListenerConfig) (net.PacketConn, net.Addr, error) {
	f, err := a.family(conf.Network)
	if err != nil {
		return nil, nil, err
	}
	var pc net.PacketConn
	var port int
	fam := uint8(family(f.bind))
	err = a.tryPorts(conf.RequestedPort, func(p int) error {
		key := relayPort{protoUDP, fam, uint16(p)}
		var c net.PacketConn
		var err error
		switch {
		case a.lis != nil:
			var r *loopRelay
			if r, err = a.s.openLoopRelay(a.lis, conf.Network, f.bind, p, key); err == nil {
				c = r
			}
		case a.stream:
			var r *streamRelay
			if r, err = a.s.openStreamRelay(conf.Network, f.bind, p, key); err == nil {
				c = r
			}
		default:
			var raw net.PacketConn
			if raw, err = net.ListenPacket(conf.Network, net.JoinHostPort(f.bind.String(), strconv.Itoa(p))); err == nil {
				c = &relayPacketConn{PacketConn: raw, s: a.s, key: key}
			}
		}
		if err == nil {
			pc, port = c, p
			a.s.trackRelay(c, key, true)
		}
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	return pc, &net.UDPAddr{IP: f.adv.AsSlice(), Port: port}, nil
}

func (a allocator) AllocateListener(conf turn.AllocateListenerConfig) (net.Listener, net.Addr, error) {
	if !a.s.tcpRelay {
		return nil, nil, ErrTCPRelayDisabled
	}
	f, err := a.family(conf.Network)
	if err != nil {
		return nil, nil, err
	}
	lc := net.ListenConfig{Control: reuseport.Control}
	var ln net.Listener
	var port int
	err = a.tryPorts(conf.RequestedPort, func(p int) error {
		l, err := lc.Listen(context.Background(), conf.Network, net.JoinHostPort(f.bind.String(), strconv.Itoa(p)))
		if err == nil {
			ln, port = l, p
		}
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	rl := &relayListener{Listener: ln, s: a.s, key: relayPort{protoTCP, uint8(family(f.bind)), uint16(port)}}
	a.s.trackPort(rl.key, true)
	return rl, &net.TCPAddr{IP: f.adv.AsSlice(), Port: port}, nil
}

// AllocateConn dials a peer for an RFC 6062 Connect, from the relayed
// address. conf.LocalAddr is the advertised address (relay.relay_ip, which
// behind 1:1 NAT is on no local interface), so the dial binds the relay's
// bind address with the allocation's port instead.
func (a allocator) AllocateConn(conf turn.AllocateConnConfig) (net.Conn, error) {
	if !a.s.tcpRelay {
		return nil, ErrTCPRelayDisabled
	}
	f, err := a.family(conf.Network)
	if err != nil {
		return nil, err
	}
	local, ok := conf.LocalAddr.(*net.TCPAddr)
	if !ok {
		return nil, fmt.Errorf("connect on the non-TCP allocation %v", conf.LocalAddr)
	}
	if ap, ok := addrPort(conf.RemoteAddr); !ok || !a.s.peerPortOK(protoTCP, ap) {
		return nil, fmt.Errorf("peer %v: %w", conf.RemoteAddr, errPeerRefused)
	}
	d := net.Dialer{
		LocalAddr: &net.TCPAddr{IP: f.bind.AsSlice(), Port: local.Port},
		Control:   reuseport.Control,
		Timeout:   30 * time.Second,
	}
	return d.Dial(conf.Network, conf.RemoteAddr.String())
}

var errPeerRefused = fmt.Errorf("refused by the peer filter")

func addrPort(a net.Addr) (netip.AddrPort, bool) {
	switch a := a.(type) {
	case *net.UDPAddr:
		ap := a.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
	case *net.TCPAddr:
		ap := a.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
	}
	return netip.AddrPort{}, false
}

// peerPortOK applies the filter to one peer transport address of protocol
// proto (protoUDP or protoTCP).
func (s *Service) peerPortOK(proto uint8, ap netip.AddrPort) bool {
	v, _ := s.policy.Load().filter.Check(ap.Addr())
	return s.portOK(v, proto, ap)
}

// portOK finishes a verdict for one peer transport address of protocol
// proto: denied peers never; the server's own addresses only where one of
// its live allocations listens, so a relay can carry a call between two
// clients of the same server but cannot reach the server's own services
// (SSH, a database, a resolver's ephemeral ports, its TURN and WireGuard
// ports).
//
// "Where an allocation listens" is the relayed socket's protocol, family and
// port, on its bound address (any own address of the family for a wildcard
// bind) or the advertised one (relay.relay_ip, which 1:1 NAT hairpins to
// it): a UDP allocation's port opens nothing on TCP, nor an IPv4
// allocation's port anything on IPv6.
func (s *Service) portOK(v Verdict, proto uint8, ap netip.AddrPort) bool {
	switch v {
	case Allow:
		return true
	case AllowOwn:
		if !s.ports.Contains(int(ap.Port())) {
			return false
		}
		a := ap.Addr().Unmap()
		fam := family(a)
		f := s.fam4
		if fam == 6 {
			f = s.fam6
		}
		if !f.bind.IsValid() || (!f.bind.IsUnspecified() && a != f.bind && a != f.adv) {
			return false
		}
		return s.liveRelayPort(relayPort{proto, uint8(fam), ap.Port()})
	}
	return false
}

// relayPacketConn is one allocation's relayed UDP socket. It applies the peer
// filter per packet in both directions (so a reload that denies a peer cuts
// live permissions too) and counts relayed traffic. The filter's verdicts
// are cached per peer address until the policy changes; the own-address
// port check is made on every packet.
type relayPacketConn struct {
	net.PacketConn
	s   *Service
	key relayPort // UDP, its family, and its port (one of relay.relay_ports)

	addrs addrCache // used by the one pion read loop of this allocation

	mu     sync.Mutex // guards cache and policy
	policy *policy
	cache  map[netip.Addr]Verdict // the filter's verdicts under policy
}

func (c *relayPacketConn) allowed(addr net.Addr) bool {
	ap, ok := addrPort(addr)
	if !ok {
		return false
	}
	p := c.s.policy.Load()
	c.mu.Lock()
	if c.policy != p || len(c.cache) > 1024 {
		c.policy, c.cache = p, make(map[netip.Addr]Verdict, 4)
	}
	v, hit := c.cache[ap.Addr()]
	if !hit {
		v, _ = p.filter.Check(ap.Addr())
		c.cache[ap.Addr()] = v
	}
	c.mu.Unlock()
	return c.s.portOK(v, protoUDP, ap)
}

func (c *relayPacketConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if !c.allowed(addr) {
		return len(b), nil // dropped as a firewall would: the sender is not told
	}
	c.s.stats.sendingToPeers(1, uint64(len(b)))
	n, err := c.PacketConn.WriteTo(b, addr)
	if n == 0 && len(b) > 0 {
		c.s.stats.unsentToPeers(1, uint64(len(b)))
	}
	return n, err
}

func (c *relayPacketConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, addr, err := c.addrs.readFrom(c.PacketConn, b)
		if err != nil {
			return n, addr, err
		}
		if !c.allowed(addr) {
			continue
		}
		c.s.stats.BytesFromPeers.Add(uint64(n))
		c.s.stats.PacketsFromPeers.Add(1)
		return n, addr, nil
	}
}

func (c *relayPacketConn) Close() error {
	c.s.trackRelay(c, c.key, false)
	return c.PacketConn.Close()
}

// relayListener is one TCP allocation's relayed listener (RFC 6062); it
// turns away connections from peers the filter refuses.
type relayListener struct {
	net.Listener
	s         *Service
	key       relayPort // TCP, its family, and its port
	closeOnce sync.Once
}

func (l *relayListener) Close() error {
	l.closeOnce.Do(func() { l.s.trackPort(l.key, false) })
	return l.Listener.Close()
}

func (l *relayListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if ap, ok := addrPort(c.RemoteAddr()); ok && l.s.peerPortOK(protoTCP, ap) {
			return c, nil
		}
		c.Close()
	}
}
