package relay

import (
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"

	"github.com/tariq-vpn/tariq/config"
)

// quiet is how long a test listens to show that a packet was dropped.
const quiet = 400 * time.Millisecond

// rawClient drives TURN by hand over one UDP 5-tuple or one TCP or TLS
// connection, so a test sees every error code (pion's client hides them)
// and can send encodings pion's client never would.
type rawClient struct {
	t          *testing.T
	conn       net.Conn
	framer     *streamFramer // for a stream; nil on UDP
	user, pass string
	realm      string
	nonce      string
	key        []byte
	inbox      [][]byte // data frames read while waiting for a response
}

func newRawClient(t *testing.T, server net.Addr, user, pass string) *rawClient {
	t.Helper()
	c, err := net.Dial("udp", server.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawClient{t: t, conn: c, user: user, pass: pass}
}

// newRawStreamClient is newRawClient over a TCP or TLS connection.
func newRawStreamClient(t *testing.T, conn net.Conn, user, pass string) *rawClient {
	t.Cleanup(func() { conn.Close() })
	return &rawClient{t: t, conn: conn, framer: newStreamFramer(conn, 1<<16), user: user, pass: pass}
}

// read returns the next datagram, or frame on a stream.
func (c *rawClient) read(b []byte) (int, error) {
	if c.framer != nil {
		f, err := c.framer.next(nil)
		return copy(b, f), err
	}
	return c.conn.Read(b)
}

// request sends one request of method, authenticating it after the 401
// nonce challenge (and a 438 stale nonce), and returns the final response.
func (c *rawClient) request(method stun.Method, attrs ...stun.Setter) *stun.Message {
	c.t.Helper()
	for range 3 {
		setters := append([]stun.Setter{stun.TransactionID, stun.NewType(method, stun.ClassRequest)}, attrs...)
		if c.key != nil {
			setters = append(setters, stun.NewUsername(c.user), stun.NewRealm(c.realm), stun.NewNonce(c.nonce), stun.MessageIntegrity(c.key))
		}
		resp := c.transact(stun.MustBuild(setters...))
		code := errorCode(resp)
		if (code == stun.CodeUnauthorized && c.key == nil) || code == stun.CodeStaleNonce {
			var nonce stun.Nonce
			var realm stun.Realm
			if nonce.GetFrom(resp) != nil || realm.GetFrom(resp) != nil {
				return resp
			}
			c.nonce, c.realm = nonce.String(), realm.String()
			c.key = turn.GenerateAuthKey(c.user, c.realm, c.pass)
			continue
		}
		return resp
	}
	c.t.Fatalf("%v: only nonce challenges", method)
	return nil
}

func (c *rawClient) transact(req *stun.Message) *stun.Message {
	c.t.Helper()
	if _, err := c.conn.Write(req.Raw); err != nil {
		c.t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	buf := make([]byte, 2048)
	for {
		c.conn.SetReadDeadline(deadline)
		n, err := c.read(buf)
		if err != nil {
			c.t.Fatalf("%v: no response: %v", req.Type, err)
		}
		frame := append([]byte(nil), buf[:n]...)
		resp := &stun.Message{Raw: frame}
		if !stun.IsMessage(frame) || resp.Decode() != nil || resp.TransactionID != req.TransactionID {
			c.inbox = append(c.inbox, frame)
			continue
		}
		return resp
	}
}

func (c *rawClient) allocate(attrs ...stun.Setter) *stun.Message {
	c.t.Helper()
	return c.request(stun.MethodAllocate, append([]stun.Setter{rawAttr{attrRequestedTransport, []byte{protoUDP, 0, 0, 0}}}, attrs...)...)
}

// send relays data to peer with a Send indication.
func (c *rawClient) send(peer netip.AddrPort, data string) {
	c.t.Helper()
	m := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodSend, stun.ClassIndication),
		xorPeer(peer), rawAttr{stun.AttrData, []byte(data)})
	if _, err := c.conn.Write(m.Raw); err != nil {
		c.t.Fatal(err)
	}
}

