package relay

import (
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
)

// The data path. pion handles authentication, allocations, permissions,
// channel bindings, refreshes and lifetimes; tariq relays the packets that
// make up nearly all of the traffic itself: ChannelData and Send
// indications from clients, and peers' datagrams back as ChannelData or
// Data indications, on every transport. It reads and writes the sockets
// directly (dataloop_linux.go for UDP clients, the stream gate for TCP and
// TLS ones), parses no STUN for ChannelData, allocates nothing per packet
// and takes no lock: each allocation is an allocEntry whose permissions and
// channels are immutable sets behind atomic pointers, rebuilt from what
// pion reports.
//
// What it relies on from pion (turn/v5 v5.1.3, internal/allocation), all
// of it called before pion answers the request that caused it, so a client
// never holds a success response the data path does not know of yet:
//
//   - RelayAddressGenerator.AllocatePacketConn makes every relayed UDP
//     socket (allocator), so each has its entry from birth, keyed by its
//     relayed port; the socket's Close (from Allocation.Close, on delete,
//     expiry or a failed read) retires the entry;
//   - EventHandler.OnAllocationCreated names the client's 5-tuple and the
//     relayed address: the entry goes live in the table of the UDP socket
//     the client wrote to, or on its TCP or TLS connection;
//   - OnPermissionCreated and OnPermissionDeleted, fired by
//     Allocation.AddPermission for a new peer address and by
//     RemovePermission when pion's permission timer fires or the
//     allocation closes. A refresh (CreatePermission or ChannelBind for a
//     live permission) only resets pion's timer, with no event, which is
//     all the data path needs: a permission is live from its creation
//     event to its deletion event, and pion's timer, which refreshes
//     reset, decides when that is. PermissionTimeout shortens it in tests;
//   - OnChannelCreated and OnChannelDeleted likewise for channel bindings.
//
// The data path is stricter than pion in one way, RFC 8656 §9's: data to
// or from a peer needs a live permission for its IP address even on a
// channel; pion relays ChannelData on a bound channel whose permission has
// expired (the channel lives 10 minutes, the permission 5).

const (
	// pionMTU is pion's InboundMTU: its read loops drop a client frame of
	// this size or more, and read peers' datagrams into buffers this big.
	pionMTU = 1600
	// maxPeerData is the largest peer datagram relayed; pion would relay
	// the first 1600 bytes of a larger one, the data path drops it.
	maxPeerData = pionMTU
	// dataHeadroom is the room in front of a peer's datagram for the
	// largest header it gets: a Data indication with an IPv6
	// XOR-PEER-ADDRESS (20 + 4+20 + 4 bytes).
	dataHeadroom = 48
	// slotSize is one packet buffer of the data path.
	slotSize = 2048

	typeSendIndication = 0x0016
	typeDataIndication = 0x0017
	attrXORPeerAddress = 0x0012
	attrData           = 0x0013
)

// perm is one live permission: a peer IP address, and the peer filter's
// verdict on it under the latest policy it was checked against.
type perm struct {
	addr netip.Addr
	// verdict is the policy generation << 8 | the Verdict, 0 before the
	// first check. A reload or an own-address change makes a new
	// generation, so every permission is checked again on its next
	// packet: a deny_peers added by SIGHUP cuts live flows.
	verdict atomic.Uint64
}

// permSet is an allocation's live permissions. It is immutable: a change
// makes a new one. A few are kept in a slice, scanned faster than a map is
// hashed; past smallSet, a map.
type permSet struct {
	few []*perm
	m   map[netip.Addr]*perm
}

// smallSet is how many permissions or channels a set scans rather than
// hashes.
const smallSet = 8

func newPermSet(perms []*perm) *permSet {
	if len(perms) <= smallSet {
		return &permSet{few: perms}
	}
	m := make(map[netip.Addr]*perm, len(perms))
	for _, p := range perms {
		m[p.addr] = p
	}
	return &permSet{few: perms, m: m}
}

func (s *permSet) get(a netip.Addr) *perm {
	if s.m != nil {
		return s.m[a]
	}
	for _, p := range s.few {
		if p.addr == a {
			return p
		}
	}
	return nil
}

func (s *permSet) len() int { return len(s.few) }

// chanBinding is one channel binding: its number and its peer.
type chanBinding struct {
	num  uint16
	peer netip.AddrPort
}

