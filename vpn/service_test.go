package vpn

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tariq-vpn/tariq/internal/wgconf"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/tariq-vpn/tariq/config"
	"github.com/tariq-vpn/tariq/internal/members"
	"github.com/tariq-vpn/tariq/internal/store"
	"github.com/tariq-vpn/tariq/internal/testutil"
)

var packetID atomic.Uint32

// packet returns a minimal IP packet from src to dst (IPv4 or IPv6,
// protocol 253, "for experimentation", RFC 3692) with a unique payload, so
// a packet seen is the packet sent and not an older one.
func packet(src, dst netip.Addr) []byte {
	var payload [4]byte
	binary.BigEndian.PutUint32(payload[:], packetID.Add(1))
	if src.Is4() {
		p := make([]byte, 20, 24)
		p[0] = 0x45
		binary.BigEndian.PutUint16(p[2:], 24)
		p[8], p[9] = 64, 253
		s, d := src.As4(), dst.As4()
		copy(p[12:], s[:])
		copy(p[16:], d[:])
		var sum uint32
		for i := 0; i < 20; i += 2 {
			sum += uint32(binary.BigEndian.Uint16(p[i:]))
		}
		for sum > 0xffff {
			sum = sum>>16 + sum&0xffff
		}
		binary.BigEndian.PutUint16(p[10:], ^uint16(sum))
		return append(p, payload[:]...)
	}
	p := make([]byte, 40, 44)
	p[0] = 0x60
	binary.BigEndian.PutUint16(p[4:], 4)
	p[6], p[7] = 253, 64
	s, d := src.As16(), dst.As16()
	copy(p[8:], s[:])
	copy(p[24:], d[:])
	return append(p, payload[:]...)
}

// testServer is a Service over a channel TUN and a hub bind. Packets its
// TUN receives land in got.
type testServer struct {
	*wired
	tun  *tuntest.ChannelTUN
	got  chan []byte
	stop func()
}

func startServer(t *testing.T, cfg *config.Config, st *store.Store, h *hub) *testServer {
	t.Helper()
	ct := tuntest.NewChannelTUN()
	s, err := New(cfg, Deps{Logger: testLogger(t), Identity: identity(t, cfg, st), TUN: ct.TUN(), NewBind: h.bind, DisableUAPI: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	w := wire(t, cfg, st, s)
	w.start(t)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx) }()
	ts := &testServer{wired: w, tun: ct, got: make(chan []byte, 256)}
	quit := make(chan struct{})
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		for {
			select {
			case p := <-ct.Inbound:
				select {
				case ts.got <- p:
				default:
				}
			case <-quit:
				return
			}
		}
	}()
	var once bool
	ts.stop = func() {
		if once {
			return
		}
		once = true
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		close(quit)
		<-readerDone
	}
	t.Cleanup(ts.stop)
	return ts
}

// expect waits for want on the server's TUN and reports whether it came.
func (ts *testServer) expect(want []byte, timeout time.Duration) bool {
	deadline := time.After(timeout)
	for {
		select {
		case p := <-ts.got:
			if bytes.Equal(p, want) {
				return true
			}
		case <-deadline:
			return false
		}
	}
}

// send puts a packet on the server's TUN, as the kernel would.
func (ts *testServer) send(t *testing.T, p []byte) {
	t.Helper()
	select {
	case ts.tun.Outbound <- p:
	case <-time.After(5 * time.Second):
		t.Fatal("server device does not read its TUN")
	}
}

// testClient is an independent wireguard-go device configured from an
// exported wg-quick config, the way a phone imports one.
type testClient struct {
	tun    *tuntest.ChannelTUN
	dev    *device.Device
	v4, v6 netip.Addr
	set    string
}

func newClient(t *testing.T, h *hub, conf string, ownKey *Key) *testClient {
	t.Helper()
	return newClientOn(t, h.bind(), conf, ownKey)
}

