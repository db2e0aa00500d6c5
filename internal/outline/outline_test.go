package outline

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/tariq-vpn/tariq/internal/testutil"
)

// TestOutlineCarriesTCPAndUDP runs the Outline client's own code path
// (config fetched from the ssconf:// key over HTTPS trusting only the test
// CA, x/websocket endpoints, transport/shadowsocks dialers) through the
// shared TLS port: a TCP transfer and a voice-like UDP stream, both
// echoed, counted per member. The stream lasts longer than the HTTP
// server's read and write timeouts, which the hijacked WebSocket must
// outlive.
func TestOutlineCarriesTCPAndUDP(t *testing.T) {
	testutil.LeakCheck(t)
	h := newHarness(t, Config{})
	h.setKeys(map[string]string{"alice": NewSecret(), "bob": NewSecret()})
	echo := testutil.TCPEcho(t, "127.0.0.1:0")
	uecho := testutil.UDPEchoOn(t, "127.0.0.1:0").LocalAddr()
	c := h.memberClient("alice")
	ctx := context.Background()

	const size = 1 << 20
	data := make([]byte, size)
	rand.Read(data)
	conn, err := c.stream.DialStream(ctx, echo.String())
	if err != nil {
		t.Fatal(err)
	}
	werr := make(chan error, 1)
	go func() { _, err := conn.Write(data); werr <- err }()
	conn.SetReadDeadline(time.Now().Add(60 * time.Second))
	got := make([]byte, size)
	if _, err := io.ReadFull(conn, got); err != nil {
		t.Fatalf("reading the echo: %v", err)
	}
	if err := <-werr; err != nil {
		t.Fatalf("writing: %v", err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("the TCP echo differs from what was sent")
	}

	pc, err := c.packet.ListenPacket(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	const packets = 150 // 3 s at 50 a second
	lost := voiceStream(t, pc, uecho, packets)
	t.Logf("voice stream: %d of %d packets lost", lost, packets)
	if lost*50 > packets { // more than 2 %
		t.Errorf("lost %d of %d voice packets, more than 2%%", lost, packets)
	}

	st := h.svc.Status()["alice"]
	if st.Open != 2 || st.Total != 2 || st.LastSeen.IsZero() {
		t.Errorf("alice's status %+v: want 2 open, 2 in all, a last-seen time", st)
	}
	conn.Close()
	pc.Close()
	if !waitFor(5*time.Second, func() bool { return h.svc.Status()["alice"].Open == 0 }) {
		t.Errorf("alice still has %d open connections after closing both", h.svc.Status()["alice"].Open)
	}

	// Shadowsocks adds a little per chunk and packet, so the WebSocket
	// bytes are at least the payload, and not much more.
	u := h.svc.Usage()
	payload := uint64(size + packets*160)
	for dir, n := range map[string]uint64{"in": u["alice"].In, "out": u["alice"].Out} {
		if n < payload || n > payload+payload/10 {
			t.Errorf("alice's %s bytes %d: want from %d to %d", dir, n, payload, payload+payload/10)
		}
	}
	if u["bob"] != (Traffic{}) {
		t.Errorf("bob sent nothing but counts %+v", u["bob"])
	}

	fams := gather(t, h.svc)
	for _, m := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"tariq_outline_connections_total", []string{"member", "alice", "proto", "tcp"}, 1},
		{"tariq_outline_connections_total", []string{"member", "alice", "proto", "udp"}, 1},
		{"tariq_outline_connections", []string{"member", "alice", "proto", "tcp"}, 0},
		{"tariq_outline_bytes_total", []string{"member", "alice", "direction", "from_member"}, float64(u["alice"].In)},
		{"tariq_outline_bytes_total", []string{"member", "alice", "direction", "to_member"}, float64(u["alice"].Out)},
		{"tariq_outline_bytes_total", []string{"member", "bob", "direction", "to_member"}, 0},
	} {
		got, ok := metricValue(fams, m.name, m.labels...)
		if !ok || got != m.want {
			t.Errorf("%s%v = %v (found %v), want %v", m.name, m.labels, got, ok, m.want)
		}
	}
}

