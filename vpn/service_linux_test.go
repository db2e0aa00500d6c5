package vpn

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tariq-vpn/tariq/internal/wgconf"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/tariq-vpn/tariq/config"
	"github.com/tariq-vpn/tariq/internal/store"
	"github.com/tariq-vpn/tariq/internal/testutil"
)

// kernelTopology is a server namespace with an uplink (up0) to an
// "internet" namespace (up1) that has no route back to the VPN subnets, so
// only NAT lets replies home. Their addresses are in no special-purpose
// range (these namespaces are all they exist in): members may reach the
// internet host, and the server's are public addresses of its own.
type kernelTopology struct {
	server, inet *testutil.NetNS
}

var (
	srvUp4  = pfx("198.20.0.1/24")
	inetUp4 = pfx("198.20.0.2/24")
	srvUp6  = pfx("2a0e:8f02:f017::1/64")
	inetUp6 = pfx("2a0e:8f02:f017::2/64")
)

func newKernelTopology(t *testing.T) kernelTopology {
	t.Helper()
	testutil.RequireRoot(t)
	for _, b := range []string{"ip", "nft", "wg"} {
		testutil.RequireBinary(t, b)
	}
	k := kernelTopology{server: testutil.NewNetNS(t), inet: testutil.NewNetNS(t)}
	testutil.Veth(t, testutil.VethEnd{NS: k.server, Name: "up0", Addrs: []netip.Prefix{srvUp4, srvUp6}},
		testutil.VethEnd{NS: k.inet, Name: "up1", Addrs: []netip.Prefix{inetUp4, inetUp6}})
	k.server.Run("ip", "route", "add", "default", "via", inetUp4.Addr().String())
	k.server.Run("ip", "-6", "route", "add", "default", "via", inetUp6.Addr().String())
	return k
}

// openIn builds and opens a Service inside ns, the way the daemon would
// run there.
func openIn(t *testing.T, ns *testutil.NetNS, cfg *config.Config, st *store.Store) (*wired, error) {
	t.Helper()
	s, err := New(cfg, Deps{Logger: testLogger(t), Identity: identity(t, cfg, st)})
	if err != nil {
		t.Fatal(err)
	}
	w := wire(t, cfg, st, s)
	if err = ns.Do(func() error { return s.Open(context.Background()) }); err == nil {
		w.start(t)
	}
	return w, err
}

// quietTUN is a channel TUN that never reports itself up, so a client
// device comes up only when the test calls Up (inside a namespace) and
// never from wireguard-go's event goroutine in the host namespace.
type quietTUN struct {
	tun.Device
	events chan tun.Event
}

var _ tun.Device = (*quietTUN)(nil)

func (q *quietTUN) Events() <-chan tun.Event { return q.events }
func (q *quietTUN) Close() error {
	err := q.Device.Close()
	close(q.events)
	return err
}

// kernelClient is a wireguard-go client whose UDP sockets live in ns.
func kernelClient(t *testing.T, ns *testutil.NetNS, conf string) *testClient {
	t.Helper()
	c := parseWGQuick(t, conf)
	priv, _ := wgconf.ParseKey(c["Interface.PrivateKey"])
	serverPub, _ := wgconf.ParseKey(c["Peer.PublicKey"])
	psk, _ := wgconf.ParseKey(c["Peer.PresharedKey"])
	set := fmt.Sprintf("private_key=%s\nreplace_peers=true\npublic_key=%s\npreshared_key=%s\nendpoint=%s\nallowed_ip=0.0.0.0/0\nallowed_ip=::/0\n",
		priv.Hex(), serverPub.Hex(), psk.Hex(), c["Peer.Endpoint"])
	tc := &testClient{tun: tuntest.NewChannelTUN(), set: set}
	for a := range strings.SplitSeq(c["Interface.Address"], ",") {
		p := pfx(strings.TrimSpace(a))
		if p.Addr().Is4() {
			tc.v4 = p.Addr()
		} else {
			tc.v6 = p.Addr()
		}
	}
	qt := &quietTUN{Device: tc.tun.TUN(), events: make(chan tun.Event)}
	tc.dev = device.NewDevice(qt, conn.NewDefaultBind(), newWGLog(testLogger(t)).deviceLogger())
	t.Cleanup(tc.dev.Close)
	if err := ns.Do(func() error {
		if err := tc.dev.IpcSet(set); err != nil {
			return err
		}
		return tc.dev.Up()
	}); err != nil {
		t.Fatal(err)
	}
	return tc
}