// chanSet is an allocation's channel bindings (RFC 8656 §12), looked up
// both ways. It is immutable, like permSet.
type chanSet struct {
	few    []chanBinding
	byNum  map[uint16]netip.AddrPort
	byPeer map[netip.AddrPort]uint16
}

func newChanSet(bs []chanBinding) *chanSet {
	if len(bs) <= smallSet {
		return &chanSet{few: bs}
	}
	s := &chanSet{few: bs, byNum: make(map[uint16]netip.AddrPort, len(bs)), byPeer: make(map[netip.AddrPort]uint16, len(bs))}
	for _, b := range bs {
		s.byNum[b.num], s.byPeer[b.peer] = b.peer, b.num
	}
	return s
}

// peerOf returns the peer channel num is bound to.
func (s *chanSet) peerOf(num uint16) (netip.AddrPort, bool) {
	if s.byNum != nil {
		p, ok := s.byNum[num]
		return p, ok
	}
	for _, b := range s.few {
		if b.num == num {
			return b.peer, true
		}
	}
	return netip.AddrPort{}, false
}

// numOf returns the channel bound to peer.
func (s *chanSet) numOf(peer netip.AddrPort) (uint16, bool) {
	if s.byPeer != nil {
		n, ok := s.byPeer[peer]
		return n, ok
	}
	for _, b := range s.few {
		if b.peer == peer {
			return b.num, true
		}
	}
	return 0, false
}

func (s *chanSet) len() int { return len(s.few) }

var (
	noPerms = &permSet{}
	noChans = &chanSet{}
)

// peerSender sends a datagram to a peer from an allocation's relayed
// socket.
type peerSender interface {
	sendPeer(b []byte, peer netip.AddrPort) bool
}

// allocEntry is one allocation as the data path sees it. It is made with
// its relayed socket and goes live when pion announces the allocation.
type allocEntry struct {
	key   relayPort  // the relayed socket: UDP, its family and port
	relay peerSender // the relayed socket
	// lis is the UDP listener socket the allocation was made on; nil for
	// a client over TCP or TLS.
	lis *loopListener

	// Set once by live, before the entry is published.
	client netip.AddrPort  // the client's transport address, unmapped
	stream *gateStreamConn // a client over TCP or TLS
	sa     rawSockaddr     // a UDP client's address, as its listener socket sends to it
	// src is where a UDP client's data leaves from (see replySources); nil
	// for the kernel's choice.
	src atomic.Pointer[localAddr]

	live  atomic.Bool // announced and not yet closed
	perms atomic.Pointer[permSet]
	chans atomic.Pointer[chanSet]

	mu      sync.Mutex // serialises rebuilding perms and chans (pion's event goroutines)
	retired bool       // guarded by mu: closed; events that come late change nothing
}

func newAllocEntry(key relayPort, relay peerSender, lis *loopListener) *allocEntry {
	e := &allocEntry{key: key, relay: relay, lis: lis}
	e.perms.Store(noPerms)
	e.chans.Store(noChans)
	return e
}

func (e *allocEntry) fam() int { return int(e.key.fam) }

// addPerm and dropPerm follow pion's permission events for ip.
func (e *allocEntry) addPerm(ip netip.Addr) {
	e.mu.Lock()
	defer e.mu.Unlock()
	old := e.perms.Load()
	if e.retired || old.get(ip) != nil {
		return
	}
	e.perms.Store(newPermSet(append(old.few[:len(old.few):len(old.few)], &perm{addr: ip})))
}

func (e *allocEntry) dropPerm(ip netip.Addr) {
	e.mu.Lock()
	defer e.mu.Unlock()
	old := e.perms.Load()
	if old.get(ip) == nil {
		return
	}
	next := make([]*perm, 0, len(old.few))
	for _, p := range old.few {
		if p.addr != ip {
			next = append(next, p)
		}
	}
	e.perms.Store(newPermSet(next))
}

// setChan binds (add) or unbinds channel num to peer.
func (e *allocEntry) setChan(num uint16, peer netip.AddrPort, add bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.retired && add {
		return
	}
	old := e.chans.Load()
	next := make([]chanBinding, 0, len(old.few)+1)
	for _, b := range old.few {
		// pion refuses to bind a peer to a second channel or a channel to
		// a second peer (ErrSamePeerDifferentChannel,
		// ErrSameChannelDifferentPeer), so all this drops is the binding
		// itself, or a stale copy of it.
		if b.num != num && b.peer != peer {
			next = append(next, b)
		}
	}
	if add {
		next = append(next, chanBinding{num, peer})
	}
	e.chans.Store(newChanSet(next))
}

