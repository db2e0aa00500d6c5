package mux

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/pion/logging"
	"github.com/pion/turn/v5"

	"github.com/tariq-vpn/tariq/internal/testutil"
)

// turnHarness is a mux on addr whose TURN streams go to a real pion/turn
// server (static user alice) and whose HTTP streams to a page.
type turnHarness struct {
	m    *Mux
	addr string
	pool *x509.CertPool
}

const turnRealm = "tariq.test"

func startTURN(t *testing.T, network, addr string, lim Limits) *turnHarness {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	conf, pool := selfSigned(t)
	turnLn := newChanListener(ln.Addr())
	m := New(ln, conf, func(raw, conn net.Conn) {
		if !turnLn.deliver(conn) {
			conn.Close()
		}
	}, slog.New(slog.DiscardHandler), lim)
	lf := logging.NewDefaultLoggerFactory()
	lf.DefaultLogLevel = logging.LogLevelDisabled
	srvTURN, err := turn.NewServer(turn.ServerConfig{
		Realm:         turnRealm,
		LoggerFactory: lf,
		AuthHandler: func(ra *turn.RequestAttributes) (string, []byte, bool) {
			if ra.Username != "alice" {
				return "", nil, false
			}
			return ra.Username, turn.GenerateAuthKey(ra.Username, ra.Realm, "wonderland"), true
		},
		ListenerConfigs: []turn.ListenerConfig{{
			Listener:              turnLn,
			RelayAddressGenerator: &loopbackRelays{},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	page := &http.Server{Protocols: &protocols, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "the page")
	})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { m.Serve(ctx); done <- struct{}{} }()
	go func() { page.Serve(m.HTTPListener()); done <- struct{}{} }()
	t.Cleanup(func() {
		cancel()
		m.Close()
		page.Close()
		turnLn.Close()
		srvTURN.Close()
		<-done
		<-done
	})
	return &turnHarness{m: m, addr: ln.Addr().String(), pool: pool}
}

// loopbackRelays relays on 127.0.0.1 or ::1, whichever family the
// allocation asks for (pion's client asks for its own).
type loopbackRelays struct {
	v4, v6 turn.RelayAddressGeneratorStatic
}

var _ turn.RelayAddressGenerator = (*loopbackRelays)(nil)

func (g *loopbackRelays) Validate() error {
	g.v4 = turn.RelayAddressGeneratorStatic{RelayAddress: net.IPv4(127, 0, 0, 1), Address: "127.0.0.1"}
	g.v6 = turn.RelayAddressGeneratorStatic{RelayAddress: net.IPv6loopback, Address: "::1"}
	return errors.Join(g.v4.Validate(), g.v6.Validate())
}

func (g *loopbackRelays) of(network string) turn.RelayAddressGenerator {
	if strings.HasSuffix(network, "6") {
		return &g.v6
	}
	return &g.v4
}

func (g *loopbackRelays) AllocatePacketConn(c turn.AllocateListenerConfig) (net.PacketConn, net.Addr, error) {
	return g.of(c.Network).AllocatePacketConn(c)
}

func (g *loopbackRelays) AllocateListener(c turn.AllocateListenerConfig) (net.Listener, net.Addr, error) {
	return g.of(c.Network).AllocateListener(c)
}

func (g *loopbackRelays) AllocateConn(c turn.AllocateConnConfig) (net.Conn, error) {
	return g.of(c.Network).AllocateConn(c)
}

// dialerFrom dials from the address src (any port).
func dialerFrom(src string) *net.Dialer {
	d := &net.Dialer{Timeout: 5 * time.Second}
	if src != "" {
		ip := net.ParseIP(src)
		d.LocalAddr = &net.TCPAddr{IP: ip}
	}
	return d
}

// page fetches the page over HTTPS from the address src.
func (h *turnHarness) page(src string) error {
	d := dialerFrom(src)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: h.pool, ServerName: "127.0.0.1"}, DialContext: d.DialContext}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	resp, err := c.Get("https://" + h.addr + "/")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if string(b) != "the page" {
		return fmt.Errorf("page %q", b)
	}
	return nil
}

