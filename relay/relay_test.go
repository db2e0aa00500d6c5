package relay

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"

	"github.com/tariq-vpn/tariq/config"
	"github.com/tariq-vpn/tariq/internal/certs"
	"github.com/tariq-vpn/tariq/internal/testutil"
)

const testSecret = "0123456789abcdef0123456789abcdef"

// testConfig is a loopback relay: kernel-chosen ports, a static user, one
// REST secret, and 127.0.0.1 allowed as a peer so an echo peer can answer.
func testConfig(t *testing.T) *config.Config {
	cfg := config.Default()
	cfg.Server.DataDir = t.TempDir()
	cfg.Server.PublicHost = "127.0.0.1"
	cfg.VPN.Enabled = false
	cfg.Web.Enabled = false
	cfg.Relay.ListenUDP = []string{"127.0.0.1:0"}
	cfg.Relay.ListenTCP = []string{"127.0.0.1:0"}
	cfg.Relay.ListenTLS = []string{"127.0.0.1:0"}
	cfg.Relay.RelayBind = netip.MustParseAddr("127.0.0.1")
	cfg.Relay.AllowPeers = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	cfg.Relay.Users = map[string]config.Secret{"alice": "wonderland"}
	cfg.Relay.Secrets = []config.Secret{testSecret}
	return cfg
}

type testRelay struct {
	*Service
	cfg    *config.Config
	caPool *x509.CertPool
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// startRelay starts a relay on cfg. Unless deps says otherwise, the server
// has no own addresses: the host's interfaces are not the test's business.
func startRelay(t *testing.T, cfg *config.Config, deps Deps) *testRelay {
	t.Helper()
	if deps.OwnAddrs == nil {
		deps.OwnAddrs = func() ([]netip.Addr, error) { return nil, nil }
	}
	return openRelay(t, cfg, deps)
}

// openRelay is startRelay with deps as given: nil OwnAddrs means the
// interfaces' addresses, tracked live.
func openRelay(t *testing.T, cfg *config.Config, deps Deps) *testRelay {
	t.Helper()
	log := testLogger(t)
	src, err := certs.New(cfg, certs.Deps{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(src.Certificate().Leaf)
	deps.Logger = log
	deps.TLS = src.TLSConfig("stun.turn")
	s, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &testRelay{Service: s, cfg: cfg, caPool: pool, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- s.Serve(ctx) }()
	t.Cleanup(r.stop)
	return r
}

// stop stops the relay; it may be called again (t.Cleanup calls it).
func (r *testRelay) stop() {
	r.once.Do(func() {
		r.cancel()
		<-r.done
		r.Close()
	})
}

// echoPeer is a UDP peer on loopback that sends every datagram back.
func echoPeer(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			c.WriteTo(buf[:n], from)
		}
	}()
	t.Cleanup(func() { c.Close() })
	return c
}

// dialTURN returns the client side packet conn for transport udp, tcp or tls.
func (r *testRelay) dialTURN(t *testing.T, transport string) (net.PacketConn, string) {
	t.Helper()
	udp, tcp, tlsAddrs := r.Addrs()
	switch transport {
	case "udp":
		c, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return c, udp[0].String()
	case "tcp":
		c, err := net.Dial("tcp", tcp[0].String())
		if err != nil {
			t.Fatal(err)
		}
		return turn.NewSTUNConn(c), tcp[0].String()
	case "tls":
		c, err := tls.Dial("tcp", tlsAddrs[0].String(), &tls.Config{RootCAs: r.caPool, ServerName: "127.0.0.1", NextProtos: []string{"stun.turn"}})
		if err != nil {
			t.Fatal(err)
		}
		return turn.NewSTUNConn(c), tlsAddrs[0].String()
	}
	t.Fatalf("unknown transport %q", transport)
	return nil, ""
}

func (r *testRelay) client(t *testing.T, transport, user, pass string) *turn.Client {
	t.Helper()
	conn, addr := r.dialTURN(t, transport)
	c, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: addr,
		TURNServerAddr: addr,
		Conn:           conn,
		Username:       user,
		Password:       pass,
		Realm:          r.Realm(),
		LoggerFactory:  pionLogs{slog.New(slog.DiscardHandler)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); conn.Close() })
	return c
}

