package testutil

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/letsencrypt/challtestsrv"
	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
	"go.uber.org/goleak"
)

// PebbleName is a name Pebble's DNS answers with 127.0.0.1 (and no AAAA),
// so certificates for it validate on loopback. Pebble's DNS answers every
// name that way; this one is just the convention.
const PebbleName = "relay.test"

// PebbleOptions configure a Pebble. Zero values pick free loopback ports.
type PebbleOptions struct {
	// HTTPPort and TLSPort are the ports Pebble's validation authority
	// dials on 127.0.0.1 for HTTP-01 and TLS-ALPN-01: give certmagic the
	// same (certs.Deps ACMEHTTPPort, ACMETLSALPNPort), or give TLSPort the
	// port of a listener serving certs.Source.TLSConfig.
	HTTPPort, TLSPort int
	// AlwaysValid makes Pebble accept every challenge without checking it
	// (PEBBLE_VA_ALWAYS_VALID=1).
	AlwaysValid bool
	// Verbose sends Pebble's own log to t.Log.
	Verbose bool
	// Profiles are the ACME profiles Pebble offers, name to validity
	// period (whole seconds; a certificate's NotAfter is NotBefore plus
	// this less one second: see Lifetime). Empty means one "default"
	// profile of 90 days. An order naming no profile gets a random one of
	// these, so a test offering several must have its client name one.
	Profiles map[string]time.Duration
}

// PebbleOrder is one new-order request Pebble received.
type PebbleOrder struct {
	Identifiers []string // "dns:relay.test", "ip:127.0.0.1"
	Profile     string   // as requested; "" when the order named none
}

// Pebble is Let's Encrypt's ACME test server run in-process on loopback
// (github.com/letsencrypt/pebble/v2, pinned: its packages are no stable
// API), with challtestsrv as its DNS. NewPebble reserves the addresses and
// writes the roots file, so a test can point a client at a CA that is not
// up yet; Start brings it up.
//
// Start sets Pebble's environment with t.Setenv, so tests using Pebble
// cannot call t.Parallel. Pebble's validation goroutine never exits: pass
// PebbleLeakOptions to LeakCheck.
type Pebble struct {
	// DirectoryURL is the ACME directory, for tls.acme_ca.
	DirectoryURL string
	// RootsFile is a PEM file with the root of the ACME server's own HTTPS
	// certificate, for tls.acme_ca_roots. (Pebble's issuing root is
	// another one, made at Start: see Root.)
	RootsFile string
	// HTTPPort and TLSPort are the challenge ports (see PebbleOptions).
	HTTPPort, TLSPort int

	t        testing.TB
	opts     PebbleOptions
	addr     string // the directory's host:port
	srvCert  tls.Certificate
	srvRoots *x509.CertPool

	orders   atomic.Int64
	requests atomic.Int64

	orderMu  sync.Mutex    // guards orderLog
	orderLog []PebbleOrder // every new-order request, in arrival order

	mu      sync.Mutex // guards the fields below
	started bool
	stopped bool
	acme    *httptest.Server
	mgmt    *httptest.Server
	dns     *challtestsrv.ChallSrv
	logw    *testWriter
}

// StartPebble starts a Pebble and stops it when t ends.
func StartPebble(t testing.TB, opts PebbleOptions) *Pebble {
	t.Helper()
	p := NewPebble(t, opts)
	p.Start()
	return p
}

// NewPebble reserves a Pebble's addresses and writes its RootsFile without
// starting it; until Start, its directory URL is a closed port.
func NewPebble(t testing.TB, opts PebbleOptions) *Pebble {
	t.Helper()
	p := &Pebble{t: t, opts: opts, HTTPPort: opts.HTTPPort, TLSPort: opts.TLSPort}
	if p.HTTPPort == 0 {
		p.HTTPPort = FreePort(t)
	}
	if p.TLSPort == 0 {
		p.TLSPort = FreePort(t)
	}
	p.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t)))
	p.DirectoryURL = "https://" + p.addr + wfe.DirectoryPath

	cert, certPEM, err := loopbackCert()
	if err != nil {
		t.Fatalf("pebble: HTTPS certificate: %v", err)
	}
	p.srvCert = cert
	p.srvRoots = x509.NewCertPool()
	p.srvRoots.AddCert(cert.Leaf)
	p.RootsFile = filepath.Join(t.TempDir(), "pebble-https-root.pem")
	if err := os.WriteFile(p.RootsFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return p
}