// retire ends the entry: nothing more is relayed for it.
func (e *allocEntry) retire() {
	e.mu.Lock()
	e.retired = true
	e.mu.Unlock()
	e.live.Store(false)
	e.perms.Store(noPerms)
	e.chans.Store(noChans)
}

// permitted reports whether data may go to or come from peer on e under
// policy pol: a live permission for its IP address, the peer filter's
// verdict, and for the server's own addresses the live-port rule.
func (s *Service) permitted(e *allocEntry, pol *policy, peer netip.AddrPort) bool {
	p := e.perms.Load().get(peer.Addr())
	if p == nil {
		return false
	}
	c := p.verdict.Load()
	v := Verdict(c & 0xff)
	if c>>8 != pol.gen {
		v, _ = pol.filter.Check(p.addr)
		p.verdict.Store(pol.gen<<8 | uint64(v))
	}
	return s.portOK(v, protoUDP, peer)
}

// clientTable maps the clients of one UDP listener socket, by transport
// address (unmapped), to their allocations. Reads take no lock: the table
// is split in shards, each an immutable map behind an atomic pointer that
// an update replaces, so one update copies a shard, not the table.
type clientTable struct {
	inet6 bool          // the socket is AF_INET6 (IPv4 clients of a dual-stack one are mapped)
	src   *replySources // a wildcard socket's reply sources; nil: the kernel picks

	mu     sync.Mutex // serialises updates
	shards [clientShards]atomic.Pointer[map[netip.AddrPort]*allocEntry]
}

const clientShards = 64

func clientShard(ap netip.AddrPort) int {
	a := ap.Addr().As16()
	h := binary.LittleEndian.Uint64(a[8:]) ^ binary.LittleEndian.Uint64(a[:8])*0x9E3779B97F4A7C15
	h ^= uint64(ap.Port()) * 0xC2B2AE3D27D4EB4F
	return int(h>>58) & (clientShards - 1)
}

func (t *clientTable) get(ap netip.AddrPort) *allocEntry {
	m := t.shards[clientShard(ap)].Load()
	if m == nil {
		return nil
	}
	return (*m)[ap]
}

// update maps ap to e or, if e is nil, removes ap's mapping if it is old.
func (t *clientTable) update(ap netip.AddrPort, old, e *allocEntry) {
	t.mu.Lock()
	defer t.mu.Unlock()
	sh := &t.shards[clientShard(ap)]
	cur := sh.Load()
	next := make(map[netip.AddrPort]*allocEntry)
	if cur != nil {
		if e == nil && (*cur)[ap] != old {
			return
		}
		for k, v := range *cur {
			next[k] = v
		}
	}
	if e == nil {
		delete(next, ap)
	} else {
		next[ap] = e
	}
	sh.Store(&next)
}

// goLive publishes e for client src (as pion names it), after pion
// created the allocation.
func (s *Service) goLive(e *allocEntry, src, dst net.Addr) {
	ap, ok := addrPort(src)
	if !ok {
		return
	}
	e.client = netip.AddrPortFrom(ap.Addr().WithZone(""), ap.Port()) // as the data loop reads it
	if e.lis != nil {
		t := &e.lis.clients
		e.sa = sockaddrOf(ap, t.inet6)
		if t.src != nil {
			e.src.Store(t.src.turnSource(ap))
		}
		e.live.Store(true)
		t.update(e.client, nil, e)
		return
	}
	c := s.streamConnOf(src, dst)
	if c == nil {
		return // gone already
	}
	e.stream = c
	e.live.Store(true)
	c.entry.Store(e)
}

// retireEntry takes e out of the data path when its relayed socket closes.
func (s *Service) retireEntry(e *allocEntry) {
	e.retire()
	if e.lis != nil && e.client.IsValid() {
		e.lis.clients.update(e.client, e, nil)
	}
	if e.stream != nil {
		e.stream.entry.CompareAndSwap(e, nil)
	}
	s.entryMu.Lock()
	if s.entries[e.key] == e {
		delete(s.entries, e.key)
	}
	s.entryMu.Unlock()
}

// addEntry registers e under its relayed port.
func (s *Service) addEntry(e *allocEntry) {
	s.entryMu.Lock()
	s.entries[e.key] = e
	s.entryMu.Unlock()
}

