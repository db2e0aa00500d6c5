package certs_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tariq-vpn/tariq/config"
	"github.com/tariq-vpn/tariq/internal/certs"
	"github.com/tariq-vpn/tariq/internal/testutil"
)

// issueTimeout bounds waiting for an issuance, which takes about 0.5 s.
const issueTimeout = 20 * time.Second

// acmeConfig is tls.mode auto on a DNS name with an email: ACME, from p.
func acmeConfig(dir string, p *testutil.Pebble) *config.Config {
	cfg := config.Default()
	cfg.Server.PublicHost = testutil.PebbleName
	cfg.Server.DataDir = dir
	cfg.TLS.Mode = config.TLSAuto
	cfg.TLS.Email = "admin@" + testutil.PebbleName
	cfg.TLS.ACMECA = p.DirectoryURL
	cfg.TLS.ACMECARoots = p.RootsFile
	return cfg
}

// testLog is a slog logger into t.Log (until the test ends, as certmagic's
// goroutines may log after it) that also keeps every line.
type testLog struct {
	t   testing.TB
	mu  sync.Mutex
	on  bool
	buf bytes.Buffer
}

func newTestLog(t testing.TB) (*slog.Logger, *testLog) {
	l := &testLog{t: t, on: true}
	t.Cleanup(func() { l.mu.Lock(); l.on = false; l.mu.Unlock() })
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug})).With("component", "certs"), l
}

func (l *testLog) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(b)
	if l.on && testing.Verbose() {
		l.t.Logf("%s", bytes.TrimRight(b, "\n"))
	}
	return len(b), nil
}

// lines returns the kept lines that contain every one of subs.
func (l *testLog) lines(subs ...string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(l.buf.Bytes()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		ok := true
		for _, s := range subs {
			ok = ok && strings.Contains(sc.Text(), s)
		}
		if ok {
			out = append(out, sc.Text())
		}
	}
	return out
}

// serve runs src.Serve (which starts ACME management) until t ends.
func serve(t *testing.T, src *certs.Source) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { src.Serve(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

// openSource builds and opens a Source, closed when t ends, and checks that
// Open did not wait for the CA.
func openSource(t *testing.T, cfg *config.Config, deps certs.Deps) *certs.Source {
	t.Helper()
	src, err := certs.New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	start := time.Now()
	if err := src.Open(t.Context()); err != nil {
		t.Fatalf("Open: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Open took %v: it must not wait for the CA", d)
	}
	serve(t, src)
	if src.Mode() != config.TLSACME {
		t.Fatalf("mode %q, want acme (auto with a DNS name and an email)", src.Mode())
	}
	return src
}

// tlsServer serves src.TLSConfig(protos...) on ln: after each handshake it
// writes the negotiated protocol and a newline and closes, except after
// acme-tls/1, where it closes at once as internal/mux does.
type tlsServer struct {
	addr       string
	challenges atomic.Int64 // handshakes that negotiated acme-tls/1
}

func serveTLS(t *testing.T, ln net.Listener, src *certs.Source, protos ...string) *tlsServer {
	t.Helper()
	s := &tlsServer{addr: ln.Addr().String()}
	cfg := src.TLSConfig(protos...)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				tc := tls.Server(c, cfg)
				c.SetDeadline(time.Now().Add(10 * time.Second))
				if err := tc.Handshake(); err != nil {
					return
				}
				p := tc.ConnectionState().NegotiatedProtocol
				if p == "acme-tls/1" {
					s.challenges.Add(1)
					return
				}
				io.WriteString(tc, "proto="+p+"\n")
			})
		}
	})
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return s
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// dial handshakes with addr as a client that trusts only roots (nil: no
// verification) and sends serverName as SNI and alpn, and returns the
// server's leaf and what the server wrote.
func dial(addr, serverName string, roots *x509.CertPool, alpn ...string) (*x509.Certificate, string, error) {
	cfg := &tls.Config{ServerName: serverName, RootCAs: roots, NextProtos: alpn}
	if roots == nil {
		cfg.InsecureSkipVerify = true
	}
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return nil, "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return nil, "", err
	}
	return c.ConnectionState().PeerCertificates[0], strings.TrimSpace(line), nil
}