// Start brings Pebble up on the reserved addresses and returns once its
// DNS answers and its directory is reachable.
func (p *Pebble) Start() {
	t := p.t
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.started {
		t.Fatal("pebble: started twice")
	}
	p.started = true

	// va.New and wfe.New read these.
	t.Setenv("PEBBLE_VA_NOSLEEP", "1")      // no random 0–15 s sleep before validating
	t.Setenv("PEBBLE_WFE_NONCEREJECT", "0") // no deliberately rejected nonces
	t.Setenv("PEBBLE_AUTHZREUSE", "0")      // every order validates afresh
	if p.opts.AlwaysValid {
		t.Setenv("PEBBLE_VA_ALWAYS_VALID", "1")
	} else {
		t.Setenv("PEBBLE_VA_ALWAYS_VALID", "0")
	}

	p.logw = &testWriter{t: t, on: p.opts.Verbose}
	logger := log.New(p.logw, "pebble ", log.Lmicroseconds)

	dnsAddr, err := p.startDNS(logger)
	if err != nil {
		t.Fatalf("pebble: DNS: %v", err)
	}

	store := db.NewMemoryStore()
	// One "default" profile unless the test asks for others: an order
	// without a profile gets a random one of those offered.
	profiles := map[string]ca.Profile{}
	for name, d := range p.profiles() {
		profiles[name] = ca.Profile{Description: "tariq tests: " + name, ValidityPeriod: uint64(d / time.Second)}
	}
	authority := ca.New(logger, store, "", "ecdsa", 0, 1, profiles)
	validator := va.New(logger, p.HTTPPort, p.TLSPort, false, dnsAddr, store)
	front := wfe.New(logger, store, validator, authority, []string{"pebble.letsencrypt.org"}, false, false, 0, 0)

	h := front.Handler()
	p.acme, err = p.serve(p.addr, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.requests.Add(1)
		if r.Method == http.MethodPost && r.URL.Path == "/order-plz" {
			p.orders.Add(1)
			p.noteOrder(r)
		}
		h.ServeHTTP(w, r)
	}))
	if err != nil {
		t.Fatalf("pebble: ACME server: %v", err)
	}
	p.mgmt, err = p.serve("127.0.0.1:0", front.ManagementHandler())
	if err != nil {
		t.Fatalf("pebble: management server: %v", err)
	}
	if _, err := p.get(p.DirectoryURL); err != nil {
		t.Fatalf("pebble: directory: %v", err)
	}
}

// serve starts an HTTPS server on addr with the loopback certificate. addr
// may be a port NewPebble reserved and released, which the kernel does not
// hand out again at once; retry briefly in case something took it.
func (p *Pebble) serve(addr string, h http.Handler) (*httptest.Server, error) {
	var ln net.Listener
	var err error
	for range 50 {
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return nil, err
	}
	s := httptest.NewUnstartedServer(h)
	s.Listener.Close()
	s.Listener = ln
	s.TLS = &tls.Config{Certificates: []tls.Certificate{p.srvCert}}
	s.Config.ErrorLog = log.New(io.Discard, "", 0) // clients that hang up mid-handshake
	s.StartTLS()
	return s, nil
}

