package relay

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/pion/stun/v4"

	"github.com/tariq-vpn/tariq/internal/testutil"
)

// readFrame returns the next frame the relay sends c that is not a
// response to a request (ChannelData, an indication), or nil if none
// comes within wait.
func (c *rawClient) readFrame(wait time.Duration) []byte {
	c.t.Helper()
	if len(c.inbox) > 0 {
		f := c.inbox[0]
		c.inbox = c.inbox[1:]
		return f
	}
	buf := make([]byte, 1<<16)
	c.conn.SetReadDeadline(time.Now().Add(wait))
	n, err := c.read(buf)
	if err != nil {
		return nil
	}
	return append([]byte(nil), buf[:n]...)
}

// canonical returns frame with what differs between two runs of the same
// exchange taken out: a Data indication's random transaction ID (zeroed,
// with an IPv6 XOR-PEER-ADDRESS, which is XORed with it, decoded first).
// ChannelData is returned as it is.
func canonical(frame []byte) []byte {
	f := append([]byte(nil), frame...)
	if len(f) < stunHeaderSize || binary.BigEndian.Uint16(f[0:2]) != typeDataIndication {
		return f
	}
	for a := f[stunHeaderSize:]; len(a) >= 4; {
		t, n := binary.BigEndian.Uint16(a[0:2]), int(binary.BigEndian.Uint16(a[2:4]))
		if 4+n > len(a) {
			break
		}
		if t == attrXORPeerAddress && n == 20 {
			for i := 4; i < 16; i++ {
				a[8+i] ^= f[4+i]
			}
		}
		a = a[min(len(a), 4+(n+3)&^3):]
	}
	clear(f[8:20])
	return f
}

// exchange is the script TestDataPathMatchesPion plays on a data path: the
// same client and peer datagrams, in the same order, and what came out
// where, one line each.
type exchange struct {
	t        *testing.T
	c        *rawClient
	relayed  netip.AddrPort
	p1, p2   *net.UDPConn
	stranger *net.UDPConn // an allowed address with no permission; nil for IPv6
	log      []string
}

func (x *exchange) atPeer(name string, p *net.UDPConn) {
	x.t.Helper()
	p.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	n, from, err := p.ReadFromUDPAddrPort(buf)
	if err != nil {
		x.log = append(x.log, name+": nothing")
		return
	}
	if from != x.relayed {
		x.t.Errorf("%s: datagram from %v, want the relayed address %v", name, from, x.relayed)
	}
	x.log = append(x.log, name+": "+hex.EncodeToString(buf[:n]))
}

func (x *exchange) atClient() {
	x.t.Helper()
	f := x.c.readFrame(5 * time.Second)
	if f == nil {
		x.log = append(x.log, "client: nothing")
		return
	}
	x.log = append(x.log, "client: "+hex.EncodeToString(canonical(f)))
}

// nothing records whether anything arrives at the peers or the client
// within quiet.
func (x *exchange) nothing(what string) {
	x.t.Helper()
	got := 0
	for _, p := range []*net.UDPConn{x.p1, x.p2, x.stranger} {
		if p == nil {
			continue
		}
		p.SetReadDeadline(time.Now().Add(quiet / 4))
		buf := make([]byte, 4096)
		if _, err := p.Read(buf); err == nil {
			got++
		}
	}
	if f := x.c.readFrame(quiet / 4); f != nil {
		got++
	}
	x.log = append(x.log, fmt.Sprintf("%s: %d datagrams", what, got))
}

func (x *exchange) toRelay(p *net.UDPConn, b []byte) {
	x.t.Helper()
	if _, err := p.WriteToUDPAddrPort(b, x.relayed); err != nil {
		x.t.Fatal(err)
	}
}

func payload(n int, tag byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = tag + byte(i)
	}
	return b
}

func (x *exchange) play(stream bool) {
	t, c := x.t, x.c
	p1, p2 := apOf(x.p1.LocalAddr()), apOf(x.p2.LocalAddr())
	sizes := []int{0, 1, 4, 5, 8, 172, 1200}
	chanSizes := sizes
	if stream {
		// pion's stream framing holds back ChannelData frames of 4 and 8
		// bytes (TestStreamSmallChannelData); on pion's data path they would
		// come out one frame late, which says nothing about the bytes.
		chanSizes = []int{5, 8, 172, 1200}
	}
	succeeded(t, "create permission", c.request(stun.MethodCreatePermission, xorPeer(p1)))
	for i, n := range sizes {
		c.send(p1, string(payload(n, byte(i))))
		x.atPeer("p1", x.p1)
	}
	for i, n := range sizes {
		x.toRelay(x.p1, payload(n, byte(0x40+i)))
		x.atClient()
	}
	succeeded(t, "channel bind", c.request(stun.MethodChannelBind, xorPeer(p2), channelNumber(0x4001)))
	for i, n := range chanSizes {
		c.channelData(0x4001, string(payload(n, byte(0x80+i))))
		x.atPeer("p2", x.p2)
	}
	for i, n := range sizes {
		x.toRelay(x.p2, payload(n, byte(0xc0+i)))
		x.atClient()
	}
	// A Send indication to a peer with a channel still goes; the peer
	// without one still gets Data indications.
	c.send(p2, "send to the channel's peer")
	x.atPeer("p2", x.p2)
	x.toRelay(x.p1, []byte("p1 has no channel"))
	x.atClient()
	// Unbound channel, unpermitted peer: nothing, either way.
	c.channelData(0x4002, "on no channel")
	x.nothing("unbound channel")
	if x.stranger != nil {
		c.send(apOf(x.stranger.LocalAddr()), "to a peer without permission")
		x.toRelay(x.stranger, []byte("from a peer without permission"))
		x.nothing("no permission")
	}
}