// waitACME waits until src serves the ACME certificate.
func waitACME(t *testing.T, src *certs.Source) certs.Info {
	t.Helper()
	deadline := time.Now().Add(issueTimeout)
	for {
		info := src.Info()
		if info.Source == certs.SourceACME {
			return info
		}
		if time.Now().After(deadline) {
			t.Fatalf("no ACME certificate after %v; info %+v", issueTimeout, info)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkServed verifies that the server at addr presents src's ACME
// certificate for PebbleName to a client trusting only Pebble's root.
func checkServed(t *testing.T, addr string, src *certs.Source, p *testutil.Pebble) *x509.Certificate {
	t.Helper()
	leaf, got, err := dial(addr, testutil.PebbleName, p.RootPool(), "stun.turn")
	if err != nil {
		t.Fatalf("client trusting only Pebble's root: %v", err)
	}
	if got != "proto=stun.turn" {
		t.Errorf("server said %q, want proto=stun.turn (ALPN besides acme-tls/1)", got)
	}
	if err := leaf.VerifyHostname(testutil.PebbleName); err != nil {
		t.Error(err)
	}
	info := src.Info()
	if info.SPKIHash != certs.SPKIHash(leaf) || info.SelfSigned || !info.NotAfter.Equal(leaf.NotAfter) {
		t.Errorf("Info %+v does not describe the served certificate (issuer %s)", info, leaf.Issuer)
	}
	if c := src.Certificate(); c == nil || !bytes.Equal(c.Certificate[0], leaf.Raw) {
		t.Error("Certificate() is not the served certificate")
	}
	return leaf
}

// TestACMEHTTP01AndRestart obtains a certificate over HTTP-01 from a running
// Source, serves it to a client that trusts only Pebble's root, then
// restarts on the same data directory: the stored certificate is live as
// soon as Open returns, and Pebble sees no second order (no request at all).
func TestACMEHTTP01AndRestart(t *testing.T) {
	testutil.LeakCheck(t, testutil.PebbleLeakOptions()...)
	log, logs := newTestLog(t)
	p := testutil.StartPebble(t, testutil.PebbleOptions{})
	cfg := acmeConfig(t.TempDir(), p)
	deps := certs.Deps{
		Logger:               log,
		ACMEListenHost:       "127.0.0.1",
		ACMEHTTPPort:         p.HTTPPort,
		ACMEDisableTLSALPN01: true,
	}

	src := openSource(t, cfg, deps)
	if info := src.Info(); info.Source != certs.SourceFallback || !info.SelfSigned || info.CA != p.DirectoryURL {
		t.Errorf("right after Open: %+v, want the self-signed fallback", info)
	}
	srv := serveTLS(t, listen(t), src, "stun.turn")
	fb, _, err := dial(srv.addr, testutil.PebbleName, nil)
	if err != nil {
		t.Fatal(err)
	}

	info := waitACME(t, src)
	first := checkServed(t, srv.addr, src, p)
	if first.Equal(fb) {
		t.Error("the ACME certificate is the fallback")
	}
	if info.Names[0] != testutil.PebbleName || info.ACMEError != "" {
		t.Errorf("info %+v", info)
	}
	// No SNI (browsers' TURN over TLS): the ACME certificate too.
	if leaf, _, err := dial(srv.addr, "", nil); err != nil || !leaf.Equal(first) {
		t.Errorf("without SNI: %v, ACME certificate %v", err, err == nil && leaf.Equal(first))
	}
	if n := p.Orders(); n != 1 {
		t.Errorf("Pebble saw %d orders, want 1", n)
	}
	for _, want := range [][]string{
		{"level=INFO", `msg="obtaining certificate"`},
		{"level=INFO", `msg="certificate obtained"`},
		{"level=INFO", `msg="certificate live"`, "source=acme", "not_after="},
	} {
		if len(logs.lines(want...)) == 0 {
			t.Errorf("no log line with %q", want)
		}
	}

	// Restart.
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
	src.Close() // idempotent (certmagic's Cache.Stop panics when called twice)
	requests := p.Requests()
	src2 := openSource(t, cfg, deps)
	if got := src2.Info(); got.Source != certs.SourceACME || got.SPKIHash != info.SPKIHash {
		t.Errorf("after restart Info %+v, want the stored ACME certificate at once", got)
	}
	srv2 := serveTLS(t, listen(t), src2, "stun.turn")
	if again := checkServed(t, srv2.addr, src2, p); !again.Equal(first) {
		t.Errorf("after restart serving serial %v, want the stored %v", again.SerialNumber, first.SerialNumber)
	}
	if n := p.Orders(); n != 1 {
		t.Errorf("Pebble saw %d orders after the restart, want still 1", n)
	}
	if n := p.Requests() - requests; n != 0 {
		t.Errorf("the restart made %d requests to Pebble, want none", n)
	}
}

// TestACMETLSALPN01 obtains a certificate over TLS-ALPN-01 answered by a
// listener serving Source.TLSConfig on the challenge port: certmagic finds
// the port taken and lets that listener answer, as on :443 in production.
func TestACMETLSALPN01(t *testing.T) {
	testutil.LeakCheck(t, testutil.PebbleLeakOptions()...)
	log, _ := newTestLog(t)
	ln := listen(t)
	port := ln.Addr().(*net.TCPAddr).Port
	p := testutil.StartPebble(t, testutil.PebbleOptions{TLSPort: port})
	cfg := acmeConfig(t.TempDir(), p)
	src, err := certs.New(cfg, certs.Deps{
		Logger:            log,
		ACMEListenHost:    "127.0.0.1",
		ACMETLSALPNPort:   port,
		ACMEDisableHTTP01: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	// The listener is up before Open, as the daemon's :443 would be.
	srv := serveTLS(t, ln, src, "h2", "http/1.1", "stun.turn")
	if err := src.Open(t.Context()); err != nil {
		t.Fatal(err)
	}
	serve(t, src)

	waitACME(t, src)
	checkServed(t, srv.addr, src, p)
	if srv.challenges.Load() == 0 {
		t.Error("no acme-tls/1 handshake reached the listener: who answered the challenge?")
	}
	if _, got, err := dial(srv.addr, testutil.PebbleName, p.RootPool(), "h2", "http/1.1"); err != nil || got != "proto=h2" {
		t.Errorf("browser ALPN: %q, %v", got, err)
	}
}

// TestACMECADown starts with the CA's port closed: Open returns at once,
// TLS serves the self-signed fallback and Info says so; once Pebble comes up
// on that port the certificate is obtained and served without a restart.
// Deps.ACMERetry restarts certmagic's management 200 ms after each failure,
// where certmagic itself would wait a minute.
func TestACMECADown(t *testing.T) {
	testutil.LeakCheck(t, testutil.PebbleLeakOptions()...)
	log, logs := newTestLog(t)
	p := testutil.NewPebble(t, testutil.PebbleOptions{}) // not started: its port is closed
	cfg := acmeConfig(t.TempDir(), p)
	src := openSource(t, cfg, certs.Deps{
		Logger:               log,
		ACMEListenHost:       "127.0.0.1",
		ACMEHTTPPort:         p.HTTPPort,
		ACMEDisableTLSALPN01: true,
		ACMERetry:            200 * time.Millisecond,
	})
	srv := serveTLS(t, listen(t), src, "stun.turn")

	info := src.Info()
	if info.Source != certs.SourceFallback || !info.SelfSigned || info.Names[0] != testutil.PebbleName {
		t.Errorf("with the CA down: %+v, want the self-signed fallback for %s", info, testutil.PebbleName)
	}
	leaf, got, err := dial(srv.addr, testutil.PebbleName, nil, "stun.turn")
	if err != nil || got != "proto=stun.turn" {
		t.Fatalf("TLS with the CA down: %q, %v", got, err)
	}
	if certs.SPKIHash(leaf) != info.SPKIHash || leaf.CheckSignatureFrom(leaf) != nil {
		t.Errorf("served %s, want the self-signed fallback", leaf.Subject)
	}

	// Wait for a failure to be reported, so the CA was tried while down.
	deadline := time.Now().Add(issueTimeout)
	for src.Info().ACMEError == "" {
		if time.Now().After(deadline) {
			t.Fatal("no ACME failure reported with the CA down")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if e := src.Info().ACMEError; !strings.Contains(e, "connection refused") {
		t.Errorf("ACMEError %q, want connection refused", e)
	}
	if len(logs.lines("level=WARN", "obtaining certificate failed", "serving the self-signed fallback")) == 0 {
		t.Error("the failure was not logged at Warn")
	}

	p.Start()
	info = waitACME(t, src)
	checkServed(t, srv.addr, src, p)
	if info.ACMEError != "" {
		t.Errorf("ACMEError %q after success, want it cleared", info.ACMEError)
	}
	if n := p.Orders(); n != 1 {
		t.Errorf("Pebble saw %d orders, want 1", n)
	}
}

// TestACMEReloadRefuses checks that acme settings refuse a live change by key.
func TestACMEReloadRefuses(t *testing.T) {
	cfg := config.Default()
	cfg.Server.PublicHost = "vpn.example.com"
	cfg.Server.DataDir = t.TempDir()
	cfg.TLS.Email = "a@example.com"
	src, err := certs.New(cfg, certs.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	next := *cfg
	next.TLS.Email = "b@example.com"
	next.TLS.ACMECA = "https://ca.example/dir"
	next.TLS.ACMEProfile = "tlsserver"
	err = src.Reload(&next)
	var fe *config.FieldError
	if !errors.As(err, &fe) || !strings.Contains(err.Error(), "tls.email: changing it needs a restart") ||
		!strings.Contains(err.Error(), "tls.acme_ca: changing it needs a restart") ||
		!strings.Contains(err.Error(), "tls.acme_profile: changing it needs a restart") {
		t.Errorf("Reload: %v", err)
	}
	if err := src.Reload(cfg); err != nil {
		t.Errorf("Reload unchanged: %v", err)
	}
}

// TestACMENeedsEmail checks that acme mode without an email fails in New
// (certmagic would otherwise ask on stdin).
func TestACMENeedsEmail(t *testing.T) {
	cfg := config.Default()
	cfg.Server.PublicHost = "vpn.example.com"
	cfg.TLS.Mode = config.TLSACME
	if _, err := certs.New(cfg, certs.Deps{}); err == nil || !strings.Contains(err.Error(), "tls.email") {
		t.Errorf("New: %v, want a tls.email error", err)
	}
}
