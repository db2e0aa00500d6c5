package relay

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/pion/stun/v4"
)

// pionDataIndication builds a Data indication as pion's server does
// (allocation.packetConnHandler: stun.Build with proto.PeerAddress, which
// is stun.XORMappedAddress as XOR-PEER-ADDRESS, and proto.Data), with the
// transaction ID tid instead of a random one.
func pionDataIndication(t *testing.T, peer netip.AddrPort, data []byte, tid [12]byte) []byte {
	t.Helper()
	m, err := stun.Build(stun.NewTransactionIDSetter(tid), stun.NewType(stun.MethodData, stun.ClassIndication),
		peerAddr{net.IP(peer.Addr().AsSlice()), int(peer.Port())}, rawAttr{stun.AttrData, data})
	if err != nil {
		t.Fatal(err)
	}
	return m.Raw
}

type peerAddr stun.XORMappedAddress

func (a peerAddr) AddTo(m *stun.Message) error {
	return stun.XORMappedAddress(a).AddToAs(m, stun.AttrXORPeerAddress)
}

var frameSizes = []int{0, 1, 2, 3, 4, 5, 7, 8, 172, 1200, maxPeerData}

func TestFrameDataIndicationMatchesPion(t *testing.T) {
	tid := [12]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	for _, peer := range []string{"203.0.114.7:3478", "[2001:db9::1]:40000"} {
		for _, n := range frameSizes {
			ap := netip.MustParseAddrPort(peer)
			data := bytes.Repeat([]byte{0xa5}, n)
			buf := bytes.Repeat([]byte{0xff}, slotSize) // stale bytes must not leak into padding
			copy(buf[dataHeadroom:], data)
			got := frameDataIndication(buf, n, ap, &tid)
			if want := pionDataIndication(t, ap, data, tid); !bytes.Equal(got, want) {
				t.Errorf("%v, %d bytes:\n got %x\nwant %x", peer, n, got, want)
			}
		}
	}
}

func TestFrameChannelData(t *testing.T) {
	for _, n := range frameSizes {
		data := bytes.Repeat([]byte{0x5a}, n)
		buf := bytes.Repeat([]byte{0xff}, slotSize)
		copy(buf[dataHeadroom:], data)
		got := frameChannelData(buf, n, 0x4001)
		// proto.ChannelData.Encode: number, length, data, zeros to a
		// multiple of 4 (on every transport).
		want := binary.BigEndian.AppendUint16(nil, 0x4001)
		want = binary.BigEndian.AppendUint16(want, uint16(n))
		want = append(want, data...)
		want = append(want, make([]byte, -len(want)&3)...)
		if !bytes.Equal(got, want) {
			t.Errorf("%d bytes: got %x, want %x", n, got, want)
		}
	}
}

func TestChannelData(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		num  uint16
		data string
		ok   bool
	}{
		{"plain", []byte{0x40, 0x00, 0, 4, 'p', 'i', 'n', 'g'}, 0x4000, "ping", true},
		{"padding ignored", []byte{0x40, 0x01, 0, 1, 'x', 0, 0, 0}, 0x4001, "x", true},
		{"empty", []byte{0x7f, 0xff, 0, 0}, 0x7fff, "", true},
		{"too short", []byte{0x40, 0x00, 0}, 0, "", false},
		{"length past the end", []byte{0x40, 0x00, 0, 5, 'p', 'i', 'n', 'g'}, 0, "", false},
		{"number out of range", []byte{0x80, 0x00, 0, 0}, 0, "", false},
		{"number too low", []byte{0x3f, 0xff, 0, 0}, 0, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			num, data, ok := channelData(tc.in)
			if ok != tc.ok || (ok && (num != tc.num || string(data) != tc.data)) {
				t.Errorf("got %#x %q %v, want %#x %q %v", num, data, ok, tc.num, tc.data, tc.ok)
			}
		})
	}
}

// sendIndication builds a Send indication with attrs.
func sendIndication(attrs ...stun.Setter) []byte {
	return stun.MustBuild(append([]stun.Setter{stun.TransactionID, stun.NewType(stun.MethodSend, stun.ClassIndication)}, attrs...)...).Raw
}