// echoReply waits for an ICMP or ICMPv6 echo reply from src on the
// client's TUN.
func (c *testClient) echoReply(src netip.Addr, timeout time.Duration) bool {
	deadline := time.After(timeout)
	for {
		select {
		case p := <-c.tun.Inbound:
			if src.Is4() && len(p) >= 28 && p[0]>>4 == 4 && p[9] == 1 && p[20] == 0 && netip.AddrFrom4([4]byte(p[12:16])) == src {
				return true
			}
			if src.Is6() && len(p) >= 48 && p[0]>>4 == 6 && p[6] == 58 && p[40] == 129 && netip.AddrFrom16([16]byte(p[8:24])) == src {
				return true
			}
		case <-deadline:
			return false
		}
	}
}

// ping4 is an ICMP echo request (RFC 792) with correct checksums, which
// the kernel checks (tuntest.Ping's are not meant for a kernel).
func ping4(src, dst netip.Addr) []byte {
	p := make([]byte, 20+12)
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	p[8], p[9] = 64, 1
	s, d := src.As4(), dst.As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	binary.BigEndian.PutUint16(p[10:], inetChecksum(p[:20], 0))
	icmp := p[20:]
	icmp[0] = 8
	binary.BigEndian.PutUint16(icmp[4:], 0x7471)
	binary.BigEndian.PutUint16(icmp[6:], 1)
	copy(icmp[8:], "tarq")
	binary.BigEndian.PutUint16(icmp[2:], inetChecksum(icmp, 0))
	return p
}

// inetChecksum is the RFC 1071 checksum of b, starting from sum.
func inetChecksum(b []byte, sum uint32) uint16 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// ping6 is an ICMPv6 echo request (RFC 4443 section 4.1) with its checksum.
func ping6(src, dst netip.Addr) []byte {
	p := make([]byte, 40+12)
	p[0] = 0x60
	binary.BigEndian.PutUint16(p[4:], 12)
	p[6], p[7] = 58, 64
	s, d := src.As16(), dst.As16()
	copy(p[8:], s[:])
	copy(p[24:], d[:])
	icmp := p[40:]
	icmp[0] = 128
	binary.BigEndian.PutUint16(icmp[4:], 0x7471) // identifier
	binary.BigEndian.PutUint16(icmp[6:], 1)
	copy(icmp[8:], "tarq")
	var sum uint32 // pseudo-header (RFC 8200 section 8.1): addresses, length, next header
	for i := 8; i < 40; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(p[i:]))
	}
	sum += uint32(len(icmp)) + 58
	binary.BigEndian.PutUint16(icmp[2:], inetChecksum(icmp, sum))
	return p
}