// channelData relays data over a bound channel.
func (c *rawClient) channelData(ch uint16, data string) {
	c.t.Helper()
	b := make([]byte, 4, 4+len(data)+3)
	binary.BigEndian.PutUint16(b[0:2], ch)
	binary.BigEndian.PutUint16(b[2:4], uint16(len(data)))
	b = append(b, data...)
	if c.framer != nil {
		b = append(b, make([]byte, -len(b)&3)...) // RFC 8656 §12.5: padded on streams
	}
	if _, err := c.conn.Write(b); err != nil {
		c.t.Fatal(err)
	}
}

// readData returns the next relayed datagram, from a Data indication
// ("from" is the peer) or ChannelData ("from" is "channel 0x4000"); ok is
// false if none arrives within wait.
func (c *rawClient) readData(wait time.Duration) (from, data string, ok bool) {
	c.t.Helper()
	deadline := time.Now().Add(wait)
	buf := make([]byte, 2048)
	for {
		var frame []byte
		if len(c.inbox) > 0 {
			frame, c.inbox = c.inbox[0], c.inbox[1:]
		} else {
			c.conn.SetReadDeadline(deadline)
			n, err := c.read(buf)
			if err != nil {
				return "", "", false
			}
			frame = buf[:n]
		}
		if len(frame) >= 4 && frame[0]&0xC0 == 0x40 {
			n := int(binary.BigEndian.Uint16(frame[2:4]))
			if 4+n <= len(frame) {
				return fmt.Sprintf("channel %#x", binary.BigEndian.Uint16(frame[0:2])), string(frame[4 : 4+n]), true
			}
			continue
		}
		m := &stun.Message{Raw: frame}
		if m.Decode() != nil || m.Type != stun.NewType(stun.MethodData, stun.ClassIndication) {
			continue
		}
		var peer stun.XORMappedAddress
		d, err := m.Get(stun.AttrData)
		if peer.GetFromAs(m, stun.AttrXORPeerAddress) != nil || err != nil {
			continue
		}
		return peer.String(), string(d), true
	}
}

// succeeded fails t unless resp is a success response.
func succeeded(t *testing.T, what string, resp *stun.Message) {
	t.Helper()
	if resp.Type.Class != stun.ClassSuccessResponse {
		t.Fatalf("%s: %v, error code %d, want success", what, resp.Type, errorCode(resp))
	}
}

// refused fails t unless resp is an error response with code, carrying a
// MESSAGE-INTEGRITY that verifies with the client's key (RFC 8489 §9.2.4:
// an authenticated request gets an authenticated error).
func refused(t *testing.T, c *rawClient, resp *stun.Message, code stun.ErrorCode) {
	t.Helper()
	if resp.Type.Class != stun.ClassErrorResponse || errorCode(resp) != code {
		t.Fatalf("%v with error code %d, want error %d", resp.Type, errorCode(resp), code)
	}
	if err := stun.MessageIntegrity(c.key).Check(resp); err != nil {
		t.Errorf("error %d lacks a valid MESSAGE-INTEGRITY: %v", code, err)
	}
}

func relayedAddr(t *testing.T, resp *stun.Message) netip.AddrPort {
	t.Helper()
	var a stun.XORMappedAddress
	if err := a.GetFromAs(resp, stun.AttrXORRelayedAddress); err != nil {
		t.Fatalf("allocate response without XOR-RELAYED-ADDRESS: %v", err)
	}
	ip, _ := netip.AddrFromSlice(a.IP)
	return netip.AddrPortFrom(ip.Unmap(), uint16(a.Port))
}

// xorPeerAttr is an XOR-PEER-ADDRESS written byte by byte (RFC 8489
// §14.2), so that an IPv4-mapped address goes on the wire as family IPv6
// with 16 bytes, as an attacker would send it; stun.XORMappedAddress would
// quietly turn it into family IPv4.
type xorPeerAttr struct {
	ip   netip.Addr
	port uint16
}

