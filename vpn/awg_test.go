package vpn

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/tariq-vpn/tariq/internal/wgconf"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
)

// awgPair is both ends of an obfuscated link: the server's translator
// (talking to the client and two other peers) and a client's, with the
// wireguard-go cookie machinery of each side, which amneziawg-go shares
// unchanged (its device/cookie.go is wireguard-go's).
type awgPair struct {
	p              wgconf.AmneziaWG
	server, client *awg
	srvPub, cliPub Key
	srvEP, cliEP   hubEndpoint
	srvCheck       device.CookieChecker   // the server's wireguard-go: MAC1/MAC2 of what it receives
	cliCheck       device.CookieChecker   // the client's
	srvGen, cliGen device.CookieGenerator // MACs of what each sends to the other
	cliWireGen     device.CookieGenerator // an AmneziaWG client's own MACs, over the wire form
}

func newAWGPair(t *testing.T, p wgconf.AmneziaWG) *awgPair {
	t.Helper()
	ap := &awgPair{p: p, srvPub: wgconf.NewPrivateKey().PublicKey(), cliPub: wgconf.NewPrivateKey().PublicKey(), srvEP: 51821, cliEP: 40001}
	others := []Key{wgconf.NewPrivateKey().PublicKey(), wgconf.NewPrivateKey().PublicKey()}
	ap.server = newAWG(p, ap.srvPub, append(others, ap.cliPub))
	ap.client = newAWG(p, ap.cliPub, []Key{ap.srvPub})
	ap.srvCheck.Init(device.NoisePublicKey(ap.srvPub))
	ap.cliCheck.Init(device.NoisePublicKey(ap.cliPub))
	ap.srvGen.Init(device.NoisePublicKey(ap.cliPub))
	ap.cliGen.Init(device.NoisePublicKey(ap.srvPub))
	ap.cliWireGen.Init(device.NoisePublicKey(ap.srvPub))
	return ap
}

// wgMessage is a WireGuard message of type typ and size whose body is
// random, with its MACs made by gen for handshake messages.
func wgMessage(typ uint32, size int, gen *device.CookieGenerator) []byte {
	b := make([]byte, size)
	rand.Read(b)
	putLE32(b, typ)
	if typ == 1 || typ == 2 {
		clear(b[size-2*macSize:])
		gen.AddMacs(b)
	}
	return b
}

// awgMessage is what amneziawg-go sends: the message with the custom
// header, its MACs made over that (send.go), after pad random bytes.
func awgMessage(h uint32, size, pad int, gen *device.CookieGenerator) []byte {
	b := make([]byte, pad+size)
	rand.Read(b)
	m := b[pad:]
	putLE32(m, h)
	clear(m[size-2*macSize:])
	gen.AddMacs(m)
	return b
}

func marshalCookie(r *device.MessageCookieReply) []byte {
	var buf bytes.Buffer
	binary.Write(&buf, binary.LittleEndian, r)
	return buf.Bytes()
}

func parseCookie(t *testing.T, b []byte) *device.MessageCookieReply {
	t.Helper()
	if len(b) != wgCookieSize {
		t.Fatalf("cookie reply of %d bytes", len(b))
	}
	var r device.MessageCookieReply
	binary.Read(bytes.NewReader(b), binary.LittleEndian, &r)
	return &r
}