// roundTrip sends msg from the relayed conn to peer and waits for the echo.
func roundTrip(t *testing.T, relayed net.PacketConn, peer net.Addr, msg string) {
	t.Helper()
	if _, err := relayed.WriteTo([]byte(msg), peer); err != nil {
		t.Fatalf("write to peer: %v", err)
	}
	relayed.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1500)
	n, from, err := relayed.ReadFrom(buf)
	if err != nil {
		t.Fatalf("read echo: %v", err)
	}
	if string(buf[:n]) != msg || from.String() != peer.String() {
		t.Fatalf("got %q from %v, want %q from %v", buf[:n], from, msg, peer)
	}
}

func TestRelayRoundTrip(t *testing.T) {
	testutil.LeakCheck(t)
	r := startRelay(t, testConfig(t), Deps{})
	peer := echoPeer(t)
	rest := MintCredentials(testSecret, "@alice:example.org", time.Hour, time.Now())
	for _, transport := range []string{"udp", "tcp", "tls"} {
		for _, cred := range []struct{ name, user, pass string }{
			{"static", "alice", "wonderland"},
			{"rest", rest.Username, rest.Password},
		} {
			t.Run(transport+"/"+cred.name, func(t *testing.T) {
				c := r.client(t, transport, cred.user, cred.pass)
				relayed, err := c.Allocate()
				if err != nil {
					t.Fatalf("allocate: %v", err)
				}
				defer relayed.Close()
				ra := relayed.LocalAddr().(*net.UDPAddr)
				if !ra.IP.Equal(net.IPv4(127, 0, 0, 1)) || !r.cfg.Relay.RelayPorts.Contains(ra.Port) {
					t.Errorf("relayed address %v: want 127.0.0.1 in %v", ra, r.cfg.Relay.RelayPorts)
				}
				roundTrip(t, relayed, peer.LocalAddr(), "hello over "+transport)
			})
		}
	}
}

func TestRelayRefusesBadCredentials(t *testing.T) {
	r := startRelay(t, testConfig(t), Deps{})
	expired := MintCredentials(testSecret, "bob", -time.Minute, time.Now())
	wrongSecret := MintCredentials("another-secret-of-enough-length", "bob", time.Hour, time.Now())
	for _, tc := range []struct{ name, user, pass, reason string }{
		{"wrong password", "alice", "nope", "bad-integrity"},
		{"unknown user", "mallory", "x", "unknown-user"},
		{"expired", expired.Username, expired.Password, "expired"},
		{"wrong secret", wrongSecret.Username, wrongSecret.Password, "bad-integrity"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := r.Stats().AuthFailures()[tc.reason]
			c := r.client(t, "udp", tc.user, tc.pass)
			_, err := c.Allocate()
			if err == nil {
				t.Fatal("allocate succeeded")
			}
			if after := r.Stats().AuthFailures()[tc.reason]; after <= before {
				t.Errorf("auth failures[%s] = %d, want more than %d (err %v)", tc.reason, after, before, err)
			}
		})
	}
}

