package certs_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tariq-vpn/tariq/config"
	"github.com/tariq-vpn/tariq/internal/certs"
	"github.com/tariq-vpn/tariq/internal/testutil"
)

// shortlived is the validity period of the test Pebble's shortlived
// profile: Let's Encrypt's 160 hours.
const shortlived = 160 * time.Hour

// loopbackPublic is a Deps.PublicIP that treats loopback addresses as
// public, so that auto mode asks a Pebble on loopback for an IP certificate.
func loopbackPublic(a netip.Addr) bool { return a.IsLoopback() || config.IsPublicIP(a) }

// ipConfig is tls.mode auto with public_host an IP address and no email:
// ACME from p, when Deps.PublicIP says the address is public.
func ipConfig(dir, ip string, p *testutil.Pebble) *config.Config {
	cfg := config.Default()
	cfg.Server.PublicHost = ip
	cfg.Server.DataDir = dir
	cfg.TLS.Mode = config.TLSAuto
	cfg.TLS.ACMECA = p.DirectoryURL
	cfg.TLS.ACMECARoots = p.RootsFile
	return cfg
}

// listenOn listens on ip:0.
func listenOn(t *testing.T, ip string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// dialIP handshakes with addr as a browser dialling https://<ip>:<port>/
// does: no SNI (RFC 6066 3 allows none for an IP address), the IP address
// as the name to verify, trusting only roots. It returns the leaf.
func dialIP(addr string, roots *x509.CertPool) (*x509.Certificate, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{RootCAs: roots, NextProtos: []string{"h2", "http/1.1"}})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if c.ConnectionState().ServerName != "" {
		return nil, errors.New("the client sent SNI for an IP address")
	}
	return c.ConnectionState().PeerCertificates[0], nil
}

// checkIPCert checks that leaf certifies ip alone (RFC 8738: an IP SAN,
// no DNS name) with the lifetime of Pebble's profile.
func checkIPCert(t *testing.T, leaf *x509.Certificate, ip string, p *testutil.Pebble, profile string) {
	t.Helper()
	want := netip.MustParseAddr(ip)
	if len(leaf.IPAddresses) != 1 || len(leaf.DNSNames) != 0 {
		t.Errorf("certificate names %v %v, want the IP address %s alone", leaf.IPAddresses, leaf.DNSNames, ip)
	} else if got, _ := netip.AddrFromSlice(leaf.IPAddresses[0]); got.Unmap() != want {
		t.Errorf("certificate for %s, want %s", got, want)
	}
	if got, want := leaf.NotAfter.Sub(leaf.NotBefore), p.Lifetime(profile); got != want {
		t.Errorf("certificate lifetime %v, want %v (Pebble's %s profile)", got, want, profile)
	}
}

// checkOrders checks that every order Pebble saw asked for ip in profile.
func checkOrders(t *testing.T, p *testutil.Pebble, ip, profile string) {
	t.Helper()
	log := p.OrderLog()
	if len(log) == 0 {
		t.Fatal("Pebble saw no order")
	}
	for i, o := range log {
		if !slices.Equal(o.Identifiers, []string{"ip:" + ip}) || o.Profile != profile {
			t.Errorf("order %d asked for %v in profile %q, want [ip:%s] in %q", i+1, o.Identifiers, o.Profile, ip, profile)
		}
	}
}