// newClientOn is newClient over bind b.
func newClientOn(t *testing.T, b conn.Bind, conf string, ownKey *Key) *testClient {
	t.Helper()
	c := parseWGQuick(t, conf)
	privText := c["Interface.PrivateKey"]
	if privText == wgconf.PrivateKeyPlaceholder && ownKey != nil {
		privText = ownKey.String()
	}
	priv, err := wgconf.ParseKey(privText)
	if err != nil {
		t.Fatalf("client private key %q: %v", privText, err)
	}
	serverPub, err := wgconf.ParseKey(c["Peer.PublicKey"])
	if err != nil {
		t.Fatal(err)
	}
	psk, err := wgconf.ParseKey(c["Peer.PresharedKey"])
	if err != nil {
		t.Fatal(err)
	}
	var set strings.Builder
	fmt.Fprintf(&set, "private_key=%s\nreplace_peers=true\npublic_key=%s\npreshared_key=%s\nendpoint=%s\npersistent_keepalive_interval=%s\n",
		priv.Hex(), serverPub.Hex(), psk.Hex(), c["Peer.Endpoint"], c["Peer.PersistentKeepalive"])
	for a := range strings.SplitSeq(c["Peer.AllowedIPs"], ",") {
		fmt.Fprintf(&set, "allowed_ip=%s\n", strings.TrimSpace(a))
	}
	tc := &testClient{tun: tuntest.NewChannelTUN(), set: set.String()}
	for a := range strings.SplitSeq(c["Interface.Address"], ",") {
		p := pfx(strings.TrimSpace(a))
		if p.Addr().Is4() {
			tc.v4 = p.Addr()
		} else {
			tc.v6 = p.Addr()
		}
	}
	tc.dev = device.NewDevice(tc.tun.TUN(), b, newWGLog(testLogger(t)).deviceLogger())
	t.Cleanup(tc.dev.Close)
	tc.reset(t)
	if err := tc.dev.Up(); err != nil {
		t.Fatal(err)
	}
	return tc
}

// reset re-applies the client's config, dropping its session, as a phone
// does when its tunnel is switched off and on; it then handshakes afresh
// on its next packet.
func (c *testClient) reset(t *testing.T) {
	t.Helper()
	if err := c.dev.IpcSet(c.set); err != nil {
		t.Fatal(err)
	}
}

func (c *testClient) send(t *testing.T, p []byte) {
	t.Helper()
	select {
	case c.tun.Outbound <- p:
	case <-time.After(5 * time.Second):
		t.Fatal("client device does not read its TUN")
	}
}

func (c *testClient) expect(want []byte, timeout time.Duration) bool {
	deadline := time.After(timeout)
	for {
		select {
		case p := <-c.tun.Inbound:
			if bytes.Equal(p, want) {
				return true
			}
		case <-deadline:
			return false
		}
	}
}

const (
	arrives = 5 * time.Second        // generous: a handshake comes first
	silence = 300 * time.Millisecond // how long "does not arrive" waits, after a packet that did
)

// reaches checks that packets get through both ways between c and the
// server, over both families.
func reaches(t *testing.T, ts *testServer, c *testClient) {
	t.Helper()
	server := ts.Addresses()
	s4, s6 := server[0].Addr(), server[1].Addr()
	for _, pair := range [][2]netip.Addr{{c.v4, s4}, {c.v6, s6}} {
		up := packet(pair[0], pair[1])
		c.send(t, up)
		if !ts.expect(up, arrives) {
			t.Fatalf("%s → %s did not reach the server", pair[0], pair[1])
		}
		down := packet(pair[1], pair[0])
		ts.send(t, down)
		if !c.expect(down, arrives) {
			t.Fatalf("%s → %s did not reach the client", pair[1], pair[0])
		}
	}
}

// cutOff checks that nothing gets through between gone and the server
// while other still does: gone's packet is sent first, other's after, and
// gone's must not show up even a while after other's arrived.
func cutOff(t *testing.T, ts *testServer, gone, other *testClient) {
	t.Helper()
	s4 := ts.Addresses()[0].Addr()
	lost := packet(gone.v4, s4)
	gone.send(t, lost)
	ok := packet(other.v4, s4)
	other.send(t, ok)
	deadline := time.After(arrives)
	sawOK := false
	for !sawOK {
		select {
		case p := <-ts.got:
			if bytes.Equal(p, lost) {
				t.Fatalf("packet from %s reached the server", gone.v4)
			}
			sawOK = bytes.Equal(p, ok)
		case <-deadline:
			t.Fatalf("packet from %s (still a peer) did not reach the server", other.v4)
		}
	}
	if ts.expect(lost, silence) {
		t.Fatalf("packet from %s reached the server", gone.v4)
	}
	down := packet(s4, gone.v4)
	ts.send(t, down)
	if gone.expect(down, silence) {
		t.Fatalf("server packet reached %s", gone.v4)
	}
}