// TestDataPathMatchesPion: the same client and peer datagrams through
// tariq's data path and through pion's give byte-identical datagrams at
// the peers and at the client (Data indications up to their random
// transaction ID), for Send and Data indications and for channels, over
// UDP, TCP and TLS, on IPv4 and IPv6.
func TestDataPathMatchesPion(t *testing.T) {
	testutil.LeakCheck(t)
	families := []string{"ipv4"}
	if c, err := net.ListenPacket("udp6", "[::1]:0"); err == nil {
		c.Close()
		families = append(families, "ipv6")
	} else if testutil.InCI() {
		t.Fatalf("no IPv6 loopback: %v", err)
	}
	for _, fam := range families {
		loop, peerIP := "127.0.0.1", "127.0.0.1"
		if fam == "ipv6" {
			loop, peerIP = "[::1]", "[::1]"
		}
		p1, p2 := udpPeer(t, peerIP+":0"), udpPeer(t, peerIP+":0")
		var stranger *net.UDPConn
		if fam == "ipv4" {
			stranger = udpPeer(t, "127.0.0.3:0")
		}
		for _, transport := range []string{"udp", "tcp", "tls"} {
			t.Run(fam+"/"+transport, func(t *testing.T) {
				logs := map[bool][]string{}
				for _, pionData := range []bool{true, false} {
					cfg := testConfig(t)
					cfg.Relay.ListenUDP = []string{loop + ":0"}
					cfg.Relay.ListenTCP = []string{loop + ":0"}
					cfg.Relay.ListenTLS = []string{loop + ":0"}
					cfg.Relay.RelayBind = netip.MustParseAddr(trimBrackets(loop))
					cfg.Relay.AllowPeers = prefixes("127.0.0.0/24", "::1/128")
					r := startRelay(t, cfg, Deps{PionData: pionData})
					c := r.rawClientOver(t, transport, "alice", "wonderland")
					x := &exchange{t: t, c: c, relayed: relayedAddr(t, c.allocate()), p1: p1, p2: p2, stranger: stranger}
					x.play(transport != "udp")
					logs[pionData] = x.log
					r.stop()
				}
				if d := cmp.Diff(logs[true], logs[false]); d != "" {
					t.Errorf("pion's data path (-) and tariq's (+) differ:\n%s", d)
				}
				for _, l := range logs[false] {
					if bytes.HasSuffix([]byte(l), []byte(": nothing")) {
						t.Errorf("a datagram went missing on both data paths: %s", l)
					}
				}
			})
		}
	}
}

func trimBrackets(s string) string {
	if len(s) > 1 && s[0] == '[' {
		return s[1 : len(s)-1]
	}
	return s
}

// TestStreamSmallChannelData: over TCP and TLS a ChannelData frame of 4
// or 8 bytes (no data, or up to 4 bytes) reaches the peer at once, with
// nothing sent after it. pion's stream framing (proto.STUNConn) will not
// look at fewer than 9 buffered bytes and holds such a frame until the
// next one arrives; tariq frames streams itself (streamFramer).
func TestStreamSmallChannelData(t *testing.T) {
	testutil.LeakCheck(t)
	r := startRelay(t, testConfig(t), Deps{})
	peer := udpPeer(t, "127.0.0.1:0")
	for _, transport := range []string{"tcp", "tls"} {
		t.Run(transport, func(t *testing.T) {
			c := r.rawClientOver(t, transport, "alice", "wonderland")
			relayed := relayedAddr(t, c.allocate())
			succeeded(t, "channel bind", c.request(stun.MethodChannelBind, xorPeer(apOf(peer.LocalAddr())), channelNumber(0x4000)))
			for _, data := range []string{"", "a", "ping"} {
				c.channelData(0x4000, data)
				if got, _ := recv(t, peer); got != data {
					t.Fatalf("peer got %q, want %q", got, data)
				}
				if _, err := peer.WriteToUDPAddrPort([]byte(data), relayed); err != nil {
					t.Fatal(err)
				}
				if from, got, ok := c.readData(5 * time.Second); !ok || got != data || from != "channel 0x4000" {
					t.Fatalf("client got %q from %s (ok %v), want %q on channel 0x4000", got, from, ok, data)
				}
			}
		})
	}
}