func TestParseSend(t *testing.T) {
	v4 := netip.MustParseAddrPort("203.0.114.7:3478")
	v6 := netip.MustParseAddrPort("[2001:db9::1]:40000")
	mapped := netip.AddrPortFrom(netip.AddrFrom16(v4.Addr().As16()), v4.Port())
	data := rawAttr{stun.AttrData, []byte("hello")}
	for _, tc := range []struct {
		name string
		in   []byte
		v    sendVerdict
		peer netip.AddrPort
	}{
		{"ipv4", sendIndication(xorPeer(v4), data), sendRelay, v4},
		{"ipv6", sendIndication(xorPeer(v6), data), sendRelay, v6},
		{"ipv4-mapped is ipv4", sendIndication(xorPeer(mapped), data), sendRelay, v4},
		{"data first", sendIndication(data, xorPeer(v4)), sendRelay, v4},
		{"first of two", sendIndication(xorPeer(v4), xorPeer(v6), data), sendRelay, v4},
		{"fingerprint ignored", sendIndication(xorPeer(v4), data, stun.Fingerprint), sendRelay, v4},
		{"no data", sendIndication(xorPeer(v4)), sendDrop, netip.AddrPort{}},
		{"no peer", sendIndication(data), sendDrop, netip.AddrPort{}},
		{"short address", sendIndication(rawAttr{stun.AttrXORPeerAddress, []byte{0, 1, 0, 0}}, data), sendDrop, netip.AddrPort{}},
		{"bad family", sendIndication(rawAttr{stun.AttrXORPeerAddress, []byte{0, 3, 0, 0, 1, 2, 3, 4}}, data), sendDrop, netip.AddrPort{}},
		{"address too long", sendIndication(rawAttr{stun.AttrXORPeerAddress, []byte{0, 1, 0, 0, 1, 2, 3, 4, 5}}, data), sendDrop, netip.AddrPort{}},
		{"address too short for ipv6", sendIndication(rawAttr{stun.AttrXORPeerAddress, []byte{0, 2, 0, 0, 1, 2, 3, 4}}, data), sendPion, netip.AddrPort{}},
		{"dont-fragment is pion's", sendIndication(xorPeer(v4), data, rawAttr{stun.AttrDontFragment, nil}), sendPion, netip.AddrPort{}},
		{"unknown required attribute", sendIndication(xorPeer(v4), data, rawAttr{0x7777, []byte{1}}), sendPion, netip.AddrPort{}},
		{"truncated", sendIndication(xorPeer(v4), data)[:30], sendDrop, netip.AddrPort{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !isSendIndication(tc.in) {
				t.Fatal("not taken for a Send indication")
			}
			peer, d, v := parseSend(tc.in)
			if v != tc.v || (v == sendRelay && (peer != tc.peer || string(d) != "hello")) {
				t.Errorf("got %v %q %v, want %v %q %v", peer, d, v, tc.peer, "hello", tc.v)
			}
		})
	}
}

// FuzzParseSend: whatever parseSend relays, pion's server would relay
// the same data to the same peer; whatever it drops, pion would drop
// (stun.Message.Decode, unknown comprehension-required attributes, then
// the first DATA and XOR-PEER-ADDRESS, as internal/server/turn.go reads
// them).
func FuzzParseSend(f *testing.F) {
	f.Add(sendIndication(xorPeer(netip.MustParseAddrPort("203.0.114.7:3478")), rawAttr{stun.AttrData, []byte("x")}))
	f.Add(sendIndication(xorPeer(netip.MustParseAddrPort("[2001:db9::1]:1")), rawAttr{stun.AttrData, nil}))
	f.Add(sendIndication(rawAttr{stun.AttrXORPeerAddress, []byte{0, 2, 0, 0, 1, 2, 3, 4}}, rawAttr{stun.AttrData, []byte("x")}))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) >= 8 {
			binary.BigEndian.PutUint16(b[0:2], typeSendIndication)
			binary.BigEndian.PutUint32(b[4:8], stunMagicCookie)
		}
		if !isSendIndication(b) {
			return
		}
		peer, data, v := parseSend(b)
		m := &stun.Message{Raw: append([]byte(nil), b...)}
		pionOK := m.Decode() == nil
		if pionOK {
			for _, a := range m.Attributes {
				if a.Type.Required() && !a.Type.Known() {
					pionOK = false // dropped: unknown comprehension-required attribute
				}
			}
		}
		var pd []byte
		var pa stun.XORMappedAddress
		if pionOK {
			var err error
			if pd, err = m.Get(stun.AttrData); err != nil || pa.GetFromAs(m, stun.AttrXORPeerAddress) != nil {
				pionOK = false
			}
		}
		switch v {
		case sendRelay:
			if !pionOK {
				t.Fatalf("relayed %x, which pion drops", b)
			}
			ip, _ := netip.AddrFromSlice(pa.IP)
			want := netip.AddrPortFrom(ip.Unmap(), uint16(pa.Port))
			if peer != want || !bytes.Equal(data, pd) {
				t.Fatalf("relayed %q to %v, pion %q to %v", data, peer, pd, want)
			}
		case sendDrop:
			if pionOK {
				t.Fatalf("dropped %x, which pion relays", b)
			}
		}
	})
}