// TestServiceInProcess runs the Service against three independent
// wireguard-go clients on an in-memory network: packets pass both ways
// over IPv4 and IPv6; a removed or disabled peer is cut off while the
// others keep flowing; a restart on the same store brings back the same
// key, addresses and peers, and the clients' unchanged configs work again.
func TestServiceInProcess(t *testing.T) {
	testutil.LeakCheck(t)
	h := newHub()
	cfg := testConfig(t)
	cfg.Server.PublicHost = "127.0.0.1"
	st := testStore(t, cfg)
	ts := startServer(t, cfg, st, h)

	for _, n := range []string{"mom", "dad"} {
		if _, err := ts.AddPeer(AddPeerRequest{Name: n}); err != nil {
			t.Fatal(err)
		}
	}
	kidKey := wgconf.NewPrivateKey()
	if _, err := ts.AddPeer(AddPeerRequest{Name: "kid", PublicKey: kidKey.PublicKey().String()}); err != nil {
		t.Fatal(err)
	}
	client := map[string]*testClient{}
	for _, n := range []string{"mom", "dad", "kid"} {
		conf, err := ts.ClientConfig(n)
		if err != nil {
			t.Fatal(err)
		}
		client[n] = newClient(t, h, conf, &kidKey)
	}
	mom, dad, kid := client["mom"], client["dad"], client["kid"]

	t.Run("traffic", func(t *testing.T) {
		for _, c := range []*testClient{mom, dad, kid} {
			reaches(t, ts, c)
		}
	})

	t.Run("status", func(t *testing.T) {
		st := ts.Devices()
		if len(st) != 3 {
			t.Fatalf("got %d peers", len(st))
		}
		for _, p := range st {
			if !p.Enabled || p.LastHandshake.IsZero() || p.RxBytes == 0 || p.TxBytes == 0 ||
				p.Endpoint.Addr() != addr("127.0.0.1") || p.Endpoint.Port() < 40000 {
				t.Errorf("%s: %+v, want enabled, a handshake, bytes both ways and its endpoint", p.Name, p)
			}
			if time.Since(p.LastHandshake) > time.Minute {
				t.Errorf("%s: last handshake %v", p.Name, p.LastHandshake)
			}
		}
	})

	t.Run("remove", func(t *testing.T) {
		momPeer, _ := ts.Device("mom")
		if err := ts.RemovePeer("mom"); err != nil {
			t.Fatal(err)
		}
		cutOff(t, ts, mom, dad)
		reaches(t, ts, kid)
		if _, err := ts.Device("mom"); !errors.Is(err, members.ErrPeerNotFound) {
			t.Errorf("removed peer still listed: %v", err)
		}
		if err := ts.RemovePeer("mom"); !errors.Is(err, members.ErrPeerNotFound) {
			t.Errorf("remove twice: %v", err)
		}
		retired := mustLoad(t, st).VPN.Retired
		if len(retired) != 2 || retired[0] != momPeer.IPv4 || retired[1] != momPeer.IPv6 {
			t.Errorf("retired = %v, want mom's addresses", retired)
		}
	})

	t.Run("disable and enable", func(t *testing.T) {
		if err := ts.SetPeerEnabled("dad", false); err != nil {
			t.Fatal(err)
		}
		cutOff(t, ts, dad, kid)
		for _, p := range ts.Devices() {
			if p.Name == "dad" && (p.Enabled || p.RxBytes != 0) {
				t.Errorf("dad: %+v, want disabled, no device counters", p)
			}
		}
		if err := ts.SetPeerEnabled("dad", false); err != nil {
			t.Errorf("disabling twice: %v", err)
		}
		if err := ts.SetPeerEnabled("dad", true); err != nil {
			t.Fatal(err)
		}
		dad.reset(t)
		reaches(t, ts, dad)
	})

	t.Run("restart", func(t *testing.T) {
		key, addrs := ts.ServerPublicKey(), ts.Addresses()
		ts.stop()
		ts = startServer(t, cfg, st, h)
		if ts.ServerPublicKey() != key {
			t.Errorf("server key changed across restart")
		}
		if got := ts.Addresses(); got[0] != addrs[0] || got[1] != addrs[1] {
			t.Errorf("addresses %v, were %v", got, addrs)
		}
		for _, c := range []*testClient{mom, dad, kid} {
			c.reset(t)
		}
		reaches(t, ts, dad)
		reaches(t, ts, kid)
		cutOff(t, ts, mom, dad)
	})
}

