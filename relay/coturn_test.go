package relay

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun/v4"

	"github.com/tariq-vpn/tariq/internal/testutil"
)

// These tests drive the relay with coturn's turnutils_uclient, a TURN client
// written independently of pion, against turnutils_peer as the echo peer
// (testutil.RunUclient, testutil.StartCoturnPeer). uclient exits 0 even
// when nothing comes back, so every run is judged by the totals it prints,
// and by the relay's own counters.

// stunTap forwards UDP between uclient and the relay and decodes the STUN
// messages crossing it, to see what uclient never prints: the USERNAME it
// sends and the error codes it gets back (on a 401 with a nonce it just
// retries, up to "Cannot complete Allocation").
type stunTap struct {
	ln    *net.UDPConn
	relay *net.UDPAddr
	wg    sync.WaitGroup

	mu      sync.Mutex // guards ups, users, replies
	ups     map[string]*net.UDPConn
	users   []string
	replies []tapReply
}

type tapReply struct {
	typ  stun.MessageType
	code stun.ErrorCode // 0 unless an error response
}

func newSTUNTap(t *testing.T, relay net.Addr) *stunTap {
	t.Helper()
	ln, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	tap := &stunTap{ln: ln, relay: relay.(*net.UDPAddr), ups: map[string]*net.UDPConn{}}
	tap.wg.Add(1)
	go tap.fromClients()
	t.Cleanup(tap.close)
	return tap
}

func (tap *stunTap) port() int { return tap.ln.LocalAddr().(*net.UDPAddr).Port }

func (tap *stunTap) fromClients() {
	defer tap.wg.Done()
	buf := make([]byte, 65536)
	for {
		n, client, err := tap.ln.ReadFromUDP(buf)
		if err != nil {
			return
		}
		if m := decodeSTUN(buf[:n]); m != nil {
			var u stun.Username
			if u.GetFrom(m) == nil {
				tap.mu.Lock()
				tap.users = append(tap.users, u.String())
				tap.mu.Unlock()
			}
		}
		tap.mu.Lock()
		up := tap.ups[client.String()]
		if up == nil {
			up, err = net.DialUDP("udp4", nil, tap.relay)
			if err != nil {
				tap.mu.Unlock()
				continue
			}
			tap.ups[client.String()] = up
			tap.wg.Add(1)
			go tap.toClient(up, client)
		}
		tap.mu.Unlock()
		up.Write(buf[:n])
	}
}

func (tap *stunTap) toClient(up *net.UDPConn, client *net.UDPAddr) {
	defer tap.wg.Done()
	buf := make([]byte, 65536)
	for {
		n, err := up.Read(buf)
		if err != nil {
			return
		}
		if m := decodeSTUN(buf[:n]); m != nil {
			r := tapReply{typ: m.Type}
			var ec stun.ErrorCodeAttribute
			if ec.GetFrom(m) == nil {
				r.code = ec.Code
			}
			tap.mu.Lock()
			tap.replies = append(tap.replies, r)
			tap.mu.Unlock()
		}
		tap.ln.WriteToUDP(buf[:n], client)
	}
}

func (tap *stunTap) close() {
	tap.ln.Close()
	tap.mu.Lock()
	for _, up := range tap.ups {
		up.Close()
	}
	tap.mu.Unlock()
	tap.wg.Wait()
}

func (tap *stunTap) seen() (users []string, replies []tapReply) {
	tap.mu.Lock()
	defer tap.mu.Unlock()
	return append([]string(nil), tap.users...), append([]tapReply(nil), tap.replies...)
}

func decodeSTUN(b []byte) *stun.Message {
	if !stun.IsMessage(b) {
		return nil
	}
	m := &stun.Message{Raw: append([]byte(nil), b...)}
	if m.Decode() != nil {
		return nil
	}
	return m
}

func portOf(a net.Addr) string {
	_, p, _ := net.SplitHostPort(a.String())
	return p
}

