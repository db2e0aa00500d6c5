package relay

import (
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"

	"github.com/tariq-vpn/tariq/internal/testutil"
)

// dialStream dials the relay's TCP or TLS listener from the local
// address from (a loopback address standing for a client's source).
func (r *testRelay) dialStream(t *testing.T, transport string, from netip.Addr) (net.Conn, error) {
	t.Helper()
	_, tcp, tlsAddrs := r.Addrs()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: from.AsSlice()}, Timeout: 5 * time.Second}
	if transport == "tls" {
		conf := &tls.Config{RootCAs: r.caPool, ServerName: "127.0.0.1", NextProtos: []string{"stun.turn"}}
		return tls.DialWithDialer(d, "tcp", tlsAddrs[0].String(), conf)
	}
	return d.Dial("tcp", tcp[0].String())
}

// served sends a Binding request on a framed stream and reports whether the
// relay answered it (false: the relay closed the connection, or said
// nothing within wait).
func served(conn net.Conn, wait time.Duration) bool {
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	conn.SetDeadline(time.Now().Add(wait))
	defer conn.SetDeadline(time.Time{})
	if _, err := conn.Write(req.Raw); err != nil {
		return false
	}
	framer := turn.NewSTUNConn(conn)
	buf := make([]byte, 2048)
	for {
		n, _, err := framer.ReadFrom(buf)
		if err != nil {
			return false
		}
		resp := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
		if resp.Decode() == nil && resp.TransactionID == req.TransactionID {
			return resp.Type == stun.BindingSuccess
		}
	}
}

// closedByRelay reports whether the relay closed conn within wait.
func closedByRelay(conn net.Conn, wait time.Duration) bool {
	conn.SetReadDeadline(time.Now().Add(wait))
	defer conn.SetReadDeadline(time.Time{})
	buf := make([]byte, 2048)
	for {
		_, err := conn.Read(buf)
		if err == nil {
			continue
		}
		var ne net.Error
		return !(errors.As(err, &ne) && ne.Timeout())
	}
}

// TestIdleBindingStreamsBounded: one source opening a few hundred TCP and
// TLS connections that each send one unauthenticated Binding request (and
// then sit) holds only its per-source share of the relay's stream slots:
// the rest are refused, and another source's TCP and TLS allocations still
// succeed.
func TestIdleBindingStreamsBounded(t *testing.T) {
	testutil.LeakCheck(t)
	cfg := testConfig(t)
	cfg.Relay.MaxAllocations = 200 // the stream cap follows it down
	r := startRelay(t, cfg, Deps{})
	attacker, member := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2")

	var mu sync.Mutex
	var held []net.Conn
	t.Cleanup(func() {
		for _, c := range held {
			c.Close()
		}
	})
	const perTransport = 200
	for _, transport := range []string{"tcp", "tls"} {
		var wg sync.WaitGroup
		sem := make(chan struct{}, 16)
		for range perTransport {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				c, err := r.dialStream(t, transport, attacker)
				if err != nil {
					return // a TLS handshake the relay cut short: refused
				}
				if !served(c, 2*time.Second) {
					c.Close()
					return
				}
				mu.Lock()
				held = append(held, c)
				mu.Unlock()
			}()
		}
		wg.Wait()
	}
	t.Logf("%d of %d idle Binding streams from %v were served", len(held), 2*perTransport, attacker)
	if _, perSource := r.streamCap(); len(held) > perSource {
		t.Errorf("%d streams from one source served, want at most the per-source cap %d", len(held), perSource)
	}
	if got := r.Stats().StreamsShut()["too-many-from-source"]; got < uint64(2*perTransport-len(held)) {
		t.Errorf("%d streams counted as refused for their source, want %d", got, 2*perTransport-len(held))
	}

	peer := echoPeer(t)
	for _, transport := range []string{"tcp", "tls"} {
		t.Run("another source over "+transport, func(t *testing.T) {
			conn, err := r.dialStream(t, transport, member)
			if err != nil {
				t.Fatalf("dial from %v: %v", member, err)
			}
			c := newRawStreamClient(t, conn, "alice", "wonderland")
			succeeded(t, "allocate", c.allocate())
			e := apOf(peer.LocalAddr())
			succeeded(t, "create permission", c.request(stun.MethodCreatePermission, xorPeer(e)))
			c.send(e, "through a relay under a stream flood")
			if _, data, ok := c.readData(5 * time.Second); !ok || data != "through a relay under a stream flood" {
				t.Fatalf("echo over %s: got %q (ok %v)", transport, data, ok)
			}
		})
	}
}

