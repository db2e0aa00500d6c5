package mux

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/tariq-vpn/tariq/internal/testutil"
)

func stunHeader() []byte {
	b := make([]byte, 20)
	binary.BigEndian.PutUint16(b[0:2], 0x0001) // Binding request
	binary.BigEndian.PutUint32(b[4:8], stunMagicCookie)
	copy(b[8:], "transaction!")
	return b
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		want Kind
	}{
		{"empty", nil, NeedMore},
		{"stun binding", stunHeader(), TURN},
		{"stun header only 8 bytes", stunHeader()[:8], TURN},
		{"stun too short", stunHeader()[:5], NeedMore},
		{"zero bits but no cookie", []byte{0, 1, 0, 0, 1, 2, 3, 4}, Unknown},
		{"channel data", []byte{0x40, 0, 0, 4, 1, 2, 3, 4}, Unknown},
		{"GET", []byte("GET / HTTP/1.1\r\n"), HTTP},
		{"GE", []byte("GE"), NeedMore},
		{"POST", []byte("POST /x HTTP/1.1"), HTTP},
		{"OPTIONS partial", []byte("OPTIO"), NeedMore},
		{"h2 preface", []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), HTTP},
		{"lower-case get", []byte("get / HTTP/1.1"), Unknown},
		{"GETX", []byte("GETX / "), Unknown},
		{"tls inside tls", []byte{0x16, 3, 1, 0, 5, 1, 0, 0}, Unknown},
		{"ssh", []byte("SSH-2.0-OpenSSH"), Unknown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Classify(tc.in); got != tc.want {
				t.Errorf("Classify(%q) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}

// FuzzClassify: never panics, and a decision once made does not change as
// more bytes arrive (the mux stops reading at the first decision).
func FuzzClassify(f *testing.F) {
	f.Add(stunHeader())
	f.Add([]byte("GET / HTTP/1.1\r\n"))
	f.Add([]byte("PRI * HTTP/2.0\r\n"))
	f.Add([]byte{0x40, 0, 0, 4})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		k := Classify(b)
		for i := 0; i < len(b); i++ {
			if p := Classify(b[:i]); p != NeedMore && p != k {
				t.Fatalf("Classify(%q) = %v but prefix %q gave %v", b, k, b[:i], p)
			}
		}
		if len(b) >= 14 && k == NeedMore {
			t.Fatalf("%q still undecided after 14 bytes", b)
		}
	})
}

func selfSigned(t *testing.T) (*tls.Config, *x509.CertPool) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}},
		NextProtos:   []string{"h2", "http/1.1", "stun.turn"},
	}, pool
}

type harness struct {
	m     *Mux
	addr  string
	pool  *x509.CertPool
	turns chan []byte // first 20 bytes of each TURN connection
}

func start(t *testing.T, lim Limits) *harness {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conf, pool := selfSigned(t)
	h := &harness{addr: ln.Addr().String(), pool: pool, turns: make(chan []byte, 10)}
	var wg sync.WaitGroup
	h.m = New(ln, conf, func(raw, conn net.Conn) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer raw.Close()
			b := make([]byte, 20)
			if _, err := io.ReadFull(conn, b); err == nil {
				conn.Write(b) // echo, so the client sees the stream intact
				h.turns <- b
			}
		}()
	}, slog.New(slog.DiscardHandler), lim)
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{Protocols: &protocols, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "page via "+r.Proto)
	})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { h.m.Serve(ctx); done <- struct{}{} }()
	go func() { srv.Serve(h.m.HTTPListener()); done <- struct{}{} }()
	t.Cleanup(func() {
		cancel()
		h.m.Close()
		srv.Close()
		<-done
		<-done
		wg.Wait()
	})
	return h
}

