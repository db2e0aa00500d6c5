package vpn

import (
	"crypto/hmac"
	"crypto/rand"
	"encoding/binary"
	mrand "math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/blake2s"
	"golang.org/x/crypto/chacha20poly1305"
	"golang.zx2c4.com/wireguard/conn"

	"github.com/tariq-vpn/tariq/internal/wgconf"
)

// AmneziaWG 1.x, as amneziawg-go v0.2.12 puts it on the wire (and as the
// AmneziaWG and AmneziaVPN apps, built on it, speak it):
//
//   - Before every handshake initiation it sends, a side sends Jc junk
//     datagrams of random bytes, each of a random size in [Jmin, Jmax)
//     (device/send.go, SendHandshakeInitiation and createJunkPackets:
//     rand.Intn(Jmax-Jmin)+Jmin).
//   - An initiation is S1 random bytes then the 148-byte WireGuard message
//     with H1 in its 4-byte type field; a response is S2 random bytes then
//     the 92-byte message with H2 (send.go, appendJunk before the message).
//     A cookie reply (64 bytes) carries H3 and transport data H4, both
//     unpadded (SendHandshakeCookie; MessageTransportType in
//     device/noise-protocol.go).
//   - The MACs are computed over the message as sent, H1 or H2 included
//     (send.go: cookieGenerator.AddMacs after binary.Write of the message
//     whose Type is the custom header), and a cookie reply's AEAD binds that
//     MAC1 (device/cookie.go, identical to wireguard-go's).
//   - A receiver sorts by size first (device/receive.go,
//     RoutineReceiveIncoming with packetSizeToMsgType and msgTypeToJunkSize
//     from device.go handlePostConfig): 148+S1 bytes with H1 at offset S1
//     is an initiation, 92+S2 with H2 at S2 a response, 64 with H3 a cookie
//     reply; anything else is transport if it starts with H4 and dropped
//     otherwise (junk included).
//
// tariq keeps wireguard-go unmodified, so the bind translates between that
// form and plain WireGuard. Because the MACs cover the header, translating a
// handshake message means checking its MAC1 under the key it was made with
// (refusing it otherwise, so MAC1 still shields the handshake from
// strangers) and computing it afresh under the new header. WireGuard's
// defence under load (the whitepaper's cookie reply message and MAC2) is
// carried across by opening and re-sealing cookie replies, whose AEAD
// binds MAC1, and by redoing MAC2 with the cookie learnt that way.

// WireGuard message sizes and MAC offsets (wireguard-go device/noise-protocol.go).
const (
	wgInitSize      = wgconf.InitSize
	wgRespSize      = wgconf.RespSize
	wgCookieSize    = 64
	wgTransportMin  = 32 // header 16 + Poly1305 tag: a keepalive
	macSize         = blake2s.Size128
	labelMAC1       = "mac1----"
	labelCookie     = "cookie--"
	awgRecordRing   = 256              // handshake messages remembered for cookie replies
	awgRecordMaxAge = 30 * time.Second // a cookie reply comes at once or not at all
	awgCookieMaxAge = 2 * time.Minute  // wireguard-go's CookieRefreshTime
	awgMaxCookies   = 4096
)

// macKeys are the keys derived from one public key for WireGuard's MAC1
// and cookie replies (wireguard-go device/cookie.go, Init).
type macKeys struct {
	pub    Key
	mac1   [blake2s.Size]byte // BLAKE2s-256("mac1----" || pub)
	cookie [blake2s.Size]byte // BLAKE2s-256("cookie--" || pub)
}

func newMACKeys(pub Key) macKeys {
	k := macKeys{pub: pub}
	for _, d := range []struct {
		label string
		out   *[blake2s.Size]byte
	}{{labelMAC1, &k.mac1}, {labelCookie, &k.cookie}} {
		h, _ := blake2s.New256(nil)
		h.Write([]byte(d.label))
		h.Write(pub[:])
		h.Sum(d.out[:0])
	}
	return k
}

// awgKeys is who this side is (own: the key MACs of messages to us are made
// with) and who it talks to (peers: the keys of messages it sends).
type awgKeys struct {
	own   macKeys
	peers []macKeys
}