// startDNS runs challtestsrv's DNS on a free loopback port, answering every
// name with 127.0.0.1 and no AAAA (the default ::1 makes Pebble dial
// [::1]), and waits until it answers over UDP and TCP: Run only logs a
// failed bind, and Pebble asks over TCP.
func (p *Pebble) startDNS(logger *log.Logger) (string, error) {
	var lastErr error
	for range 5 {
		port := FreePort(p.t)
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if pc, err := net.ListenPacket("udp", addr); err != nil {
			lastErr = err
			continue
		} else {
			pc.Close()
		}
		srv, err := challtestsrv.New(challtestsrv.Config{DNSAddrs: []string{addr}, Log: logger})
		if err != nil {
			return "", err
		}
		srv.SetDefaultDNSIPv6("")
		srv.SetDefaultDNSIPv4("127.0.0.1")
		srv.Run()
		p.dns = srv
		if lastErr = waitDNS(addr); lastErr == nil {
			return addr, nil
		}
		srv.Shutdown()
		p.dns = nil
	}
	return "", lastErr
}

// waitDNS resolves PebbleName at addr over UDP and TCP until both answer
// 127.0.0.1 alone.
func waitDNS(addr string) error {
	deadline := time.Now().Add(5 * time.Second)
	var err error
	for _, network := range []string{"udp", "tcp"} {
		r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}}
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			var ips []netip.Addr
			ips, err = r.LookupNetIP(ctx, "ip", PebbleName+".")
			cancel()
			if err == nil && (len(ips) != 1 || ips[0] != netip.MustParseAddr("127.0.0.1")) {
				return fmt.Errorf("%s resolves to %v over %s, want 127.0.0.1 alone", PebbleName, ips, network)
			}
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("resolving %s over %s: %w", PebbleName, network, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return nil
}

// Stop shuts Pebble down; it is idempotent, and runs at the end of the test.
func (p *Pebble) Stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return
	}
	p.stopped = true
	if p.acme != nil {
		p.acme.CloseClientConnections()
		p.acme.Close()
	}
	if p.mgmt != nil {
		p.mgmt.Close()
	}
	if p.dns != nil {
		p.dns.Shutdown()
	}
	if p.logw != nil {
		p.logw.stop()
	}
}

// Orders returns how many new-order requests the ACME server received.
func (p *Pebble) Orders() int64 { return p.orders.Load() }

// OrderLog returns the new-order requests the ACME server received, with
// the identifiers and profile each asked for.
func (p *Pebble) OrderLog() []PebbleOrder {
	p.orderMu.Lock()
	defer p.orderMu.Unlock()
	return slices.Clone(p.orderLog)
}

// noteOrder records what a new-order request asks for: the payload of its
// JWS (RFC 8555 7.4, draft-aaron-acme-profiles), read and put back. A body
// that does not parse is recorded with no identifiers; Pebble judges it.
func (p *Pebble) noteOrder(r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	r.Body.Close()
	r.Body = io.NopCloser(bytes.NewReader(body))
	var o PebbleOrder
	var jws struct {
		Payload string `json:"payload"`
	}
	var order struct {
		Identifiers []struct{ Type, Value string } `json:"identifiers"`
		Profile     string                         `json:"profile"`
	}
	if err == nil && json.Unmarshal(body, &jws) == nil {
		if payload, err := base64.RawURLEncoding.DecodeString(jws.Payload); err == nil && json.Unmarshal(payload, &order) == nil {
			for _, id := range order.Identifiers {
				o.Identifiers = append(o.Identifiers, id.Type+":"+id.Value)
			}
			o.Profile = order.Profile
		}
	}
	p.orderMu.Lock()
	p.orderLog = append(p.orderLog, o)
	p.orderMu.Unlock()
}

// profiles returns the profiles Pebble offers (PebbleOptions.Profiles).
func (p *Pebble) profiles() map[string]time.Duration {
	if len(p.opts.Profiles) > 0 {
		return p.opts.Profiles
	}
	return map[string]time.Duration{"default": 90 * 24 * time.Hour}
}