// TestCoturnRelays relays coturn's client through tariq over UDP, TCP and
// TLS, with a static user and with REST credentials built by uclient
// itself, and checks that the messages really came back through this relay.
func TestCoturnRelays(t *testing.T) {
	testutil.RequireBinary(t, "turnutils_uclient")
	peer := testutil.StartCoturnPeer(t)
	const clients, msgs = 2, 10
	static := []string{"-u", "alice", "-w", "wonderland"}
	rest := []string{"-u", "bob", "-W", testSecret}
	for _, tc := range []struct {
		name      string
		transport string
		creds     []string
		size      int
		userID    string
	}{
		{"udp/static", "udp", static, 172, "alice"},
		{"udp/static/1200B", "udp", static, 1200, "alice"},
		{"udp/rest", "udp", rest, 172, "bob"},
		{"tcp/static", "tcp", static, 172, "alice"},
		{"tcp/rest", "tcp", rest, 172, "bob"},
		{"tls/static", "tls", static, 172, "alice"},
		{"tls/rest", "tls", rest, 172, "bob"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// A relay per case: uclient never deallocates, so a later client
			// reusing a local port would meet its predecessor's allocation.
			r := startRelay(t, testConfig(t), Deps{})
			udp, tcp, tlsAddrs := r.Addrs()
			args := []string{"-c", "-n", strconv.Itoa(msgs), "-m", strconv.Itoa(clients), "-l", strconv.Itoa(tc.size),
				"-L", "127.0.0.1", "-e", "127.0.0.1", "-r", strconv.Itoa(peer)}
			args = append(args, tc.creds...)
			var tap *stunTap
			switch tc.transport {
			case "udp":
				tap = newSTUNTap(t, udp[0])
				args = append(args, "-p", strconv.Itoa(tap.port()))
			case "tcp":
				args = append(args, "-t", "-p", portOf(tcp[0]))
			case "tls":
				args = append(args, "-t", "-S", "-p", portOf(tlsAddrs[0]))
			}
			start := time.Now()
			run := testutil.RunUclient(t, append(args, "127.0.0.1")...)
			if err := run.Delivered(clients * msgs); err != nil {
				t.Fatalf("%v\n%v", err, run)
			}
			st := r.Stats()
			if got := st.PacketsToPeers.Load(); got < uint64(run.Recv) {
				t.Errorf("relay sent %d packets to the peer; uclient got %d back", got, run.Recv)
			}
			if got := st.PacketsFromPeers.Load(); got < uint64(run.Recv) {
				t.Errorf("relay received %d packets from the peer; uclient got %d back", got, run.Recv)
			}
			if got := st.BytesToPeers.Load(); got < uint64(run.Recv*tc.size) {
				t.Errorf("relay sent %d bytes to the peer, want at least %d", got, run.Recv*tc.size)
			}
			// Each uclient client allocates twice: a probe, then the real one.
			if got := st.AllocationsCreated.Load(); got != 2*clients {
				t.Errorf("%d allocations created, want %d", got, 2*clients)
			}
			if tap == nil {
				return
			}
			// uclient releases its real allocations at the end but never its
			// probes, which stay counted under the user ID the AuthHandler
			// returned: the REST username's id part, without the timestamp.
			if got := r.Status().ByUser; len(got) != 1 || got[tc.userID] == 0 {
				t.Errorf("live allocations by user %v, want only %s", got, tc.userID)
			}
			users, _ := tap.seen()
			if len(users) == 0 {
				t.Fatal("the tap saw no USERNAME")
			}
			for _, u := range users {
				if tc.userID == "alice" {
					if u != "alice" {
						t.Errorf("uclient sent username %q, want alice", u)
					}
					continue
				}
				// -u bob -W SECRET: uclient sends "<now+24h>:bob".
				exp, id, ok := ParseRESTUsername(u)
				if !ok || id != "bob" || !strings.HasSuffix(u, ":bob") {
					t.Errorf("uclient sent username %q: ParseRESTUsername = %v, %q, %v", u, exp, id, ok)
				}
				if d := exp.Sub(start); d < 24*time.Hour-time.Minute || d > 24*time.Hour+time.Minute {
					t.Errorf("uclient's REST expiry %v is %v after the run started, want 24h", exp, d)
				}
			}
		})
	}
}

