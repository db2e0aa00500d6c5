package vpn

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tariq-vpn/tariq/internal/wgconf"

	awgconn "github.com/amnezia-vpn/amneziawg-go/conn"
	awgdevice "github.com/amnezia-vpn/amneziawg-go/device"
	awgtuntest "github.com/amnezia-vpn/amneziawg-go/tun/tuntest"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/tariq-vpn/tariq/config"
	"github.com/tariq-vpn/tariq/internal/testutil"
)

// awgHubBind puts an amneziawg-go device on the in-memory hub: its conn
// package has the same Bind as wireguard-go's, in its own types.
type awgHubBind struct{ b conn.Bind }

var _ awgconn.Bind = awgHubBind{}

func (a awgHubBind) Open(port uint16) ([]awgconn.ReceiveFunc, uint16, error) {
	fns, p, err := a.b.Open(port)
	out := make([]awgconn.ReceiveFunc, len(fns))
	for i, fn := range fns {
		out[i] = func(bufs [][]byte, sizes []int, eps []awgconn.Endpoint) (int, error) {
			var ep [1]conn.Endpoint
			n, err := fn(bufs[:1], sizes, ep[:])
			if n > 0 {
				eps[0] = ep[0].(hubEndpoint)
			}
			return n, err
		}
	}
	return out, p, err
}

func (a awgHubBind) Close() error           { return a.b.Close() }
func (a awgHubBind) SetMark(m uint32) error { return a.b.SetMark(m) }
func (a awgHubBind) BatchSize() int         { return a.b.BatchSize() }
func (a awgHubBind) Send(bufs [][]byte, ep awgconn.Endpoint) error {
	return a.b.Send(bufs, ep.(hubEndpoint))
}
func (a awgHubBind) ParseEndpoint(s string) (awgconn.Endpoint, error) {
	ep, err := a.b.ParseEndpoint(s)
	if err != nil {
		return nil, err
	}
	return ep.(hubEndpoint), nil
}

// TestAmneziaWGClientInMemory runs amneziawg-go v0.2.12's own device, the
// engine of the AmneziaWG apps, as the client of tariq's obfuscated port,
// configured through its UAPI from tariq's exported config: packets pass
// both ways, over IPv4 and IPv6, and again after the client restarts its
// handshake. (cmd/tariq's TestObfuscatedWireGuardEndToEnd does the same
// with its binary, kernel TUNs and a censor in between.)
//
// amneziawg-go keeps the headers in package variables, so only one
// AmneziaWG device may run in a test binary at a time.
func TestAmneziaWGClientInMemory(t *testing.T) {
	testutil.LeakCheck(t)
	h := newHub()
	cfg := testConfig(t)
	cfg.Server.PublicHost = "127.0.0.1"
	cfg.VPN.Obfuscation = config.ObfuscationConfig{Enabled: true, ListenPort: 51821}
	st := testStore(t, cfg)
	ts := startServer(t, cfg, st, h)
	if _, err := ts.AddPeer(AddPeerRequest{Name: "awg", Obfuscated: true}); err != nil {
		t.Fatal(err)
	}
	conf, err := ts.ClientConfig("awg")
	if err != nil {
		t.Fatal(err)
	}
	set, v4, v6 := awgUAPISet(t, conf)

	at := awgtuntest.NewChannelTUN()
	level := awgdevice.LogLevelError
	if testing.Verbose() {
		level = awgdevice.LogLevelVerbose
	}
	dev := awgdevice.NewDevice(at.TUN(), awgHubBind{h.bind()}, awgdevice.NewLogger(level, "amneziawg-go: "))
	t.Cleanup(dev.Close)
	if err := dev.IpcSet(set); err != nil {
		t.Fatalf("amneziawg-go refuses tariq's config: %v", err)
	}
	if err := dev.Up(); err != nil {
		t.Fatal(err)
	}
	got, err := dev.IpcGet()
	if err != nil {
		t.Fatal(err)
	}
	p := awgFromConf(t, parseWGQuick(t, conf))
	for _, kv := range []string{fmt.Sprintf("jc=%d", p.Jc), fmt.Sprintf("s1=%d", p.S1), fmt.Sprintf("h4=%d", p.H4)} {
		if !strings.Contains(got, kv+"\n") {
			t.Errorf("amneziawg-go did not take %s:\n%s", kv, got)
		}
	}
	// The shared helpers only use the TUN's channels.
	c := &testClient{tun: &tuntest.ChannelTUN{Inbound: at.Inbound, Outbound: at.Outbound}, v4: v4, v6: v6}
	reaches(t, ts, c)
	for _, ps := range ts.Devices() {
		if ps.Name == "awg" && (ps.LastHandshake.IsZero() || ps.Endpoint.Port() < 40000) {
			t.Errorf("server's view of the AmneziaWG peer: %+v", ps)
		}
	}
	// A fresh handshake: the client forgets its session. WireGuard refuses
	// an initiation whose timestamp is not newer than the last one's, and
	// timestamps are rounded down to 2^24 ns (tai64n whitening): wait that out.
	time.Sleep(50 * time.Millisecond)
	if err := dev.IpcSet(set); err != nil {
		t.Fatal(err)
	}
	reaches(t, ts, c)

	// The server initiates: junk first, then a padded initiation whose
	// MAC1 is made with the client's key. wireguard-go sends at most one
	// initiation per RekeyTimeout (5 s) after its last handshake message.
	before := peerHandshake(t, ts, "awg")
	time.Sleep(device.RekeyTimeout + 100*time.Millisecond)
	pub := device.NoisePublicKey(mustKey(t, peerKey(t, ts, "awg")))
	ts.mu.Lock()
	peer := ts.dev.LookupPeer(pub)
	ts.mu.Unlock()
	if err := peer.SendHandshakeInitiation(false); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(arrives)
	for !peerHandshake(t, ts, "awg").After(before) {
		if time.Now().After(deadline) {
			t.Fatal("the AmneziaWG client did not answer the server's initiation")
		}
		time.Sleep(20 * time.Millisecond)
	}
	reaches(t, ts, c)
}

