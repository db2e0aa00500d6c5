package relay

import (
	"net"
	"net/netip"
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
	testutil.LeakCheck(t)
	cfg := testConfig(t)
	cfg.Relay.AllowPeers = nil
	cfg.Relay.TCPRelay = true
	cfg.Relay.RelayBind = netip.MustParseAddr("127.0.0.2") // relayed addresses are own addresses
	own := netip.MustParseAddr("127.0.0.2")
	r := startRelay(t, cfg, Deps{OwnAddrs: ownAddrs("127.0.0.2")})

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
}

// TestOwnAddressLivePortIsPerFamily: a port held by an IPv4 allocation
// does not open the same port on the server's IPv6 address to an IPv6
// allocation.
func TestOwnAddressLivePortIsPerFamily(t *testing.T) {
	requireIPv6Loopback(t)
	testutil.LeakCheck(t)
	cfg := testConfig(t)
	cfg.Relay.AllowPeers = nil
	cfg.Relay.ListenUDP = []string{"127.0.0.1:0"}
	cfg.Relay.RelayBind = netip.IPv6Unspecified() // both families, on the wildcard
	cfg.Relay.RelayIP = addrs("127.0.0.2", "::1")
	r := startRelay(t, cfg, Deps{OwnAddrs: ownAddrs("127.0.0.2", "::1")})

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
}
