package relay

import (
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/pion/stun/v4"

	"github.com/tariq-vpn/tariq/internal/testutil"
)

// TestOwnAddressLivePortIsPerProtocol: with relay.tcp_relay on, a port held
// by a live UDP allocation opens nothing on TCP, and the other way round; a
// port held by an IPv4 allocation opens nothing on the server's IPv6
// addresses. A canary of the other protocol (or family) listening on the
// same port of the server's own address gets nothing: the own-address rule
// lets a relay reach another allocation, never a service that happens to
// share its port number.
func TestOwnAddressLivePortIsPerProtocol(t *testing.T) {
	forDataPaths(t, func(t *testing.T, pionData bool) {
		testutil.LeakCheck(t)
		cfg := testConfig(t)
		cfg.Relay.AllowPeers = nil
		cfg.Relay.TCPRelay = true
		cfg.Relay.RelayBind = netip.MustParseAddr("127.0.0.2") // relayed addresses are own addresses
		own := netip.MustParseAddr("127.0.0.2")
		r := startRelay(t, cfg, Deps{PionData: pionData, OwnAddrs: ownAddrs("127.0.0.2")})

		// A UDP client and a TCP client, each with an allocation of the
		// protocol it will attack with, on the own address.
		u := r.rawClientOver(t, "udp", "alice", "wonderland")
		uRelayed := relayedAddr(t, u.allocate())
		tc := r.rawClientOver(t, "tcp", "alice", "wonderland")
		resp := tc.request(stun.MethodAllocate, rawAttr{attrRequestedTransport, []byte{protoTCP, 0, 0, 0}})
		succeeded(t, "allocate tcp", resp)
		tRelayed := relayedAddr(t, resp)
		for _, a := range []netip.AddrPort{uRelayed, tRelayed} {
			if a.Addr() != own {
				t.Fatalf("relayed address %v, want one on %v", a, own)
			}
		}

		t.Run("udp allocation's port to a tcp canary", func(t *testing.T) {
			canary, err := net.Listen("tcp", uRelayed.String())
			if err != nil {
				t.Fatalf("tcp canary on the udp allocation's port: %v", err)
			}
			defer canary.Close()
			refused(t, tc, tc.request(stun.MethodConnect, xorPeer(uRelayed)), stun.CodeConnTimeoutOrFailure)
			canary.(*net.TCPListener).SetDeadline(time.Now().Add(quiet))
			if c, err := canary.Accept(); err == nil {
				c.Close()
				t.Errorf("tcp canary on %v got a connection from %v through the relay", uRelayed, c.RemoteAddr())
			}
		})
		t.Run("tcp allocation's port to a udp canary", func(t *testing.T) {
			canary := udpPeer(t, tRelayed.String())
			succeeded(t, "create permission", u.request(stun.MethodCreatePermission, xorPeer(tRelayed)))
			succeeded(t, "channel bind", u.request(stun.MethodChannelBind, xorPeer(tRelayed), channelNumber(0x4000)))
			u.send(tRelayed, "send indication to the tcp allocation's port")
			u.channelData(0x4000, "channel data to the tcp allocation's port")
			silent(t, canary, "udp canary on a tcp allocation's port")
		})
	})
}

// TestOwnAddressLivePortIsPerFamily: a port held by an IPv4 allocation
// does not open the same port on the server's IPv6 address to an IPv6
// allocation.
func TestOwnAddressLivePortIsPerFamily(t *testing.T) {
	forDataPaths(t, func(t *testing.T, pionData bool) {
		requireIPv6Loopback(t)
		testutil.LeakCheck(t)
		cfg := testConfig(t)
		cfg.Relay.AllowPeers = nil
		cfg.Relay.ListenUDP = []string{"127.0.0.1:0"}
		cfg.Relay.RelayBind = netip.IPv6Unspecified() // both families, on the wildcard
		cfg.Relay.RelayIP = addrs("127.0.0.2", "::1")
		r := startRelay(t, cfg, Deps{PionData: pionData, OwnAddrs: ownAddrs("127.0.0.2", "::1")})

		v4 := r.rawClientOver(t, "udp", "alice", "wonderland")
		held := relayedAddr(t, v4.allocate())
		canary, err := net.ListenUDP("udp6", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.IPv6Loopback(), held.Port())))
		if err != nil {
			t.Fatalf("udp6 canary on the ipv4 allocation's port: %v", err)
		}
		defer canary.Close()
		target := netip.AddrPortFrom(netip.IPv6Loopback(), held.Port())

		v6 := r.rawClientOver(t, "udp", "alice", "wonderland")
		if a := relayedAddr(t, v6.allocate(rawAttr{attrRequestedFamily, []byte{2, 0, 0, 0}})); !a.Addr().Is6() {
			t.Fatalf("ipv6 allocation relayed on %v", a)
		}
		succeeded(t, "create permission", v6.request(stun.MethodCreatePermission, xorPeer(target)))
		v6.send(target, "to the ipv4 allocation's port on the ipv6 own address")
		silent(t, canary, "udp6 canary on an ipv4 allocation's port")
	})
}