// Lifetime returns NotAfter minus NotBefore of the certificates Pebble
// issues in profile: its validity period less one second (Pebble's
// ca.newCertificate), or 0 for a profile it does not offer.
func (p *Pebble) Lifetime(profile string) time.Duration {
	d, ok := p.profiles()[profile]
	if !ok {
		return 0
	}
	return d.Truncate(time.Second) - time.Second
}

// Requests returns how many requests the ACME server received.
func (p *Pebble) Requests() int64 { return p.requests.Load() }

// Root returns Pebble's issuing root, fetched from the management API's
// /roots/0. It changes with every Start.
func (p *Pebble) Root() *x509.Certificate {
	p.t.Helper()
	p.mu.Lock()
	mgmt := p.mgmt
	p.mu.Unlock()
	if mgmt == nil {
		p.t.Fatal("pebble: Root before Start")
	}
	b, err := p.get(mgmt.URL + wfe.RootCertPath + "0")
	if err != nil {
		p.t.Fatalf("pebble: fetching the root: %v", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		p.t.Fatalf("pebble: %s0 is not a PEM certificate: %q", wfe.RootCertPath, b)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		p.t.Fatalf("pebble: root: %v", err)
	}
	return c
}

// RootPool returns a pool holding only Pebble's issuing root.
func (p *Pebble) RootPool() *x509.CertPool {
	p.t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(p.Root())
	return pool
}

// get fetches url from one of Pebble's servers, trusting only their
// loopback certificate.
func (p *Pebble) get(url string) ([]byte, error) {
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.srvRoots}, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", url, resp.Status, b)
	}
	return b, nil
}

// PebbleLeakOptions are the LeakCheck options for a test that ran a Pebble
// and certmagic. Each names one goroutine that outlives its test by design:
//
//   - Pebble's validation authority ranges over a channel nothing closes.
//   - certmagic starts one rate limiter per CA and account, kept in a
//     package map for the life of the process ("TODO: stop rate limiter
//     when it is garbage-collected", acmeclient.go).
//   - certmagic's FileStorage refreshes a lock file every 5 s and notices
//     its release only at the next refresh.
func PebbleLeakOptions() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreTopFunction("github.com/letsencrypt/pebble/v2/va.VAImpl.processTasks"),
		goleak.IgnoreAnyFunction("github.com/caddyserver/certmagic.(*RingBufferRateLimiter).loop"),
		goleak.IgnoreAnyFunction("github.com/caddyserver/certmagic.keepLockfileFresh"),
	}
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
// It is taken below the kernel's ephemeral range, so that nothing the
// kernel numbers meanwhile (a listener on port 0, the source port of a
// connection such as Pebble's or a keep-alive client's) can take it before
// the test binds it; only within that range if nothing below is free.
func FreePort(t testing.TB) int {
	t.Helper()
	if low := ephemeralLow(); low > freePortMin {
		for range 100 {
			port := freePortMin + mrand.IntN(low-freePortMin)
			if ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port))); err == nil {
				ln.Close()
				return port
			}
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// freePortMin is the lowest port FreePort hands out, above the
// well-known and most registered services' ports.
const freePortMin = 20000

// ephemeralLow returns the start of the kernel's ephemeral port range, or
// 0 if it cannot be read.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0
	}
	var low, high int
	if _, err := fmt.Sscan(string(b), &low, &high); err != nil {
		return 0
	}
	return low
}

// loopbackCert makes a self-signed certificate for 127.0.0.1, which is
// what Pebble's servers present.
func loopbackCert() (tls.Certificate, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "pebble on loopback"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf},
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// testWriter sends Pebble's log lines to t.Log while the test runs, and
// drops them after (its goroutines outlive the test).
type testWriter struct {
	t  testing.TB
	mu sync.Mutex
	on bool
}

func (w *testWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.on {
		w.t.Logf("%s", b)
	}
	return len(b), nil
}

func (w *testWriter) stop() {
	w.mu.Lock()
	w.on = false
	w.mu.Unlock()
}
