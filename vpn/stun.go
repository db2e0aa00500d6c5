package vpn

import (
	"encoding/binary"
	"net"

	"github.com/pion/stun/v4"
	"golang.zx2c4.com/wireguard/conn"
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
func stunReply(b []byte, src conn.Endpoint) []byte {
	req := &stun.Message{Raw: append([]byte(nil), b...)}
	if err := req.Decode(); err != nil || req.Type != stun.BindingRequest {
		return nil
	}
	ap, ok := endpointAddrPort(src)
	if !ok {
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