// TestServiceRollback: when the device refuses a change, the store change
// is undone, so the two agree and the error changed nothing.
func TestServiceRollback(t *testing.T) {
	testutil.LeakCheck(t)
	h := newHub()
	cfg := testConfig(t)
	cfg.VPN.Address = []netip.Prefix{pfx("10.0.0.1/29")}
	st := testStore(t, cfg)
	ts := startServer(t, cfg, st, h)
	for _, n := range []string{"a", "b", "c", "d"} {
		if _, err := ts.AddPeer(AddPeerRequest{Name: n}); err != nil {
			t.Fatal(err)
		}
	}
	if err := ts.RemovePeer("b"); err != nil { // retires .3, so the next add reuses it
		t.Fatal(err)
	}
	if _, err := ts.AddPeer(AddPeerRequest{Name: "e"}); err != nil { // .6, the last never-used
		t.Fatal(err)
	}
	refuse := errors.New("device says no")
	ts.mu.Lock()
	ts.ipcHook = func(string) error { return refuse }
	ts.mu.Unlock()

	tests := []struct {
		name string
		op   func() error
	}{
		{"add reusing a retired address", func() error { _, err := ts.AddPeer(AddPeerRequest{Name: "f"}); return err }},
		{"remove", func() error { return ts.RemovePeer("c") }},
		{"disable", func() error { return ts.SetPeerEnabled("a", false) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := stateBytes(t, st)
			statusBefore := ts.Devices()
			err := tt.op()
			if !errors.Is(err, refuse) || !strings.HasPrefix(err.Error(), "vpn: updating the device's peers: ") {
				t.Fatalf("got %v, want the device's refusal, named", err)
			}
			if !bytes.Equal(before, stateBytes(t, st)) {
				t.Errorf("state after rollback:\n%s\nwant:\n%s", stateBytes(t, st), before)
			}
			if got := ts.Devices(); len(got) != len(statusBefore) {
				t.Errorf("in-memory peers changed: %d → %d", len(statusBefore), len(got))
			}
		})
	}
}