// TestServiceKernel runs the Service as the daemon does, over a kernel
// TUN in a namespace: addresses, link, forwarding, nftables table, UAPI
// socket for wg(8); a client pings the server and, through NAT, a host
// that has no route back to the VPN; peers change live; reload edits NAT
// and MTU; Close removes the table and nothing else.
func TestServiceKernel(t *testing.T) {
	testutil.LeakCheck(t)
	k := newKernelTopology(t)
	other := otherTable(t, k.server)
	// A table left by a crashed run, to be replaced.
	k.server.Run("nft", "add table inet tariq; add chain inet tariq stale")

	cfg := testConfig(t)
	cfg.Server.PublicHost = srvUp4.Addr().String()
	name := cfg.VPN.Interface
	st := testStore(t, cfg)
	s, err := openIn(t, k.server, cfg, st)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx) }()
	ula := mustLoad(t, st).VPN.ULA
	srv6 := ula.Addr().Next()

	t.Run("interface", func(t *testing.T) {
		addrs := k.server.Run("ip", "-o", "addr", "show", "dev", name)
		for _, want := range []string{"inet 10.77.0.1/24", "inet6 " + srv6.String() + "/64"} {
			if !strings.Contains(addrs, want) {
				t.Errorf("%s lacks %q:\n%s", name, want, addrs)
			}
		}
		link := k.server.Run("ip", "-o", "link", "show", "dev", name)
		if !strings.Contains(link, ",UP") || !strings.Contains(link, "mtu 1420") {
			t.Errorf("link not up with MTU 1420: %s", link)
		}
		if _, err := net.InterfaceByName(name); err == nil {
			t.Error("the TUN appeared in the host namespace")
		}
		for f, want := range map[string]string{
			"/proc/sys/net/ipv4/ip_forward":          "1",
			"/proc/sys/net/ipv6/conf/all/forwarding": "1",
			// forwarding on would make the uplink ignore router
			// advertisements; 2 keeps a SLAAC default route alive.
			"/proc/sys/net/ipv6/conf/up0/accept_ra": "2",
		} {
			if v := strings.TrimSpace(k.server.Run("cat", f)); v != want {
				t.Errorf("%s = %s in the server namespace, want %s", f, v, want)
			}
		}
	})

	t.Run("table", func(t *testing.T) {
		got := k.server.Run("nft", "list", "table", "inet", Table)
		for _, want := range []string{
			`oifname "up0" ip saddr 10.77.0.0/24 counter`,
			`oifname "up0" ip6 saddr ` + ula.String() + ` counter`,
		} {
			if !strings.Contains(got, want) {
				t.Errorf("table lacks %q:\n%s", want, got)
			}
		}
		if strings.Contains(got, "stale") {
			t.Errorf("the stale table was not replaced:\n%s", got)
		}
		for _, want := range []string{"iifname \"" + name + "\" jump member_out", "iifname \"" + name + "\" jump member_in"} {
			if !strings.Contains(got, want) {
				t.Errorf("table lacks %q:\n%s", want, got)
			}
		}
	})

	t.Run("wg show", func(t *testing.T) {
		if got := strings.TrimSpace(runWG(t, "show", name, "public-key")); got != s.ServerPublicKey() {
			t.Errorf("wg show public-key = %q, want %q", got, s.ServerPublicKey())
		}
		if got := strings.TrimSpace(runWG(t, "show", name, "listen-port")); got != "51820" {
			t.Errorf("wg show listen-port = %q", got)
		}
	})

	mom, err := s.AddPeer(AddPeerRequest{Name: "mom"})
	if err != nil {
		t.Fatal(err)
	}
	t.Run("peers via wg", func(t *testing.T) {
		got := runWG(t, "show", name, "allowed-ips")
		want := mom.PublicKey + "\t" + mom.IPv4.String() + "/32 " + mom.IPv6.String() + "/128"
		if !strings.Contains(got, want) {
			t.Errorf("wg show allowed-ips:\n%s\nwant a line %q", got, want)
		}
		if err := s.SetPeerEnabled("mom", false); err != nil {
			t.Fatal(err)
		}
		if got := runWG(t, "show", name, "peers"); strings.Contains(got, mom.PublicKey) {
			t.Error("disabled peer still on the device")
		}
		if err := s.SetPeerEnabled("mom", true); err != nil {
			t.Fatal(err)
		}
	})

	conf, err := s.ClientConfig("mom")
	if err != nil {
		t.Fatal(err)
	}
	client := kernelClient(t, k.inet, conf)
	t.Run("traffic through the kernel and NAT", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			pkt  []byte
			from netip.Addr
		}{
			{"server over IPv4", ping4(client.v4, addr("10.77.0.1")), addr("10.77.0.1")},
			{"server over IPv6", ping6(client.v6, srv6), srv6},
			{"internet over IPv4", ping4(client.v4, inetUp4.Addr()), inetUp4.Addr()},
			{"internet over IPv6", ping6(client.v6, inetUp6.Addr()), inetUp6.Addr()},
		} {
			client.send(t, tc.pkt)
			if !client.echoReply(tc.from, arrives) {
				t.Errorf("%s: no echo reply from %s", tc.name, tc.from)
			}
		}
		got := k.server.Run("nft", "list", "table", "inet", Table)
		for line := range strings.Lines(got) {
			if strings.Contains(line, "masquerade") && strings.Contains(line, "counter packets 0 ") {
				t.Errorf("a masquerade rule matched nothing:\n%s", got)
			}
		}
		st := s.Devices()
		if len(st) != 1 || st[0].LastHandshake.IsZero() || st[0].Endpoint.Addr() != inetUp4.Addr() {
			t.Errorf("status %+v, want a handshake from %s", st, inetUp4.Addr())
		}
	})

	t.Run("reload", func(t *testing.T) {
		next := *cfg
		next.VPN.NAT = false
		next.VPN.MTU = 1380
		if err := s.Reload(&next); err != nil {
			t.Fatal(err)
		}
		if got := k.server.Run("nft", "list", "table", "inet", Table); strings.Contains(got, "masquerade") || !strings.Contains(got, "member_out") {
			t.Errorf("with vpn.nat off the table keeps the filter and loses NAT:\n%s", got)
		}
		if link := k.server.Run("ip", "-o", "link", "show", "dev", name); !strings.Contains(link, "mtu 1380") {
			t.Errorf("MTU not changed: %s", link)
		}
		next.VPN.NAT, next.VPN.Uplink = true, "up0"
		if err := s.Reload(&next); err != nil {
			t.Fatal(err)
		}
		if got := k.server.Run("nft", "list", "table", "inet", Table); strings.Count(got, "masquerade") != 2 {
			t.Errorf("NAT not back:\n%s", got)
		}
	})

	cancel()
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if tables := k.server.Run("nft", "list", "tables"); strings.Contains(tables, "inet "+Table+"\n") {
		t.Errorf("the table outlived Close:\n%s", tables)
	}
	if now := k.server.Run("nft", "list", "table", "ip", "other") + k.server.Run("nft", "list", "table", "inet", "tariqx"); now != other {
		t.Errorf("another table changed:\nbefore:\n%s\nafter:\n%s", other, now)
	}
	if _, err := k.server.TryRun("ip", "link", "show", "dev", name); err == nil {
		t.Errorf("%s outlived Close", name)
	}
	if _, err := os.Stat(uapiSocketPath(name)); !os.IsNotExist(err) {
		t.Errorf("UAPI socket outlived Close: %v", err)
	}
}