func peerHandshake(t *testing.T, ts *testServer, name string) time.Time {
	t.Helper()
	for _, p := range ts.Devices() {
		if p.Name == name {
			return p.LastHandshake
		}
	}
	t.Fatalf("no peer %s", name)
	return time.Time{}
}

func peerKey(t *testing.T, ts *testServer, name string) string {
	t.Helper()
	p, err := ts.Device(name)
	if err != nil {
		t.Fatal(err)
	}
	return p.PublicKey
}

func mustKey(t *testing.T, s string) Key {
	t.Helper()
	k, err := wgconf.ParseKey(s)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// awgUAPISet turns an exported AmneziaWG config into the UAPI set that
// awg(8) (amneziawg-tools) would send: the wg(8) keys plus jc, jmin, jmax,
// s1, s2, h1-h4 (amneziawg-go device/uapi.go, handleDeviceLine). It
// returns the set and the client's tunnel addresses.
func awgUAPISet(t *testing.T, conf string) (set string, v4, v6 netip.Addr) {
	t.Helper()
	c := parseWGQuick(t, conf)
	priv, err := wgconf.ParseKey(c["Interface.PrivateKey"])
	if err != nil {
		t.Fatal(err)
	}
	srv, _ := wgconf.ParseKey(c["Peer.PublicKey"])
	psk, _ := wgconf.ParseKey(c["Peer.PresharedKey"])
	var b strings.Builder
	fmt.Fprintf(&b, "private_key=%s\nreplace_peers=true\n", priv.Hex())
	for _, k := range []string{"Jc", "Jmin", "Jmax", "S1", "S2", "H1", "H2", "H3", "H4"} {
		fmt.Fprintf(&b, "%s=%s\n", strings.ToLower(k), c["Interface."+k])
	}
	fmt.Fprintf(&b, "public_key=%s\npreshared_key=%s\nendpoint=%s\npersistent_keepalive_interval=%s\nreplace_allowed_ips=true\n",
		srv.Hex(), psk.Hex(), c["Peer.Endpoint"], c["Peer.PersistentKeepalive"])
	for a := range strings.SplitSeq(c["Peer.AllowedIPs"], ",") {
		fmt.Fprintf(&b, "allowed_ip=%s\n", strings.TrimSpace(a))
	}
	for a := range strings.SplitSeq(c["Interface.Address"], ",") {
		p := pfx(strings.TrimSpace(a))
		if p.Addr().Is4() {
			v4 = p.Addr()
		} else {
			v6 = p.Addr()
		}
	}
	return b.String(), v4, v6
}