// TestAWGHandshake: each handshake message, both ways, through the sending
// side's encode and the receiving side's decode. On the wire it has
// amneziawg-go's form (padding, header at the padding's end, MAC1 valid
// for the header as sent, what amneziawg-go's receive path checks); after
// decode it is exactly what wireguard-go sent.
func TestAWGHandshake(t *testing.T) {
	for _, params := range []wgconf.AmneziaWG{goldenAWG(), {Jc: 1, Jmin: 10, Jmax: 10, S1: 0, S2: 1188, H1: 5, H2: 6, H3: 7, H4: 8}} {
		t.Run(fmt.Sprintf("S1=%d,S2=%d", params.S1, params.S2), func(t *testing.T) {
			ap := newAWGPair(t, params)
			for _, tc := range []struct {
				name      string
				typ       uint32
				size, pad int
				h         uint32
				from, to  *awg
				gen       *device.CookieGenerator
				// check is the receiver's MAC1 check: amneziawg-go runs it
				// on the wire form, wireguard-go on the decoded one.
				check    *device.CookieChecker
				dst, src hubEndpoint
				wantJunk bool
			}{
				{"initiation from client", 1, wgInitSize, params.S1, params.H1, ap.client, ap.server, &ap.cliGen, &ap.srvCheck, ap.srvEP, ap.cliEP, true},
				{"response from server", 2, wgRespSize, params.S2, params.H2, ap.server, ap.client, &ap.srvGen, &ap.cliCheck, ap.cliEP, ap.srvEP, false},
				{"initiation from server", 1, wgInitSize, params.S1, params.H1, ap.server, ap.client, &ap.srvGen, &ap.cliCheck, ap.cliEP, ap.srvEP, true},
				{"response from client", 2, wgRespSize, params.S2, params.H2, ap.client, ap.server, &ap.cliGen, &ap.srvCheck, ap.srvEP, ap.cliEP, false},
			} {
				t.Run(tc.name, func(t *testing.T) {
					m := wgMessage(tc.typ, tc.size, tc.gen)
					orig := bytes.Clone(m)
					junk, wire, ok := tc.from.encode(m, tc.dst)
					if !ok {
						t.Fatal("encode refused it")
					}
					if !bytes.Equal(m, orig) {
						t.Error("encode changed its input")
					}
					if tc.wantJunk != (junk != nil) || (junk != nil && len(junk) != params.Jc) {
						t.Errorf("%d junk packets, want %d", len(junk), params.Jc)
					}
					for _, j := range junk {
						if len(j) < params.Jmin || (len(j) >= params.Jmax && len(j) != params.Jmin) {
							t.Errorf("junk of %d bytes, want %d-%d", len(j), params.Jmin, params.Jmax-1)
						}
					}
					if len(wire) != tc.pad+tc.size || le32(wire[tc.pad:]) != tc.h {
						t.Fatalf("wire form: %d bytes, header %d at %d; want %d bytes, %d", len(wire), le32(wire[tc.pad:]), tc.pad, tc.pad+tc.size, tc.h)
					}
					if !bytes.Equal(wire[tc.pad+4:tc.pad+tc.size-2*macSize], orig[4:tc.size-2*macSize]) {
						t.Error("wire form changed the message body")
					}
					if !tc.check.CheckMAC1(wire[tc.pad:]) {
						t.Error("wire form's MAC1 does not check for its header, as amneziawg-go checks it")
					}
					back := bytes.Clone(wire)
					n, ok := tc.to.decode(back, tc.src)
					if !ok || n != tc.size {
						t.Fatalf("decode: %d %v", n, ok)
					}
					if !bytes.Equal(back[:n], orig) {
						t.Errorf("decoded message differs from what wireguard-go sent:\n%x\n%x", back[:n], orig)
					}
					if !tc.check.CheckMAC1(back[:n]) {
						t.Error("wireguard-go's MAC1 check fails after decode")
					}
				})
			}
		})
	}
}

