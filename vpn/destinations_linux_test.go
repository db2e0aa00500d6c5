package vpn

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tariq-vpn/tariq/config"
	"github.com/tariq-vpn/tariq/internal/testutil"
)

// The destination lab: the kernel topology (server, internet) and
//
//	phone  198.20.1.2 ── 198.20.1.1 internet (a router) 198.20.0.2 ── 198.20.0.1 server 192.168.77.1 ── 192.168.77.2 lan
//	                                 169.254.169.254, fd00:ec2::254 (metadata)          fd77::1      ──      fd77::2
//
// The phone is a member's device running upstream wireguard-go over a
// kernel TUN, all its traffic through the tunnel as wg-quick routes it,
// dialling the server's public address across the internet namespace. A
// second member's device (wireguard-go as a library over a channel TUN)
// sees what reaches it and sends hand-made packets (to the server's
// loopback, which no kernel would route into a tunnel). The metadata
// addresses sit on the internet side, where a cloud's are reached through
// the uplink; the lan is a private network behind the server.
type destLab struct {
	kernelTopology
	lan, phoneNS *testutil.NetNS
	s            *wired
	cfg          *config.Config
	phone        memberDevice
	tablet       *testClient
	srv6         netip.Addr // the server's IPv6 tunnel address
}

const canaryPort = 7777 // outside every port tariq serves on (config.ServicePorts)

var (
	lanSrv4, lanDev4 = pfx("192.168.77.1/24"), pfx("192.168.77.2/24")
	lanSrv6, lanDev6 = pfx("fd77::1/64"), pfx("fd77::2/64")
	meta4, meta6     = addr("169.254.169.254"), addr("fd00:ec2::254")
)