// voiceStream sends n 160-byte packets at 50 a second to target through
// pc and returns how many were not echoed within a second of the last.
func voiceStream(t *testing.T, pc net.PacketConn, target net.Addr, n int) int {
	t.Helper()
	var mu sync.Mutex
	echoed := map[uint32]bool{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			k, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if k == 160 {
				mu.Lock()
				echoed[binary.BigEndian.Uint32(buf)] = true
				mu.Unlock()
			}
		}
	}()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	pkt := make([]byte, 160)
	for i := range n {
		<-tick.C
		binary.BigEndian.PutUint32(pkt, uint32(i))
		if _, err := pc.WriteTo(pkt, target); err != nil {
			t.Fatalf("sending voice packet %d: %v", i, err)
		}
	}
	waitFor(time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return len(echoed) == n })
	pc.SetReadDeadline(time.Now())
	<-done
	pc.SetReadDeadline(time.Time{})
	mu.Lock()
	defer mu.Unlock()
	return n - len(echoed)
}

func gather(t *testing.T, s *Service) map[string]*dto.MetricFamily {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(s.Collector())
	list, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, f := range list {
		out[f.GetName()] = f
	}
	return out
}

func metricValue(fams map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	for _, m := range fams[name].GetMetric() {
		match := true
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range m.GetLabel() {
				found = found || (lp.GetName() == labels[i] && lp.GetValue() == labels[i+1])
			}
			match = match && found
		}
		if !match {
			continue
		}
		if m.Gauge != nil {
			return m.Gauge.GetValue(), true
		}
		return m.Counter.GetValue(), true
	}
	return 0, false
}