// TestAWGCookie: under load, wireguard-go answers a handshake message
// without a valid MAC2 with a cookie reply sealed to the MAC1 it saw. The
// bind re-seals it to the MAC1 on the wire, so the AmneziaWG side can open
// it and send MAC2 with its next message, which the bind carries across
// so wireguard-go's MAC2 check passes. Both directions (server and client
// under load); a cookie for one address does not help another.
func TestAWGCookie(t *testing.T) {
	p := goldenAWG()
	t.Run("server under load", func(t *testing.T) {
		ap := newAWGPair(t, p)
		src := ap.cliEP.DstToBytes()
		// An AmneziaWG client's initiation, MACs over the wire form.
		wire := awgMessage(p.H1, wgInitSize, p.S1, &ap.cliWireGen)
		n, ok := ap.server.decode(wire, ap.cliEP)
		if !ok || n != wgInitSize {
			t.Fatalf("decode: %d %v", n, ok)
		}
		m := wire[:n]
		if ap.srvCheck.CheckMAC2(m, src) {
			t.Fatal("MAC2 checks without a cookie")
		}
		reply, err := ap.srvCheck.CreateReply(m, le32(m[4:]), src)
		if err != nil {
			t.Fatal(err)
		}
		_, out, ok := ap.server.encode(marshalCookie(reply), ap.cliEP)
		if !ok || le32(out) != p.H3 || len(out) != wgCookieSize {
			t.Fatalf("cookie reply on the wire: %v %x", ok, out)
		}
		if !ap.cliWireGen.ConsumeReply(parseCookie(t, out)) {
			t.Fatal("the AmneziaWG side cannot open the cookie reply")
		}
		// Its next initiation carries MAC2 (AddMacs uses the cookie).
		wire2 := awgMessage(p.H1, wgInitSize, p.S1, &ap.cliWireGen)
		if isZero(wire2[p.S1+wgInitSize-macSize:]) {
			t.Fatal("no MAC2 after the cookie")
		}
		other := append([]byte(nil), wire2...)
		n, ok = ap.server.decode(wire2, ap.cliEP)
		if !ok || !ap.srvCheck.CheckMAC1(wire2[:n]) || !ap.srvCheck.CheckMAC2(wire2[:n], src) {
			t.Errorf("wireguard-go refuses the MAC2: %d %v", n, ok)
		}
		var elsewhere hubEndpoint = 40999
		n, _ = ap.server.decode(other, elsewhere)
		if ap.srvCheck.CheckMAC2(other[:n], elsewhere.DstToBytes()) {
			t.Error("a cookie given to one address worked for another")
		}
	})
	t.Run("client under load", func(t *testing.T) {
		ap := newAWGPair(t, p)
		srvSrc := ap.srvEP.DstToBytes()
		var awgCheck device.CookieChecker // an AmneziaWG client's
		awgCheck.Init(device.NoisePublicKey(ap.cliPub))
		m := wgMessage(1, wgInitSize, &ap.srvGen) // wireguard-go on the server initiates
		_, wire, ok := ap.server.encode(m, ap.cliEP)
		if !ok {
			t.Fatal("encode refused it")
		}
		rm := wire[p.S1:]
		if !awgCheck.CheckMAC1(rm) {
			t.Fatal("client cannot check MAC1")
		}
		reply, err := awgCheck.CreateReply(rm, le32(rm[4:]), srvSrc)
		if err != nil {
			t.Fatal(err)
		}
		rb := marshalCookie(reply)
		putLE32(rb, p.H3) // amneziawg-go's MessageCookieReplyType is H3
		n, ok := ap.server.decode(rb, ap.cliEP)
		if !ok || n != wgCookieSize || le32(rb) != 3 {
			t.Fatalf("decode cookie reply: %d %v", n, ok)
		}
		if !ap.srvGen.ConsumeReply(parseCookie(t, rb)) {
			t.Fatal("wireguard-go cannot open the re-sealed cookie reply")
		}
		m2 := wgMessage(1, wgInitSize, &ap.srvGen)
		if isZero(m2[wgInitSize-macSize:]) {
			t.Fatal("wireguard-go sends no MAC2 after the cookie")
		}
		_, wire2, ok := ap.server.encode(m2, ap.cliEP)
		if !ok || !awgCheck.CheckMAC1(wire2[p.S1:]) || !awgCheck.CheckMAC2(wire2[p.S1:], srvSrc) {
			t.Errorf("the AmneziaWG client refuses the MAC2: %v", ok)
		}
	})
	t.Run("reply to nothing", func(t *testing.T) {
		ap := newAWGPair(t, p)
		b := make([]byte, wgCookieSize)
		rand.Read(b)
		putLE32(b, 3)
		if _, _, ok := ap.server.encode(b, ap.cliEP); ok {
			t.Error("a cookie reply to no received message was sent")
		}
		putLE32(b, p.H3)
		if n, ok := ap.server.decode(b, ap.cliEP); !ok || n != 0 {
			t.Errorf("a cookie reply to nothing sent was taken: %d %v", n, ok)
		}
	})
}