// allocate allocates over TURN over TLS from the address src and relays
// one datagram to an echo server and back.
func (h *turnHarness) allocate(t *testing.T, src string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d := tls.Dialer{NetDialer: dialerFrom(src), Config: &tls.Config{RootCAs: h.pool, ServerName: "127.0.0.1"}}
	conn, err := d.DialContext(ctx, "tcp", h.addr)
	if err != nil {
		return fmt.Errorf("TLS handshake: %w", err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	c, err := turn.NewClient(&turn.ClientConfig{STUNServerAddr: h.addr, TURNServerAddr: h.addr, Conn: turn.NewSTUNConn(conn),
		Username: "alice", Password: "wonderland", Realm: turnRealm})
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Listen(); err != nil {
		return err
	}
	relayed, err := c.Allocate()
	if err != nil {
		return fmt.Errorf("allocate: %w", err)
	}
	defer relayed.Close()
	peer := udpEcho(t, relayed.LocalAddr())
	const msg = "through the relay"
	if _, err := relayed.WriteTo([]byte(msg), peer); err != nil {
		return err
	}
	relayed.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 64)
	n, _, err := relayed.ReadFrom(b)
	if err != nil {
		return fmt.Errorf("relayed echo: %w", err)
	}
	if string(b[:n]) != msg {
		return fmt.Errorf("relayed echo %q", b[:n])
	}
	return nil
}

// udpEcho starts a UDP echo server on the loopback address of relay's
// family.
func udpEcho(t *testing.T, relay net.Addr) net.Addr {
	t.Helper()
	at := "127.0.0.1:0"
	if a, ok := relay.(*net.UDPAddr); ok && a.IP.To4() == nil {
		at = "[::1]:0"
	}
	c, err := net.ListenPacket("udp", at)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		b := make([]byte, 1500)
		for {
			n, a, err := c.ReadFrom(b)
			if err != nil {
				return
			}
			c.WriteTo(b[:n], a)
		}
	}()
	t.Cleanup(func() { c.Close(); <-done })
	return c.LocalAddr()
}

// clientHello returns the first TLS record a crypto/tls client sends.
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

// flood is connections that stall their TLS handshake: each sends nothing,
// half a record header, or a ClientHello, and then nothing more.
type flood struct {
	conns []net.Conn
}

// stall opens n stalling connections to addr from each of the addresses
// srcs; they are closed when the test ends.
func stall(t *testing.T, addr string, n int, srcs ...string) *flood {
	t.Helper()
	hello := clientHello(t)
	firsts := [][]byte{nil, {0x16, 0x03}, hello}
	f := &flood{}
	t.Cleanup(func() {
		for _, c := range f.conns {
			c.Close()
		}
	})
	for i := range n {
		for _, src := range srcs {
			c, err := dialerFrom(src).Dial("tcp", addr)
			if err != nil {
				t.Fatalf("flood connection %d from %s: %v", i, src, err)
			}
			f.conns = append(f.conns, c)
			if first := firsts[i%len(firsts)]; first != nil {
				c.Write(first) // may fail if the server already closed it
			}
		}
	}
	return f
}

// open counts the flood's connections the server still holds open. A
// connection the mux has not accepted yet counts as open too, so call it
// once settle says the mux has caught up.
func (f *flood) open() int {
	n := 0
	for _, c := range f.conns {
		if stillOpen(c) {
			n++
		}
	}
	return n
}

// stillOpen reports whether the server has not closed c, reading (and
// dropping) whatever it sent meanwhile.
func stillOpen(c net.Conn) bool {
	c.SetReadDeadline(time.Now().Add(time.Millisecond))
	defer c.SetReadDeadline(time.Time{})
	buf := make([]byte, 4096)
	for {
		if _, err := c.Read(buf); err != nil {
			return errors.Is(err, os.ErrDeadlineExceeded)
		}
	}
}