func xorPeer(ap netip.AddrPort) xorPeerAttr { return xorPeerAttr{ap.Addr(), ap.Port()} }

func (p xorPeerAttr) AddTo(m *stun.Message) error {
	ip := p.ip.AsSlice()
	fam := byte(1)
	if len(ip) == 16 {
		fam = 2
	}
	var key [16]byte
	binary.BigEndian.PutUint32(key[:4], stunMagicCookie)
	copy(key[4:], m.TransactionID[:])
	v := make([]byte, 4+len(ip))
	v[1] = fam
	binary.BigEndian.PutUint16(v[2:4], p.port^uint16(stunMagicCookie>>16))
	for i := range ip {
		v[4+i] = ip[i] ^ key[i]
	}
	m.Add(stun.AttrXORPeerAddress, v)
	return nil
}

func channelNumber(ch uint16) stun.Setter {
	return rawAttr{stun.AttrChannelNumber, []byte{byte(ch >> 8), byte(ch), 0, 0}}
}

func lifetime(d time.Duration) stun.Setter {
	return rawAttr{stun.AttrLifetime, binary.BigEndian.AppendUint32(nil, uint32(d/time.Second))}
}

// udpPeer is a plain UDP socket a test reads and writes by hand.
func udpPeer(t *testing.T, addr string) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func apOf(a net.Addr) netip.AddrPort {
	ap, _ := addrPort(a)
	return ap
}

// recv returns the next datagram on c, failing t if none arrives in 5 s.
func recv(t *testing.T, c net.PacketConn) (string, net.Addr) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2048)
	n, from, err := c.ReadFrom(buf)
	if err != nil {
		t.Fatalf("nothing received on %v: %v", c.LocalAddr(), err)
	}
	return string(buf[:n]), from
}

// silent fails t if anything arrives on c within quiet.
func silent(t *testing.T, c net.PacketConn, why string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(quiet))
	buf := make([]byte, 2048)
	if n, from, err := c.ReadFrom(buf); err == nil {
		t.Errorf("%s: %v received %q from %v", why, c.LocalAddr(), buf[:n], from)
	}
}

// portRangeWith returns a relay port range of thousands of ports that
// contains in (unless it is 0) and leaves out out, so tests can place a
// kernel-chosen port on either side of the own-address rule.
func portRangeWith(in, out int) config.PortRange {
	switch {
	case in == 0 && out < 49152:
		return config.PortRange{Min: 49152, Max: 65535}
	case in == 0 && out-49152 > 65535-out:
		return config.PortRange{Min: 49152, Max: uint16(out - 1)}
	case in == 0:
		return config.PortRange{Min: uint16(out + 1), Max: 65535}
	case in < out:
		return config.PortRange{Min: uint16(max(1024, in-8000)), Max: uint16(out - 1)}
	}
	return config.PortRange{Min: uint16(out + 1), Max: uint16(min(65535, in+8000))}
}

func ownAddrs(ss ...string) func() ([]netip.Addr, error) {
	return func() ([]netip.Addr, error) { return addrs(ss...), nil }
}

// rawClientOver returns a raw client over transport (udp, tcp or tls).
func (r *testRelay) rawClientOver(t *testing.T, transport, user, pass string) *rawClient {
	t.Helper()
	udp, tcp, tlsAddrs := r.Addrs()
	switch transport {
	case "tcp":
		conn, err := net.Dial("tcp", tcp[0].String())
		if err != nil {
			t.Fatal(err)
		}
		return newRawStreamClient(t, conn, user, pass)
	case "tls":
		conn, err := tls.Dial("tcp", tlsAddrs[0].String(), &tls.Config{RootCAs: r.caPool, ServerName: "127.0.0.1", NextProtos: []string{"stun.turn"}})
		if err != nil {
			t.Fatal(err)
		}
		return newRawStreamClient(t, conn, user, pass)
	}
	return newRawClient(t, udp[0], user, pass)
}
