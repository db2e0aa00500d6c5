package outline

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	stdlog "log"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Jigsaw-Code/outline-sdk/transport"
	"github.com/Jigsaw-Code/outline-sdk/transport/shadowsocks"
	"github.com/Jigsaw-Code/outline-sdk/x/websocket"
	"go.yaml.in/yaml/v3"

	"github.com/tariq-vpn/tariq/internal/mux"
)

// The test's destination policy: the loopback echo targets live on
// 127.0.0.1, the canaries on 127.0.0.2 and ::1.
var allowedTarget = netip.MustParseAddr("127.0.0.1")

func testPolicy(seen *addrLog) func(netip.Addr) (bool, string) {
	return func(ip netip.Addr) (bool, string) {
		seen.add(ip)
		switch {
		case ip == allowedTarget:
			return true, ""
		case ip.IsLoopback():
			return false, "loopback"
		case ip.IsLinkLocalUnicast():
			return false, "link-local"
		case ip.IsPrivate():
			return false, "private"
		}
		return false, "test-deny"
	}
}

// addrLog records the addresses the policy was asked about.
type addrLog struct {
	mu  sync.Mutex
	ips []netip.Addr
}

func (l *addrLog) add(ip netip.Addr) {
	l.mu.Lock()
	l.ips = append(l.ips, ip)
	l.mu.Unlock()
}

func (l *addrLog) all() []netip.Addr {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]netip.Addr(nil), l.ips...)
}

// normalPage stands in for the web page: the site every other path shows.
var normalPage = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/" {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		io.WriteString(w, "<!doctype html><title>tariq</title>\n")
		return
	}
	http.NotFound(w, r)
})

// harness is the server side as the daemon will wire it: the shared TLS
// port's mux, an http.Server with the daemon's protocol settings (but
// short timeouts, which the WebSocket sessions must outlive), the config
// documents and the WebSocket paths in front of the normal page.
type harness struct {
	t      *testing.T
	svc    *Service
	seen   *addrLog
	addr   string // host:port of the HTTPS port
	roots  *x509.CertPool
	prefix string // of the WebSocket paths
	docs   string // prefix of the config documents

	mu     sync.Mutex
	tokens map[string]string // config token → member
	keys   map[string]string // member → secret
}

const testAuthTimeout = 1500 * time.Millisecond

func newHarness(t *testing.T, cfg Config) *harness {
	t.Helper()
	if cfg.AuthTimeout == 0 {
		cfg.AuthTimeout = testAuthTimeout
	}
	h := &harness{t: t, seen: &addrLog{}, prefix: NewPrefix(), docs: NewPrefix(), tokens: map[string]string{}, keys: map[string]string{}}
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	svc, err := New(cfg, Deps{Logger: log, Allow: testPolicy(h.seen)})
	if err != nil {
		t.Fatal(err)
	}
	h.svc = svc
	ws, err := svc.Handler(h.prefix, normalPage)
	if err != nil {
		t.Fatal(err)
	}
	handler, err := ConfigHandler(h.docs, h.lookup, ws)
	if err != nil {
		t.Fatal(err)
	}

	// net/http recovers a handler's panic and only logs it: fail the
	// test on one.
	panics := &panicWatch{t: t}

	cert, roots := testCertificate(t)
	h.roots = roots
	tlsConf := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.addr = ln.Addr().String()
	m := mux.New(ln, tlsConf, func(raw, conn net.Conn) { conn.Close() }, log, mux.Limits{})
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: time.Second,
		ReadTimeout:       time.Second,
		WriteTimeout:      time.Second,
		IdleTimeout:       time.Second,
		Protocols:         &protocols,
		ErrorLog:          stdlog.New(panics, "", 0),
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); m.Serve(ctx) }()
	go func() { defer wg.Done(); srv.Serve(m.HTTPListener()) }()
	t.Cleanup(func() {
		cancel()
		svc.Close()
		m.Close()
		srv.Close()
		wg.Wait()
		if n := panics.count.Load(); n > 0 {
			t.Errorf("%d handler panics", n)
		}
	})
	return h
}

// panicWatch is the HTTP server's error log: it counts the panics that
// net/http recovered in handlers.
type panicWatch struct {
	t     *testing.T
	count atomic.Int64
}

func (p *panicWatch) Write(b []byte) (int, error) {
	line := string(b)
	if strings.Contains(line, "panic") {
		p.count.Add(1)
		line, _, _ = strings.Cut(line, "\n") // the first line; not the stack
	}
	p.t.Log(strings.TrimSpace(line))
	return len(b), nil
}