// TestCoturnTLSCertificate verifies, in Go, the certificate on the listener
// the TLS cases use: uclient's -E does not enforce verification.
func TestCoturnTLSCertificate(t *testing.T) {
	r := startRelay(t, testConfig(t), Deps{})
	_, _, tlsAddrs := r.Addrs()
	dial := func(pool *x509.CertPool) (tls.ConnectionState, error) {
		d := tls.Dialer{Config: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", NextProtos: []string{"stun.turn"}}}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := d.DialContext(ctx, "tcp", tlsAddrs[0].String())
		if err != nil {
			return tls.ConnectionState{}, err
		}
		defer c.Close()
		return c.(*tls.Conn).ConnectionState(), nil
	}
	st, err := dial(r.caPool)
	if err != nil {
		t.Fatalf("handshake against the relay's certificate: %v", err)
	}
	if st.NegotiatedProtocol != "stun.turn" {
		t.Errorf("ALPN %q, want stun.turn", st.NegotiatedProtocol)
	}
	// The same handshake without the certificate in the pool must fail, or
	// the check above proves nothing.
	var unknown x509.UnknownAuthorityError
	if _, err := dial(x509.NewCertPool()); !errors.As(err, &unknown) {
		t.Errorf("handshake with an empty pool: %v, want an unknown authority error", err)
	}
}

// TestCoturnRefusesBadCredentials runs uclient with a wrong password, a
// wrong REST secret and an expired REST credential: every Allocate must get
// 401 and nothing may be relayed.
func TestCoturnRefusesBadCredentials(t *testing.T) {
	testutil.RequireBinary(t, "turnutils_uclient")
	peer := testutil.StartCoturnPeer(t)
	// uclient's -W credential expires 24h after it starts; a relay clock 48h
	// ahead sees it as expired a day ago.
	ahead := func() time.Time { return time.Now().Add(48 * time.Hour) }
	for _, tc := range []struct {
		name   string
		now    func() time.Time
		creds  []string
		reason string
	}{
		{"wrong password", nil, []string{"-u", "alice", "-w", "nope"}, "bad-integrity"},
		{"wrong secret", nil, []string{"-u", "bob", "-W", "not-the-secret-but-as-long-as-it"}, "bad-integrity"},
		{"expired", ahead, []string{"-u", "bob", "-W", testSecret}, "expired"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := startRelay(t, testConfig(t), Deps{Now: tc.now})
			udp, _, _ := r.Addrs()
			tap := newSTUNTap(t, udp[0])
			args := func(creds ...string) []string {
				return append([]string{"-v", "-c", "-n", "5", "-m", "1", "-l", "172", "-L", "127.0.0.1",
					"-e", "127.0.0.1", "-r", strconv.Itoa(peer), "-p", strconv.Itoa(tap.port())}, append(creds, "127.0.0.1")...)
			}
			run := testutil.RunUclient(t, args(tc.creds...)...)
			if run.Err == nil {
				t.Errorf("uclient exited 0, want a failure")
			}
			if !strings.Contains(run.Out, "Cannot complete Allocation") {
				t.Errorf("no \"Cannot complete Allocation\" in the output")
			}
			if run.Totals && run.Recv != 0 {
				t.Errorf("%d messages came back", run.Recv)
			}
			_, replies := tap.seen()
			var unauthorized int
			var other []string
			for _, rep := range replies {
				if rep.typ == stun.NewType(stun.MethodAllocate, stun.ClassErrorResponse) && rep.code == stun.CodeUnauthorized {
					unauthorized++
				} else {
					other = append(other, fmt.Sprintf("%v %d", rep.typ, rep.code))
				}
			}
			// uclient retries on every 401 carrying a nonce, so several.
			if unauthorized < 2 || len(other) > 0 {
				t.Errorf("%d Allocate 401 replies and others %v; want only 401s, at least 2", unauthorized, other)
			}
			st := r.Stats()
			if got := st.AuthFailures()[tc.reason]; got == 0 {
				t.Errorf("auth failures %v: none for %s", st.AuthFailures(), tc.reason)
			}
			if a, p := st.AllocationsCreated.Load(), st.PacketsToPeers.Load(); a != 0 || p != 0 {
				t.Errorf("%d allocations and %d relayed packets, want none", a, p)
			}
			if tc.now == nil {
				return
			}
			// The clock ahead refuses only the expired credential: the static
			// user still relays through the same relay.
			if ok := testutil.RunUclient(t, args("-u", "alice", "-w", "wonderland")...); ok.Delivered(5) != nil {
				t.Errorf("static user on the relay with a clock 48h ahead: %v\n%v", ok.Delivered(5), ok)
			}
		})
	}
}