// entryFor returns the entry of the allocation whose relayed address pion
// reports as relay.
func (s *Service) entryFor(relay net.Addr) *allocEntry {
	ap, ok := addrPort(relay)
	if !ok {
		return nil
	}
	s.entryMu.Lock()
	defer s.entryMu.Unlock()
	return s.entries[relayPort{protoUDP, uint8(family(ap.Addr())), ap.Port()}]
}

func (s *Service) onPermissionCreated(src, dst net.Addr, protocol, userID, realm string, relay net.Addr, peer net.IP) {
	if e := s.entryFor(relay); e != nil {
		if a, ok := netipFromIP(peer); ok {
			e.addPerm(a)
		}
	}
}

func (s *Service) onPermissionDeleted(src, dst net.Addr, protocol, userID, realm string, relay net.Addr, peer net.IP) {
	if e := s.entryFor(relay); e != nil {
		if a, ok := netipFromIP(peer); ok {
			e.dropPerm(a)
		}
	}
}

func (s *Service) onChannelCreated(src, dst net.Addr, protocol, userID, realm string, relay, peer net.Addr, number uint16) {
	if e := s.entryFor(relay); e != nil {
		if ap, ok := addrPort(peer); ok {
			e.setChan(number, ap, true)
		}
	}
}

func (s *Service) onChannelDeleted(src, dst net.Addr, protocol, userID, realm string, relay, peer net.Addr, number uint16) {
	if e := s.entryFor(relay); e != nil {
		if ap, ok := addrPort(peer); ok {
			e.setChan(number, ap, false)
		}
	}
}

// channelData returns the channel number and data of the ChannelData
// message b as pion's server reads it (proto.IsChannelData and
// ChannelData.Decode: a channel number in 0x4000-0x7FFF, a length that
// fits, bytes past it ignored as padding), or ok false if pion would not
// take b for ChannelData.
func channelData(b []byte) (num uint16, data []byte, ok bool) {
	if len(b) < 4 {
		return 0, nil, false
	}
	num = binary.BigEndian.Uint16(b[0:2])
	n := int(binary.BigEndian.Uint16(b[2:4]))
	if num < 0x4000 || num > 0x7fff || n > len(b)-4 {
		return 0, nil, false
	}
	return num, b[4 : 4+n], true
}

// sendVerdict is what to do with a Send indication.
type sendVerdict uint8

const (
	sendRelay sendVerdict = iota // relay data to peer
	sendDrop                     // malformed: pion would drop it too
	sendPion                     // an encoding the data path leaves to pion
)

// isSendIndication reports whether b is a STUN Send indication.
func isSendIndication(b []byte) bool {
	return len(b) >= stunHeaderSize && binary.BigEndian.Uint16(b[0:2]) == typeSendIndication &&
		binary.BigEndian.Uint32(b[4:8]) == stunMagicCookie
}

// parseSend reads the Send indication b (isSendIndication) as pion's
// server would (stun.Message.Decode, then the first XOR-PEER-ADDRESS and
// DATA attributes) without allocating. Anything it does not read exactly
// as pion does, it leaves to pion (sendPion): a comprehension-required
// attribute other than those two (pion drops indications with unknown
// ones, and ignores attributes after MESSAGE-INTEGRITY), or an address
// shorter than its family.
func parseSend(b []byte) (peer netip.AddrPort, data []byte, v sendVerdict) {
	size := int(binary.BigEndian.Uint16(b[2:4]))
	if len(b) < stunHeaderSize+size {
		return peer, nil, sendDrop
	}
	attrs := b[stunHeaderSize : stunHeaderSize+size]
	var addr []byte
	var haveData bool
	for len(attrs) > 0 {
		if len(attrs) < 4 {
			return peer, nil, sendDrop
		}
		t := binary.BigEndian.Uint16(attrs[0:2])
		n := int(binary.BigEndian.Uint16(attrs[2:4]))
		padded := (n + 3) &^ 3
		if len(attrs)-4 < padded {
			return peer, nil, sendDrop
		}
		val := attrs[4 : 4+n]
		attrs = attrs[4+padded:]
		switch {
		case t == attrXORPeerAddress:
			if addr == nil {
				addr = val
			}
		case t == attrData:
			if !haveData {
				data, haveData = val, true
			}
		case t < 0x8000:
			return peer, nil, sendPion
		}
	}
	if !haveData || len(addr) <= 4 {
		return peer, nil, sendDrop
	}
	// XOR-PEER-ADDRESS (RFC 8489 §14.2): family, port and address XORed
	// with the magic cookie and, for IPv6, the transaction ID.
	port := binary.BigEndian.Uint16(addr[2:4]) ^ uint16(stunMagicCookie>>16)
	switch binary.BigEndian.Uint16(addr[0:2]) {
	case 1:
		if len(addr) != 8 {
			return peer, nil, shortOrLong(len(addr) < 8)
		}
		var ip [4]byte
		binary.BigEndian.PutUint32(ip[:], binary.BigEndian.Uint32(addr[4:8])^stunMagicCookie)
		return netip.AddrPortFrom(netip.AddrFrom4(ip), port), data, sendRelay
	case 2:
		if len(addr) != 20 {
			return peer, nil, shortOrLong(len(addr) < 20)
		}
		var ip [16]byte
		binary.BigEndian.PutUint32(ip[:4], binary.BigEndian.Uint32(addr[4:8])^stunMagicCookie)
		for i := 4; i < 16; i++ {
			ip[i] = addr[4+i] ^ b[4+i] // the transaction ID is b[8:20]
		}
		return netip.AddrPortFrom(netip.AddrFrom16(ip).Unmap(), port), data, sendRelay
	}
	return peer, nil, sendDrop
}