func newDestLab(t *testing.T) *destLab {
	t.Helper()
	testutil.RequireBinary(t, "busybox")
	l := &destLab{kernelTopology: newKernelTopology(t)}
	l.inet.Run("sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
	l.inet.Run("ip", "addr", "add", meta4.String()+"/32", "dev", "up1")
	l.inet.Run("ip", "addr", "add", meta6.String()+"/128", "dev", "up1", "nodad")

	l.lan = testutil.NewNetNS(t)
	testutil.Veth(t, testutil.VethEnd{NS: l.server, Name: "lan0", Addrs: []netip.Prefix{lanSrv4, lanSrv6}},
		testutil.VethEnd{NS: l.lan, Name: "lan1", Addrs: []netip.Prefix{lanDev4, lanDev6}})
	l.lan.Run("ip", "route", "add", "default", "via", lanSrv4.Addr().String())
	l.lan.Run("ip", "-6", "route", "add", "default", "via", lanSrv6.Addr().String())

	l.phoneNS = testutil.NewNetNS(t)
	testutil.Veth(t, testutil.VethEnd{NS: l.inet, Name: "ph0", Addrs: []netip.Prefix{pfx("198.20.1.1/24")}},
		testutil.VethEnd{NS: l.phoneNS, Name: "eth0", Addrs: []netip.Prefix{pfx("198.20.1.2/24")}})
	l.phoneNS.Run("ip", "route", "add", "default", "via", "198.20.1.1")

	cfg := testConfig(t)
	cfg.Server.PublicHost = srvUp4.Addr().String()
	// The relay and the page are not run here, but their ports are
	// tariq's, which members reach on the server as the internet does.
	cfg.Relay.Enabled, cfg.Web.Enabled = true, true
	l.cfg = cfg
	st := testStore(t, cfg)
	s, err := openIn(t, l.server, cfg, st)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	l.s = s
	l.srv6 = mustLoad(t, st).VPN.ULA.Addr().Next()
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})

	for _, name := range []string{"phone", "tablet"} {
		if _, err := s.AddPeer(AddPeerRequest{Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	conf, err := s.ClientConfig("phone")
	if err != nil {
		t.Fatal(err)
	}
	l.phone = upMemberDevice(t, l.phoneNS, "wgphone", conf)
	conf, err = s.ClientConfig("tablet")
	if err != nil {
		t.Fatal(err)
	}
	l.tablet = kernelClient(t, l.inet, conf)
	return l
}

// reload applies change to a copy of the lab's config through Reload.
func (l *destLab) reload(t *testing.T, change func(*config.Config)) {
	t.Helper()
	next := *l.cfg
	next.VPN.AllowDestinations = append([]netip.Prefix(nil), l.cfg.VPN.AllowDestinations...)
	next.VPN.DenyDestinations = append([]netip.Prefix(nil), l.cfg.VPN.DenyDestinations...)
	change(&next)
	if err := l.s.Reload(&next); err != nil {
		t.Fatal(err)
	}
	l.cfg = &next
}

// memberDevice is a namespace running upstream wireguard-go as a member's
// device.
type memberDevice struct {
	ns     *testutil.NetNS
	v4, v6 netip.Addr
}

// upMemberDevice brings wireguard-go up in ns the way wg-quick would from
// conf: the wg-quick keys stripped for `wg setconf`, addresses, MTU, and
// policy routing for 0.0.0.0/0 and ::/0 (fwmark 51820, table 51820,
// suppress_prefixlength 0), so everything but the tunnel's own packets
// takes the tunnel.
func upMemberDevice(t *testing.T, ns *testutil.NetNS, ifname, conf string) memberDevice {
	t.Helper()
	wgGo := testutil.BuildWireGuardGo(t)
	sock := ns.WireGuardSocket(ifname)
	os.Remove(sock)
	ns.Start(wgGo, "-f", ifname)
	if err := testutil.WaitListening(sock, 10*time.Second); err != nil {
		t.Fatalf("wireguard-go did not open its UAPI socket: %v", err)
	}
	d := memberDevice{ns: ns}
	var lines, addrs []string
	section := ""
	for line := range strings.Lines(conf) {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "[") {
			section = line
		}
		k, v, _ := strings.Cut(line, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if section == "[Interface]" && (k == "Address" || k == "DNS" || k == "MTU") {
			if k == "Address" {
				addrs = strings.Split(v, ",")
			}
			continue
		}
		lines = append(lines, line)
	}
	stripped := filepath.Join(t.TempDir(), ifname+".conf")
	if err := os.WriteFile(stripped, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ns.Run("wg", "setconf", ifname, stripped)
	ns.Run("wg", "set", ifname, "fwmark", "51820")
	for _, a := range addrs {
		p := pfx(strings.TrimSpace(a))
		if p.Addr().Is4() {
			d.v4 = p.Addr()
		} else {
			d.v6 = p.Addr()
		}
		ns.Run("ip", "addr", "add", p.String(), "dev", ifname)
	}
	ns.Run("ip", "link", "set", "mtu", "1420", "up", "dev", ifname)
	for _, fam := range []string{"-4", "-6"} {
		def := "0.0.0.0/0"
		if fam == "-6" {
			def = "::/0"
		}
		ns.Run("ip", fam, "route", "add", def, "dev", ifname, "table", "51820")
		ns.Run("ip", fam, "rule", "add", "not", "fwmark", "51820", "table", "51820")
		ns.Run("ip", fam, "rule", "add", "table", "main", "suppress_prefixlength", "0")
	}
	return d
}

// ping reports whether dst answers a ping through the tunnel.
func (d memberDevice) ping(dst netip.Addr) bool {
	_, err := d.ns.TryRun("busybox", "ping", "-c", "1", "-W", "2", "-w", "3", dst.String())
	return err == nil
}

// waitUp waits for the tunnel to carry a ping to the server's tunnel
// address (the first packet waits for a handshake).
func (d memberDevice) waitUp(t *testing.T, srv netip.Addr) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !d.ping(srv) {
		if time.Now().After(deadline) {
			t.Fatalf("the member's device cannot ping %s through the tunnel", srv)
		}
	}
}

// probe sends "probe" to ap over proto (tcp or udp) from the device and
// reports whether it came back (every canary echoes). It waits at most
// wait.
func (d memberDevice) probe(proto string, ap netip.AddrPort, wait time.Duration) bool {
	var c net.Conn
	if err := d.ns.Do(func() (err error) {
		c, err = net.DialTimeout(proto, ap.String(), wait)
		return err
	}); err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(wait))
	if _, err := c.Write([]byte("probe")); err != nil {
		return false
	}
	b := make([]byte, 16)
	n, err := io.ReadAtLeast(c, b, len("probe"))
	return err == nil && string(b[:n]) == "probe"
}

// canary is an echo listener on one address and port, TCP, UDP or both,
// that counts what reaches it.
type canary struct {
	name   string
	ap     netip.AddrPort
	protos []string
	hits   atomic.Int64
}

// listenCanary starts a canary on ap in ns (on every address of ns when
// ap's address is unspecified: [::] takes IPv4 too), for protos ("tcp",
// "udp"; both when none is given). It stops with the test.
func listenCanary(t *testing.T, ns *testutil.NetNS, name string, ap netip.AddrPort, protos ...string) *canary {
	t.Helper()
	if len(protos) == 0 {
		protos = []string{"tcp", "udp"}
	}
	c := &canary{name: name, ap: ap, protos: protos}
	var ln net.Listener
	var pc net.PacketConn
	if err := ns.Do(func() (err error) {
		if slices.Contains(protos, "tcp") {
			if ln, err = net.Listen("tcp", ap.String()); err != nil {
				return err
			}
		}
		if slices.Contains(protos, "udp") {
			pc, err = net.ListenPacket("udp", ap.String())
		}
		return err
	}); err != nil {
		t.Fatalf("canary %s on %s: %v", name, ap, err)
	}
	var wg sync.WaitGroup
	if ln != nil {
		wg.Add(1)
		go c.serveTCP(ln, &wg)
	}
	if pc != nil {
		wg.Add(1)
		go c.serveUDP(pc, &wg)
	}
	t.Cleanup(func() {
		if ln != nil {
			ln.Close()
		}
		if pc != nil {
			pc.Close()
		}
		wg.Wait()
	})
	return c
}

func (c *canary) serveTCP(ln net.Listener, wg *sync.WaitGroup) {
	defer wg.Done()
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		c.hits.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			io.Copy(conn, conn)
		}()
	}
}