// settle waits until every connection of fs the server holds open is one
// the mux counts as pending, so that none sits unaccepted in the backlog,
// and returns that number.
func settle(t *testing.T, m *Mux, fs ...*flood) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		open, pending := 0, m.pendingCount()
		for _, f := range fs {
			open += f.open()
		}
		if open == pending {
			return open
		}
		if time.Now().After(deadline) {
			t.Fatalf("the mux holds %d connections, %d of the flood's are open", pending, open)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// floodLimits are the limits the flood tests lower the mux to: 64 pending
// in all, 8 per source, 8 kept for new sources, no pressure (Busy is the
// cap) and deadlines far beyond the test, so the flood is held throughout.
var floodLimits = Limits{MaxPending: 64, PerSource: 8, Reserve: 8, Busy: 64,
	HandshakeTimeout: time.Minute, SniffTimeout: time.Minute, BusyTimeout: time.Minute}

// servedDuring checks that the address src loads the page and allocates
// over TURN-over-TLS while f holds held connections, and that f still
// holds at least held-cut of them afterwards: the other client's own
// connections may each cut one (see Limits), nothing else may go.
func servedDuring(t *testing.T, h *turnHarness, f *flood, src string, held, cut int) {
	t.Helper()
	if err := h.page(src); err != nil {
		t.Errorf("page from %s during the flood: %v", src, err)
	}
	if err := h.allocate(t, src); err != nil {
		t.Errorf("TURN over TLS from %s during the flood: %v", src, err)
	}
	if got := f.open(); got < held-cut {
		t.Errorf("the flood went from %d to %d held connections; it must still be held", held, got)
	}
}

// TestStalledFloodOneSource: a few hundred connections from one address
// that stall their TLS handshake do not keep another address from loading
// the page and allocating over TURN-over-TLS on the same port, while the
// flood is held (issue 9, item 6). One source holds PerSource at most.
func TestStalledFloodOneSource(t *testing.T) {
	testutil.LeakCheck(t)
	h := startTURN(t, "tcp4", "127.0.0.1:0", floodLimits)

	f := stall(t, h.addr, 300, "127.0.0.1")
	if held := settle(t, h.m, f); held != floodLimits.PerSource {
		t.Fatalf("the mux holds %d of the flood's %d connections, want PerSource (%d)", held, len(f.conns), floodLimits.PerSource)
	}
	servedDuring(t, h, f, "127.0.0.2", floodLimits.PerSource, 0)
}

// loopbacks returns n addresses 127.0.0.first, … (Linux routes all of
// 127/8 to lo, so each is a source of its own without any set-up).
func loopbacks(first, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("127.0.0.%d", first+i)
	}
	return out
}

// TestStalledFloodManySources: stalled connections from many addresses
// fill every slot the mux has, yet another address loads the page and
// allocates over TURN-over-TLS while the flood is held: through the
// reserve when the sources took turns, by cutting the oldest connection of
// the source with the most when the reserve is gone too.
func TestStalledFloodManySources(t *testing.T) {
	testutil.LeakCheck(t)
	lim := floodLimits
	for _, tc := range []struct {
		name string
		// flood opens the flood against addr.
		flood func(t *testing.T, addr string) *flood
		held  int
	}{
		{"sources take turns, 8 each", func(t *testing.T, addr string) *flood {
			return stall(t, addr, lim.PerSource, loopbacks(10, 20)...)
		}, lim.MaxPending - lim.Reserve},
		{"one source after another, 8 each", func(t *testing.T, addr string) *flood {
			f := &flood{}
			for _, src := range loopbacks(10, 20) {
				f.conns = append(f.conns, stall(t, addr, lim.PerSource, src).conns...)
			}
			return f
		}, lim.MaxPending},
		{"a hundred sources, one each", func(t *testing.T, addr string) *flood {
			return stall(t, addr, 1, loopbacks(10, 100)...)
		}, lim.MaxPending},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := startTURN(t, "tcp4", "127.0.0.1:0", lim)
			f := tc.flood(t, h.addr)
			if held := settle(t, h.m, f); held != tc.held {
				t.Fatalf("the mux holds %d of the flood's %d connections, want %d", held, len(f.conns), tc.held)
			}
			servedDuring(t, h, f, "127.0.0.2", tc.held, 4)
		})
	}
}