// hsRecord is one handshake message that went through the bind, kept so
// that a cookie reply to it can be re-sealed: the reply's AEAD binds the
// MAC1 of the message it answers, and the two sides saw different MAC1s.
type hsRecord struct {
	sender uint32 // the message's sender index, which the cookie reply names
	// peer holds the key a cookie reply to the message is sealed with: the
	// peer's for a message sent, our own for one received (each side seals
	// with a key derived from its own public key).
	peer     macKeys
	wg, wire [macSize]byte // MAC1 as wireguard-go made or checked it, and as on the wire
	at       time.Time
}

type cookieEntry struct {
	cookie [macSize]byte
	at     time.Time
}

// awg translates between WireGuard and AmneziaWG 1.x for one socket. The
// transport path (both ways: only the 4-byte header changes) takes no lock
// and allocates nothing; handshake messages take mu.
type awg struct {
	p        wgconf.AmneziaWG
	initSize int       // 148+S1
	respSize int       // 92+S2
	h        [5]uint32 // h[t]: the wire header of WireGuard message type t
	keys     atomic.Pointer[awgKeys]
	now      func() time.Time

	mu          sync.Mutex                      // guards everything below
	received    [awgRecordRing]hsRecord         // handshake messages received, ring
	sent        [awgRecordRing]hsRecord         // handshake messages sent, ring
	nReceived   int                             // next slot in received
	nSent       int                             // next slot in sent
	srcCookies  map[string]cookieEntry          // cookies wireguard-go gave out, by remote address (DstToBytes)
	peerCookies map[Key]cookieEntry             // cookies peers gave us, by their public key
	stats       struct{ badMAC, noPeer uint64 } // handshakes refused, for tests and debugging
}

// newAWG returns the translator for parameters p (checked by
// checkAmneziaWG); own is this side's public key and peers those it talks
// to, updated later with setPeers.
func newAWG(p wgconf.AmneziaWG, own Key, peers []Key) *awg {
	a := &awg{
		p:           p,
		initSize:    wgInitSize + p.S1,
		respSize:    wgRespSize + p.S2,
		h:           [5]uint32{0, p.H1, p.H2, p.H3, p.H4},
		now:         time.Now,
		srcCookies:  map[string]cookieEntry{},
		peerCookies: map[Key]cookieEntry{},
	}
	a.keys.Store(&awgKeys{own: newMACKeys(own)})
	a.setPeers(peers)
	return a
}

// setPeers replaces the public keys of the devices this side talks to.
func (a *awg) setPeers(peers []Key) {
	old := a.keys.Load()
	k := &awgKeys{own: old.own, peers: make([]macKeys, 0, len(peers))}
	known := map[Key]macKeys{}
	for _, p := range old.peers {
		known[p.pub] = p
	}
	for _, p := range peers {
		mk, ok := known[p]
		if !ok {
			mk = newMACKeys(p)
		}
		k.peers = append(k.peers, mk)
	}
	a.keys.Store(k)
}

func le32(b []byte) uint32       { return binary.LittleEndian.Uint32(b) }
func putLE32(b []byte, v uint32) { binary.LittleEndian.PutUint32(b, v) }