func TestServiceLifecycleErrors(t *testing.T) {
	testutil.LeakCheck(t)
	cfg := testConfig(t)
	st := testStore(t, cfg)
	if _, err := New(cfg, Deps{}); err == nil || !strings.Contains(err.Error(), "no server private key") {
		t.Errorf("New without an identity: %v", err)
	}
	id := identity(t, cfg, st)
	s, err := New(cfg, Deps{Identity: id, TUN: tuntest.NewChannelTUN().TUN(), NewBind: newHub().bind, DisableUAPI: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(context.Background()); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Serve before Open: %v", err)
	}
	if s.ServerPublicKey() != id.PrivateKey.PublicKey().String() {
		t.Error("the server key is not the identity's")
	}
	mom := Peer{Name: "mom", Group: "mom", PublicKey: wgconf.NewPrivateKey().PublicKey(), PresharedKey: wgconf.NewPresharedKey(), IPv4: addr("10.77.0.2")}
	if err := s.SetPeers([]Peer{mom}); err != nil {
		t.Errorf("SetPeers before Open (kept for Open): %v", err)
	}
	if err := s.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := s.PeerStatus(); len(got) != 1 || got[0].Name != "mom" {
		t.Errorf("peers set before Open: %+v", got)
	}
	if err := s.Open(context.Background()); err == nil {
		t.Error("second Open: no error")
	}
	for _, bad := range []Peer{
		{Name: "nokey", PresharedKey: mom.PresharedKey, IPv4: addr("10.77.0.3")},
		{Name: "noaddr", PublicKey: wgconf.NewPrivateKey().PublicKey(), PresharedKey: mom.PresharedKey},
	} {
		if err := s.SetPeers([]Peer{mom, bad}); err == nil || !strings.Contains(err.Error(), bad.Name) {
			t.Errorf("SetPeers with %s: %v", bad.Name, err)
		}
	}
	dup := mom
	dup.Name = "twin"
	if err := s.SetPeers([]Peer{mom, dup}); !errors.Is(err, ErrKeyInUse) {
		t.Errorf("SetPeers with a key twice: %v", err)
	}
	if got := s.PeerStatus(); len(got) != 1 {
		t.Errorf("a refused SetPeers changed the peers: %+v", got)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := s.SetPeers(nil); !errors.Is(err, ErrNotRunning) {
		t.Errorf("SetPeers after Close: %v", err)
	}

	// A port already taken fails Open with the port named; Close after
	// the failed Open is safe.
	h := newHub()
	busy := h.bind()
	if _, _, err := busy.Open(51820); err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	s2, err := New(cfg, Deps{Identity: id, TUN: tuntest.NewChannelTUN().TUN(), NewBind: h.bind, DisableUAPI: true})
	if err != nil {
		t.Fatal(err)
	}
	err = s2.Open(context.Background())
	if err == nil || !strings.HasPrefix(err.Error(), "vpn: listening on UDP port 51820: ") {
		t.Errorf("Open on a busy port: got %v", err)
	}
	if err := s2.Close(); err != nil {
		t.Errorf("Close after failed Open: %v", err)
	}
}

func TestServiceReload(t *testing.T) {
	testutil.LeakCheck(t)
	h := newHub()
	cfg := testConfig(t)
	st := testStore(t, cfg)
	ts := startServer(t, cfg, st, h)
	if _, err := ts.AddPeer(AddPeerRequest{Name: "mom"}); err != nil {
		t.Fatal(err)
	}
	next := *cfg
	next.VPN.DNS = []netip.Addr{addr("9.9.9.9")}
	next.VPN.ListenPort = 51999
	next.VPN.Address = []netip.Prefix{pfx("10.88.0.1/24")}
	next.VPN.Interface = "other0"
	next.VPN.MTU = 1380 // an injected TUN's MTU is not ours to change
	err := ts.Reload(&next)
	if err == nil {
		t.Fatal("reload changing vpn.address and vpn.interface: no error")
	}
	var refused []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var fe *config.FieldError
		if errors.As(e, &fe) && fe.Msg == "changing it needs a restart" {
			refused = append(refused, fe.Key)
		}
	}
	if strings.Join(refused, " ") != "vpn.interface vpn.address vpn.listen_port vpn.mtu" {
		t.Errorf("refused %v (err %v)", refused, err)
	}
	// Every device dials the port its config names: the port stays.
	if ts.ListenPort() != 51820 {
		t.Errorf("listen port %d after reload, want 51820 kept", ts.ListenPort())
	}
	if c := ts.Config().VPN; c.ListenPort != 51820 || c.Interface != cfg.VPN.Interface || c.DNS[0] != addr("9.9.9.9") {
		t.Errorf("config in effect: listen_port %d, interface %s, dns %v", c.ListenPort, c.Interface, c.DNS)
	}
	conf, err := ts.ClientConfig("mom")
	if err != nil {
		t.Fatal(err)
	}
	c := parseWGQuick(t, conf)
	if c["Interface.DNS"] != "9.9.9.9" || c["Peer.Endpoint"] != "vpn.example.com:51820" {
		t.Errorf("exported config after reload: %v", c)
	}
	if c["Interface.MTU"] != "1420" || !strings.HasPrefix(c["Interface.Address"], "10.77.0.") {
		t.Errorf("refused keys leaked into the config in effect: %v", c)
	}
}
