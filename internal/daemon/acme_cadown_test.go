package daemon

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/tariq-vpn/tariq/internal/admin"
	"github.com/tariq-vpn/tariq/internal/certs"
	"github.com/tariq-vpn/tariq/internal/members"
	"github.com/tariq-vpn/tariq/internal/testutil"
	"github.com/tariq-vpn/tariq/internal/wgconf"
)

// TestDaemonACMECADown starts the daemon in tls.mode acme while the CA is
// not listening yet. The daemon is ready at once; TURN relays over UDP and
// TCP; the shared TLS port serves the self-signed fallback for the page and
// TURN over TLS, and the admin API says fallback with the ACME error; a
// WireGuard client handshakes and pings the server through the tunnel.
// Then Pebble comes up and, without a restart, the certificate is obtained
// (TLS-ALPN-01 answered by the shared port) and served to a client trusting
// only Pebble's root, while the tunnel keeps working.
//
// The WireGuard endpoint needs a kernel TUN, so the whole test runs as a
// process of its own in a fresh network namespace (testutil.InNetNS), with
// Pebble, the daemon and the WireGuard client (wireguard-go over a channel
// TUN, its UDP on the namespace's loopback) all inside. Deps.ACMERetry
// retries 200 ms after a failure where certmagic would wait a minute.
func TestDaemonACMECADown(t *testing.T) {
	testutil.RequireRoot(t)
	if !testutil.InNetNS(t, 50*time.Second) {
		return
	}
	testutil.LeakCheck(t, testutil.PebbleLeakOptions()...)
	webPort := testutil.FreePort(t)
	p := testutil.NewPebble(t, testutil.PebbleOptions{TLSPort: webPort}) // not started: its port is closed
	var rnd [3]byte
	rand.Read(rnd[:])
	iface := "tq" + hex.EncodeToString(rnd[:]) // the UAPI socket's path is not per namespace
	wgPort := freeUDPPort(t)
	dir := t.TempDir()
	file := writeConfig(t, dir, acmeYAML(dir, webPort, p,
		fmt.Sprintf("vpn:\n  interface: %s\n  listen_port: %d\n  nat: false", iface, wgPort)))

	r, took := runDaemon(t, file, acmeDeps(webPort, 200*time.Millisecond))
	t.Logf("ready %v after Run with the CA down", took.Round(time.Millisecond))
	web := r.d.WebAddrs()[0].String()

	// TURN over UDP and TCP, right away.
	peer := testutil.UDPEchoOn(t, "127.0.0.1:0").LocalAddr()
	udp, tcp, _ := r.d.Relay().Addrs()
	if err := turnOverUDP(t, r, udp[0].String(), peer); err != nil {
		t.Errorf("TURN over UDP with the CA down: %v", err)
	}
	if err := turnOverTCP(t, r, tcp[0].String(), peer); err != nil {
		t.Errorf("TURN over TCP with the CA down: %v", err)
	}

	// The shared port serves the self-signed fallback, for the page and
	// for TURN over TLS.
	fbPool, fb := fallbackCert(t, r)
	leaf, err := handshake(web, testutil.PebbleName, fbPool, "stun.turn")
	if err != nil || !leaf.Equal(fb) {
		t.Fatalf("TLS on the shared port with the CA down: %v (the fallback: %v)", err, err == nil && leaf.Equal(fb))
	}
	if body, _, err := getPage(web, testutil.PebbleName, fbPool); err != nil || !strings.Contains(body, "tariq") {
		t.Errorf("page with the CA down: %v", err)
	}
	if err := turnOverTLS(t, r, web, testutil.PebbleName, fbPool, peer); err != nil {
		t.Errorf("TURN over TLS on the shared port with the CA down: %v", err)
	}

	// Info and the admin API say fallback, and why.
	deadline := time.Now().Add(issueTimeout)
	for r.d.certs.Info().ACMEError == "" {
		if time.Now().After(deadline) {
			t.Fatal("no ACME failure reported with the CA down")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if info := r.d.certs.Info(); info.Source != certs.SourceFallback || !info.SelfSigned || info.SPKIHash != certs.SPKIHash(fb) {
		t.Errorf("Info with the CA down: %+v, want the fallback", info)
	}
	st := adminStatus(t, r)
	if cs := st.TLS; cs.Source != certs.SourceFallback || !cs.SelfSigned || cs.CA != p.DirectoryURL ||
		!strings.Contains(cs.ACMEError, "connection refused") || cs.SPKIHash != certs.SPKIHash(fb) {
		t.Errorf("admin status tls with the CA down: %+v, want fallback with a connection-refused error", cs)
	}

	// WireGuard serves: a client handshakes and pings the server's tunnel
	// address through the kernel TUN.
	wg := newWGClient(t, r, "phone", net.JoinHostPort("127.0.0.1", fmt.Sprint(wgPort)))
	if !wg.ping(netip.MustParseAddr("10.77.0.1"), 10*time.Second) {
		t.Fatal("no echo reply through the tunnel with the CA down")
	}
	if hs := peerHandshake(t, r, "phone"); hs.IsZero() {
		t.Error("admin status shows no handshake for phone")
	}
	if info := r.d.certs.Info(); info.Source != certs.SourceFallback {
		t.Fatalf("source %q before Pebble started", info.Source)
	}

	// The CA comes up: the certificate arrives without a restart.
	p.Start()
	waitCert(t, r, certs.SourceACME)
	roots := p.RootPool()
	served, err := handshake(web, testutil.PebbleName, roots, "stun.turn")
	if err != nil {
		t.Fatalf("after Pebble came up, a client trusting only its root: %v", err)
	}
	if body, _, err := getPage(web, testutil.PebbleName, roots); err != nil || !strings.Contains(body, "tariq") {
		t.Errorf("page with the ACME certificate: %v", err)
	}
	if err := turnOverTLS(t, r, web, testutil.PebbleName, roots, peer); err != nil {
		t.Errorf("TURN over TLS with the ACME certificate: %v", err)
	}
	checkACMEStatus(t, r, p, served)
	if n := p.Orders(); n != 1 {
		t.Errorf("Pebble saw %d orders, want 1", n)
	}
	if !strings.Contains(r.logs.String(), "challenge=tls-alpn-01") {
		t.Error("the daemon did not log answering a tls-alpn-01 challenge")
	}
	if !wg.ping(netip.MustParseAddr("10.77.0.1"), 5*time.Second) {
		t.Error("the tunnel stopped working once the certificate arrived")
	}
}

// fallbackCert returns the self-signed fallback from the data directory,
// and a pool trusting it alone.
func fallbackCert(t *testing.T, r *running) (*x509.CertPool, *x509.Certificate) {
	t.Helper()
	pool := selfSignedPool(t, r)
	leaf, err := handshake(r.d.WebAddrs()[0].String(), testutil.PebbleName, pool)
	if err != nil {
		t.Fatalf("TLS trusting the self-signed fallback: %v", err)
	}
	return pool, leaf
}

// freeUDPPort returns a UDP port on every address that was free a moment ago.
func freeUDPPort(t *testing.T) int {
	t.Helper()
	pc, err := net.ListenPacket("udp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().(*net.UDPAddr).Port
}

// peerHandshake returns the last handshake the admin API reports for peer.
func peerHandshake(t *testing.T, r *running, peer string) time.Time {
	t.Helper()
	st := adminStatus(t, r)
	if st.VPN == nil {
		t.Fatal("admin status has no vpn part")
	}
	for _, p := range st.VPN.Peers {
		if p.Name == peer {
			return p.LastHandshake
		}
	}
	t.Fatalf("admin status has no peer %s", peer)
	return time.Time{}
}

// wgClient is a WireGuard device (wireguard-go over a channel TUN, so the
// test reads and writes its IP packets) configured from the config the
// daemon exports for a new peer.
type wgClient struct {
	tun *tuntest.ChannelTUN
	dev *device.Device
	v4  netip.Addr
}

// newWGClient adds peer through the admin API, as `tariq peer add` does,
// and brings up a client with its config, dialing endpoint.
func newWGClient(t *testing.T, r *running, peer, endpoint string) *wgClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pc, err := admin.NewClient(r.d.config().Server.AdminSocket).Add(ctx, members.AddRequest{Name: peer})
	if err != nil {
		t.Fatalf("adding peer %s: %v", peer, err)
	}
	conf := map[string]string{}
	section := ""
	for line := range strings.Lines(pc.Config) {
		line, _, _ = strings.Cut(line, "#")
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "[") {
			section = strings.Trim(line, "[]")
		} else if k, v, ok := strings.Cut(line, "="); ok {
			conf[section+"."+strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	var uapi strings.Builder
	for _, k := range []struct{ uapi, conf string }{
		{"private_key", "Interface.PrivateKey"}, {"public_key", "Peer.PublicKey"}, {"preshared_key", "Peer.PresharedKey"},
	} {
		key, err := wgconf.ParseKey(conf[k.conf])
		if err != nil {
			t.Fatalf("%s in the exported config: %v", k.conf, err)
		}
		fmt.Fprintf(&uapi, "%s=%s\n", k.uapi, key.Hex())
		if k.uapi == "private_key" {
			uapi.WriteString("replace_peers=true\n")
		}
	}
	fmt.Fprintf(&uapi, "endpoint=%s\nallowed_ip=0.0.0.0/0\nallowed_ip=::/0\n", endpoint)
	c := &wgClient{tun: tuntest.NewChannelTUN()}
	for a := range strings.SplitSeq(conf["Interface.Address"], ",") {
		if p, err := netip.ParsePrefix(strings.TrimSpace(a)); err == nil && p.Addr().Is4() {
			c.v4 = p.Addr()
		}
	}
	if !c.v4.IsValid() {
		t.Fatalf("no IPv4 address in the exported config:\n%s", conf["Interface.Address"])
	}
	c.dev = device.NewDevice(c.tun.TUN(), conn.NewDefaultBind(), device.NewLogger(device.LogLevelSilent, ""))
	t.Cleanup(c.dev.Close)
	if err := c.dev.IpcSet(uapi.String()); err != nil {
		t.Fatal(err)
	}
	if err := c.dev.Up(); err != nil {
		t.Fatal(err)
	}
	return c
}

// ping sends ICMP echo requests to dst through the tunnel, one a second,
// and reports whether a reply from dst came back within timeout.
func (c *wgClient) ping(dst netip.Addr, timeout time.Duration) bool {
	deadline := time.After(timeout)
	for seq := uint16(1); ; seq++ {
		select {
		case c.tun.Outbound <- ping4(c.v4, dst, seq):
		case <-deadline:
			return false
		}
		next := time.After(time.Second)
		for waiting := true; waiting; {
			select {
			case p := <-c.tun.Inbound:
				// IPv4, ICMP, echo reply, from dst
				if len(p) >= 28 && p[0]>>4 == 4 && p[9] == 1 && p[20] == 0 && netip.AddrFrom4([4]byte(p[12:16])) == dst {
					return true
				}
			case <-next:
				waiting = false
			case <-deadline:
				return false
			}
		}
	}
}

// ping4 is an ICMP echo request (RFC 792) with the checksums the kernel
// checks.
func ping4(src, dst netip.Addr, seq uint16) []byte {
	p := make([]byte, 20+12)
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	p[8], p[9] = 64, 1
	s, d := src.As4(), dst.As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	binary.BigEndian.PutUint16(p[10:], inetChecksum(p[:20]))
	icmp := p[20:]
	icmp[0] = 8
	binary.BigEndian.PutUint16(icmp[4:], 0x7471)
	binary.BigEndian.PutUint16(icmp[6:], seq)
	copy(icmp[8:], "tarq")
	binary.BigEndian.PutUint16(icmp[2:], inetChecksum(icmp))
	return bytes.Clone(p)
}

// inetChecksum is the RFC 1071 checksum of b.
func inetChecksum(b []byte) uint16 {
	var sum uint32
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