// TestSharedPortStreamsCount: connections the shared HTTPS port hands over
// (PushTLS) take stream slots like the relay's own listeners: once pushed
// connections fill the cap, neither another pushed connection nor one on
// the TCP listener is served, and a slot freed by a pushed connection
// closing is free for the next one.
func TestSharedPortStreamsCount(t *testing.T) {
	testutil.LeakCheck(t)
	cfg := testConfig(t)
	cfg.Relay.MaxAllocations = 8 // the stream cap follows it down
	r := startRelay(t, cfg, Deps{})

	// A stand-in for the HTTPS port: accept on loopback and push what
	// arrives, as the mux does after the TLS handshake and the sniffing.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r.PushTLS(c, c)
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	push := func(i int) net.Conn {
		t.Helper()
		from := netip.AddrFrom4([4]byte{127, 0, 1, byte(i)}) // a source of its own each
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: from.AsSlice()}, Timeout: 5 * time.Second}
		c, err := d.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}

	var pushed []net.Conn
	for i := range 8 {
		c := push(i + 1)
		if !served(c, 2*time.Second) {
			t.Fatalf("pushed connection %d not served below the cap", i+1)
		}
		pushed = append(pushed, c)
	}
	if c := push(100); !closedByRelay(c, 2*time.Second) {
		t.Errorf("a pushed connection past the cap was kept open")
	}
	c, err := r.dialStream(t, "tcp", netip.MustParseAddr("127.0.0.101"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if served(c, 2*time.Second) {
		t.Errorf("the TCP listener served a connection while pushed connections filled the cap")
	}

	pushed[0].Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c := push(102)
		if served(c, 2*time.Second) {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("the slot of a closed pushed connection was never freed")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestStreamWithoutAllocationClosed: a TCP or TLS connection that makes no
// allocation is closed once StreamLimits.NoAllocation has passed since it
// was accepted, however busy it keeps itself with Binding requests; one
// that holds an allocation stays open past that, silent or not; one whose
// allocation ended (Refresh with lifetime 0) is closed NoAllocation later.
func TestStreamWithoutAllocationClosed(t *testing.T) {
	testutil.LeakCheck(t)
	const noAlloc = 500 * time.Millisecond
	r := startRelay(t, testConfig(t), Deps{Streams: StreamLimits{NoAllocation: noAlloc}})
	local := netip.MustParseAddr("127.0.0.1")
	for _, transport := range []string{"tcp", "tls"} {
		t.Run(transport, func(t *testing.T) {
			busy, err := r.dialStream(t, transport, local)
			if err != nil {
				t.Fatal(err)
			}
			defer busy.Close()
			allocated := r.rawClientOver(t, transport, "alice", "wonderland")
			succeeded(t, "allocate", allocated.allocate())
			released := r.rawClientOver(t, transport, "alice", "wonderland")
			succeeded(t, "allocate", released.allocate())
			succeeded(t, "refresh to 0", released.request(stun.MethodRefresh, lifetime(0)))
			start := time.Now()

			for served(busy, 2*time.Second) {
				if time.Since(start) > 10*noAlloc {
					t.Fatalf("a connection with no allocation still served %v after it opened", time.Since(start).Round(time.Millisecond))
				}
				time.Sleep(noAlloc / 5)
			}
			if !closedByRelay(released.conn, 10*noAlloc) {
				t.Errorf("a connection whose allocation ended is still open %v later", time.Since(start).Round(time.Millisecond))
			}
			time.Sleep(time.Until(start.Add(3 * noAlloc)))
			succeeded(t, "refresh after a silence longer than NoAllocation", allocated.request(stun.MethodRefresh, lifetime(10*time.Minute)))
		})
	}
}

// TestStreamCaps: the open-file budget keeps its reserve whatever the
// limit, the per-source cap stays below the total, and IPv6 sources count
// by /64.
func TestStreamCaps(t *testing.T) {
	for _, n := range []int{0, 64, 1024, 4096, 20000, 1 << 20} {
		streams, allocs, reserve := fdBudget(n)
		if n == 0 {
			if streams != 0 || allocs != 0 {
				t.Errorf("unknown limit: caps %d, %d, want none", streams, allocs)
			}
			continue
		}
		if streams < 1 || allocs < 1 {
			t.Errorf("limit %d: caps %d streams, %d allocations, want at least one each", n, streams, allocs)
		}
		if n >= 512 && 2*streams+allocs+reserve > n {
			t.Errorf("limit %d: %d streams (two descriptors each) + %d allocations + %d reserved overrun it", n, streams, allocs, reserve)
		}
	}
	for _, tc := range []struct{ limit, want int }{{1, 1}, {3, 1}, {16, 8}, {200, 25}, {4375, 256}, {10000, 256}} {
		if got := perSourceFor(tc.limit); got != tc.want {
			t.Errorf("perSourceFor(%d) = %d, want %d", tc.limit, got, tc.want)
		}
	}
	for _, tc := range []struct{ addr, want string }{
		{"192.0.2.7:4000", "192.0.2.7/32"},
		{"[::ffff:192.0.2.7]:4000", "192.0.2.7/32"},
		{"[2001:db8:1:2:aaaa::1]:4000", "2001:db8:1:2::/64"},
		{"[2001:db8:1:2:bbbb::9]:5000", "2001:db8:1:2::/64"},
		{"[fe80::1%eth0]:4000", "fe80::/64"},
	} {
		a := net.TCPAddrFromAddrPort(netip.MustParseAddrPort(tc.addr))
		if got := sourceKey(a).String(); got != tc.want {
			t.Errorf("sourceKey(%s) = %s, want %s", tc.addr, got, tc.want)
		}
	}
}
