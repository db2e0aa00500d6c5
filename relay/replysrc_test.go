package relay

import (
	"context"
	"net"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun/v4"

	"github.com/tariq-vpn/tariq/internal/testutil"
)

// fixedPeerConn is a net.Conn over an unconnected UDP socket: it writes to
// peer and, like a connected socket (which is what coturn's uclient and
// browsers' TURN clients amount to: they drop what does not come from the
// server they talk to), reads only what comes from peer. Datagrams from
// other sources are counted in strays.
type fixedPeerConn struct {
	*net.UDPConn
	peer   netip.AddrPort
	mu     sync.Mutex // guards strays
	strays []string
}

func (c *fixedPeerConn) Write(b []byte) (int, error) {
	return c.UDPConn.WriteToUDPAddrPort(b, c.peer)
}

func (c *fixedPeerConn) Read(b []byte) (int, error) {
	for {
		n, from, err := c.UDPConn.ReadFromUDPAddrPort(b)
		if err != nil {
			return n, err
		}
		if netip.AddrPortFrom(from.Addr().Unmap(), from.Port()) == c.peer {
			return n, nil
		}
		c.mu.Lock()
		c.strays = append(c.strays, from.String())
		c.mu.Unlock()
	}
}

func (c *fixedPeerConn) RemoteAddr() net.Addr { return net.UDPAddrFromAddrPort(c.peer) }

func (c *fixedPeerConn) stray() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.strays...)
}

// twoAddressLab is a server namespace (the test's own, from
// testutil.InNetNS) with two addresses per family on one interface, joined
// by veth to a client namespace:
//
//	client  cli0 198.20.0.2, fd20::2  ----  srv0 198.20.0.1 + 198.20.0.100, fd20::1 + fd20::100  server (relay)
//
// 198.20.0.0/16 is in no special range: no peer filter rule touches it.
type twoAddressLab struct {
	client *testutil.NetNS
}