// TestDestinationPolicy sends TCP and UDP through Outline to canaries the
// policy refuses (another loopback address, IPv6 loopback, an
// IPv4-mapped form): none is ever reached, every refusal is counted by
// rule, and the allowed target still answers on the same paths.
func TestDestinationPolicy(t *testing.T) {
	testutil.LeakCheck(t)
	h := newHarness(t, Config{})
	h.setKeys(map[string]string{"alice": NewSecret()})
	echo := testutil.TCPEcho(t, "127.0.0.1:0")
	uecho := testutil.UDPEchoOn(t, "127.0.0.1:0").LocalAddr()
	c := h.memberClient("alice")
	ctx := context.Background()

	v4 := newCanary(t, "127.0.0.2")
	targets := []string{v4.addr("127.0.0.2"), v4.addr("::ffff:127.0.0.2")}
	var v6 *canary
	if ln, err := net.Listen("tcp", "[::1]:0"); err == nil {
		ln.Close()
		v6 = newCanary(t, "::1")
		targets = append(targets, v6.addr("::1"))
	} else if testutil.InCI() {
		t.Fatalf("no IPv6 loopback: %v", err)
	} else {
		t.Logf("no IPv6 loopback here: %v", err)
	}

	for _, target := range targets {
		conn, err := c.stream.DialStream(ctx, target)
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		conn.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
		n, err := conn.Read(make([]byte, 100))
		if n != 0 || err == nil || testutil.IsTimeout(err) {
			t.Errorf("TCP to %s: read %d bytes, %v; want the stream closed with nothing", target, n, err)
		}
		conn.Close()
		if err := tcpEcho(ctx, c, echo.String()); err != nil {
			t.Errorf("TCP to the allowed target after %s: %v", target, err)
		}
	}

	for _, target := range targets {
		taddr, err := net.ResolveUDPAddr("udp", target)
		if err != nil {
			t.Fatal(err)
		}
		// A refused first packet ends the association.
		pc, err := c.packet.ListenPacket(ctx)
		if err != nil {
			t.Fatal(err)
		}
		pc.SetDeadline(time.Now().Add(10 * time.Second))
		pc.WriteTo([]byte("first"), taddr)
		n, _, err := pc.ReadFrom(make([]byte, 100))
		if n != 0 || err == nil || testutil.IsTimeout(err) {
			t.Errorf("UDP to %s first: read %d bytes, %v; want the association closed", target, n, err)
		}
		pc.Close()
		// A refused packet in a working association is dropped, and
		// the association goes on.
		pc, err = c.packet.ListenPacket(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := testutil.UDPRound(pc, uecho, []byte("before"), 10*time.Second); err != nil {
			t.Errorf("UDP echo before %s: %v", target, err)
		}
		if _, err := pc.WriteTo([]byte("refused"), taddr); err != nil {
			t.Errorf("UDP to %s: %v", target, err)
		}
		if err := testutil.UDPRound(pc, uecho, []byte("after"), 10*time.Second); err != nil {
			t.Errorf("UDP echo after %s: %v", target, err)
		}
		pc.Close()
	}

	time.Sleep(200 * time.Millisecond) // anything in flight lands
	v4.assertQuiet(t)
	if v6 != nil {
		v6.assertQuiet(t)
	}
	ref := h.svc.Refusals()
	if want := uint64(2 * len(targets)); ref["tcp"]["loopback"] < uint64(len(targets)) || ref["udp"]["loopback"] != want {
		t.Errorf("refusals %v: want %d or more TCP and %d UDP, all loopback", ref, len(targets), want)
	}
	for _, ip := range h.seen.all() {
		if ip.Is4In6() {
			t.Errorf("the policy was asked about %s, an IPv4-mapped address", ip)
		}
	}
	if v, ok := metricValue(gather(t, h.svc), "tariq_outline_targets_refused_total", "proto", "udp", "rule", "loopback"); !ok || v != float64(2*len(targets)) {
		t.Errorf("tariq_outline_targets_refused_total{udp,loopback} = %v (found %v)", v, ok)
	}
}

// tcpEcho opens a stream to target through c and checks one echo.
func tcpEcho(ctx context.Context, c *outlineClient, target string) error {
	conn, err := c.stream.DialStream(ctx, target)
	if err != nil {
		return err
	}
	defer conn.Close()
	return testutil.EchoRound(conn, []byte("ping"), 10*time.Second)
}

// TestKeyLeavingCutsItsConnections opens a member's TCP stream and UDP
// association, and another member's, then takes the first member's key
// away in each way there is: its open connections end at once, its saved
// config gets nothing, and the other member's connections carry on.
func TestKeyLeavingCutsItsConnections(t *testing.T) {
	for _, tc := range []struct {
		name   string
		reason string
		leave  func(h *harness, aliceSecret, bobSecret string)
		back   func(h *harness) // lets alice in again, if it can
	}{
		{"removed", "removed", func(h *harness, _, bob string) {
			h.setKeys(map[string]string{"bob": bob})
		}, nil},
		{"secret changed", "removed", func(h *harness, _, bob string) {
			h.setKeys(map[string]string{"alice": NewSecret(), "bob": bob})
		}, nil},
		{"blocked", "blocked", func(h *harness, _, _ string) {
			h.svc.SetLimits(map[string]Limits{"alice": {Blocked: true}})
		}, func(h *harness) { h.svc.SetLimits(nil) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testutil.LeakCheck(t)
			h := newHarness(t, Config{})
			aliceSecret, bobSecret := NewSecret(), NewSecret()
			h.setKeys(map[string]string{"alice": aliceSecret, "bob": bobSecret})
			echo := testutil.StubbornTCPEcho(t, "127.0.0.1:0")
			uecho := testutil.UDPEchoOn(t, "127.0.0.1:0").LocalAddr()
			ctx := context.Background()
			alice, bob := h.memberClient("alice"), h.memberClient("bob")
			saved, _, err := h.fetchConfig(h.accessKey("alice"))
			if err != nil {
				t.Fatal(err)
			}

			open := func(c *outlineClient, who string) (net.Conn, net.PacketConn) {
				conn, err := c.stream.DialStream(ctx, echo.String())
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { conn.Close() })
				if err := testutil.EchoRound(conn, []byte(who), 10*time.Second); err != nil {
					t.Fatalf("%s's TCP echo: %v", who, err)
				}
				pc, err := c.packet.ListenPacket(ctx)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { pc.Close() })
				if err := testutil.UDPRound(pc, uecho, []byte(who), 10*time.Second); err != nil {
					t.Fatalf("%s's UDP echo: %v", who, err)
				}
				return conn, pc
			}
			aTCP, aUDP := open(alice, "alice")
			bTCP, bUDP := open(bob, "bob")

			tc.leave(h, aliceSecret, bobSecret)

			aTCP.SetReadDeadline(time.Now().Add(10 * time.Second))
			if n, err := aTCP.Read(make([]byte, 10)); n != 0 || err == nil || testutil.IsTimeout(err) {
				t.Errorf("alice's open TCP stream: read %d, %v; want it cut", n, err)
			}
			// The association may still let a packet out before the cut
			// lands; what matters is that it ends and nothing comes back.
			aUDP.WriteTo([]byte("still there?"), uecho)
			aUDP.SetReadDeadline(time.Now().Add(10 * time.Second))
			if n, _, err := aUDP.ReadFrom(make([]byte, 100)); err == nil || testutil.IsTimeout(err) {
				t.Errorf("alice's open UDP association: read %d, %v; want it cut", n, err)
			}

			if err := testutil.EchoRound(bTCP, []byte("bob again"), 10*time.Second); err != nil {
				t.Errorf("bob's open TCP stream after alice's key left: %v", err)
			}
			if err := testutil.UDPRound(bUDP, uecho, []byte("bob again"), 10*time.Second); err != nil {
				t.Errorf("bob's open UDP association after alice's key left: %v", err)
			}

			old := h.client(saved)
			conn, err := old.stream.DialStream(ctx, echo.String())
			if err != nil {
				t.Fatal(err)
			}
			conn.SetDeadline(time.Now().Add(testAuthTimeout + 5*time.Second))
			conn.Write([]byte("let me in"))
			if n, err := conn.Read(make([]byte, 10)); n != 0 || err == nil || testutil.IsTimeout(err) {
				t.Errorf("alice's saved secret over TCP: read %d, %v; want nothing, then the end", n, err)
			}
			conn.Close()
			pc, err := old.packet.ListenPacket(ctx)
			if err != nil {
				t.Fatal(err)
			}
			pc.SetDeadline(time.Now().Add(10 * time.Second))
			pc.WriteTo([]byte("let me in"), uecho)
			if n, _, err := pc.ReadFrom(make([]byte, 100)); n != 0 || err == nil || testutil.IsTimeout(err) {
				t.Errorf("alice's saved secret over UDP: read %d, %v; want nothing, then the end", n, err)
			}
			pc.Close()

			if got := h.svc.Cuts()[tc.reason]; got != 2 {
				t.Errorf("cut for %s: %d connections, want 2", tc.reason, got)
			}
			if !waitFor(5*time.Second, func() bool { return h.svc.Status()["alice"].Open == 0 }) {
				t.Errorf("alice still counts %d open connections", h.svc.Status()["alice"].Open)
			}
			if st := h.svc.Status()["bob"]; st.Open != 2 {
				t.Errorf("bob counts %d open connections, want 2", st.Open)
			}
			if tc.back != nil {
				tc.back(h)
				if err := tcpEcho(ctx, h.client(saved), echo.String()); err != nil {
					t.Errorf("alice let in again: %v", err)
				}
			}
		})
	}
}

