package daemon

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tariq-vpn/tariq/internal/mux"
	"github.com/tariq-vpn/tariq/internal/testutil"
)

// clientHello returns the first TLS record a crypto/tls client sends: a
// ClientHello, for a client that then never answers the server.
func clientHello(t *testing.T) []byte {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go tls.Client(a, &tls.Config{ServerName: "127.0.0.1", InsecureSkipVerify: true}).Handshake()
	b.SetDeadline(time.Now().Add(5 * time.Second))
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(b, hdr); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, int(hdr[3])<<8|int(hdr[4]))
	if _, err := io.ReadFull(b, body); err != nil {
		t.Fatal(err)
	}
	return append(hdr, body...)
}

// dropped waits for the server to close c and returns how long it took
// and what it said first; it fails if c is still open after limit.
func dropped(c net.Conn, limit time.Duration) (time.Duration, string, error) {
	start := time.Now()
	c.SetReadDeadline(start.Add(limit))
	var said []byte
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		said = append(said, buf[:n]...)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return time.Since(start), string(said), errors.New("still open")
			}
			return time.Since(start), string(said), nil // EOF or reset: dropped
		}
	}
}

// stillOpen reports whether the server has not closed c yet, reading (and
// dropping) whatever it sent meanwhile, such as its handshake flight.
func stillOpen(c net.Conn) bool {
	c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	defer c.SetReadDeadline(time.Time{})
	buf := make([]byte, 4096)
	for {
		if _, err := c.Read(buf); err != nil {
			return errors.Is(err, os.ErrDeadlineExceeded)
		}
	}
}

// TestSharedPortBadInput: on the daemon's shared TLS port, a garbage first
// record and a plain-HTTP request are dropped at once (the latter told to
// use https://), and clients that stall (no bytes, half a record header, a
// ClientHello never followed up, a finished handshake with no first
// message) are dropped on the mux's deadlines; meanwhile other clients
// load the page and relay TURN over TLS on the same port, and over UDP.
func TestSharedPortBadInput(t *testing.T) {
	testutil.LeakCheck(t)
	// Shorter deadlines for this test.
	lim := mux.Limits{HandshakeTimeout: 2500 * time.Millisecond, SniffTimeout: 2500 * time.Millisecond}
	const limit = 10 * time.Second // well past both deadlines

	r := startDaemon(t, "  users: {alice: wonderland}\n", func(o *Options) { o.WebLimits = lim })
	pool, _ := servedCert(t, r)
	web := r.d.WebAddrs()[0].String()
	dial := func() net.Conn {
		t.Helper()
		c, err := net.DialTimeout("tcp", web, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}

	// Stalled clients first, so they are pending while the others are served.
	// since is when the server's deadline started, at the latest.
	type stall struct {
		c        net.Conn
		since    time.Time
		deadline time.Duration
	}
	stalled := map[string]stall{}
	hello := clientHello(t)
	for name, first := range map[string][]byte{
		"no bytes":                  nil,
		"half a record header":      {0x16, 0x03},
		"ClientHello, then silence": hello,
	} {
		start := time.Now()
		c := dial()
		if _, err := c.Write(first); err != nil {
			t.Fatal(err)
		}
		stalled[name] = stall{c, start, lim.HandshakeTimeout}
	}
	hsDone := dial()
	tc := tls.Client(hsDone, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	tc.SetDeadline(time.Now().Add(5 * time.Second))
	if err := tc.Handshake(); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	tc.SetDeadline(time.Time{})
	// The server's sniffing deadline starts when it has read the client's
	// Finished, which the client sent before Handshake returned; a little
	// slack covers the two clocks' readings.
	stalled["handshake, then no first message"] = stall{tc, time.Now().Add(-50 * time.Millisecond), lim.SniffTimeout}

	for _, tc := range []struct {
		name, send, want string
	}{
		{"garbage", "\xff\xfe garbage, not a TLS record at all \x00\x01\x02", ""},
		{"garbage handshake record", "\x16\x03\x01\x00\x10this is no hello", ""},
		{"plain HTTP", "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", "HTTP/1.0 400 Bad Request"},
	} {
		c := dial()
		if _, err := io.WriteString(c, tc.send); err != nil {
			t.Fatal(err)
		}
		took, said, err := dropped(c, limit)
		if err != nil {
			t.Errorf("%s: %v after %v", tc.name, err, took)
		}
		// Dropped on the spot, not at a deadline.
		if took >= lim.HandshakeTimeout {
			t.Errorf("%s: dropped after %v, want at once (before the %v handshake deadline)", tc.name, took, lim.HandshakeTimeout)
		}
		if tc.want != "" && (!strings.HasPrefix(said, tc.want) || !strings.Contains(said, "use https://")) {
			t.Errorf("%s: answered %q, want %q telling to use https://", tc.name, said, tc.want)
		}
	}

	// Everyone else is served meanwhile, on the same port.
	peer := testutil.UDPEchoOn(t, "127.0.0.1:0").LocalAddr()
	if body, _, err := getPage(web, "127.0.0.1", pool); err != nil || !strings.Contains(body, "tariq") {
		t.Errorf("page while bad clients are pending: %v", err)
	}
	if err := turnOverTLS(t, r, web, "127.0.0.1", pool, peer, "stun.turn"); err != nil {
		t.Errorf("TURN over TLS on the shared port while bad clients are pending: %v", err)
	}
	udp, _, _ := r.d.Relay().Addrs()
	if err := turnOverUDP(t, r, udp[0].String(), peer); err != nil {
		t.Errorf("TURN over UDP while bad clients are pending: %v", err)
	}
	for name, s := range stalled {
		if !stillOpen(s.c) {
			t.Fatalf("%s: dropped before the others were served; the test proves nothing", name)
		}
	}

	for name, s := range stalled {
		if _, _, err := dropped(s.c, limit); err != nil {
			t.Errorf("%s: %v %v after it started", name, err, time.Since(s.since))
			continue
		}
		// The deadline dropped it, not something sooner.
		if took := time.Since(s.since); took < s.deadline {
			t.Errorf("%s: dropped after %v, before its %v deadline", name, took, s.deadline)
		}
	}

	// And after the drops the port still serves.
	if _, _, err := getPage(web, "127.0.0.1", pool); err != nil {
		t.Errorf("page after the drops: %v", err)
	}
	if err := turnOverTLS(t, r, web, "127.0.0.1", pool, peer); err != nil {
		t.Errorf("TURN over TLS after the drops: %v", err)
	}
}