func newTwoAddressLab(t *testing.T) *twoAddressLab {
	t.Helper()
	client := testutil.NewNetNS(t)
	if out, err := exec.Command("ip", "link", "add", "srv0", "type", "veth", "peer", "name", "cli0", "netns", client.Name).CombinedOutput(); err != nil {
		t.Fatalf("creating veth: %v: %s", err, out)
	}
	for _, args := range [][]string{
		{"addr", "add", "198.20.0.1/24", "dev", "srv0"},
		{"addr", "add", "198.20.0.100/24", "dev", "srv0"},
		{"addr", "add", "fd20::1/64", "dev", "srv0", "nodad"},
		{"addr", "add", "fd20::100/64", "dev", "srv0", "nodad"},
		{"link", "set", "srv0", "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	client.Run("ip", "addr", "add", "198.20.0.2/24", "dev", "cli0")
	client.Run("ip", "addr", "add", "fd20::2/64", "dev", "cli0", "nodad")
	client.Run("ip", "link", "set", "cli0", "up")
	return &twoAddressLab{client: client}
}

// udp opens an unconnected UDP socket in the client namespace.
func (l *twoAddressLab) udp(t *testing.T, local string) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	if err := l.client.Do(func() (err error) {
		c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(local)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestUDPReplyFromArrivalAddress: the relay listens on the UDP wildcard of
// a server with two addresses per family; a client talking to either
// address gets every reply from that address (a connected client drops
// anything else), completes an allocation and relays through it. A client
// socket that talks to both addresses gets each answer from the address it
// asked, and its allocation's relayed data from the address it allocated
// on. A peer sees relayed packets come from the advertised relayed
// address (relay.relay_ip, the second address), not the interface's first.
// coturn's turnutils_uclient, sending to the second address, relays.
func TestUDPReplyFromArrivalAddress(t *testing.T) {
	if !testutil.InNetNS(t, 90*time.Second) {
		return
	}
	testutil.LeakCheck(t)
	lab := newTwoAddressLab(t)
	cfg := testConfig(t)
	cfg.Relay.ListenUDP = []string{":0"} // the default's wildcard, dual-stack
	cfg.Relay.ListenTCP, cfg.Relay.ListenTLS = nil, nil
	cfg.Relay.RelayBind = netip.IPv4Unspecified()
	cfg.Relay.RelayIP = addrs("198.20.0.100", "fd20::100") // the floating address is the advertised one
	cfg.Relay.AllowPeers = nil
	r := openRelay(t, cfg, Deps{})
	udp, _, _ := r.Addrs()
	if len(udp) != 1 || !apOf(udp[0]).Addr().IsUnspecified() {
		t.Fatalf("relay listens on %v, want the wildcard", udp)
	}
	var port uint16 // the dual-stack listener's
	for _, l := range udp {
		ap := apOf(l)
		servers := []string{"198.20.0.1", "198.20.0.100"}
		if ap.Addr().Is6() {
			port = ap.Port()
			servers = append(servers, "fd20::1", "fd20::100")
		}
		for _, server := range servers {
			t.Run("allocate via "+server+" on "+l.String(), func(t *testing.T) {
				local := "198.20.0.2:0"
				if strings.Contains(server, ":") {
					local = "[fd20::2]:0"
				}
				conn := &fixedPeerConn{UDPConn: lab.udp(t, local), peer: netip.AddrPortFrom(netip.MustParseAddr(server), ap.Port())}
				c := &rawClient{t: t, conn: conn, user: "alice", pass: "wonderland"}
				resp := c.allocate(rawAttr{attrRequestedFamily, []byte{1, 0, 0, 0}})
				if resp.Type.Class != stun.ClassSuccessResponse {
					t.Fatalf("allocate: %v code %d; answers came from %v", resp.Type, errorCode(resp), conn.stray())
				}
				if got := relayedAddr(t, resp).Addr(); got != netip.MustParseAddr("198.20.0.100") {
					t.Errorf("relayed address %v, want 198.20.0.100", got)
				}
				if s := conn.stray(); len(s) > 0 {
					t.Errorf("replies to requests sent to %s came from %v", server, s)
				}
			})
		}
	}

	t.Run("one client socket, both addresses", func(t *testing.T) {
		sock := lab.udp(t, "198.20.0.2:0")
		first := &fixedPeerConn{UDPConn: sock, peer: netip.AddrPortFrom(netip.MustParseAddr("198.20.0.1"), port)}
		second := &fixedPeerConn{UDPConn: sock, peer: netip.AddrPortFrom(netip.MustParseAddr("198.20.0.100"), port)}
		c := &rawClient{t: t, conn: second, user: "alice", pass: "wonderland"}
		relayed := relayedAddr(t, c.allocate())

		peerSock := lab.udp(t, "198.20.0.2:0")
		peer := apOf(peerSock.LocalAddr())
		succeeded(t, "create permission", c.request(stun.MethodCreatePermission, xorPeer(peer)))
		c.send(peer, "hello peer")
		data, from := recv(t, peerSock)
		if data != "hello peer" || apOf(from) != relayed {
			t.Errorf("peer got %q from %v, want it from the relayed address %v", data, from, relayed)
		}

		// The same socket asks the first address: the answer comes from it.
		binding(t, first, false)
		// The peer writes first now: the relayed data reaches the client
		// from the address it allocated on, not the one it spoke to last.
		if _, err := peerSock.WriteToUDPAddrPort([]byte("hello client"), relayed); err != nil {
			t.Fatal(err)
		}
		if from, data, ok := c.readData(5 * time.Second); !ok || data != "hello client" || from != peer.String() {
			t.Errorf("client got %q from %s (ok %v), want %q from %s; datagrams from elsewhere: %v",
				data, from, ok, "hello client", peer, second.stray())
		}
		if s := first.stray(); len(s) > 0 {
			t.Errorf("the answer to the first address came from %v", s)
		}
	})

	t.Run("turnutils_uclient via the second address", func(t *testing.T) {
		bin := testutil.RequireBinary(t, "turnutils_uclient")
		const clients, msgs = 2, 10
		args := []string{"-y", "-c", "-n", strconv.Itoa(msgs), "-m", strconv.Itoa(clients),
			"-u", "alice", "-w", "wonderland", "-p", strconv.Itoa(int(port)), "198.20.0.100"}
		run := runUclientIn(t, lab.client, bin, args...)
		if err := run.Delivered(clients * msgs); err != nil {
			t.Fatalf("%v\n%v", err, run)
		}
	})
}

// runUclientIn runs turnutils_uclient in ns under a 60 s deadline.
func runUclientIn(t *testing.T, ns *testutil.NetNS, bin string, args ...string) testutil.UclientRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns.Name, bin}, args...)...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("turnutils_uclient %s: no result within 60s\n%s", strings.Join(args, " "), out)
	}
	run := testutil.ParseUclient(string(out))
	run.Args, run.Err = args, err
	return run
}
