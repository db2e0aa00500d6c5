package daemon

import (
	"crypto/x509"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tariq-vpn/tariq/config"
	"github.com/tariq-vpn/tariq/internal/certs"
	"github.com/tariq-vpn/tariq/internal/testutil"
)

// TestDaemonACMEIP runs the daemon in tls.mode auto with a bare IP address
// as public_host and no email, with the CA down at first: it is ready at
// once and its shared TLS port serves the self-signed certificate for the
// address (the start-up summary and the admin API say so, and why). Once
// Pebble is up, without a restart, the daemon gets a certificate for the
// IP address in the shortlived profile, its shared port answering
// TLS-ALPN-01, and serves it to clients that dial the address with no SNI
// and trust only Pebble's root: the page and TURN over TLS. Loopback
// counts as public here (certs.Deps.PublicIP), as it never does in
// production.
func TestDaemonACMEIP(t *testing.T) {
	testutil.LeakCheck(t, testutil.PebbleLeakOptions()...)
	const ip = "127.0.0.5"
	webPort := freePortOn(t, ip)
	p := testutil.NewPebble(t, testutil.PebbleOptions{TLSPort: webPort,
		Profiles: map[string]time.Duration{"default": 90 * 24 * time.Hour, certs.ProfileShortlived: 160 * time.Hour}})
	dir := t.TempDir()
	file := writeConfig(t, dir, fmt.Sprintf(`server:
  public_host: %[2]s
  data_dir: %[1]s/data
  admin_socket: %[1]s/admin.sock
  metrics_listen: ""
tls:
  mode: auto
  acme_ca: %[3]s
  acme_ca_roots: %[4]s
vpn:
  enabled: false
web:
  listen: ["%[2]s:%[5]d"]
relay:
  listen_udp: ["127.0.0.1:0"]
  listen_tcp: ["127.0.0.1:0"]
  listen_tls: ["127.0.0.1:0"]
  relay_bind: 127.0.0.1
  allow_peers: [127.0.0.1/32]
  users: {alice: wonderland}
`, dir, ip, p.DirectoryURL, p.RootsFile, webPort))

	var summary syncBuffer
	r, _ := runDaemon(t, file, func(d *certs.Deps) {
		d.PublicIP = func(a netip.Addr) bool { return a.IsLoopback() || config.IsPublicIP(a) }
		d.ACMEListenHost = ip
		d.ACMETLSALPNPort = webPort
		d.ACMEDisableHTTP01 = true
		d.ACMERetry = 200 * time.Millisecond
	}, func(o *Options) { o.Out = &summary })
	web := r.d.WebAddrs()[0].String()
	if want := "Certificate: self-signed for now, until " + p.DirectoryURL + " issues one for " + ip; !strings.Contains(summary.String(), want) {
		t.Errorf("start-up summary lacks %q:\n%s", want, summary.String())
	}

	// The self-signed certificate for the address, to a client that
	// trusts it and dials the address: no SNI, the IP as the name.
	fbPool := selfSignedPool(t, r)
	fb, err := handshake(web, "", fbPool, "h2")
	if err != nil {
		t.Fatalf("TLS on the shared port with the CA down, trusting the self-signed certificate: %v", err)
	}
	if body, _, err := getPage(web, ip, fbPool); err != nil || !strings.Contains(body, "tariq") {
		t.Errorf("page with the CA down: %v", err)
	}
	deadline := time.Now().Add(issueTimeout)
	for r.d.certs.Info().ACMEError == "" {
		if time.Now().After(deadline) {
			t.Fatal("no ACME failure reported with the CA down")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if cs := adminStatus(t, r).TLS; cs.Mode != "acme" || cs.Source != certs.SourceFallback || !cs.SelfSigned ||
		!slices.Equal(cs.Names, []string{ip}) || cs.CA != p.DirectoryURL || !strings.Contains(cs.ACMEError, "connection refused") ||
		cs.SPKIHash != certs.SPKIHash(fb) {
		t.Errorf("admin status tls with the CA down: %+v, want the fallback for %s with a connection-refused error", cs, ip)
	}

	// The CA comes up.
	p.Start()
	waitCert(t, r, certs.SourceACME)
	roots := p.RootPool()
	served, err := handshake(web, "", roots, "h2")
	if err != nil {
		t.Fatalf("client dialling %s with no SNI, trusting only Pebble's root: %v", web, err)
	}
	if got, _ := netip.AddrFromSlice(served.IPAddresses[0]); len(served.IPAddresses) != 1 || len(served.DNSNames) != 0 || got.Unmap().String() != ip {
		t.Errorf("certificate names %v %v, want %s alone", served.IPAddresses, served.DNSNames, ip)
	}
	if got, want := served.NotAfter.Sub(served.NotBefore), p.Lifetime(certs.ProfileShortlived); got != want {
		t.Errorf("certificate lifetime %v, want the shortlived profile's %v", got, want)
	}
	if log := p.OrderLog(); len(log) != 1 || !slices.Equal(log[0].Identifiers, []string{"ip:" + ip}) || log[0].Profile != certs.ProfileShortlived {
		t.Errorf("orders %+v, want one for ip:%s in the shortlived profile", log, ip)
	}
	if !strings.Contains(r.logs.String(), "challenge=tls-alpn-01") {
		t.Error("the daemon did not log answering a tls-alpn-01 challenge on its shared port")
	}
	body, cs, err := getPage(web, ip, roots)
	if err != nil || !strings.Contains(body, "tariq") || !cs.PeerCertificates[0].Equal(served) {
		t.Errorf("page at https://%s trusting only Pebble's root: %v", net.JoinHostPort(ip, strconv.Itoa(webPort)), err)
	}
	peer := testutil.UDPEchoOn(t, "127.0.0.1:0").LocalAddr()
	for _, alpn := range [][]string{{"stun.turn"}, nil} {
		if err := turnOverTLS(t, r, web, "", roots, peer, alpn...); err != nil {
			t.Errorf("TURN over TLS on the shared port, no SNI, ALPN %v: %v", alpn, err)
		}
	}
	if _, err := handshake(web, "", x509.NewCertPool()); err == nil {
		t.Error("a client trusting nothing accepted the certificate too: the checks above prove nothing")
	}

	st := adminStatus(t, r).TLS
	if st.Source != certs.SourceACME || st.SelfSigned || st.ACMEError != "" || !slices.Equal(st.Names, []string{ip}) ||
		st.Issuer != served.Issuer.String() || !st.NotAfter.Equal(served.NotAfter) || st.SPKIHash != certs.SPKIHash(served) {
		t.Errorf("admin status tls = %+v, want the ACME certificate for %s", st, ip)
	}

	// A restart serves the stored certificate at once, and says so.
	r.stop(t)
	var summary2 syncBuffer
	r2, _ := runDaemon(t, file, func(d *certs.Deps) {
		d.PublicIP = func(a netip.Addr) bool { return a.IsLoopback() || config.IsPublicIP(a) }
		d.ACMEListenHost = ip
		d.ACMETLSALPNPort = webPort
		d.ACMEDisableHTTP01 = true
	}, func(o *Options) { o.Out = &summary2 })
	if again, err := handshake(web, "", roots); err != nil || !again.Equal(served) {
		t.Errorf("after the restart, trusting only Pebble's root: %v (the stored certificate: %v)", err, err == nil && again.Equal(served))
	}
	want := fmt.Sprintf("Certificate: acme for [%s] from %s until %s, renewed automatically", ip, p.DirectoryURL,
		served.NotAfter.UTC().Format("2006-01-02 15:04 MST"))
	if !strings.Contains(summary2.String(), want) {
		t.Errorf("start-up summary after the restart lacks %q:\n%s", want, summary2.String())
	}
	if n := p.Orders(); n != 1 {
		t.Errorf("Pebble saw %d orders after the restart, want still 1", n)
	}
	if info := r2.d.certs.Info(); info.Source != certs.SourceACME || info.SPKIHash != certs.SPKIHash(served) {
		t.Errorf("right after the restart: %+v, want the stored ACME certificate", info)
	}
}

// freePortOn returns a TCP port on ip that was free a moment ago.
func freePortOn(t *testing.T, ip string) int {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
