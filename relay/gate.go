package relay

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/stun/v4"
)

// The gate sees every inbound TURN frame before pion does. Most frames
// (ChannelData, indications, responses) pass after a look at two bytes. For
// authenticated requests it verifies MESSAGE-INTEGRITY itself and answers
// where pion's answer would be wrong by RFC 8656, or could not be right:
//
//   - ChannelBind to a refused peer: 403 Forbidden (pion answers 401, which
//     makes clients retry their credentials forever);
//   - Allocate of a family the relay has no address for: 440 Address Family
//     not Supported (pion answers 508), never a silent other-family relay;
//   - Allocate of a TCP relay with relay.tcp_relay off: 442 Unsupported
//     Transport Protocol (RFC 6062 §5.1);
//   - several REST secrets during a rotation: it notes which one signed the
//     request, for the AuthHandler.
//
// Requests it cannot authenticate go on to pion, which answers 401.

const (
	attrRequestedTransport = stun.AttrType(0x0019)
	attrRequestedFamily    = stun.AttrType(0x0017)
	protoUDP               = 17
	protoTCP               = 6
	stunHeaderSize         = 20
	stunMagicCookie        = 0x2112A442
)

// inspect returns a reply to send in place of passing frame on to pion, or
// nil. dataConn reports an authenticated ConnectionBind with relay.tcp_relay
// on: if pion accepts it, the rest of the stream is a TCP relay's data,
// unframed (RFC 6062 §5.4).
func (s *Service) inspect(frame []byte, src, local net.Addr) (reply []byte, dataConn bool) {
	if len(frame) < stunHeaderSize || frame[0]&0xC0 != 0 ||
		binary.BigEndian.Uint32(frame[4:8]) != stunMagicCookie {
		return nil, false
	}
	var t stun.MessageType
	t.ReadValue(binary.BigEndian.Uint16(frame[0:2]))
	if t.Class != stun.ClassRequest {
		return nil, false
	}
	switch t.Method {
	case stun.MethodAllocate, stun.MethodRefresh, stun.MethodCreatePermission,
		stun.MethodChannelBind, stun.MethodConnect, stun.MethodConnectionBind:
	default:
		return nil, false
	}
	m := &stun.Message{Raw: append([]byte(nil), frame...)}
	if err := m.Decode(); err != nil {
		return nil, false
	}
	var user stun.Username
	if user.GetFrom(m) != nil || !m.Contains(stun.AttrMessageIntegrity) {
		return nil, false
	}
	now := s.now()
	cands, _ := s.policy.Load().candidates(user.String(), t.Method, now)
	match := -1
	for i, c := range cands {
		if stun.MessageIntegrity(c.key).Check(m) == nil {
			match = i
			break
		}
	}
	if match < 0 {
		return nil, false
	}
	if len(cands) > 1 {
		s.hints.put(src, user.String(), match, now)
	}
	key := cands[match].key

	switch t.Method {
	case stun.MethodAllocate:
		var rt [4]byte
		if v, err := m.Get(attrRequestedTransport); err == nil && len(v) == 4 {
			copy(rt[:], v)
			if rt[0] == protoTCP && !s.tcpRelay {
				return errorReply(m, stun.CodeUnsupportedTransProto, key), false
			}
		}
		if !s.canRelay(requestedFamily(m, src, local)) {
			return errorReply(m, stun.CodeAddrFamilyNotSupported, key), false
		}
	case stun.MethodChannelBind:
		var peer stun.XORMappedAddress
		if err := peer.GetFromAs(m, stun.AttrXORPeerAddress); err != nil {
			return nil, false // pion answers 400
		}
		if v, reason := s.checkPeer(peer.IP); v == Deny {
			s.log.Debug("turn peer refused", "remote", src.String(), "peer", peer.IP.String(), "rule", reason)
			return errorReply(m, stun.CodeForbidden, key), false
		}
	case stun.MethodConnectionBind:
		return nil, s.tcpRelay
	}
	return nil, false
}

// requestedFamily is the family an Allocate asks for: its
// REQUESTED-ADDRESS-FAMILY, else (as pion decides) the family of the
// listener's address, or of the client's when the listener is a wildcard.
func requestedFamily(m *stun.Message, src, local net.Addr) int {
	if v, err := m.Get(attrRequestedFamily); err == nil && len(v) >= 1 {
		switch v[0] {
		case 0x01:
			return 4
		case 0x02:
			return 6
		}
		return 0
	}
	if a, ok := addrOf(local); ok && !a.IsUnspecified() {
		return family(a)
	}
	if a, ok := addrOf(src); ok {
		return family(a)
	}
	return 4
}

func family(a netip.Addr) int {
	if a.Unmap().Is4() {
		return 4
	}
	return 6
}