// TestCoturnLoopbackPeerRefusedByDefault checks that without an allow rule
// the relay refuses turnutils_peer on 127.0.0.1 with 403, for ChannelBind
// (uclient's default) and for CreatePermission (-s, Send indications).
func TestCoturnLoopbackPeerRefusedByDefault(t *testing.T) {
	testutil.RequireBinary(t, "turnutils_uclient")
	peer := testutil.StartCoturnPeer(t)
	for _, tc := range []struct {
		name, flag, want string
	}{
		{"channel bind", "", "channel bind: error 403"},
		{"create permission", "-s", "create permission error 403"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := testConfig(t)
			cfg.Relay.AllowPeers = nil
			r := startRelay(t, cfg, Deps{})
			udp, _, _ := r.Addrs()
			args := []string{"-v", "-c", "-n", "5", "-m", "1", "-l", "172", "-L", "127.0.0.1",
				"-e", "127.0.0.1", "-r", strconv.Itoa(peer), "-u", "alice", "-w", "wonderland", "-p", portOf(udp[0])}
			if tc.flag != "" {
				args = append(args, tc.flag)
			}
			run := testutil.RunUclient(t, append(args, "127.0.0.1")...)
			if !strings.Contains(run.Out, tc.want) {
				t.Errorf("no %q in the output\n%v", tc.want, run)
			}
			if run.Totals && run.Recv != 0 {
				t.Errorf("%d messages came back", run.Recv)
			}
			st := r.Stats()
			if p := st.PacketsToPeers.Load(); p != 0 {
				t.Errorf("%d packets relayed to a refused peer", p)
			}
			if len(st.PeersDenied()) == 0 {
				t.Error("no peer refusal counted")
			}
		})
	}
}

// TestCoturnReportParsing checks the judge on uclient's real output: a run
// at 100% loss, which uclient ends with exit status 0, must not pass.
func TestCoturnReportParsing(t *testing.T) {
	const ok = `3: : start_mclient: msz=2, tot_send_msgs=5, tot_recv_msgs=5, tot_send_bytes ~ 860, tot_recv_bytes ~ 860
3: : start_mclient: tot_send_msgs=10, tot_recv_msgs=10
3: : start_mclient: tot_send_bytes ~ 1720, tot_recv_bytes ~ 1720
3: : Total transmit time is 3
3: : Total lost packets 0 (0.000000%), total send dropped 0 (0.000000%)
3: : Average round trip delay 2.000000 ms; min = 0 ms, max = 0 ms
`
	const allLost = `15: : start_mclient: msz=1, tot_send_msgs=10, tot_recv_msgs=0, tot_send_bytes ~ 1720, tot_recv_bytes ~ 0
16: : start_mclient: tot_send_msgs=10, tot_recv_msgs=0
16: : start_mclient: tot_send_bytes ~ 1720, tot_recv_bytes ~ 0
16: : Total transmit time is 16
16: : Total lost packets 10 (100.000000%), total send dropped 0 (0.000000%)
16: : Average round trip delay 0.000000 ms; min = 4294967295 ms, max = 0 ms
`
	const refused = "0: : allocate sent\n0: : allocate response received: \n0: : ERROR: Cannot complete Allocation\n"
	for _, tc := range []struct {
		name, out string
		want      int
		pass      bool
	}{
		{"all back", ok, 10, true},
		{"fewer sent than asked", ok, 20, false},
		{"all lost", allLost, 10, false},
		{"no allocation", refused, 10, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := testutil.ParseUclient(tc.out)
			if err := r.Delivered(tc.want); (err == nil) != tc.pass {
				t.Errorf("delivered(%d) = %v, want pass %v (parsed %+v)", tc.want, err, tc.pass, r)
			}
		})
	}
	if r := testutil.ParseUclient(ok); r.RTTMs != 2 || r.Sent != 10 || r.Recv != 10 {
		t.Errorf("parsed %+v", r)
	}
}