func mac(key []byte, msg []byte) (out [macSize]byte) {
	h, _ := blake2s.New128(key)
	h.Write(msg)
	h.Sum(out[:0])
	return out
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// decode turns the datagram b, received from src, into the WireGuard
// message wireguard-go expects, in place, and returns its length. ok is
// false when b is not AmneziaWG at all (junk, a probe, a STUN request: the
// caller decides); n is 0 with ok true when it looked like AmneziaWG but
// must be dropped (a handshake whose MAC1 is wrong, a cookie reply to
// nothing we sent).
func (a *awg) decode(b []byte, src conn.Endpoint) (n int, ok bool) {
	size := len(b)
	switch {
	case size == a.initSize && le32(b[a.p.S1:]) == a.h[1]:
		copy(b, b[a.p.S1:])
		return a.decodeHandshake(b[:wgInitSize], 1, src), true
	case size == a.respSize && le32(b[a.p.S2:]) == a.h[2]:
		copy(b, b[a.p.S2:])
		return a.decodeHandshake(b[:wgRespSize], 2, src), true
	case size >= wgTransportMin && le32(b) == a.h[4]:
		putLE32(b, 4)
		return size, true
	case size == wgCookieSize && le32(b) == a.h[3]:
		return a.decodeCookie(b), true
	}
	return 0, false
}

// decodeHandshake checks the MAC1 of initiation or response m (sent to us,
// so made with our own key) over the header as received, restores type
// typ and makes MAC1 afresh; MAC2, if there is one and it was made with a
// cookie wireguard-go handed src, is made afresh too.
func (a *awg) decodeHandshake(m []byte, typ uint32, src conn.Endpoint) int {
	k := a.keys.Load()
	smac2 := len(m) - macSize
	smac1 := smac2 - macSize
	var wire [macSize]byte
	copy(wire[:], m[smac1:smac2])
	if got := mac(k.own.mac1[:], m[:smac1]); !hmac.Equal(got[:], wire[:]) {
		a.mu.Lock()
		a.stats.badMAC++
		a.mu.Unlock()
		return 0
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	var cookie *[macSize]byte
	if !isZero(m[smac2:]) {
		if c, ok := a.srcCookies[string(src.DstToBytes())]; ok && a.now().Sub(c.at) < awgCookieMaxAge {
			if want := mac(c.cookie[:], m[:smac2]); hmac.Equal(want[:], m[smac2:]) {
				cookie = &c.cookie
			}
		}
	}
	putLE32(m, typ)
	wg := mac(k.own.mac1[:], m[:smac1])
	copy(m[smac1:], wg[:])
	if cookie != nil {
		m2 := mac(cookie[:], m[:smac2])
		copy(m[smac2:], m2[:])
	} else {
		clear(m[smac2:])
	}
	a.received[a.nReceived] = hsRecord{sender: le32(m[4:]), peer: k.own, wg: wg, wire: wire, at: a.now()}
	a.nReceived = (a.nReceived + 1) % awgRecordRing
	return len(m)
}

// decodeCookie re-seals a peer's cookie reply to a handshake message we
// sent: the peer sealed it to the MAC1 it saw, wireguard-go opens it with
// the MAC1 it made. The cookie is kept, for the MAC2 of our next messages.
func (a *awg) decodeCookie(b []byte) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	rec, ok := a.lookupLocked(&a.sent, le32(b[4:]))
	if !ok {
		return 0
	}
	aead, _ := chacha20poly1305.NewX(rec.peer.cookie[:])
	cookie, err := aead.Open(nil, b[8:32], b[32:wgCookieSize], rec.wire[:])
	if err != nil {
		return 0
	}
	storeCookie(a, a.peerCookies, rec.peer.pub, cookie)
	rand.Read(b[8:32])
	aead.Seal(b[32:32], b[8:32], cookie, rec.wg[:])
	putLE32(b, 3)
	return wgCookieSize
}

func (a *awg) lookupLocked(ring *[awgRecordRing]hsRecord, sender uint32) (hsRecord, bool) {
	now := a.now()
	for i := range ring {
		if r := ring[i]; r.sender == sender && !r.at.IsZero() && now.Sub(r.at) < awgRecordMaxAge {
			return r, true
		}
	}
	return hsRecord{}, false
}

// storeCookie keeps cookie under k; a.mu must be held.
func storeCookie[K comparable](a *awg, m map[K]cookieEntry, k K, cookie []byte) {
	if len(m) >= awgMaxCookies {
		clear(m) // a flood of sources: forget them all rather than grow
	}
	var e cookieEntry
	copy(e.cookie[:], cookie)
	e.at = a.now()
	m[k] = e
}

// encodeTransport puts H4 in place of type 4 in every message of bufs and
// reports whether they all were transport data; if not, nothing changed.
func (a *awg) encodeTransport(bufs [][]byte) bool {
	for _, b := range bufs {
		if len(b) < wgTransportMin || le32(b) != 4 {
			return false
		}
	}
	for _, b := range bufs {
		putLE32(b, a.h[4])
	}
	return true
}

// encode returns what to send for the WireGuard message b going to dst:
// junk datagrams to send first (before an initiation) and the message in
// AmneziaWG form, or ok false to drop it (a handshake for no known peer, a
// cookie reply to nothing received). b is not changed.
func (a *awg) encode(b []byte, dst conn.Endpoint) (junk [][]byte, msg []byte, ok bool) {
	if len(b) < 4 {
		return nil, nil, false
	}
	switch typ := le32(b); {
	case typ == 1 && len(b) == wgInitSize:
		msg, ok = a.encodeHandshake(b, 1, a.p.S1)
		if ok {
			junk = a.junk()
		}
		return junk, msg, ok
	case typ == 2 && len(b) == wgRespSize:
		msg, ok = a.encodeHandshake(b, 2, a.p.S2)
		return nil, msg, ok
	case typ == 3 && len(b) == wgCookieSize:
		msg, ok = a.encodeCookie(b, dst)
		return nil, msg, ok
	case typ == 4 && len(b) >= wgTransportMin:
		msg = append([]byte(nil), b...)
		putLE32(msg, a.h[4])
		return nil, msg, true
	}
	return nil, nil, false
}

// encodeHandshake pads initiation or response b (to a peer, so its MAC1 is
// made with that peer's key: the peer is found by which key made it),
// puts the custom header in and makes MAC1, and MAC2 if wireguard-go had a
// cookie the peer gave us, afresh.
func (a *awg) encodeHandshake(b []byte, typ uint32, pad int) ([]byte, bool) {
	k := a.keys.Load()
	smac2 := len(b) - macSize
	smac1 := smac2 - macSize
	var peer *macKeys
	for i := range k.peers {
		if got := mac(k.peers[i].mac1[:], b[:smac1]); hmac.Equal(got[:], b[smac1:smac2]) {
			peer = &k.peers[i]
			break
		}
	}
	if peer == nil {
		a.mu.Lock()
		a.stats.noPeer++
		a.mu.Unlock()
		return nil, false
	}
	out := make([]byte, pad+len(b))
	rand.Read(out[:pad])
	m := out[pad:]
	copy(m, b)
	putLE32(m, a.h[typ])
	wire := mac(peer.mac1[:], m[:smac1])
	copy(m[smac1:], wire[:])

	a.mu.Lock()
	defer a.mu.Unlock()
	clear(m[smac2:])
	if !isZero(b[smac2:]) {
		if c, ok := a.peerCookies[peer.pub]; ok && a.now().Sub(c.at) < awgCookieMaxAge {
			if want := mac(c.cookie[:], b[:smac2]); hmac.Equal(want[:], b[smac2:]) {
				m2 := mac(c.cookie[:], m[:smac2])
				copy(m[smac2:], m2[:])
			}
		}
	}
	var wg [macSize]byte
	copy(wg[:], b[smac1:smac2])
	a.sent[a.nSent] = hsRecord{sender: le32(b[4:]), peer: *peer, wg: wg, wire: wire, at: a.now()}
	a.nSent = (a.nSent + 1) % awgRecordRing
	return out, true
}

// encodeCookie re-seals wireguard-go's cookie reply to a handshake message
// we received (sealed to the MAC1 wireguard-go checked) to the MAC1 the
// sender made, and keeps the cookie for translating that sender's MAC2.
func (a *awg) encodeCookie(b []byte, dst conn.Endpoint) ([]byte, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	rec, ok := a.lookupLocked(&a.received, le32(b[4:]))
	if !ok {
		return nil, false
	}
	aead, _ := chacha20poly1305.NewX(rec.peer.cookie[:])
	cookie, err := aead.Open(nil, b[8:32], b[32:wgCookieSize], rec.wg[:])
	if err != nil {
		return nil, false
	}
	storeCookie(a, a.srcCookies, string(dst.DstToBytes()), cookie)
	out := make([]byte, wgCookieSize)
	copy(out, b[:8])
	putLE32(out, a.h[3])
	rand.Read(out[8:32])
	aead.Seal(out[32:32], out[8:32], cookie, rec.wire[:])
	return out, true
}

// junk returns Jc datagrams of random bytes, each of a random size in
// [Jmin, Jmax) (just Jmin when they are equal), as amneziawg-go sends
// before a handshake initiation.
func (a *awg) junk() [][]byte {
	out := make([][]byte, a.p.Jc)
	for i := range out {
		size := a.p.Jmin
		if a.p.Jmax > a.p.Jmin {
			size += mrand.IntN(a.p.Jmax - a.p.Jmin)
		}
		out[i] = make([]byte, size)
		rand.Read(out[i])
	}
	return out
}