// TestAbruptDisconnectEndsAssociation resets the TCP connection under an
// authenticated UDP association. The server's read then fails with
// ECONNRESET, neither io.EOF nor net.ErrClosed, on which the upstream loop
// reads again, at once and forever (gorilla panics on the thousandth
// failed read): the association must end instead.
func TestAbruptDisconnectEndsAssociation(t *testing.T) {
	testutil.LeakCheck(t)
	h := newHarness(t, Config{})
	h.setKeys(map[string]string{"alice": NewSecret()})
	uecho := testutil.UDPEchoOn(t, "127.0.0.1:0").LocalAddr()
	c := h.memberClient("alice")
	pc, err := c.packet.ListenPacket(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if err := testutil.UDPRound(pc, uecho, []byte("hello"), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	raw := c.raws.last().(*net.TCPConn)
	raw.SetLinger(0) // Close sends a reset
	raw.Close()
	if !waitFor(10*time.Second, func() bool { return h.svc.Status()["alice"].Open == 0 }) {
		t.Fatal("the association outlived its connection")
	}
}

// TestCloseCutsEverything closes the service under open connections: they
// end, Close returns, and the paths then answer as the normal page.
func TestCloseCutsEverything(t *testing.T) {
	testutil.LeakCheck(t)
	h := newHarness(t, Config{})
	h.setKeys(map[string]string{"alice": NewSecret()})
	echo := testutil.TCPEcho(t, "127.0.0.1:0")
	uecho := testutil.UDPEchoOn(t, "127.0.0.1:0").LocalAddr()
	c := h.memberClient("alice")
	ctx := context.Background()
	conn, err := c.stream.DialStream(ctx, echo.String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := testutil.EchoRound(conn, []byte("x"), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	pc, err := c.packet.ListenPacket(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if err := testutil.UDPRound(pc, uecho, []byte("x"), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{})
	go func() { h.svc.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(20 * time.Second):
		t.Fatal("Close did not return")
	}
	h.svc.Close() // idempotent
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); err == nil || testutil.IsTimeout(err) {
		t.Errorf("TCP stream after Close: %v, want it ended", err)
	}
	pc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, _, err := pc.ReadFrom(make([]byte, 10)); err == nil || testutil.IsTimeout(err) {
		t.Errorf("UDP association after Close: %v, want it ended", err)
	}
	want := h.fingerprint(false, "GET", "/"+NewPrefix()+"/tcp", upgradeHeaders())
	if got := h.fingerprint(false, "GET", "/"+h.prefix+"/tcp", upgradeHeaders()); got != want {
		t.Errorf("an upgrade after Close answered\n%s\nwant the normal page's\n%s", got, want)
	}
}