// rawRequest sends one authenticated request over a fresh UDP socket after
// the 401 nonce dance and returns the response.
func rawRequest(t *testing.T, r *testRelay, user, pass string, build func(realm, nonce string) []stun.Setter) *stun.Message {
	t.Helper()
	udp, _, _ := r.Addrs()
	c, err := net.Dial("udp", udp[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	do := func(setters ...stun.Setter) *stun.Message {
		m := stun.MustBuild(setters...)
		if _, err := c.Write(m.Raw); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		buf := make([]byte, 1500)
		n, err := c.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		resp := &stun.Message{Raw: buf[:n]}
		if err := resp.Decode(); err != nil {
			t.Fatal(err)
		}
		return resp
	}
	first := do(append([]stun.Setter{stun.TransactionID}, build("", "")...)...)
	var nonce stun.Nonce
	var realm stun.Realm
	if err := nonce.GetFrom(first); err != nil {
		return first
	}
	realm.GetFrom(first)
	key := turn.GenerateAuthKey(user, realm.String(), pass)
	setters := append([]stun.Setter{stun.TransactionID}, build(realm.String(), nonce.String())...)
	setters = append(setters, stun.NewUsername(user), realm, nonce, stun.MessageIntegrity(key))
	return do(setters...)
}

func errorCode(m *stun.Message) stun.ErrorCode {
	var ec stun.ErrorCodeAttribute
	if err := ec.GetFrom(m); err != nil {
		return 0
	}
	return ec.Code
}

func TestAllocateErrorCodes(t *testing.T) {
	cfg := testConfig(t)
	r := startRelay(t, cfg, Deps{})
	allocate := func(transport byte, fam byte) func(string, string) []stun.Setter {
		return func(string, string) []stun.Setter {
			s := []stun.Setter{stun.NewType(stun.MethodAllocate, stun.ClassRequest),
				rawAttr{attrRequestedTransport, []byte{transport, 0, 0, 0}}}
			if fam != 0 {
				s = append(s, rawAttr{attrRequestedFamily, []byte{fam, 0, 0, 0}})
			}
			return s
		}
	}
	for _, tc := range []struct {
		name  string
		build func(string, string) []stun.Setter
		want  stun.ErrorCode
	}{
		{"ipv6 without an ipv6 relay address", allocate(protoUDP, 2), stun.CodeAddrFamilyNotSupported},
		{"tcp relay switched off", allocate(protoTCP, 0), stun.CodeUnsupportedTransProto},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := rawRequest(t, r, "alice", "wonderland", tc.build)
			if got := errorCode(resp); got != tc.want {
				t.Fatalf("error code %d, want %d (%v)", got, tc.want, resp)
			}
			if !resp.Contains(stun.AttrMessageIntegrity) {
				t.Error("authenticated error response lacks MESSAGE-INTEGRITY")
			}
		})
	}
}

type rawAttr struct {
	t stun.AttrType
	v []byte
}

func (a rawAttr) AddTo(m *stun.Message) error { m.Add(a.t, a.v); return nil }

func TestQuota(t *testing.T) {
	cfg := testConfig(t)
	cfg.Relay.MaxAllocationsPerUser = 2
	cfg.Relay.MaxAllocations = 3
	r := startRelay(t, cfg, Deps{})
	alloc := func(user, pass string) error {
		c := r.client(t, "udp", user, pass)
		_, err := c.Allocate()
		return err
	}
	for i := range 2 {
		if err := alloc("alice", "wonderland"); err != nil {
			t.Fatalf("allocation %d: %v", i, err)
		}
	}
	if err := alloc("alice", "wonderland"); err == nil || !errors.Is(err, err) || !containsCode(err, "486") {
		t.Fatalf("third allocation for alice: %v, want 486", err)
	}
	bob := MintCredentials(testSecret, "bob", time.Hour, time.Now())
	if err := alloc(bob.Username, bob.Password); err != nil {
		t.Fatalf("bob's first allocation: %v", err)
	}
	bob2 := MintCredentials(testSecret, "carol", time.Hour, time.Now())
	if err := alloc(bob2.Username, bob2.Password); err == nil || !containsCode(err, "486") {
		t.Fatalf("allocation past max_allocations: %v, want 486", err)
	}
	if got := r.Stats().QuotaRejected.Load(); got != 2 {
		t.Errorf("quota rejections = %d, want 2", got)
	}
}

func containsCode(err error, code string) bool {
	return err != nil && (stringsContains(err.Error(), code))
}

// forDataPaths runs f twice: with tariq's data path relaying the data, and
// with pion relaying it (Deps.PionData), so the attacks a test makes are
// made on both.
func forDataPaths(t *testing.T, f func(t *testing.T, pionData bool)) {
	t.Helper()
	for _, dp := range []struct {
		name string
		pion bool
	}{{"tariq data path", false}, {"pion data path", true}} {
		t.Run(dp.name, func(t *testing.T) { f(t, dp.pion) })
	}
}