// TestACMEIPAddress gets a certificate for a bare IP address in tls.mode
// auto with no email: the order names the IP identifier (RFC 8738) and
// the shortlived profile, TLS-ALPN-01 is answered by the listener on the
// challenge port (Pebble sends the reverse-DNS name as SNI, RFC 8738 6),
// and a client that dials the address with no SNI verifies the
// certificate against Pebble's root alone.
func TestACMEIPAddress(t *testing.T) {
	testutil.LeakCheck(t, testutil.PebbleLeakOptions()...)
	const ip = "127.0.0.1"
	log, logs := newTestLog(t)
	ln := listenOn(t, ip)
	port := ln.Addr().(*net.TCPAddr).Port
	p := testutil.StartPebble(t, testutil.PebbleOptions{TLSPort: port,
		Profiles: map[string]time.Duration{"default": 90 * 24 * time.Hour, certs.ProfileShortlived: shortlived}})
	cfg := ipConfig(t.TempDir(), ip, p)
	src, err := certs.New(cfg, certs.Deps{
		Logger:            log,
		PublicIP:          loopbackPublic,
		ACMEListenHost:    ip,
		ACMETLSALPNPort:   port,
		ACMEDisableHTTP01: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	if src.Mode() != config.TLSACME {
		t.Fatalf("mode %q, want acme (auto with a public IP address)", src.Mode())
	}
	srv := serveTLS(t, ln, src, "h2", "http/1.1", "stun.turn")
	if err := src.Open(t.Context()); err != nil {
		t.Fatal(err)
	}
	if info := src.Info(); info.Source != certs.SourceFallback || !info.SelfSigned || !slices.Equal(info.Names, []string{ip}) {
		t.Errorf("right after Open: %+v, want the self-signed fallback for %s", info, ip)
	}
	serve(t, src)

	info := waitACME(t, src)
	leaf, err := dialIP(srv.addr, p.RootPool())
	if err != nil {
		t.Fatalf("client dialling %s with no SNI, trusting only Pebble's root: %v", srv.addr, err)
	}
	if _, err := dialIP(srv.addr, x509.NewCertPool()); err == nil {
		t.Error("a client trusting nothing accepted the certificate too: the check above proves nothing")
	}
	checkIPCert(t, leaf, ip, p, certs.ProfileShortlived)
	checkOrders(t, p, ip, certs.ProfileShortlived)
	if p.Orders() != 1 {
		t.Errorf("Pebble saw %d orders, want 1", p.Orders())
	}
	if srv.challenges.Load() == 0 {
		t.Error("no acme-tls/1 handshake reached the listener: who answered the challenge?")
	}
	if info.SelfSigned || info.SPKIHash != certs.SPKIHash(leaf) || !info.NotAfter.Equal(leaf.NotAfter) ||
		!slices.Equal(info.Names, []string{ip}) || info.CA != p.DirectoryURL || info.ACMEError != "" {
		t.Errorf("Info %+v does not describe the served certificate", info)
	}
	for _, want := range [][]string{
		{"level=INFO", `msg="obtaining certificate"`, "identifier=" + ip, "profile=shortlived"},
		{"level=INFO", `msg="certificate live"`, "source=acme", "names=[" + ip + "]"},
	} {
		if len(logs.lines(want...)) == 0 {
			t.Errorf("no log line with %q", want)
		}
	}
}

// TestACMEIPv6 does the same for ::1 over each challenge: HTTP-01 from
// certmagic's own solver on [::1], and TLS-ALPN-01 answered by the
// listener (the reverse name in ip6.arpa as SNI).
func TestACMEIPv6(t *testing.T) {
	const ip = "::1"
	for _, challenge := range []string{"http-01", "tls-alpn-01"} {
		t.Run(challenge, func(t *testing.T) {
			testutil.LeakCheck(t, testutil.PebbleLeakOptions()...)
			log, _ := newTestLog(t)
			ln := listenOn(t, ip)
			port := ln.Addr().(*net.TCPAddr).Port
			opts := testutil.PebbleOptions{Profiles: map[string]time.Duration{certs.ProfileShortlived: shortlived}}
			deps := certs.Deps{Logger: log, PublicIP: loopbackPublic, ACMEListenHost: ip}
			if challenge == "http-01" {
				opts.HTTPPort = freePort6(t)
				deps.ACMEHTTPPort, deps.ACMEDisableTLSALPN01 = opts.HTTPPort, true
			} else {
				opts.TLSPort = port
				deps.ACMETLSALPNPort, deps.ACMEDisableHTTP01 = port, true
			}
			p := testutil.StartPebble(t, opts)
			src, err := certs.New(ipConfig(t.TempDir(), ip, p), deps)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { src.Close() })
			srv := serveTLS(t, ln, src, "h2", "http/1.1")
			if err := src.Open(t.Context()); err != nil {
				t.Fatal(err)
			}
			serve(t, src)

			waitACME(t, src)
			leaf, err := dialIP(srv.addr, p.RootPool())
			if err != nil {
				t.Fatalf("client dialling %s with no SNI, trusting only Pebble's root: %v", srv.addr, err)
			}
			checkIPCert(t, leaf, ip, p, certs.ProfileShortlived)
			checkOrders(t, p, ip, certs.ProfileShortlived)
			if n := srv.challenges.Load(); (n > 0) != (challenge == "tls-alpn-01") {
				t.Errorf("%d acme-tls/1 handshakes reached the listener over %s", n, challenge)
			}
		})
	}
}

// freePort6 returns a TCP port on [::1] that was free a moment ago.
func freePort6(t *testing.T) int {
	t.Helper()
	ln := listenOn(t, "::1")
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestACMEIPRenewal gets a certificate from a shortlived profile of 30
// seconds and checks that it is renewed, and the renewal served, before it
// expires: certmagic's cache checks every 200 ms (Deps.ACMERenewCheck)
// instead of every 10 minutes, and an IP certificate is due with half its
// lifetime left (or earlier, at a time certmagic picks in the renewal
// window Pebble suggests over ARI).
func TestACMEIPRenewal(t *testing.T) {
	testutil.LeakCheck(t, testutil.PebbleLeakOptions()...)
	const ip = "127.0.0.3"
	log, logs := newTestLog(t)
	p := testutil.StartPebble(t, testutil.PebbleOptions{Profiles: map[string]time.Duration{certs.ProfileShortlived: 30 * time.Second}})
	src := openIPSource(t, ipConfig(t.TempDir(), ip, p), certs.Deps{
		Logger:               log,
		PublicIP:             loopbackPublic,
		ACMEListenHost:       ip,
		ACMEHTTPPort:         p.HTTPPort,
		ACMEDisableTLSALPN01: true,
		ACMERenewCheck:       200 * time.Millisecond,
	})
	srv := serveTLS(t, listenOn(t, ip), src, "h2")
	roots := p.RootPool()

	waitACME(t, src)
	first, err := dialIP(srv.addr, roots)
	if err != nil {
		t.Fatal(err)
	}
	checkIPCert(t, first, ip, p, certs.ProfileShortlived)

	// Until the first one expires, every handshake gets a certificate from
	// Pebble, and one of them is its renewal.
	var renewed *x509.Certificate
	for renewed == nil && time.Now().Before(first.NotAfter) {
		leaf, err := dialIP(srv.addr, roots)
		if err != nil {
			t.Fatalf("handshake while waiting for the renewal: %v", err)
		}
		if !leaf.Equal(first) {
			renewed = leaf
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if renewed == nil {
		t.Fatalf("the certificate expired at %s without being renewed", first.NotAfter.Format(time.TimeOnly))
	}
	t.Logf("renewed with %v of %v left", first.NotAfter.Sub(renewed.NotBefore).Round(time.Second), first.NotAfter.Sub(first.NotBefore))
	checkIPCert(t, renewed, ip, p, certs.ProfileShortlived)
	if !renewed.NotAfter.After(first.NotAfter) {
		t.Errorf("renewal expires %s, not after the first (%s)", renewed.NotAfter, first.NotAfter)
	}
	checkOrders(t, p, ip, certs.ProfileShortlived)
	if len(logs.lines("level=INFO", `msg="certificate renewed"`)) == 0 {
		t.Error("no log line says the certificate was renewed")
	}
	if info := src.Info(); info.Source != certs.SourceACME || info.SelfSigned {
		t.Errorf("Info after the renewal: %+v", info)
	}
}

// openIPSource builds, opens and serves a Source in acme mode.
func openIPSource(t *testing.T, cfg *config.Config, deps certs.Deps) *certs.Source {
	t.Helper()
	src, err := certs.New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	if src.Mode() != config.TLSACME {
		t.Fatalf("mode %q, want acme", src.Mode())
	}
	if err := src.Open(t.Context()); err != nil {
		t.Fatalf("Open: %v", err)
	}
	serve(t, src)
	return src
}

// TestACMEIPCADown starts with the CA's port closed: the self-signed
// fallback for the IP address is served, verifiable by a client that
// trusts it and dials the address with no SNI, and Info says why; once
// Pebble is up the IP certificate is obtained and served, no restart.
func TestACMEIPCADown(t *testing.T) {
	testutil.LeakCheck(t, testutil.PebbleLeakOptions()...)
	const ip = "127.0.0.2"
	log, logs := newTestLog(t)
	p := testutil.NewPebble(t, testutil.PebbleOptions{Profiles: map[string]time.Duration{certs.ProfileShortlived: shortlived}})
	src := openIPSource(t, ipConfig(t.TempDir(), ip, p), certs.Deps{
		Logger:               log,
		PublicIP:             loopbackPublic,
		ACMEListenHost:       ip,
		ACMEHTTPPort:         p.HTTPPort,
		ACMEDisableTLSALPN01: true,
		ACMERetry:            200 * time.Millisecond,
	})
	srv := serveTLS(t, listenOn(t, ip), src, "h2")

	fb := src.Certificate()
	fbPool := x509.NewCertPool()
	fbPool.AddCert(fb.Leaf)
	leaf, err := dialIP(srv.addr, fbPool)
	if err != nil {
		t.Fatalf("client trusting the self-signed fallback, dialling %s: %v", srv.addr, err)
	}
	if !leaf.Equal(fb.Leaf) || leaf.CheckSignatureFrom(leaf) != nil {
		t.Errorf("served %s, want the self-signed fallback", leaf.Subject)
	}
	deadline := time.Now().Add(issueTimeout)
	for src.Info().ACMEError == "" {
		if time.Now().After(deadline) {
			t.Fatal("no ACME failure reported with the CA down")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if info := src.Info(); info.Source != certs.SourceFallback || !info.SelfSigned || !slices.Equal(info.Names, []string{ip}) ||
		!strings.Contains(info.ACMEError, "connection refused") {
		t.Errorf("with the CA down: %+v, want the fallback for %s and a connection-refused error", info, ip)
	}
	if len(logs.lines("level=WARN", "obtaining certificate failed", "serving the self-signed fallback")) == 0 {
		t.Error("the failure was not logged at Warn")
	}

	p.Start()
	info := waitACME(t, src)
	served, err := dialIP(srv.addr, p.RootPool())
	if err != nil {
		t.Fatalf("after Pebble came up, a client trusting only its root: %v", err)
	}
	checkIPCert(t, served, ip, p, certs.ProfileShortlived)
	checkOrders(t, p, ip, certs.ProfileShortlived)
	if info.ACMEError != "" || info.SPKIHash != certs.SPKIHash(served) {
		t.Errorf("Info after success: %+v", info)
	}
}

// TestACMEProfile checks that tls.acme_profile is what the order asks for,
// for an IP address and for a DNS name, and that without it a DNS name
// asks for no profile (the CA's default): Pebble offers one profile with a
// validity of its own, and the certificate has that lifetime.
func TestACMEProfile(t *testing.T) {
	const custom = "tariq-test_1.0"
	profiles := map[string]time.Duration{"default": 90 * 24 * time.Hour, certs.ProfileShortlived: shortlived, custom: 4321 * time.Second}
	for _, tc := range []struct {
		name, host, setting, want string
	}{
		{"ip with a profile", "127.0.0.4", custom, custom},
		{"name with a profile", testutil.PebbleName, custom, custom},
		{"name without", testutil.PebbleName, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testutil.LeakCheck(t, testutil.PebbleLeakOptions()...)
			log, _ := newTestLog(t)
			p := testutil.StartPebble(t, testutil.PebbleOptions{Profiles: profiles})
			cfg := ipConfig(t.TempDir(), tc.host, p)
			listenHost := tc.host
			if tc.host == testutil.PebbleName {
				cfg.TLS.Email = "admin@" + testutil.PebbleName
				listenHost = "127.0.0.1"
			}
			cfg.TLS.ACMEProfile = tc.setting
			src := openIPSource(t, cfg, certs.Deps{
				Logger:               log,
				PublicIP:             loopbackPublic,
				ACMEListenHost:       listenHost,
				ACMEHTTPPort:         p.HTTPPort,
				ACMEDisableTLSALPN01: true,
			})
			waitACME(t, src)
			leaf := src.Certificate().Leaf
			log2 := p.OrderLog()
			if len(log2) != 1 || log2[0].Profile != tc.want {
				t.Fatalf("orders %+v, want one asking for profile %q", log2, tc.want)
			}
			if tc.want != "" {
				if got, want := leaf.NotAfter.Sub(leaf.NotBefore), p.Lifetime(tc.want); got != want {
					t.Errorf("lifetime %v, want %v (profile %s)", got, want, tc.want)
				}
			}
		})
	}
}

// TestResolveModeIP checks which hosts tls.mode auto gets an ACME
// certificate for, and that acme mode refuses an address no CA certifies.
func TestResolveModeIP(t *testing.T) {
	for _, tc := range []struct {
		host, email string
		public      func(netip.Addr) bool
		want        config.TLSMode
	}{
		{"193.0.14.129", "", nil, config.TLSACME},
		{"2a00:1450:4001:80e::200e", "", nil, config.TLSACME},
		{"::ffff:193.0.14.129", "", nil, config.TLSACME},
		{"127.0.0.1", "", nil, config.TLSSelfSigned},
		{"::1", "", nil, config.TLSSelfSigned},
		{"10.0.0.5", "a@example.org", nil, config.TLSSelfSigned},
		{"192.0.2.2", "", nil, config.TLSSelfSigned},
		{"fe80::1", "", nil, config.TLSSelfSigned},
		{"100.64.1.1", "", nil, config.TLSSelfSigned},
		{"vpn.example.org", "a@example.org", nil, config.TLSACME},
		{"vpn.example.org", "", nil, config.TLSSelfSigned},
		{"localhost", "a@example.org", nil, config.TLSSelfSigned},
		{"box.local", "a@example.org", nil, config.TLSSelfSigned},
		{"127.0.0.1", "", loopbackPublic, config.TLSACME},
		{"10.0.0.5", "", loopbackPublic, config.TLSSelfSigned},
	} {
		cfg := config.Default()
		cfg.Server.PublicHost, cfg.TLS.Email, cfg.Server.DataDir = tc.host, tc.email, t.TempDir()
		src, err := certs.New(cfg, certs.Deps{PublicIP: tc.public})
		if err != nil {
			t.Errorf("New(%s): %v", tc.host, err)
			continue
		}
		if src.Mode() != tc.want {
			t.Errorf("auto with %s (email %q): %s, want %s", tc.host, tc.email, src.Mode(), tc.want)
		}
		if tc.public == nil && certs.ResolveMode(cfg) != tc.want {
			t.Errorf("ResolveMode with %s: %s, want %s", tc.host, certs.ResolveMode(cfg), tc.want)
		}
	}

	cfg := config.Default()
	cfg.TLS.Mode = config.TLSACME
	cfg.Server.PublicHost = "10.0.0.5"
	if _, err := certs.New(cfg, certs.Deps{}); err == nil || !strings.Contains(err.Error(), "server.public_host: 10.0.0.5 is not a public IP address") {
		t.Errorf("acme mode on a private address: %v", err)
	}
	cfg.Server.PublicHost = "193.0.14.129"
	if _, err := certs.New(cfg, certs.Deps{}); err != nil {
		t.Errorf("acme mode on a public address with no email: %v", err)
	}
}
