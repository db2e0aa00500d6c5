package relay

import (
	"encoding/binary"
	"net/netip"
	"sync"
)

// replySources makes a UDP listener on the wildcard answer from the address
// each datagram arrived on. Without it the kernel picks the source of every
// reply by route: a member whose WireGuard tunnel carries the server's
// public address hears back from the tunnel address, a client of a second
// (floating) address from the first, and a client whose socket is
// connected, as coturn's and browsers' are, drops the answer.
//
// The read loop notes, per remote, the local address of the datagram just
// read (IP_PKTINFO, IPV6_PKTINFO) twice over: last, for the answer to a
// Binding request, and turn, which Binding requests leave alone, for
// everything else: TURN responses (whose request was the datagram just
// read, so turn is last then) and the relayed data pion sends the client
// at any time, which must come from the address the client allocated on
// even if the same socket has since asked another address for its mapped
// address. Writers (pion's read loop and every allocation of the socket)
// look the remote up and send with that source.
type replySources struct {
	mu sync.RWMutex // guards byRemote
	// byRemote is keyed by the unmapped remote address. It is emptied
	// when full: a remote is noted again by its next datagram.
	byRemote map[netip.AddrPort]arrival

	locals map[localKey]*localAddr // used by the one read loop, without locking
}

// arrival is where one remote's datagrams arrived.
type arrival struct{ last, turn *localAddr }

// localAddr is a local address with the control message that makes a reply
// leave from it. It never changes once made.
type localAddr struct {
	addr netip.Addr
	oob  []byte
}

type localKey struct {
	addr    netip.Addr
	ifindex int32 // only for IPv6 link-local addresses, which need it
}

const (
	replySourcesMax = 16384
	localAddrsMax   = 256
)

func newReplySources() *replySources {
	return &replySources{byRemote: map[netip.AddrPort]arrival{}, locals: map[localKey]*localAddr{}}
}

// noteArrival records that datagram, from remote, arrived on the local
// address in its control messages oob, and returns where remote's TURN
// traffic now leaves from (nil if unknown). It allocates nothing for a
// remote whose datagrams keep arriving where they did.
func (r *replySources) noteArrival(remote netip.AddrPort, oob, datagram []byte) *localAddr {
	la := r.arrival(oob)
	if la == nil {
		return nil
	}
	return r.note(remote, la, isBindingRequest(datagram))
}

// arrival returns the local address named in the control messages oob,
// nil if none can be a source.
func (r *replySources) arrival(oob []byte) *localAddr {
	dst, ifindex, ok := packetDst(oob)
	if !ok {
		return nil
	}
	return r.local(dst, ifindex)
}

// note records a datagram from remote that arrived on la (binding: a
// Binding request or indication) and returns remote's TURN source.
func (r *replySources) note(remote netip.AddrPort, la *localAddr, binding bool) *localAddr {
	key := netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	r.mu.RLock()
	cur, found := r.byRemote[key]
	r.mu.RUnlock()
	next := cur
	next.last = la
	if !binding || next.turn == nil {
		next.turn = la
	}
	if found && next == cur {
		return next.turn
	}
	r.mu.Lock()
	if !found && len(r.byRemote) >= replySourcesMax {
		clear(r.byRemote)
	}
	r.byRemote[key] = next
	r.mu.Unlock()
	return next.turn
}

// turnSource returns where remote's TURN traffic leaves from, nil if
// unknown.
func (r *replySources) turnSource(remote netip.AddrPort) *localAddr {
	key := netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.byRemote[key].turn
}

// local returns the shared localAddr for dst, making it on first sight;
// nil if no control message can name dst as a source.
func (r *replySources) local(dst netip.Addr, ifindex int32) *localAddr {
	if !dst.Is6() || !dst.IsLinkLocalUnicast() {
		ifindex = 0
	}
	k := localKey{dst, ifindex}
	if la, ok := r.locals[k]; ok {
		return la
	}
	if dst.IsMulticast() || dst.IsUnspecified() {
		return nil
	}
	oob := sourceControl(dst, ifindex)
	if oob == nil {
		return nil
	}
	if len(r.locals) >= localAddrsMax {
		clear(r.locals)
	}
	la := &localAddr{addr: dst, oob: oob}
	r.locals[k] = la
	return la
}

// source returns the control message that sends b to remote from the
// address remote wrote to, or nil if remote is unknown.
func (r *replySources) source(remote netip.AddrPort, b []byte) []byte {
	key := netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	r.mu.RLock()
	a, ok := r.byRemote[key]
	r.mu.RUnlock()
	if !ok {
		return nil
	}
	la := a.turn
	if isBindingResponse(b) {
		la = a.last
	}
	if la == nil {
		return nil
	}
	return la.oob
}

// stunType returns the STUN message type of b, or false if b is no STUN
// message (ChannelData, garbage).
func stunType(b []byte) (uint16, bool) {
	if len(b) < stunHeaderSize || b[0]&0xC0 != 0 || binary.BigEndian.Uint32(b[4:8]) != stunMagicCookie {
		return 0, false
	}
	return binary.BigEndian.Uint16(b[0:2]), true
}

// isBindingRequest reports whether b is a Binding request or indication
// (RFC 8489 §5: method 0x001; classes request 0x0001, indication 0x0011).
func isBindingRequest(b []byte) bool {
	t, ok := stunType(b)
	return ok && (t == 0x0001 || t == 0x0011)
}

// isBindingResponse reports whether b is a Binding success (0x0101) or
// error (0x0111) response.
func isBindingResponse(b []byte) bool {
	t, ok := stunType(b)
	return ok && (t == 0x0101 || t == 0x0111)
}