// testWriter sends logs to t.Log until the test ends.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// setKeys gives the members their secrets (and config tokens).
func (h *harness) setKeys(members map[string]string) {
	h.t.Helper()
	h.mu.Lock()
	h.keys = members
	var keys []Key
	for m, s := range members {
		keys = append(keys, Key{Member: m, Secret: s})
	}
	h.mu.Unlock()
	if err := h.svc.SetKeys(keys); err != nil {
		h.t.Fatal(err)
	}
}

// lookup serves the config documents: a member with a key gets its
// config, a known token without one the error document.
func (h *harness) lookup(token string) ([]byte, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	member, ok := h.tokens[token]
	if !ok {
		return nil, false
	}
	secret, ok := h.keys[member]
	if !ok {
		return ErrorConfig("This key was removed. Ask for a new invitation."), true
	}
	return AccessConfig("wss://"+h.addr+"/"+h.prefix, secret), true
}

// accessKey returns the member's ssconf:// key.
func (h *harness) accessKey(member string) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	token := NewPrefix()
	h.tokens[token] = member
	host, port, _ := net.SplitHostPort(h.addr)
	p, _ := strconv.Atoi(port)
	return AccessKey(host, p, h.docs+"/"+token, member)
}

// testCertificate returns a server certificate for 127.0.0.1, ::1 and
// localhost, and a pool holding only its CA.
func testCertificate(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "outline test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pool
}

// httpClient trusts only the test CA. h2 makes it negotiate HTTP/2.
func (h *harness) httpClient(h2 bool) *http.Client {
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: h.roots}, ForceAttemptHTTP2: h2}
	h.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// outlineClient is what the Outline app builds from a config document:
// x/websocket endpoints under transport/shadowsocks dialers.
type outlineClient struct {
	stream *shadowsocks.StreamDialer
	packet transport.PacketListener
	// sent records the WebSocket messages the client wrote on the TCP
	// path, to replay them.
	sent *messageLog
	// raws are the TCP connections under its WebSockets, newest last.
	raws *connLog
}

// connLog keeps the TCP connections a client opened.
type connLog struct {
	mu    sync.Mutex
	conns []net.Conn
}

func (l *connLog) last() net.Conn {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.conns[len(l.conns)-1]
}

// clientConfig is the part of the config document the client reads,
// parsed as the app does: from the generic YAML tree, by $type.
type clientConfig struct {
	tcpURL, udpURL, cipher, secret string
}

// fetchConfig turns an ssconf:// key into its HTTPS URL, fetches the
// document trusting only the test CA and parses it.
func (h *harness) fetchConfig(key string) (clientConfig, string, error) {
	u, err := url.Parse(key)
	if err != nil || u.Scheme != "ssconf" {
		return clientConfig{}, "", errors.New("not an ssconf key: " + key)
	}
	u.Scheme = "https"
	name, _ := url.PathUnescape(u.Fragment)
	u.Fragment = ""
	resp, err := h.httpClient(false).Get(u.String())
	if err != nil {
		return clientConfig{}, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return clientConfig{}, "", err
	}
	if resp.StatusCode != http.StatusOK {
		return clientConfig{}, "", errors.New("config: " + resp.Status)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(body, &doc); err != nil {
		return clientConfig{}, "", err
	}
	if e, ok := doc["error"].(map[string]any); ok {
		msg, _ := e["message"].(string)
		return clientConfig{}, "", errors.New("config error: " + msg)
	}
	tr, _ := doc["transport"].(map[string]any)
	if tr["$type"] != "tcpudp" {
		return clientConfig{}, "", errors.New("transport is not tcpudp")
	}
	var c clientConfig
	for half, url := range map[string]*string{"tcp": &c.tcpURL, "udp": &c.udpURL} {
		d, _ := tr[half].(map[string]any)
		ep, _ := d["endpoint"].(map[string]any)
		if d["$type"] != "shadowsocks" || ep["$type"] != "websocket" {
			return clientConfig{}, "", errors.New(half + " is not shadowsocks over websocket")
		}
		*url, _ = ep["url"].(string)
		cipher, _ := d["cipher"].(string)
		secret, _ := d["secret"].(string)
		if c.cipher != "" && (cipher != c.cipher || secret != c.secret) {
			return clientConfig{}, "", errors.New("tcp and udp differ")
		}
		c.cipher, c.secret = cipher, secret
	}
	return c, name, nil
}

// client builds the Outline client from c.
func (h *harness) client(c clientConfig) *outlineClient {
	h.t.Helper()
	tlsConf := &tls.Config{RootCAs: h.roots}
	raws := &connLog{}
	endpoint := func(wsURL string) transport.StreamEndpoint {
		u, err := url.Parse(wsURL)
		if err != nil {
			h.t.Fatal(err)
		}
		tcp := &transport.TCPEndpoint{Address: u.Host}
		return transport.FuncStreamEndpoint(func(ctx context.Context) (transport.StreamConn, error) {
			c, err := tcp.ConnectStream(ctx)
			if err == nil {
				raws.mu.Lock()
				raws.conns = append(raws.conns, c)
				raws.mu.Unlock()
			}
			return c, err
		})
	}
	sent := &messageLog{}
	tcp, err := websocket.NewStreamEndpoint(c.tcpURL, endpoint(c.tcpURL), websocket.WithTLSConfig(tlsConf))
	if err != nil {
		h.t.Fatal(err)
	}
	udp, err := websocket.NewPacketEndpoint(c.udpURL, endpoint(c.udpURL), websocket.WithTLSConfig(tlsConf))
	if err != nil {
		h.t.Fatal(err)
	}
	key, err := shadowsocks.NewEncryptionKey(c.cipher, c.secret)
	if err != nil {
		h.t.Fatal(err)
	}
	sd, err := shadowsocks.NewStreamDialer(transport.FuncStreamEndpoint(func(ctx context.Context) (transport.StreamConn, error) {
		conn, err := tcp(ctx)
		if err != nil {
			return nil, err
		}
		return &recordingConn{StreamConn: conn, log: sent}, nil
	}), key)
	if err != nil {
		h.t.Fatal(err)
	}
	pl, err := shadowsocks.NewPacketListener(transport.FuncPacketEndpoint(udp), key)
	if err != nil {
		h.t.Fatal(err)
	}
	return &outlineClient{stream: sd, packet: pl, sent: sent, raws: raws}
}

// memberClient fetches the member's config through its access key and
// builds the client from it.
func (h *harness) memberClient(member string) *outlineClient {
	h.t.Helper()
	c, name, err := h.fetchConfig(h.accessKey(member))
	if err != nil {
		h.t.Fatal(err)
	}
	if name != member {
		h.t.Fatalf("key name %q, want %q", name, member)
	}
	return h.client(c)
}

// rawWS opens a WebSocket on the path (tcp or udp) with x/websocket, as
// the client does, but without Shadowsocks on top.
func (h *harness) rawWS(path string) transport.StreamConn {
	h.t.Helper()
	connect, err := websocket.NewStreamEndpoint("wss://"+h.addr+"/"+h.prefix+"/"+path,
		&transport.TCPEndpoint{Address: h.addr}, websocket.WithTLSConfig(&tls.Config{RootCAs: h.roots}))
	if err != nil {
		h.t.Fatal(err)
	}
	c, err := connect(context.Background())
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { c.Close() })
	return c
}