func addrOf(a net.Addr) (netip.Addr, bool) {
	switch a := a.(type) {
	case *net.UDPAddr:
		return netipFromIP(a.IP)
	case *net.TCPAddr:
		return netipFromIP(a.IP)
	}
	if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		return ap.Addr(), true
	}
	return netip.Addr{}, false
}

func netipFromIP(ip net.IP) (netip.Addr, bool) {
	a, ok := netip.AddrFromSlice(ip)
	return a.Unmap(), ok
}

func errorReply(req *stun.Message, code stun.ErrorCode, key []byte) []byte {
	var t stun.MessageType
	t.ReadValue(binary.BigEndian.Uint16(req.Raw[0:2]))
	resp, err := stun.Build(
		&stun.Message{TransactionID: req.TransactionID},
		stun.NewType(t.Method, stun.ClassErrorResponse),
		&stun.ErrorCodeAttribute{Code: code},
		stun.MessageIntegrity(key),
	)
	if err != nil {
		return nil
	}
	return resp.Raw
}

// gatePacketConn runs the gate on a UDP listener socket. On a wildcard
// socket it also makes every reply leave from the address its remote wrote
// to (replySources).
type gatePacketConn struct {
	net.PacketConn
	s     *Service
	addrs addrCache // used by the one pion read loop of this socket

	uc  *net.UDPConn  // PacketConn, when src is set
	src *replySources // nil: the kernel picks reply sources (a socket on one address)
	oob []byte        // control-message buffer of the one read loop
}

// newGatePacketConn wraps pc, choosing reply sources if pc listens on a
// wildcard address (where the kernel would pick them by route).
func newGatePacketConn(s *Service, pc net.PacketConn) *gatePacketConn {
	c := &gatePacketConn{PacketConn: pc, s: s}
	uc, ok := pc.(*net.UDPConn)
	if !ok {
		return c
	}
	if a, ok := addrOf(uc.LocalAddr()); !ok || !a.IsUnspecified() {
		return c
	}
	if err := enablePacketInfo(uc); err != nil {
		s.log.Warn("turn over udp replies from the address the kernel picks, which may not be the one a client wrote to",
			"listen", uc.LocalAddr().String(), "err", err)
		return c
	}
	c.uc, c.src, c.oob = uc, newReplySources(), make([]byte, packetInfoSpace)
	return c
}

func (c *gatePacketConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, addr, err := c.read(b)
		if err != nil {
			return n, addr, err
		}
		if reply, _ := c.s.inspect(b[:n], addr, c.LocalAddr()); reply != nil {
			c.WriteTo(reply, addr)
			continue
		}
		return n, addr, nil
	}
}

func (c *gatePacketConn) read(b []byte) (int, net.Addr, error) {
	if c.src == nil {
		return c.addrs.readFrom(c.PacketConn, b)
	}
	n, oobn, flags, ap, err := c.uc.ReadMsgUDPAddrPort(b, c.oob)
	if err != nil {
		return n, nil, err
	}
	if flags&msgCtrunc == 0 {
		c.src.noteArrival(ap, c.oob[:oobn], b[:n])
	}
	return n, c.addrs.get(ap), nil
}

// WriteTo sends b to addr from the address addr wrote to (see
// replySources), or from wherever the kernel picks.
func (c *gatePacketConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if c.src != nil {
		if ua, ok := addr.(*net.UDPAddr); ok {
			ap := ua.AddrPort()
			if oob := c.src.source(ap, b); oob != nil {
				n, _, err := c.uc.WriteMsgUDPAddrPort(b, oob, ap)
				if err == nil {
					return n, nil
				}
				// The address may have gone (a floating IP moved away):
				// the kernel's pick beats no reply.
			}
		}
	}
	return c.PacketConn.WriteTo(b, addr)
}

// maxFrame is the largest TURN frame the gate passes on a stream. pion's
// server reads streams with a 1600-byte buffer (its InboundMTU) and drops
// the connection on a larger frame, so nothing bigger could be served
// anyway; a small buffer keeps an idle connection cheap (64 KiB each, at
// max_allocations connections, would be most of a small VPS's memory).
const maxFrame = 2048