// shortOrLong is the verdict on an address of the wrong length: pion
// refuses a longer one (stun.CheckOverflow) but reads a shorter one as an
// address with zeros at the end, a case left to it.
func shortOrLong(short bool) sendVerdict {
	if short {
		return sendPion
	}
	return sendDrop
}

// frameChannelData writes, around the n bytes of data at buf[dataHeadroom:],
// the ChannelData header for channel num and zero padding to a multiple of
// 4, as pion's server sends it on every transport (proto.ChannelData.Encode
// pads on UDP too), and returns the frame.
func frameChannelData(buf []byte, n int, num uint16) []byte {
	start := dataHeadroom - 4
	binary.BigEndian.PutUint16(buf[start:], num)
	binary.BigEndian.PutUint16(buf[start+2:], uint16(n))
	end := dataHeadroom + n
	padded := start + 4 + (n+3)&^3
	clear(buf[end:padded])
	return buf[start:padded]
}

// frameDataIndication writes, around the n bytes of data at
// buf[dataHeadroom:], a Data indication from peer (RFC 8656 §11.3) as
// pion's server builds it: XOR-PEER-ADDRESS then DATA, zero padding, the
// transaction ID from tid. It returns the message.
func frameDataIndication(buf []byte, n int, peer netip.AddrPort, tid *[12]byte) []byte {
	alen := 8
	if peer.Addr().Is6() {
		alen = 20
	}
	start := dataHeadroom - 4 - (4 + alen) - stunHeaderSize
	h := buf[start:dataHeadroom]
	padded := (n + 3) &^ 3
	binary.BigEndian.PutUint16(h[0:2], typeDataIndication)
	binary.BigEndian.PutUint16(h[2:4], uint16(4+alen+4+padded))
	binary.BigEndian.PutUint32(h[4:8], stunMagicCookie)
	copy(h[8:20], tid[:])
	a := h[stunHeaderSize:]
	binary.BigEndian.PutUint16(a[0:2], attrXORPeerAddress)
	binary.BigEndian.PutUint16(a[2:4], uint16(alen))
	a[4] = 0
	a[5] = 1
	if alen == 20 {
		a[5] = 2
	}
	binary.BigEndian.PutUint16(a[6:8], peer.Port()^uint16(stunMagicCookie>>16))
	if alen == 8 {
		ip := peer.Addr().As4()
		binary.BigEndian.PutUint32(a[8:12], binary.BigEndian.Uint32(ip[:])^stunMagicCookie)
	} else {
		ip := peer.Addr().As16()
		binary.BigEndian.PutUint32(a[8:12], binary.BigEndian.Uint32(ip[:4])^stunMagicCookie)
		for i := 4; i < 16; i++ {
			a[8+i] = ip[i] ^ tid[i-4]
		}
	}
	d := a[4+alen:]
	binary.BigEndian.PutUint16(d[0:2], attrData)
	binary.BigEndian.PutUint16(d[2:4], uint16(n))
	clear(buf[dataHeadroom+n : dataHeadroom+padded])
	return buf[start : dataHeadroom+padded]
}