// messageLog keeps the WebSocket messages a client wrote.
type messageLog struct {
	mu   sync.Mutex
	msgs [][]byte
}

func (l *messageLog) first() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.msgs) == 0 {
		return nil
	}
	return l.msgs[0]
}

type recordingConn struct {
	transport.StreamConn
	log *messageLog
}

func (c *recordingConn) Write(b []byte) (int, error) {
	c.log.mu.Lock()
	c.log.msgs = append(c.log.msgs, bytes.Clone(b))
	c.log.mu.Unlock()
	return c.StreamConn.Write(b)
}

// canary listens for TCP and UDP on one port of ip and reports whatever
// reaches it.
type canary struct {
	tcp  net.Listener
	udp  net.PacketConn
	port int
	hits chan string
	done sync.WaitGroup
}

func newCanary(t *testing.T, ip string) *canary {
	t.Helper()
	var c *canary
	for range 20 { // find a port free on both TCP and UDP
		ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			t.Fatalf("listening on %s: %v", ip, err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", ln.Addr().String())
		if err != nil {
			ln.Close()
			continue
		}
		c = &canary{tcp: ln, udp: pc, port: port, hits: make(chan string, 100)}
		break
	}
	if c == nil {
		t.Fatal("no port free for TCP and UDP")
	}
	c.done.Add(2)
	go func() {
		defer c.done.Done()
		for {
			conn, err := c.tcp.Accept()
			if err != nil {
				return
			}
			c.hits <- "tcp connection from " + conn.RemoteAddr().String()
			conn.Close()
		}
	}()
	go func() {
		defer c.done.Done()
		buf := make([]byte, 2048)
		for {
			_, from, err := c.udp.ReadFrom(buf)
			if err != nil {
				return
			}
			c.hits <- "udp packet from " + from.String()
		}
	}()
	t.Cleanup(func() { c.tcp.Close(); c.udp.Close(); c.done.Wait() })
	return c
}

// addr returns the canary's address as written by ip.
func (c *canary) addr(ip string) string { return net.JoinHostPort(ip, strconv.Itoa(c.port)) }

// assertQuiet fails t if anything reached the canary.
func (c *canary) assertQuiet(t *testing.T) {
	t.Helper()
	select {
	case hit := <-c.hits:
		t.Errorf("the canary was reached: %s", hit)
	default:
	}
}

// waitFor polls cond every 10 ms for up to d.
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return cond()
}
