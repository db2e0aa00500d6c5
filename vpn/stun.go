package vpn

import (
	"encoding/binary"
	"net"
	"net/netip"
	"time"

	"github.com/pion/stun/v4"
	"golang.org/x/time/rate"

	"github.com/tariq-vpn/tariq/internal/source"
)

// Every WireGuard port answers STUN Binding requests (RFC 8489, formerly
// 5389), so that a browser's WebRTC stack, given stun:HOST:PORT as an ICE
// server, learns from the member's own network whether UDP to that port
// gets through: a server-reflexive candidate comes back only if it does.
// The answer goes out of the socket the request came in on and the request
// never reaches wireguard-go.
//
// WireGuard messages cannot be mistaken for STUN: their first byte is the
// message type 1-4 (and on the obfuscated port, AmneziaWG messages are
// recognised before STUN is considered), while a STUN Binding request
// starts 0x00 0x01 and carries the magic cookie at bytes 4-7 (RFC 8489
// section 5).

const (
	stunHeaderSize  = 20
	stunMagicCookie = 0x2112A442
)

// isSTUNBinding reports whether b is a well-formed STUN Binding request
// header: the first two bits zero, type 0x0001 (Binding, class request),
// the magic cookie, and a length that matches the datagram and is a
// multiple of 4.
func isSTUNBinding(b []byte) bool {
	return len(b) >= stunHeaderSize &&
		b[0] == 0x00 && b[1] == 0x01 &&
		binary.BigEndian.Uint32(b[4:8]) == stunMagicCookie &&
		int(binary.BigEndian.Uint16(b[2:4])) == len(b)-stunHeaderSize &&
		len(b)%4 == 0
}

// stunReply returns the Binding success response to request b (see
// isSTUNBinding) from src: the same transaction ID and XOR-MAPPED-ADDRESS
// with src's address and port, plus FINGERPRINT if the request had one.
// Nothing else (no SOFTWARE): the port should say no more about itself
// than it must. It returns nil if b's attributes do not parse.
func stunReply(b []byte, ap netip.AddrPort) []byte {
	req := &stun.Message{Raw: append([]byte(nil), b...)}
	if err := req.Decode(); err != nil || req.Type != stun.BindingRequest {
		return nil
	}
	setters := []stun.Setter{
		stun.NewTransactionIDSetter(req.TransactionID),
		stun.BindingSuccess,
		&stun.XORMappedAddress{IP: net.IP(ap.Addr().Unmap().AsSlice()), Port: int(ap.Port())},
	}
	if req.Contains(stun.AttrFingerprint) {
		setters = append(setters, stun.Fingerprint)
	}
	resp, err := stun.Build(setters...)
	if err != nil {
		return nil
	}
	return resp.Raw
}

// stunLimits bound STUN answers, on all of the bind's sockets together.
// Every source (an IPv4 address or an IPv6 /64, source.Key) has a budget of
// its own, so that one source, spoofed or not, cannot use up what the
// others get (issue 9, item 8: a one-source flood at the old global 200/s
// left the invite page's reachability check 11 answers of 20); the global
// budget, higher, is only the last line against a flood from many sources.
// Either way a flood of spoofed requests cannot turn the ports into much of
// a reflector: an answer is about as large as the request.
type stunLimits struct {
	PerSourceRate  rate.Limit // answers a second to one source
	PerSourceBurst int
	Sources        int // sources tracked at once (about 200 bytes each)
	GlobalRate     rate.Limit
	GlobalBurst    int
}

// defaultSTUNLimits: a browser's reachability check sends one request per
// port and network interface, and retransmits a few times if it hears
// nothing (RFC 8489 section 6.2.1): well within a burst of 40 from one
// source.
func defaultSTUNLimits() stunLimits {
	return stunLimits{PerSourceRate: 20, PerSourceBurst: 40, Sources: 4096, GlobalRate: 2000, GlobalBurst: 2000}
}

// stunBudget applies stunLimits.
type stunBudget struct {
	per *source.Limiter
	all *rate.Limiter
}

func newSTUNBudget(l stunLimits) *stunBudget {
	return &stunBudget{per: source.NewLimiter(l.PerSourceRate, l.PerSourceBurst, l.Sources), all: rate.NewLimiter(l.GlobalRate, l.GlobalBurst)}
}

// allow reports whether a request from a, arriving at now, gets an
// answer, and takes it from the budgets. The source's budget comes first,
// so a source over its own budget takes nothing from the global one.
func (b *stunBudget) allow(a netip.Addr, now time.Time) bool {
	return b.per.Allow(source.Key(a), now) && b.all.AllowN(now, 1)
}
