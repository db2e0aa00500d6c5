package daemon

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/turn/v5"

	"github.com/tariq-vpn/tariq/internal/admin"
	"github.com/tariq-vpn/tariq/internal/certs"
	"github.com/tariq-vpn/tariq/internal/testutil"
)

// issueTimeout bounds waiting for an issuance from Pebble (about 0.5 s).
const issueTimeout = 20 * time.Second

// acmeYAML is a daemon on loopback in tls.mode acme for relay.test with p
// as the CA, its shared TLS port on 127.0.0.1:webPort (which the test
// makes Pebble's TLS-ALPN-01 port), the static user alice, and vpnYAML as
// the vpn section.
func acmeYAML(dir string, webPort int, p *testutil.Pebble, vpnYAML string) string {
	return fmt.Sprintf(`server:
  public_host: %[2]s
  data_dir: %[1]s/data
  admin_socket: %[1]s/admin.sock
  metrics_listen: ""
tls:
  mode: acme
  email: admin@%[2]s
  acme_ca: %[3]s
  acme_ca_roots: %[4]s
%[6]s
web:
  listen: ["127.0.0.1:%[5]d"]
relay:
  listen_udp: ["127.0.0.1:0"]
  listen_tcp: ["127.0.0.1:0"]
  listen_tls: ["127.0.0.1:0"]
  relay_bind: 127.0.0.1
  allow_peers: [127.0.0.1/32]
  users: {alice: wonderland}
`, dir, testutil.PebbleName, p.DirectoryURL, p.RootsFile, webPort, vpnYAML)
}

// acmeDeps answers TLS-ALPN-01 on the daemon's shared port alone: HTTP-01
// is off and certmagic's own TLS-ALPN solver, finding 127.0.0.1:webPort
// taken, leaves the challenge to the listener there.
func acmeDeps(webPort int, retry time.Duration) func(*certs.Deps) {
	return func(d *certs.Deps) {
		d.ACMEListenHost = "127.0.0.1"
		d.ACMETLSALPNPort = webPort
		d.ACMEDisableHTTP01 = true
		d.ACMERetry = retry
	}
}

func writeConfig(t *testing.T, dir, yaml string) string {
	t.Helper()
	file := filepath.Join(dir, "tariq.yaml")
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

// waitCert waits until the daemon's certificate source says source.
func waitCert(t *testing.T, r *running, source string) certs.Info {
	t.Helper()
	deadline := time.Now().Add(issueTimeout)
	for {
		info := r.d.certs.Info()
		if info.Source == source {
			return info
		}
		if time.Now().After(deadline) {
			t.Fatalf("certificate source still %q after %v, want %q: %+v", info.Source, issueTimeout, source, info)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// handshake connects to addr with TLS as a client that sends serverName
// and alpn and trusts only roots, and returns the server's leaf.
func handshake(addr, serverName string, roots *x509.CertPool, alpn ...string) (*x509.Certificate, error) {
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second},
		Config: &tls.Config{ServerName: serverName, RootCAs: roots, NextProtos: alpn}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.(*tls.Conn).ConnectionState().PeerCertificates[0], nil
}

// getPage fetches https://name:port/ from addr (127.0.0.1:port), as a
// browser that resolved name there and trusts only roots.
func getPage(addr, name string, roots *x509.CertPool) (string, *tls.ConnectionState, error) {
	_, port, _ := net.SplitHostPort(addr)
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get("https://" + net.JoinHostPort(name, port) + "/")
	if err != nil {
		return "", nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return "", nil, fmt.Errorf("GET /: %s", resp.Status)
	}
	return string(body), resp.TLS, nil
}

// turnOverTLS allocates over TURN-over-TLS at addr as a client that sends
// serverName and alpn and trusts only roots, and relays one datagram to
// peer and back.
func turnOverTLS(t *testing.T, r *running, addr, serverName string, roots *x509.CertPool, peer net.Addr, alpn ...string) error {
	t.Helper()
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second},
		Config: &tls.Config{ServerName: serverName, RootCAs: roots, NextProtos: alpn}}
	conn, err := d.DialContext(context.Background(), "tcp", addr)
	if err != nil {
		return fmt.Errorf("TLS handshake: %w", err)
	}
	relayed, err := r.allocateAs(t, turn.NewSTUNConn(conn), addr, "alice", "wonderland")
	if err != nil {
		return fmt.Errorf("allocate: %w", err)
	}
	return relayOnce(relayed, peer)
}

// turnOverTCP allocates over TCP at addr and relays one datagram.
func turnOverTCP(t *testing.T, r *running, addr string, peer net.Addr) error {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	relayed, err := r.allocateAs(t, turn.NewSTUNConn(conn), addr, "alice", "wonderland")
	if err != nil {
		return fmt.Errorf("allocate: %w", err)
	}
	return relayOnce(relayed, peer)
}

// turnOverUDP allocates over UDP at addr and relays one datagram.
func turnOverUDP(t *testing.T, r *running, addr string, peer net.Addr) error {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	relayed, err := r.allocateAs(t, pc, addr, "alice", "wonderland")
	if err != nil {
		return fmt.Errorf("allocate: %w", err)
	}
	return relayOnce(relayed, peer)
}

// adminStatus asks the running daemon's admin API, as `tariq status` does.
func adminStatus(t *testing.T, r *running) *admin.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := admin.NewClient(r.d.config().Server.AdminSocket).Status(ctx)
	if err != nil {
		t.Fatalf("admin status: %v", err)
	}
	if st.TLS == nil {
		t.Fatal("admin status has no tls part")
	}
	return st
}

