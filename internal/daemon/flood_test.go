package daemon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pion/turn/v5"

	"github.com/tariq-vpn/tariq/internal/mux"
	"github.com/tariq-vpn/tariq/internal/testutil"
)

// dialerFrom dials from the address src (any port), for clients that
// must come from another loopback address than 127.0.0.1.
func dialerFrom(src string) *net.Dialer {
	return &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
}

// pageFrom fetches https://127.0.0.1:port/ at web from the address src,
// trusting only roots, and returns the body.
func pageFrom(src, web string, roots *x509.CertPool) (string, error) {
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}, DialContext: dialerFrom(src).DialContext}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://" + web + "/")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET /: %s", resp.Status)
	}
	return string(body), nil
}

// turnOverTLSFrom allocates over TURN-over-TLS at web from the address src
// and relays one datagram to peer and back.
func turnOverTLSFrom(t *testing.T, r *running, src, web string, roots *x509.CertPool, peer net.Addr) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d := tls.Dialer{NetDialer: dialerFrom(src), Config: &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}}
	conn, err := d.DialContext(ctx, "tcp", web)
	if err != nil {
		return fmt.Errorf("TLS handshake: %w", err)
	}
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	relayed, err := r.allocateAs(t, turn.NewSTUNConn(conn), web, "alice", "wonderland")
	if err != nil {
		return fmt.Errorf("allocate: %w", err)
	}
	return relayOnce(relayed, peer)
}

// TestSharedPortStalledFlood: the daemon's shared HTTPS/TURN-TLS port,
// its pending-handshake cap lowered to 64, takes 300 connections from
// 127.0.0.1 that stall their TLS handshake; it holds only its per-source
// share of them, and a member at 127.0.0.2 loads the page and allocates
// over TURN-over-TLS while the flood is held (issue 9, item 6).
func TestSharedPortStalledFlood(t *testing.T) {
	testutil.LeakCheck(t)
	lim := mux.Limits{MaxPending: 64, PerSource: 8, Reserve: 8, Busy: 64,
		HandshakeTimeout: time.Minute, SniffTimeout: time.Minute, BusyTimeout: time.Minute}
	r := startDaemon(t, "  users: {alice: wonderland}\n", func(o *Options) { o.WebLimits = lim })
	pool, _ := servedCert(t, r)
	web := r.d.WebAddrs()[0].String()

	hello := clientHello(t)
	var flood []net.Conn
	t.Cleanup(func() {
		for _, c := range flood {
			c.Close()
		}
	})
	for i := range 300 {
		c, err := dialerFrom("127.0.0.1").Dial("tcp", web)
		if err != nil {
			t.Fatalf("flood connection %d: %v", i, err)
		}
		flood = append(flood, c)
		switch i % 3 { // nothing, half a record header, or a ClientHello; then silence
		case 1:
			c.Write([]byte{0x16, 0x03})
		case 2:
			c.Write(hello)
		}
	}
	held := func() int {
		n := 0
		for _, c := range flood {
			if stillOpen(c) {
				n++
			}
		}
		return n
	}
	// The mux refuses all but PerSource; wait until it has caught up with
	// the backlog.
	deadline := time.Now().Add(10 * time.Second)
	for held() != lim.PerSource && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := held(); n != lim.PerSource {
		t.Errorf("the port holds %d of the flood's %d connections, want %d", n, len(flood), lim.PerSource)
	}

	peer := testutil.UDPEchoOn(t, "127.0.0.1:0").LocalAddr()
	if body, err := pageFrom("127.0.0.2", web, pool); err != nil || !strings.Contains(body, "tariq") {
		t.Errorf("page from 127.0.0.2 during the flood: %v", err)
	}
	if err := turnOverTLSFrom(t, r, "127.0.0.2", web, pool, peer); err != nil {
		t.Errorf("TURN over TLS from 127.0.0.2 during the flood: %v", err)
	}
	if n := held(); n != lim.PerSource {
		t.Errorf("the flood went from %d to %d held connections; it must still be held", lim.PerSource, n)
	}
}