// TestStalledFloodPressure: once more than Busy connections are pending,
// new ones get BusyTimeout in all instead of the handshake deadline; and
// the next connection to arrive at Busy or more cuts those pending for
// longer than BusyTimeout, so a stalled flood under pressure is shed well
// before its handshake deadline.
func TestStalledFloodPressure(t *testing.T) {
	testutil.LeakCheck(t)
	lim := floodLimits
	lim.Busy, lim.BusyTimeout = 16, 2*time.Second
	const limit = 10 * time.Second // far below the one-minute handshake deadline
	h := startTURN(t, "tcp4", "127.0.0.1:0", lim)
	waitOpen := func(t *testing.T, f *flood, want int) {
		t.Helper()
		deadline := time.Now().Add(limit)
		for f.open() != want && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if n := f.open(); n != want {
			t.Fatalf("%d of %d stalled connections open after %v, want %d", n, len(f.conns), limit, want)
		}
	}

	// Busy connections with the one-minute deadline, then 8 more under
	// pressure: those have BusyTimeout and go.
	early := stall(t, h.addr, lim.PerSource, loopbacks(10, 2)...)
	if held := settle(t, h.m, early); held != lim.Busy {
		t.Fatalf("the mux holds %d, want %d", held, lim.Busy)
	}
	pressed := stall(t, h.addr, lim.PerSource, "127.0.0.20")
	if held := settle(t, h.m, early, pressed); held != lim.Busy+lim.PerSource {
		t.Fatalf("the mux holds %d, want %d", held, lim.Busy+lim.PerSource)
	}
	waitOpen(t, pressed, 0)
	if n := early.open(); n != lim.Busy {
		t.Fatalf("%d of the first %d open, want all: their deadline is a minute", n, lim.Busy)
	}

	// Now the early ones are older than BusyTimeout (the pressed ones
	// lasted that long), and there are Busy of them: the next connection
	// cuts them all, and (pressure gone) keeps
	// its own long deadline.
	next := stall(t, h.addr, 1, "127.0.0.21")
	waitOpen(t, early, 0)
	if held := settle(t, h.m, next); held != 1 {
		t.Fatalf("the newcomer: %d open, want 1", held)
	}
	if err := h.page("127.0.0.2"); err != nil {
		t.Errorf("page after the flood was shed: %v", err)
	}
}

// TestStalledFloodDualStack: on a dual-stack listener, the way the daemon
// listens on ":443", IPv4 clients arrive as IPv4-mapped IPv6 addresses and
// IPv6 clients are counted per /64. A flood from eight addresses of one
// /64 and one from an IPv4 address hold PerSource each, and clients from
// another /64 and another IPv4 address are served meanwhile; keyed by the
// mapped form's /64, every IPv4 client would share one budget. It runs in
// a network namespace of its own, whose loopback gets the IPv6 addresses.
func TestStalledFloodDualStack(t *testing.T) {
	testutil.RequireRoot(t)
	if !testutil.InNetNS(t, 60*time.Second) {
		return
	}
	testutil.LeakCheck(t)
	attackers := []string{"2001:db8:1::1", "2001:db8:1::2", "2001:db8:1::3", "2001:db8:1::4",
		"2001:db8:1:0:1::5", "2001:db8:1:0:2::6", "2001:db8:1:0:3::7", "2001:db8:1:0:ffff::8"}
	const member = "2001:db8:2::1"
	for _, a := range append(attackers, member) {
		if out, err := exec.Command("ip", "-6", "addr", "add", a+"/128", "dev", "lo", "nodad").CombinedOutput(); err != nil {
			t.Fatalf("ip addr add %s: %v: %s", a, err, out)
		}
	}
	h := startTURN(t, "tcp", "[::]:0", floodLimits)
	_, port, _ := net.SplitHostPort(h.addr)

	v6 := stall(t, net.JoinHostPort("::1", port), floodLimits.PerSource, attackers...)
	v4 := stall(t, net.JoinHostPort("127.0.0.1", port), 4*floodLimits.PerSource, "127.0.0.1")
	held := settle(t, h.m, v6, v4)
	if v6n, v4n := v6.open(), v4.open(); v6n != floodLimits.PerSource || v4n != floodLimits.PerSource {
		t.Fatalf("the mux holds %d from the /64 and %d from 127.0.0.1, want %d each", v6n, v4n, floodLimits.PerSource)
	}
	for _, c := range []struct{ src, dst string }{{"127.0.0.2", "127.0.0.1"}, {member, "::1"}} {
		h.addr = net.JoinHostPort(c.dst, port)
		f := &flood{conns: append(append([]net.Conn(nil), v6.conns...), v4.conns...)}
		servedDuring(t, h, f, c.src, held, 0)
	}
}