func (c *canary) serveUDP(pc net.PacketConn, wg *sync.WaitGroup) {
	defer wg.Done()
	b := make([]byte, 1500)
	for {
		n, from, err := pc.ReadFrom(b)
		if err != nil {
			return
		}
		c.hits.Add(1)
		pc.WriteTo(b[:n], from)
	}
}

// probeAll sends every probe ("tcp 198.20.0.2:7777") at once from the
// device and returns which came back; every probe has had wait to arrive
// by the time it returns.
func (d memberDevice) probeAll(probes []string, wait time.Duration) map[string]bool {
	var mu sync.Mutex
	got := map[string]bool{}
	var wg sync.WaitGroup
	for _, p := range probes {
		proto, ap, _ := strings.Cut(p, " ")
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok := d.probe(proto, netip.MustParseAddrPort(ap), wait)
			mu.Lock()
			got[p] = ok
			mu.Unlock()
		}()
	}
	wg.Wait()
	return got
}

// TestDestinationPolicy: what a member's device reaches through the tunnel.
// Never the server itself (its loopback, its public addresses, its other
// interfaces, its tunnel address beyond ping and DNS), a cloud metadata
// address, a private network behind the server, or another member's
// device; always the internet, tariq's own ports on the server, and ping
// and DNS on the tunnel address. A reload adding a deny_destinations range
// cuts it, connections under way included; allow_destinations opens a
// private range; member_to_member lets members reach each other.
func TestDestinationPolicy(t *testing.T) {
	testutil.LeakCheck(t)
	l := newDestLab(t)
	port := func(a netip.Addr, p uint16) netip.AddrPort { return netip.AddrPortFrom(a, p) }

	// The canaries: everything of the server on the canary port, the
	// metadata service, the lan host.
	server := listenCanary(t, l.server, "the server", port(netip.IPv6Unspecified(), canaryPort))
	metadata4 := listenCanary(t, l.inet, "metadata", port(meta4, canaryPort))
	metadata6 := listenCanary(t, l.inet, "metadata over IPv6", port(meta6, canaryPort))
	lan := listenCanary(t, l.lan, "the lan host", port(netip.IPv6Unspecified(), canaryPort))
	// What must answer: the internet host, tariq's ports (stand-ins for
	// the page on 443 and TURN on 3478), DNS on the tunnel address.
	inet4 := listenCanary(t, l.inet, "internet", port(inetUp4.Addr(), canaryPort))
	inet6 := listenCanary(t, l.inet, "internet over IPv6", port(inetUp6.Addr(), canaryPort))
	page := listenCanary(t, l.server, "tariq's page port", port(srvUp4.Addr(), 443), "tcp")
	notPage := listenCanary(t, l.server, "UDP on the page's port (tariq takes none)", port(srvUp4.Addr(), 443), "udp")
	turn := listenCanary(t, l.server, "tariq's TURN port", port(srvUp4.Addr(), 3478))
	dns4 := listenCanary(t, l.server, "DNS on the tunnel address", port(addr("10.77.0.1"), 53))
	dns6 := listenCanary(t, l.server, "DNS on the IPv6 tunnel address", port(l.srv6, 53))

	l.phone.waitUp(t, addr("10.77.0.1"))
	// The second member's device: up, and quiet from here on.
	l.tablet.send(t, ping4(l.tablet.v4, addr("10.77.0.1")))
	if !l.tablet.echoReply(addr("10.77.0.1"), arrives) {
		t.Fatal("the second member's device gets no answer from the server")
	}
	// drain empties the device's TUN of what earlier rounds sent it, until
	// it has been quiet a while: wireguard-go may still hold packets in
	// its queues when the channel looks empty.
	drain := func() {
		for {
			select {
			case <-l.tablet.tun.Inbound:
			case <-time.After(silence):
				return
			}
		}
	}

	// Each canary and the addresses the phone probes it at.
	probes := []struct {
		c   *canary
		aps []netip.AddrPort
	}{
		{server, []netip.AddrPort{
			port(srvUp4.Addr(), canaryPort), port(srvUp6.Addr(), canaryPort), // its public addresses
			port(lanSrv4.Addr(), canaryPort), port(lanSrv6.Addr(), canaryPort), // another interface's
			port(addr("10.77.0.1"), canaryPort), port(l.srv6, canaryPort), // the tunnel address, but not ping or DNS
		}},
		{metadata4, []netip.AddrPort{metadata4.ap}},
		{metadata6, []netip.AddrPort{metadata6.ap}},
		{lan, []netip.AddrPort{port(lanDev4.Addr(), canaryPort), port(lanDev6.Addr(), canaryPort)}},
		{inet4, []netip.AddrPort{inet4.ap}},
		{inet6, []netip.AddrPort{inet6.ap}},
		{page, []netip.AddrPort{page.ap}},
		{notPage, []netip.AddrPort{notPage.ap}},
		{turn, []netip.AddrPort{turn.ap}},
		{dns4, []netip.AddrPort{dns4.ap}},
		{dns6, []netip.AddrPort{dns6.ap}},
	}
	answering := []*canary{inet4, inet6, page, turn, dns4, dns6} // with the defaults
	tabletTargets := []netip.AddrPort{port(l.tablet.v4, canaryPort), port(l.tablet.v6, canaryPort)}

	// round probes every canary from the phone (TCP and UDP), the second
	// member's device too, and the server's loopback from that device; it
	// checks that the canaries in want answered every probe and the others
	// got nothing, and returns whether the second member's device saw the
	// phone's probes.
	round := func(t *testing.T, want ...*canary) (tabletReached bool) {
		t.Helper()
		before := map[*canary]int64{}
		var targets []string
		for _, p := range probes {
			before[p.c] = p.c.hits.Load()
			for _, ap := range p.aps {
				for _, proto := range p.c.protos {
					targets = append(targets, proto+" "+ap.String())
				}
			}
		}
		for _, ap := range tabletTargets {
			targets = append(targets, "tcp "+ap.String(), "udp "+ap.String())
		}
		drain()
		seen := make(chan bool, 1)
		go func() { seen <- l.tablet.sawPort(canaryPort, 4*time.Second) }()
		// Hand-made packets to the server's loopback: no kernel routes
		// those into a tunnel.
		for _, dst := range []netip.Addr{addr("127.0.0.1"), addr("::1")} {
			src := l.tablet.v4
			if dst.Is6() {
				src = l.tablet.v6
			}
			l.tablet.send(t, udpPacket(src, dst, 40000, canaryPort, []byte("probe")))
			l.tablet.send(t, tcpSYN(src, dst, 40001, canaryPort))
		}
		got := l.phone.probeAll(targets, 2*time.Second)
		tabletReached = <-seen
		for _, p := range probes {
			if slices.Contains(want, p.c) {
				for _, ap := range p.aps {
					for _, proto := range p.c.protos {
						if !got[proto+" "+ap.String()] {
							t.Errorf("%s (%s %s) did not answer through the tunnel", p.c.name, proto, ap)
						}
					}
				}
			} else if hits := p.c.hits.Load() - before[p.c]; hits > 0 {
				t.Errorf("%s was reached through the tunnel (%d connections and datagrams)", p.c.name, hits)
			}
		}
		return tabletReached
	}

	t.Run("defaults", func(t *testing.T) {
		if round(t, answering...) {
			t.Error("the phone reached the second member's device")
		}
		for _, a := range []netip.Addr{addr("10.77.0.1"), l.srv6} {
			if !l.phone.ping(a) {
				t.Errorf("the tunnel address %s does not answer ping", a)
			}
		}
		// The drops happened where the table says, by rule.
		table := l.server.Run("nft", "list", "table", "inet", Table)
		for _, rule := range []string{`drop comment "server"`, `drop comment "special-purpose"`, `drop comment "member-to-member"`} {
			if !ruleCounted(table, rule) {
				t.Errorf("no packet counted by the rule ending %q:\n%s", rule, table)
			}
		}
	})

	t.Run("deny_destinations by reload cuts", func(t *testing.T) {
		// A connection under way before the reload.
		var c net.Conn
		if err := l.phone.ns.Do(func() (err error) {
			c, err = net.DialTimeout("tcp", inet4.ap.String(), 5*time.Second)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		echo := func() error {
			c.SetDeadline(time.Now().Add(2 * time.Second))
			if _, err := c.Write([]byte("probe")); err != nil {
				return err
			}
			b := make([]byte, 5)
			_, err := io.ReadFull(c, b)
			return err
		}
		if err := echo(); err != nil {
			t.Fatalf("the connection does not work before the reload: %v", err)
		}
		l.reload(t, func(c *config.Config) {
			c.VPN.DenyDestinations = []netip.Prefix{pfx("198.20.0.2/32"), pfx("2a0e:8f02:f017::2/128")}
		})
		if err := echo(); err == nil {
			t.Error("a connection under way outlived a deny_destinations reload")
		}
		round(t, page, turn, dns4, dns6)
		l.reload(t, func(c *config.Config) { c.VPN.DenyDestinations = nil })
	})

	t.Run("allow_destinations opens a private range", func(t *testing.T) {
		l.reload(t, func(c *config.Config) {
			c.VPN.AllowDestinations = []netip.Prefix{pfx("192.168.77.0/24"), pfx("fd77::/64")}
		})
		round(t, append(answering, lan)...) // the server's own lan address stays shut
		l.reload(t, func(c *config.Config) { c.VPN.AllowDestinations = nil })
	})

	t.Run("deny_destinations reaches into NAT64", func(t *testing.T) {
		// On an IPv6-only VPS with NAT64 the operator opens 64:ff9b::/96;
		// an IPv4 range it denies stays denied inside it. nftables has no
		// NAT64 here to deliver to, so the rules' counters tell.
		l.reload(t, func(c *config.Config) {
			c.VPN.AllowDestinations = []netip.Prefix{pfx("64:ff9b::/96")}
			c.VPN.DenyDestinations = []netip.Prefix{pfx("198.20.0.0/24")}
		})
		for _, dst := range []string{"64:ff9b::c614:2", "2002:c614:2::1", "2001:0:4136:e378:8000:63bf:39eb:fffd"} { // 198.20.0.2 in NAT64, 6to4, Teredo
			l.tablet.send(t, udpPacket(l.tablet.v6, addr(dst), 40000, canaryPort, []byte("probe")))
		}
		l.tablet.send(t, udpPacket(l.tablet.v6, addr("64:ff9b::808:808"), 40000, canaryPort, []byte("probe"))) // 8.8.8.8
		deadline := time.Now().Add(5 * time.Second)
		for {
			table := l.server.Run("nft", "list", "chain", "inet", Table, "member_out")
			if strings.Contains(table, "ip6 daddr 64:ff9b::/96 @nh,288,32 @deny4 counter packets 1 ") &&
				strings.Contains(table, "ip6 daddr 2002::/16 @nh,208,32 @deny4 counter packets 1 ") &&
				strings.Contains(table, "ip6 daddr 2001::/32 @nh,288,32 ^ 0xffffffff == @deny4 counter packets 1 ") &&
				strings.Contains(table, "ip6 daddr @allow6 counter packets 1 ") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the IPv4 inside NAT64, 6to4 and Teredo was not denied, or 8.8.8.8 not allowed, by the rules expected:\n%s", table)
			}
			time.Sleep(50 * time.Millisecond)
		}
		l.reload(t, func(c *config.Config) { c.VPN.AllowDestinations, c.VPN.DenyDestinations = nil, nil })
	})

	t.Run("member_to_member", func(t *testing.T) {
		l.reload(t, func(c *config.Config) { c.VPN.MemberToMember = true })
		if !round(t, answering...) {
			t.Error("with member_to_member the phone does not reach the second member's device")
		}
		l.reload(t, func(c *config.Config) { c.VPN.MemberToMember = false })
		if round(t, answering...) {
			t.Error("member_to_member off again: the phone still reaches the second member's device")
		}
	})
}

// ruleCounted reports whether the rule whose listing ends with suffix
// counted a packet.
func ruleCounted(table, suffix string) bool {
	for line := range strings.Lines(table) {
		if strings.HasSuffix(strings.TrimSpace(line), suffix) && !strings.Contains(line, "counter packets 0 ") {
			return true
		}
	}
	return false
}

// sawPort reports whether a TCP or UDP packet to port reaches the device
// within timeout.
func (c *testClient) sawPort(port uint16, timeout time.Duration) bool {
	deadline := time.After(timeout)
	for {
		select {
		case p := <-c.tun.Inbound:
			if dst, ok := transportDst(p); ok && dst == port {
				return true
			}
		case <-deadline:
			return false
		}
	}
}

// transportDst returns the TCP or UDP destination port of IP packet p.
func transportDst(p []byte) (uint16, bool) {
	var proto byte
	var l4 []byte
	switch {
	case len(p) >= 20 && p[0]>>4 == 4:
		proto, l4 = p[9], p[int(p[0]&0xf)*4:]
	case len(p) >= 40 && p[0]>>4 == 6:
		proto, l4 = p[6], p[40:]
	default:
		return 0, false
	}
	if (proto != 6 && proto != 17) || len(l4) < 4 {
		return 0, false
	}
	return binary.BigEndian.Uint16(l4[2:]), true
}

// ipPacket wraps an upper-layer segment in an IPv4 or IPv6 header and
// fills in the segment's checksum at sumAt (RFC 768, RFC 9293 §3.1, RFC
// 8200 §8.1).
func ipPacket(src, dst netip.Addr, proto byte, seg []byte, sumAt int) []byte {
	var pseudo uint32
	s, d := src.AsSlice(), dst.AsSlice()
	for _, b := range [][]byte{s, d} {
		for i := 0; i < len(b); i += 2 {
			pseudo += uint32(binary.BigEndian.Uint16(b[i:]))
		}
	}
	pseudo += uint32(proto) + uint32(len(seg))
	binary.BigEndian.PutUint16(seg[sumAt:], inetChecksum(seg, pseudo))
	if src.Is4() {
		h := make([]byte, 20)
		h[0] = 0x45
		binary.BigEndian.PutUint16(h[2:], uint16(20+len(seg)))
		h[8], h[9] = 64, proto
		copy(h[12:], s)
		copy(h[16:], d)
		binary.BigEndian.PutUint16(h[10:], inetChecksum(h, 0))
		return append(h, seg...)
	}
	h := make([]byte, 40)
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(len(seg)))
	h[6], h[7] = proto, 64
	copy(h[8:], s)
	copy(h[24:], d)
	return append(h, seg...)
}

func udpPacket(src, dst netip.Addr, sport, dport uint16, payload []byte) []byte {
	seg := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint16(seg[0:], sport)
	binary.BigEndian.PutUint16(seg[2:], dport)
	binary.BigEndian.PutUint16(seg[4:], uint16(len(seg)))
	copy(seg[8:], payload)
	return ipPacket(src, dst, 17, seg, 6)
}

func tcpSYN(src, dst netip.Addr, sport, dport uint16) []byte {
	seg := make([]byte, 20)
	binary.BigEndian.PutUint16(seg[0:], sport)
	binary.BigEndian.PutUint16(seg[2:], dport)
	binary.BigEndian.PutUint32(seg[4:], 1) // sequence number
	seg[12] = 5 << 4                       // data offset: 5 words
	seg[13] = 0x02                         // SYN
	binary.BigEndian.PutUint16(seg[14:], 65535)
	return ipPacket(src, dst, 6, seg, 16)
}
