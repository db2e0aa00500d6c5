package vpn

import (
	"bytes"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"testing"

	"github.com/tariq-vpn/tariq/internal/wgconf"

	"github.com/pion/stun/v4"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
)

func bindingRequest(t testing.TB, extra ...stun.Setter) []byte {
	t.Helper()
	m, err := stun.Build(append([]stun.Setter{stun.TransactionID, stun.BindingRequest}, extra...)...)
	if err != nil {
		t.Fatal(err)
	}
	return m.Raw
}

// TestSTUNDetection: Binding requests, and only they, are taken for STUN;
// no WireGuard message is.
func TestSTUNDetection(t *testing.T) {
	req := bindingRequest(t)
	withFP := bindingRequest(t, stun.NewSoftware("x"), stun.Fingerprint)
	success, _ := stun.Build(stun.TransactionID, stun.BindingSuccess)
	indication, _ := stun.Build(stun.TransactionID, stun.NewType(stun.MethodBinding, stun.ClassIndication))
	allocate, _ := stun.Build(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest))
	badCookie := bytes.Clone(req)
	badCookie[4] ^= 1
	longer := append(bytes.Clone(req), 0, 0, 0, 0) // length field says 0, datagram says 4
	oddLen := bytes.Clone(withFP[:len(withFP)-1])
	var gen device.CookieGenerator
	gen.Init(device.NoisePublicKey(wgconf.NewPrivateKey().PublicKey()))
	for _, tc := range []struct {
		name string
		b    []byte
		want bool
	}{
		{"binding request", req, true},
		{"with attributes and fingerprint", withFP, true},
		{"binding success", success.Raw, false},
		{"binding indication", indication.Raw, false},
		{"allocate", allocate.Raw, false},
		{"wrong cookie", badCookie, false},
		{"length mismatch", longer, false},
		{"odd length", oddLen, false},
		{"header only, short", req[:19], false},
		{"wireguard initiation", wgMessage(1, wgInitSize, &gen), false},
		{"wireguard response", wgMessage(2, wgRespSize, &gen), false},
		{"wireguard cookie", wgMessage(3, wgCookieSize, nil), false},
		{"wireguard keepalive", wgMessage(4, 32, nil), false},
		{"wireguard data", wgMessage(4, 1452, nil), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := isSTUNBinding(tc.b); got != tc.want {
				t.Errorf("isSTUNBinding = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestSTUNReply: the answer is a Binding success for the same transaction
// with XOR-MAPPED-ADDRESS the requester's address and port, both families.
func TestSTUNReply(t *testing.T) {
	for _, src := range []netip.AddrPort{
		netip.MustParseAddrPort("203.0.113.7:40000"),
		netip.MustParseAddrPort("[2001:db8::7]:5"),
		netip.MustParseAddrPort("[::ffff:198.51.100.1]:65535"),
	} {
		for _, fp := range []bool{false, true} {
			var extra []stun.Setter
			if fp {
				extra = append(extra, stun.Fingerprint)
			}
			req := bindingRequest(t, extra...)
			resp := stunReply(req, src)
			var m stun.Message
			m.Raw = resp
			if err := m.Decode(); err != nil {
				t.Fatalf("%s: response does not parse: %v", src, err)
			}
			var reqMsg stun.Message
			reqMsg.Raw = req
			reqMsg.Decode()
			if m.Type != stun.BindingSuccess || m.TransactionID != reqMsg.TransactionID {
				t.Errorf("%s: %s, transaction %x; want binding success for %x", src, m.Type, m.TransactionID, reqMsg.TransactionID)
			}
			var xa stun.XORMappedAddress
			if err := xa.GetFrom(&m); err != nil {
				t.Fatalf("%s: no XOR-MAPPED-ADDRESS: %v", src, err)
			}
			got, _ := netip.AddrFromSlice(xa.IP)
			if got.Unmap() != src.Addr().Unmap() || xa.Port != int(src.Port()) {
				t.Errorf("XOR-MAPPED-ADDRESS %s, want %s", net.JoinHostPort(xa.IP.String(), strconv.Itoa(xa.Port)), src)
			}
			if m.Contains(stun.AttrFingerprint) != fp {
				t.Errorf("%s: fingerprint %v, request had %v", src, m.Contains(stun.AttrFingerprint), fp)
			} else if fp {
				if err := stun.Fingerprint.Check(&m); err != nil {
					t.Errorf("%s: fingerprint: %v", src, err)
				}
			}
		}
	}
	// Attributes that do not parse: no answer.
	bad := bindingRequest(t)
	bad = append(bad, 0x00, 0x20, 0x00, 0x40) // an attribute claiming 64 bytes that are not there
	bad[2], bad[3] = 0, 4
	if !isSTUNBinding(bad) || stunReply(bad, netip.MustParseAddrPort("192.0.2.1:1")) != nil {
		t.Error("answered a request whose attributes do not parse")
	}
}

// FuzzSTUNClassify: for any bytes, the filters of a stock and an
// obfuscated socket never panic; the stock one takes for STUN only what
// isSTUNBinding says; a WireGuard message built around the bytes is never
// taken for STUN on the stock socket, nor an AmneziaWG one (transport data
// or an initiation, MACs and all) on the obfuscated socket, where it
// decodes to the WireGuard message instead; and whatever is taken for STUN
// gets an answer or none without panicking.
func FuzzSTUNClassify(f *testing.F) {
	f.Add(bindingRequest(f))
	f.Add(bindingRequest(f, stun.Fingerprint))
	f.Add([]byte{0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42})
	f.Add(make([]byte, 200))
	p := goldenAWG()
	srvPub, cliPub := wgconf.NewPrivateKey().PublicKey(), wgconf.NewPrivateKey().PublicKey()
	server := newAWG(p, srvPub, []Key{cliPub})
	client := newAWG(p, cliPub, []Key{srvPub})
	var gen device.CookieGenerator
	gen.Init(device.NoisePublicKey(srvPub))
	b := newBind(nil, slog.New(slog.DiscardHandler))
	stock := &socket{b: b}
	obf := &socket{awg: server, b: b}
	var src conn.Endpoint = &conn.StdNetEndpoint{AddrPort: netip.MustParseAddrPort("192.0.2.1:1234")}
	f.Fuzz(func(t *testing.T, data []byte) {
		if n, isSTUN := stock.filter(bytes.Clone(data), src); isSTUN != (len(data) > 0 && isSTUNBinding(data)) || (isSTUN && n != 0) {
			t.Fatalf("stock filter: %d %v", n, isSTUN)
		}
		if len(data) > 0 && isSTUNBinding(data) {
			stunReply(data, netip.MustParseAddrPort("192.0.2.1:1234"))
		}
		obf.filter(bytes.Clone(data), src)

		// WireGuard messages with the fuzz bytes as body.
		for typ, size := range map[uint32]int{1: wgInitSize, 2: wgRespSize, 3: wgCookieSize, 4: max(wgTransportMin, len(data)+16)} {
			m := make([]byte, size)
			copy(m[4:], data)
			putLE32(m, typ)
			if _, isSTUN := stock.filter(m, src); isSTUN {
				t.Fatalf("WireGuard type %d taken for STUN", typ)
			}
		}
		// AmneziaWG transport data and an initiation carrying the bytes.
		data4 := append(make([]byte, 16), data...)
		if len(data4) < wgTransportMin {
			data4 = append(data4, make([]byte, wgTransportMin-len(data4))...)
		}
		putLE32(data4, 4)
		want := bytes.Clone(data4)
		client.encodeTransport([][]byte{data4})
		if n, isSTUN := obf.filter(data4, src); isSTUN || n != len(want) || !bytes.Equal(data4[:n], want) {
			t.Fatalf("AmneziaWG transport: %d %v", n, isSTUN)
		}
		init := make([]byte, wgInitSize)
		copy(init[4:wgInitSize-2*macSize], data)
		putLE32(init, 1)
		gen.AddMacs(init)
		_, wire, ok := client.encode(init, src)
		if !ok {
			t.Fatal("client refused its initiation")
		}
		if n, isSTUN := obf.filter(wire, src); isSTUN || n != wgInitSize || !bytes.Equal(wire[:n], init) {
			t.Fatalf("AmneziaWG initiation: %d %v", n, isSTUN)
		}
	})
}