// checkACMEStatus checks that the admin API describes leaf as the ACME
// certificate from p.
func checkACMEStatus(t *testing.T, r *running, p *testutil.Pebble, leaf *x509.Certificate) {
	t.Helper()
	cs := adminStatus(t, r).TLS
	if cs.Mode != "acme" || cs.Source != certs.SourceACME || cs.CA != p.DirectoryURL || cs.ACMEError != "" ||
		cs.SelfSigned || cs.Issuer != leaf.Issuer.String() || !strings.Contains(cs.Issuer, "Pebble") ||
		cs.SPKIHash != certs.SPKIHash(leaf) || !cs.NotAfter.Equal(leaf.NotAfter) ||
		len(cs.Names) != 1 || cs.Names[0] != testutil.PebbleName {
		t.Errorf("admin status tls = %+v\nwant the ACME certificate from %s issued by %s (spki %s)",
			cs, p.DirectoryURL, leaf.Issuer, certs.SPKIHash(leaf))
	}
}

// TestDaemonACMESharedPort runs the daemon in tls.mode acme against Pebble,
// with the shared TLS port (web.listen) as Pebble's TLS-ALPN-01 port and
// HTTP-01 off, so the daemon's own port answers the challenge through the
// mux. A client trusting only Pebble's root then accepts the certificate
// for relay.test on that port for the page and for TURN over TLS (pion),
// and coturn's turnutils_uclient relays through the same port; the admin
// API reports the ACME certificate. A restart on the same data directory
// serves the stored certificate with no second order at Pebble.
func TestDaemonACMESharedPort(t *testing.T) {
	testutil.LeakCheck(t, testutil.PebbleLeakOptions()...)
	webPort := testutil.FreePort(t)
	p := testutil.StartPebble(t, testutil.PebbleOptions{TLSPort: webPort})
	dir := t.TempDir()
	file := writeConfig(t, dir, acmeYAML(dir, webPort, p, "vpn:\n  enabled: false"))

	r, _ := runDaemon(t, file, acmeDeps(webPort, 0))
	web := r.d.WebAddrs()[0].String()
	if web != net.JoinHostPort("127.0.0.1", strconv.Itoa(webPort)) {
		t.Fatalf("web listens on %s, want port %d", web, webPort)
	}
	waitCert(t, r, certs.SourceACME)
	roots := p.RootPool() // Pebble's issuing root alone, from /roots/0
	served, err := handshake(web, testutil.PebbleName, roots, "stun.turn")
	if err != nil {
		t.Fatalf("client trusting only Pebble's root, on the shared port: %v", err)
	}
	if err := served.VerifyHostname(testutil.PebbleName); err != nil {
		t.Error(err)
	}
	// The same client with an empty pool must refuse it, or the check
	// above proves nothing.
	var unknown x509.UnknownAuthorityError
	if _, err := handshake(web, testutil.PebbleName, x509.NewCertPool()); !errors.As(err, &unknown) {
		t.Errorf("handshake trusting nothing: %v, want an unknown authority error", err)
	}
	if n := p.Orders(); n != 1 {
		t.Errorf("Pebble saw %d orders, want 1", n)
	}
	// Pebble validated over TLS-ALPN-01 (HTTP-01 is off), and the daemon's
	// shared port is what answered it.
	if !strings.Contains(r.logs.String(), `msg="served key authentication certificate"`) ||
		!strings.Contains(r.logs.String(), "challenge=tls-alpn-01") {
		t.Error("the daemon did not log answering a tls-alpn-01 challenge")
	}

	// (a) the page, trusting only Pebble's root
	body, cs, err := getPage(web, testutil.PebbleName, roots)
	if err != nil {
		t.Fatalf("page over HTTPS trusting only Pebble's root: %v", err)
	}
	if !strings.Contains(body, "tariq") || !cs.PeerCertificates[0].Equal(served) {
		t.Errorf("page %q; served the ACME certificate: %v", body, cs.PeerCertificates[0].Equal(served))
	}

	// (b) TURN over TLS on the same port with pion's client, with ALPN
	// stun.turn and with none (as browsers send)
	peer := testutil.UDPEchoOn(t, "127.0.0.1:0").LocalAddr()
	for _, alpn := range [][]string{{"stun.turn"}, nil} {
		if err := turnOverTLS(t, r, web, testutil.PebbleName, roots, peer, alpn...); err != nil {
			t.Errorf("TURN over TLS on the shared port (ALPN %v): %v", alpn, err)
		}
	}
	// relay.listen_tls serves the same certificate alone.
	_, _, tlsAddrs := r.d.Relay().Addrs()
	if leaf, err := handshake(tlsAddrs[0].String(), testutil.PebbleName, roots, "stun.turn"); err != nil || !leaf.Equal(served) {
		t.Errorf("relay.listen_tls with Pebble's root: %v (same certificate: %v)", err, err == nil && leaf.Equal(served))
	}

	// (c) coturn's client over TLS (-t -S) through the shared port. It does
	// not verify the certificate; the handshakes above carry that check.
	coturnPeer := testutil.StartCoturnPeer(t)
	const clients, msgs = 2, 5
	before := r.d.Relay().Stats().AllocationsCreated.Load()
	run := testutil.RunUclient(t, "-t", "-S", "-c", "-n", strconv.Itoa(msgs), "-m", strconv.Itoa(clients), "-l", "172",
		"-L", "127.0.0.1", "-e", "127.0.0.1", "-r", strconv.Itoa(coturnPeer), "-u", "alice", "-w", "wonderland",
		"-p", strconv.Itoa(webPort), "127.0.0.1")
	if err := run.Delivered(clients * msgs); err != nil {
		t.Errorf("turnutils_uclient -t -S on the shared port: %v\n%v", err, run)
	}
	// uclient allocates twice per client: a probe, then the real one.
	if n := r.d.Relay().Stats().AllocationsCreated.Load() - before; n != 2*clients {
		t.Errorf("%d allocations through the shared port for uclient, want %d", n, 2*clients)
	}

	checkACMEStatus(t, r, p, served)

	// Restart on the same data directory: the stored certificate is live
	// at once, and Pebble sees no second order.
	r.stop(t)
	r2, _ := runDaemon(t, file, acmeDeps(webPort, 0))
	if info := r2.d.certs.Info(); info.Source != certs.SourceACME {
		t.Errorf("right after the restart the source is %q, want acme (the stored certificate)", info.Source)
	}
	again, err := handshake(web, testutil.PebbleName, roots, "h2", "http/1.1")
	if err != nil {
		t.Fatalf("after the restart, trusting only Pebble's root: %v", err)
	}
	if !bytes.Equal(again.Raw, served.Raw) {
		t.Errorf("after the restart serving serial %v, want the stored %v", again.SerialNumber, served.SerialNumber)
	}
	if n := p.Orders(); n != 1 {
		t.Errorf("Pebble saw %d orders after the restart, want still 1", n)
	}
	checkACMEStatus(t, r2, p, served)
	if err := turnOverTLS(t, r2, web, testutil.PebbleName, roots, peer); err != nil {
		t.Errorf("TURN over TLS after the restart: %v", err)
	}
}