func runWG(t *testing.T, args ...string) string {
	t.Helper()
	out, err := execOutput("wg", args...)
	if err != nil {
		t.Fatalf("wg %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return out
}

// TestServiceKernelFailures: each failure in Open is named and leaves
// nothing behind; a TUN removed under a running service ends Serve with an
// error, and Close still cleans up.
func TestServiceKernelFailures(t *testing.T) {
	testutil.LeakCheck(t)
	k := newKernelTopology(t)
	noTable := func(t *testing.T) {
		t.Helper()
		if tables := k.server.Run("nft", "list", "tables"); strings.Contains(tables, "inet "+Table+"\n") {
			t.Errorf("table left behind:\n%s", tables)
		}
	}

	t.Run("interface name taken", func(t *testing.T) {
		cfg := testConfig(t)
		k.server.Run("ip", "link", "add", cfg.VPN.Interface, "type", "veth", "peer", "name", cfg.VPN.Interface+"p")
		s, err := openIn(t, k.server, cfg, testStore(t, cfg))
		if want := "vpn: opening TUN " + cfg.VPN.Interface + ": "; err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("got %v, want %q…", err, want)
		}
		if err := s.Close(); err != nil {
			t.Errorf("Close after failed Open: %v", err)
		}
		noTable(t)
	})

	t.Run("port taken", func(t *testing.T) {
		cfg := testConfig(t)
		cfg.VPN.ListenPort = 51821
		var pc net.PacketConn
		if err := k.server.Do(func() (err error) { pc, err = net.ListenPacket("udp4", ":51821"); return err }); err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		s, err := openIn(t, k.server, cfg, testStore(t, cfg))
		if err == nil || !strings.HasPrefix(err.Error(), "vpn: listening on UDP port 51821: ") || !strings.Contains(err.Error(), "address already in use") {
			t.Errorf("got %v", err)
		}
		s.Close()
		if _, err := k.server.TryRun("ip", "link", "show", "dev", cfg.VPN.Interface); err == nil {
			t.Errorf("%s left behind", cfg.VPN.Interface)
		}
		noTable(t)
	})

	t.Run("interface removed while serving", func(t *testing.T) {
		cfg := testConfig(t)
		s, err := openIn(t, k.server, cfg, testStore(t, cfg))
		if err != nil {
			t.Fatal(err)
		}
		served := make(chan error, 1)
		go func() { served <- s.Serve(context.Background()) }()
		k.server.Run("ip", "link", "del", cfg.VPN.Interface)
		select {
		case err := <-served:
			if err == nil || !strings.Contains(err.Error(), "stopped") {
				t.Errorf("Serve returned %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Serve did not notice its interface going away")
		}
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		noTable(t)
	})
}