// TestDataPathPeerBurst: a peer's burst reaches the client, and a
// client's burst the peer, datagram by datagram and in order, whatever the
// data path makes of them on the way (runs of equal datagrams to one
// address leave as one segmented message, a stream client's batch in one
// write): equal sizes, a shorter one in the middle, frames too large to
// segment, on a channel and by Send and Data indications.
func TestDataPathPeerBurst(t *testing.T) {
	testutil.LeakCheck(t)
	for _, listen := range []string{"127.0.0.1:0", ":0"} {
		// On the wildcard every datagram to a client also carries its
		// source address (IP_PKTINFO) beside the segment size.
		t.Run("listen "+listen, func(t *testing.T) { testDataPathBurst(t, listen) })
	}
}

func testDataPathBurst(t *testing.T, listen string) {
	cfg := testConfig(t)
	cfg.Relay.ListenUDP = []string{listen}
	r := startRelay(t, cfg, Deps{})
	var sizes []int
	for i := range 40 {
		sizes = append(sizes, 100)
		if i == 20 {
			sizes = append(sizes, 37, 1400, 1400, 100)
		}
	}
	for _, transport := range []string{"udp", "tcp"} {
		for _, ch := range []uint16{0x4000, 0} {
			t.Run(fmt.Sprintf("%s/channel %#x", transport, ch), func(t *testing.T) {
				p := udpPeer(t, "127.0.0.1:0")
				var c *rawClient
				if transport == "udp" {
					// To 127.0.0.1 also when the relay listens on the
					// wildcard, for an IPv4 allocation.
					udp, _, _ := r.Addrs()
					c = newRawClient(t, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(apOf(udp[0]).Port())}, "alice", "wonderland")
				} else {
					c = r.rawClientOver(t, transport, "alice", "wonderland")
				}
				relayed := relayedAddr(t, c.allocate())
				if ch != 0 {
					succeeded(t, "channel bind", c.request(stun.MethodChannelBind, xorPeer(apOf(p.LocalAddr())), channelNumber(ch)))
				} else {
					succeeded(t, "create permission", c.request(stun.MethodCreatePermission, xorPeer(apOf(p.LocalAddr()))))
				}
				for i, n := range sizes {
					if _, err := p.WriteToUDPAddrPort(payload(n, byte(i)), relayed); err != nil {
						t.Fatal(err)
					}
				}
				// And the other way: a burst from the client, whose run of
				// equal datagrams for one peer leaves the relayed socket as
				// one segmented message.
				for i, n := range sizes {
					if ch != 0 {
						c.channelData(ch, string(payload(n, byte(0x80+i))))
					} else {
						c.send(apOf(p.LocalAddr()), string(payload(n, byte(0x80+i))))
					}
				}
				for i, n := range sizes {
					if got, _ := recv(t, p); got != string(payload(n, byte(0x80+i))) {
						t.Fatalf("peer: datagram %d: %d bytes, want %d", i, len(got), n)
					}
				}
				for i, n := range sizes {
					_, got, ok := c.readData(5 * time.Second)
					if !ok {
						t.Fatalf("datagram %d of %d missing", i, len(sizes))
					}
					if want := string(payload(n, byte(i))); got != want {
						t.Fatalf("datagram %d: %d bytes %x..., want %d bytes %x...", i, len(got), got[:min(8, len(got))], n, want[:min(8, len(want))])
					}
				}
			})
		}
	}
}

// TestCountedBeforeEcho: what a client relays to a peer is counted before
// it is sent, on either data path and transport, so when the peer's echo
// reaches the client the counters already hold what provoked it (metrics
// scraped after an echo never lag behind it).
func TestCountedBeforeEcho(t *testing.T) {
	testutil.LeakCheck(t)
	const msg = "count me first"
	for _, pionData := range []bool{false, true} {
		for _, transport := range []string{"udp", "tcp"} {
			t.Run(fmt.Sprintf("%s/pion=%v", transport, pionData), func(t *testing.T) {
				r := startRelay(t, testConfig(t), Deps{PionData: pionData})
				peer := apOf(echoPeer(t).LocalAddr())
				c := r.rawClientOver(t, transport, "alice", "wonderland")
				c.allocate()
				succeeded(t, "channel bind", c.request(stun.MethodChannelBind, xorPeer(peer), channelNumber(0x4000)))
				st := r.Stats()
				for i := uint64(1); i <= 200; i++ {
					if i%2 == 0 {
						c.channelData(0x4000, msg)
					} else {
						c.send(peer, msg)
					}
					if _, got, ok := c.readData(5 * time.Second); !ok || got != msg {
						t.Fatalf("round %d: client got %q (ok %v), want the echo", i, got, ok)
					}
					if p, b := st.PacketsToPeers.Load(), st.BytesToPeers.Load(); p < i || b < i*uint64(len(msg)) {
						t.Fatalf("round %d: the echo came back with %d packets, %d bytes to peers counted", i, p, b)
					}
				}
			})
		}
	}
}