// TestOwnAddressAddedWhileRunning: an address added to an interface while
// the relay runs (a floating IP, a new interface, a DHCP change) is one of
// the server's own addresses at once, so the own-address rule guards it: a
// canary service on it gets nothing through the relay, over UDP (Send
// indication, ChannelData) or TCP (Connect), although the same address was
// an ordinary internet peer a moment before. Removing the address makes it
// an ordinary peer again.
//
// It runs in a network namespace of its own, with a veth pair (this
// machine has no dummy links) carrying public-looking addresses that exist
// nowhere else.
func TestOwnAddressAddedWhileRunning(t *testing.T) {
	forDataPaths(t, func(t *testing.T, pionData bool) {
		if !testutil.InNetNS(t, 60*time.Second) {
			return
		}
		testutil.LeakCheck(t)
		ip := func(args ...string) {
			t.Helper()
			if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
				t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
			}
		}
		ip("link", "add", "tqa0", "type", "veth", "peer", "name", "tqb0")
		ip("addr", "add", "198.20.0.1/24", "dev", "tqa0")
		ip("link", "set", "tqa0", "up")
		ip("link", "set", "tqb0", "up")
		added := netip.MustParseAddr("198.20.0.7") // no special range: an ordinary peer until it is ours

		cfg := testConfig(t)
		cfg.Relay.AllowPeers = nil
		cfg.Relay.TCPRelay = true
		r := openRelay(t, cfg, Deps{PionData: pionData}) // the interfaces' addresses, tracked live
		if v, _ := r.policy.Load().filter.Check(netip.MustParseAddr("198.20.0.1")); v != AllowOwn {
			t.Fatalf("198.20.0.1, on an interface at start, has verdict %v, want %v", v, AllowOwn)
		}
		if v, _ := r.policy.Load().filter.Check(added); v != Allow {
			t.Fatalf("%v before it is added has verdict %v, want %v", added, v, Allow)
		}
		u := r.rawClientOver(t, "udp", "alice", "wonderland")
		succeeded(t, "allocate", u.allocate())
		tc := r.rawClientOver(t, "tcp", "alice", "wonderland")
		succeeded(t, "allocate tcp", tc.request(stun.MethodAllocate, rawAttr{attrRequestedTransport, []byte{protoTCP, 0, 0, 0}}))

		ip("addr", "add", added.String()+"/32", "dev", "tqa0")
		waitVerdict(t, r, added, AllowOwn)
		udpCanary := udpPeer(t, added.String()+":0")
		tcpCanary, err := net.Listen("tcp", added.String()+":0")
		if err != nil {
			t.Fatal(err)
		}
		defer tcpCanary.Close()
		uc, tcc := apOf(udpCanary.LocalAddr()), apOf(tcpCanary.Addr())

		t.Run("udp", func(t *testing.T) {
			// Permissions are per IP and the server's own addresses are valid
			// peers (two clients of one server); the port rule acts on every
			// datagram.
			succeeded(t, "create permission", u.request(stun.MethodCreatePermission, xorPeer(uc)))
			succeeded(t, "channel bind", u.request(stun.MethodChannelBind, xorPeer(uc), channelNumber(0x4000)))
			u.send(uc, "send indication to a service on the new address")
			u.channelData(0x4000, "channel data to a service on the new address")
			silent(t, udpCanary, "udp service on an address added while the relay runs")
		})
		t.Run("tcp", func(t *testing.T) {
			refused(t, tc, tc.request(stun.MethodConnect, xorPeer(tcc)), stun.CodeConnTimeoutOrFailure)
			tcpCanary.(*net.TCPListener).SetDeadline(time.Now().Add(quiet))
			if c, err := tcpCanary.Accept(); err == nil {
				c.Close()
				t.Errorf("tcp service on %v got a connection from %v through the relay", tcc, c.RemoteAddr())
			}
		})
		t.Run("removed", func(t *testing.T) {
			ip("addr", "del", added.String()+"/32", "dev", "tqa0")
			waitVerdict(t, r, added, Allow)
		})
	})
}

// waitVerdict waits (up to 5 s) until the relay's filter gives a the
// verdict want: address events reach the relay asynchronously, within
// milliseconds.
func waitVerdict(t *testing.T, r *testRelay, a netip.Addr, want Verdict) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		v, _ := r.policy.Load().filter.Check(a)
		if v == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v still has verdict %v after 5s, want %v: the relay did not notice the address change", a, v, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