func (h *harness) get(t *testing.T, h2 bool) string {
	t.Helper()
	conf := &tls.Config{RootCAs: h.pool}
	var tr http.RoundTripper = &http.Transport{TLSClientConfig: conf}
	if h2 {
		tr = &http2.Transport{TLSClientConfig: conf}
	}
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	resp, err := c.Get("https://" + h.addr + "/")
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	c.CloseIdleConnections()
	return string(b)
}

func (h *harness) turn(t *testing.T, alpn []string) {
	t.Helper()
	c, err := tls.Dial("tcp", h.addr, &tls.Config{RootCAs: h.pool, NextProtos: alpn})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := stunHeader()
	c.Write(msg)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	back := make([]byte, 20)
	if _, err := io.ReadFull(c, back); err != nil || string(back) != string(msg) {
		t.Fatalf("TURN stream: %v %x", err, back)
	}
	select {
	case got := <-h.turns:
		if string(got) != string(msg) {
			t.Fatalf("relay got %x", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no TURN hand-over")
	}
}

func TestMuxRoutes(t *testing.T) {
	testutil.LeakCheck(t)
	h := start(t, Limits{})
	if got := h.get(t, false); got != "page via HTTP/1.1" {
		t.Errorf("http/1.1: %q", got)
	}
	if got := h.get(t, true); got != "page via HTTP/2.0" {
		t.Errorf("h2: %q", got)
	}
	t.Run("turn with stun.turn alpn", func(t *testing.T) { h.turn(t, []string{"stun.turn"}) })
	t.Run("turn without alpn (browsers)", func(t *testing.T) { h.turn(t, nil) })
	t.Run("turn claiming http/1.1 alpn", func(t *testing.T) { h.turn(t, []string{"http/1.1"}) })
}

func TestMuxDropsBadClients(t *testing.T) {
	h := start(t, Limits{HandshakeTimeout: 300 * time.Millisecond, SniffTimeout: 300 * time.Millisecond})

	closedWithin := func(t *testing.T, c net.Conn, d time.Duration) string {
		t.Helper()
		c.SetReadDeadline(time.Now().Add(d))
		b, err := io.ReadAll(c)
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("connection still open after %v", d)
		}
		return string(b)
	}

	t.Run("garbage first record", func(t *testing.T) {
		c, _ := net.Dial("tcp", h.addr)
		defer c.Close()
		c.Write([]byte("\x00\x01\x02garbage garbage garbage"))
		closedWithin(t, c, 3*time.Second)
	})
	t.Run("plain http on the tls port", func(t *testing.T) {
		c, _ := net.Dial("tcp", h.addr)
		defer c.Close()
		c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
		if got := closedWithin(t, c, 3*time.Second); !strings.HasPrefix(got, "HTTP/1.0 400") || !strings.Contains(got, "https://") {
			t.Errorf("reply %q", got)
		}
	})
	t.Run("handshake never finished", func(t *testing.T) {
		c, _ := net.Dial("tcp", h.addr)
		defer c.Close()
		start := time.Now()
		closedWithin(t, c, 3*time.Second) // sends nothing at all
		if time.Since(start) < 250*time.Millisecond {
			t.Error("dropped before the handshake deadline")
		}
	})
	t.Run("handshake done, nothing sent", func(t *testing.T) {
		c, err := tls.Dial("tcp", h.addr, &tls.Config{RootCAs: h.pool})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		closedWithin(t, c, 3*time.Second)
	})
	t.Run("unknown protocol inside tls", func(t *testing.T) {
		c, err := tls.Dial("tcp", h.addr, &tls.Config{RootCAs: h.pool})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte("SSH-2.0-OpenSSH_9.2\r\n"))
		closedWithin(t, c, 3*time.Second)
	})

	// While a slow client holds a handshake open, others are served.
	slow, _ := net.Dial("tcp", h.addr)
	defer slow.Close()
	slow.Write([]byte{0x16, 0x03, 0x01}) // half a record header, then silence
	if got := h.get(t, false); got != "page via HTTP/1.1" {
		t.Errorf("page while a slow client stalls: %q", got)
	}
	h.turn(t, nil)
}
