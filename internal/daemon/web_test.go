package daemon

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/pion/turn/v5"

	"github.com/tariq-vpn/tariq/internal/certs"
	"github.com/tariq-vpn/tariq/internal/testutil"
)

// selfSignedPool returns a pool trusting only the daemon's self-signed
// certificate (in acme mode, its fallback), read from the data directory.
func selfSignedPool(t *testing.T, r *running) *x509.CertPool {
	t.Helper()
	pemBytes, err := os.ReadFile(filepath.Join(r.d.config().Server.DataDir, "tls", "self-signed.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		t.Fatal("no certificate in self-signed.crt")
	}
	return pool
}

// servedCert returns the pool trusting the daemon's self-signed
// certificate, and the certificate the web port serves (verified by it).
func servedCert(t *testing.T, r *running) (*x509.CertPool, *x509.Certificate) {
	t.Helper()
	pool := selfSignedPool(t, r)
	c, err := tls.Dial("tcp", r.d.WebAddrs()[0].String(), &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatalf("TLS to the web port: %v", err)
	}
	defer c.Close()
	return pool, c.ConnectionState().PeerCertificates[0]
}

// TestSharedPortPageAndTURN: on the one HTTPS port, the page loads (HTTP/1.1
// and h2) and a TURN-over-TLS allocation relays, with and without ALPN.
func TestSharedPortPageAndTURN(t *testing.T) {
	r := startDaemon(t, "  users: {alice: wonderland}\n")
	pool, _ := servedCert(t, r)
	web := r.d.WebAddrs()[0].String()

	for _, h2 := range []bool{false, true} {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: h2}
		resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get("https://" + web + "/")
		if err != nil {
			t.Fatalf("GET (h2 %v): %v", h2, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		tr.CloseIdleConnections()
		if resp.StatusCode != 200 || !strings.Contains(string(body), "tariq") || !strings.Contains(string(body), "turns:127.0.0.1:") {
			t.Errorf("page (h2 %v): %d %q", h2, resp.StatusCode, body)
		}
		if h2 && resp.ProtoMajor != 2 {
			t.Errorf("asked for h2, got %s", resp.Proto)
		}
		for _, h := range []string{"Content-Security-Policy", "Referrer-Policy", "X-Content-Type-Options"} {
			if resp.Header.Get(h) == "" {
				t.Errorf("page lacks %s", h)
			}
		}
	}

	peer := testutil.UDPEchoOn(t, "127.0.0.1:0").LocalAddr()
	for _, alpn := range [][]string{{"stun.turn"}, nil} {
		conn, err := tls.Dial("tcp", web, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", NextProtos: alpn})
		if err != nil {
			t.Fatal(err)
		}
		if len(alpn) > 0 && conn.ConnectionState().NegotiatedProtocol != "stun.turn" {
			t.Errorf("ALPN stun.turn not negotiated on the shared port: %q", conn.ConnectionState().NegotiatedProtocol)
		}
		pc := turn.NewSTUNConn(conn)
		c, err := turn.NewClient(&turn.ClientConfig{STUNServerAddr: web, TURNServerAddr: web, Conn: pc,
			Username: "alice", Password: "wonderland", Realm: r.d.Relay().Realm()})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Listen(); err != nil {
			t.Fatal(err)
		}
		relayed, err := c.Allocate()
		if err != nil {
			t.Fatalf("allocate over TLS on the shared port (alpn %v): %v", alpn, err)
		}
		if err := relayOnce(relayed, peer); err != nil {
			t.Errorf("relay over the shared port (alpn %v): %v\n%s", alpn, err, r.logs)
		}
		relayed.Close()
		c.Close()
		pc.Close()
	}
}

// TestSharedPortBrowser: headless Chromium loads the page from the HTTPS
// port and places a relay-only call through turns: on that same port.
func TestSharedPortBrowser(t *testing.T) {
	r := startDaemon(t, "  users: {alice: wonderland}\n")
	_, cert := servedCert(t, r)
	web := r.d.WebAddrs()[0].String()
	b := testutil.NewBrowser(t, testutil.BrowserOptions{
		Timeout: 2 * time.Minute,
		Flags:   map[string]any{"ignore-certificate-errors-spki-list": certs.SPKIHash(cert)},
	})
	var text string
	if err := b.RunTimeout(20*time.Second, chromedp.Navigate("https://"+web+"/"), chromedp.Text("body", &text)); err != nil {
		t.Fatalf("loading the page: %v", err)
	}
	if !strings.Contains(text, "tariq") {
		t.Errorf("page text %q", text)
	}
	before := r.d.Relay().Stats().AllocationsCreated.Load()
	call := testutil.PlaceRelayCall(t, b, testutil.WebRTCPageServer(t), "turns:"+web+"?transport=tcp", "alice", "wonderland")
	call.CheckRelayed(t, "tls")
	if n := r.d.Relay().Stats().AllocationsCreated.Load() - before; n < 2 {
		t.Errorf("%d allocations through the shared port, want 2", n)
	}
}