// TestAWGTransport: transport data of every size keeps its bytes and only
// swaps the header, both ways, in place and without allocating.
func TestAWGTransport(t *testing.T) {
	p := goldenAWG()
	ap := newAWGPair(t, p)
	for _, size := range []int{32, 48, 64, 92, 92 + p.S2, 148, 148 + p.S1, 1452, 65535} {
		m := wgMessage(4, size, nil)
		orig := bytes.Clone(m)
		batch := [][]byte{m, bytes.Clone(m)}
		if !ap.client.encodeTransport(batch) {
			t.Fatalf("size %d: not taken as transport", size)
		}
		for _, b := range batch {
			if le32(b) != p.H4 || !bytes.Equal(b[4:], orig[4:]) {
				t.Fatalf("size %d: wire form %x…", size, b[:8])
			}
		}
		n, ok := ap.server.decode(batch[0], ap.cliEP)
		if !ok || n != size || !bytes.Equal(batch[0], orig) {
			t.Errorf("size %d: decode %d %v", size, n, ok)
		}
		_, single, ok := ap.server.encode(orig, ap.cliEP)
		if !ok || le32(single) != p.H4 || !bytes.Equal(single[4:], orig[4:]) {
			t.Errorf("size %d: encode one: %v", size, ok)
		}
	}
	mixed := [][]byte{wgMessage(4, 64, nil), wgMessage(1, wgInitSize, &ap.cliGen)}
	before := bytes.Clone(mixed[0])
	if ap.client.encodeTransport(mixed) || !bytes.Equal(mixed[0], before) {
		t.Error("a batch with a handshake in it was rewritten as transport")
	}

	m := wgMessage(4, 1452, nil)
	batch := [][]byte{m}
	var src conn.Endpoint = ap.cliEP
	if n := testing.AllocsPerRun(1000, func() {
		ap.client.encodeTransport(batch)
		ap.server.decode(m, src)
	}); n != 0 {
		t.Errorf("transport path allocates %.1f times per packet", n)
	}
}

// TestAWGDrops: on the obfuscated socket, stock WireGuard, junk and probes
// are not AmneziaWG; a message shaped like an AmneziaWG handshake whose
// MAC1 is not ours is recognised but dropped; and nothing of it is
// forwarded to wireguard-go.
func TestAWGDrops(t *testing.T) {
	p := goldenAWG()
	ap := newAWGPair(t, p)
	s := &socket{awg: ap.server, b: newBind(nil, testLogger(t))}
	var gen device.CookieGenerator
	gen.Init(device.NoisePublicKey(ap.srvPub))
	notAWG := map[string][]byte{
		"stock initiation": wgMessage(1, wgInitSize, &gen),
		"stock response":   wgMessage(2, wgRespSize, &gen),
		"stock cookie":     wgMessage(3, wgCookieSize, nil),
		"stock keepalive":  wgMessage(4, 32, nil),
		"stock data":       wgMessage(4, 1452, nil),
		"empty":            {},
		"one byte":         {0x01},
		"dns query":        {0x12, 0x34, 0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0, 7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 0, 0, 1, 0, 1},
	}
	junk := ap.client.junk()
	for i, j := range junk {
		notAWG[fmt.Sprintf("junk %d", i)] = j
	}
	for size := range 1500 {
		b := make([]byte, size)
		rand.Read(b)
		notAWG[fmt.Sprintf("random %d", size)] = b
	}
	for name, b := range notAWG {
		if n, stun := s.filter(bytes.Clone(b), ap.cliEP); n != 0 || stun {
			t.Errorf("%s: filter kept %d bytes (stun %v)", name, n, stun)
		}
	}

	var stranger device.CookieGenerator // MAC1 made for another server's key
	stranger.Init(device.NoisePublicKey(wgconf.NewPrivateKey().PublicKey()))
	forged := awgMessage(p.H1, wgInitSize, p.S1, &stranger)
	if n, ok := ap.server.decode(forged, ap.cliEP); !ok || n != 0 {
		t.Errorf("initiation with a MAC1 for another key: %d %v, want recognised and dropped", n, ok)
	}
	if ap.server.stats.badMAC != 1 {
		t.Errorf("badMAC = %d", ap.server.stats.badMAC)
	}
	// wireguard-go's response to a key the server does not know.
	var toStranger device.CookieGenerator
	toStranger.Init(device.NoisePublicKey(wgconf.NewPrivateKey().PublicKey()))
	if _, _, ok := ap.server.encode(wgMessage(2, wgRespSize, &toStranger), ap.cliEP); ok {
		t.Error("a response MACed for no known peer was sent")
	}
	ap.server.setPeers(nil)
	if _, _, ok := ap.server.encode(wgMessage(2, wgRespSize, &ap.srvGen), ap.cliEP); ok {
		t.Error("a response to a removed peer was sent")
	}
}