// gateStreamConn runs the gate on one TCP or TLS control connection. It
// frames the stream itself (with pion's STUNConn), so pion above it reads
// whole frames, and it bounds idleness: firstFrame for the first frame,
// idle between later ones, and, while the connection holds no allocation,
// noAllocBy as a hard end: a connection that only ever sends Binding
// requests (or nothing) gives its stream slot back within noAlloc.
type gateStreamConn struct {
	net.Conn
	s          *Service
	framer     *streamFramer
	pending    []byte // the rest of a frame larger than the caller's buffer
	firstFrame time.Duration
	idle       time.Duration
	noAlloc    time.Duration
	started    bool
	tuple      streamTuple // the addresses pion's allocation events name it by
	tupleOK    bool
	entry      atomic.Pointer[allocEntry] // the data path's view of its allocation

	dlMu      sync.Mutex // guards allocs and noAllocBy, and orders read-deadline changes
	allocs    int        // live allocations on this connection (pion allows one)
	noAllocBy time.Time  // when the connection is closed if it still holds no allocation

	// data is set once an authenticated ConnectionBind went to pion: from
	// then on pion copies the stream to a TCP peer, so Read passes bytes
	// through unframed (if pion refused the bind, its own framing still
	// reads the next requests, without the gate). Bytes the framer read
	// past the ConnectionBind go first.
	data      bool
	onClose   func()
	closeOnce sync.Once
}

func (c *gateStreamConn) Read(b []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(b, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	if c.data {
		if rest := c.framer.drain(b); rest > 0 {
			return rest, nil
		}
		if err := c.Conn.SetReadDeadline(time.Now().Add(c.idle)); err != nil {
			return 0, err
		}
		return c.Conn.Read(b)
	}
	for {
		frame, err := c.framer.next(c.armDeadline)
		if err != nil {
			c.noteNoAllocation(err)
			return 0, err
		}
		c.started = true
		if c.s.fast && c.relayed(frame) {
			continue
		}
		reply, data := c.s.inspect(frame, c.RemoteAddr(), c.LocalAddr())
		if reply != nil {
			if _, err := c.Conn.Write(reply); err != nil {
				return 0, err
			}
			continue
		}
		c.data = data
		k := copy(b, frame)
		c.pending = append(c.pending[:0], frame[k:]...) // frame is the framer's until the next call
		return k, nil
	}
}

// relayed relays frame to a peer if it is data (ChannelData, a Send
// indication), and reports whether the data path took it (relayed, or
// dropped as pion would drop it); false leaves it to pion.
func (c *gateStreamConn) relayed(frame []byte) bool {
	if len(frame) >= pionMTU {
		return false // pion drops it, or ends the connection
	}
	var peer netip.AddrPort
	var data []byte
	e := c.entry.Load()
	switch {
	case frame[0]&0xC0 == 0x40:
		num, d, ok := channelData(frame)
		if !ok {
			return false
		}
		if e == nil {
			return true
		}
		if peer, ok = e.chans.Load().peerOf(num); !ok {
			return true
		}
		data = d
	case isSendIndication(frame):
		p, d, v := parseSend(frame)
		switch {
		case v == sendPion:
			return false
		case v == sendDrop || e == nil || family(p.Addr()) != e.fam():
			return true
		}
		peer, data = p, d
	default:
		return false
	}
	if e.live.Load() && c.s.permitted(e, c.s.policy.Load(), peer) {
		c.s.stats.sendingToPeers(1, uint64(len(data)))
		if !e.relay.sendPeer(data, peer) {
			c.s.stats.unsentToPeers(1, uint64(len(data)))
		}
	}
	return true
}

// armDeadline sets the read deadline for the next frame.
func (c *gateStreamConn) armDeadline() error {
	c.dlMu.Lock()
	defer c.dlMu.Unlock()
	now := time.Now()
	d := now.Add(c.idle)
	if !c.started {
		d = now.Add(c.firstFrame)
	}
	if c.allocs == 0 && c.noAllocBy.Before(d) {
		d = c.noAllocBy
	}
	return c.Conn.SetReadDeadline(d)
}

// allocationChanged is told by the allocation events that the connection
// gained (+1) or lost (-1) an allocation. Losing its last one starts the
// noAlloc clock again, cutting short a read already waiting.
func (c *gateStreamConn) allocationChanged(delta int) {
	c.dlMu.Lock()
	defer c.dlMu.Unlock()
	had := c.allocs
	c.allocs = max(0, c.allocs+delta)
	if had > 0 && c.allocs == 0 {
		c.noAllocBy = time.Now().Add(c.noAlloc)
		c.Conn.SetReadDeadline(c.noAllocBy)
	}
}

// noteNoAllocation counts and logs a read that ended because the
// connection held no allocation in time.
func (c *gateStreamConn) noteNoAllocation(err error) {
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		return
	}
	c.dlMu.Lock()
	expired := c.allocs == 0 && !time.Now().Before(c.noAllocBy)
	c.dlMu.Unlock()
	if expired {
		c.s.stats.streamShut("no-allocation")
		c.s.log.Debug("turn connection closed: no allocation", "remote", c.RemoteAddr().String(), "after", c.noAlloc.String())
	}
}

func (c *gateStreamConn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() {
		if c.onClose != nil {
			c.onClose()
		}
	})
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}
