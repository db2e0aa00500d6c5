package relay

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"

	"github.com/tariq-vpn/tariq/config"
	"github.com/tariq-vpn/tariq/internal/testutil"
)

// TestRefusedPeers makes, on a live allocation, every request that names a
// peer (CreatePermission, ChannelBind, Connect) with peers the filter
// refuses, in the encodings an attacker would try within IPv4. Each must get
// 403 Forbidden with MESSAGE-INTEGRITY: pion by itself answers a refused
// ChannelBind with 401, which sends clients into a credential retry loop.
func TestRefusedPeers(t *testing.T) {
	forDataPaths(t, func(t *testing.T, pionData bool) {
		testutil.LeakCheck(t)
		r := startRelay(t, testConfig(t), Deps{PionData: pionData})
		for _, transport := range []string{"udp", "tcp", "tls"} {
			t.Run(transport, func(t *testing.T) { testRefusedPeers(t, r, transport) })
		}
	})
}

func testRefusedPeers(t *testing.T, r *testRelay, transport string) {
	peers := []string{
		"10.0.0.1", "172.16.0.1", "192.168.0.1", "127.0.0.2", "0.0.0.0", "255.255.255.255",
		"224.0.0.1", "169.254.169.254", "100.100.100.200", "168.63.129.16", "192.0.0.192",
		"::ffff:127.0.0.2", "::ffff:169.254.169.254", "::ffff:10.0.0.1", "::ffff:0.0.0.0",
	}
	for _, m := range []struct {
		name   string
		method stun.Method
	}{
		{"create permission", stun.MethodCreatePermission},
		{"channel bind", stun.MethodChannelBind},
		{"connect", stun.MethodConnect},
	} {
		t.Run(m.name, func(t *testing.T) {
			c := r.rawClientOver(t, transport, "alice", "wonderland")
			succeeded(t, "allocate", c.allocate())
			for i, p := range peers {
				t.Run(p, func(t *testing.T) {
					before := r.Stats().PeersDenied()
					attrs := []stun.Setter{xorPeer(netip.AddrPortFrom(netip.MustParseAddr(p), 5000))}
					if m.method == stun.MethodChannelBind {
						attrs = append(attrs, channelNumber(0x4000+uint16(i)))
					}
					refused(t, c, c.request(m.method, attrs...), stun.CodeForbidden)
					if after := r.Stats().PeersDenied(); sum(after) <= sum(before) {
						t.Errorf("peers denied counter did not move: %v", after)
					}
				})
			}
			// The same allocation may still name an allowed peer (allow_peers
			// has 127.0.0.1/32), in either encoding: the refusals above are
			// about the peer, not a broken allocation.
			for i, p := range []string{"127.0.0.1", "::ffff:127.0.0.1"} {
				t.Run("allowed "+p, func(t *testing.T) {
					attrs := []stun.Setter{xorPeer(netip.AddrPortFrom(netip.MustParseAddr(p), 5000+uint16(i)))}
					switch m.method {
					case stun.MethodChannelBind:
						succeeded(t, "channel bind", c.request(m.method, append(attrs, channelNumber(0x5000+uint16(i)))...))
					case stun.MethodConnect:
						// Let through by the filter, then refused because
						// relay.tcp_relay is off: 447, never 403.
						refused(t, c, c.request(m.method, attrs...), stun.CodeConnTimeoutOrFailure)
					default:
						succeeded(t, "create permission", c.request(m.method, attrs...))
					}
				})
			}
		})
	}
}

func sum(m map[string]uint64) (n uint64) {
	for _, v := range m {
		n += v
	}
	return n
}

// TestRefusedPeerGetsNothing checks that a refused permission leaves no way
// through: Send indications and ChannelData towards the refused peer, and
// datagrams from it, go nowhere, while the same allocation relays to an
// allowed peer.
func TestRefusedPeerGetsNothing(t *testing.T) {
	forDataPaths(t, func(t *testing.T, pionData bool) {
		testutil.LeakCheck(t)
		r := startRelay(t, testConfig(t), Deps{PionData: pionData})
		udp, _, _ := r.Addrs()
		victim := udpPeer(t, "127.0.0.2:0") // a loopback service the relay must not reach
		echo := echoPeer(t)

		c := newRawClient(t, udp[0], "alice", "wonderland")
		relayed := relayedAddr(t, c.allocate())
		v := apOf(victim.LocalAddr())
		mapped := netip.AddrPortFrom(netip.AddrFrom16(v.Addr().As16()), v.Port())
		refused(t, c, c.request(stun.MethodCreatePermission, xorPeer(v)), stun.CodeForbidden)
		refused(t, c, c.request(stun.MethodCreatePermission, xorPeer(mapped)), stun.CodeForbidden)
		refused(t, c, c.request(stun.MethodChannelBind, xorPeer(mapped), channelNumber(0x4000)), stun.CodeForbidden)

		c.send(v, "send indication")
		c.send(mapped, "send indication, mapped")
		c.channelData(0x4000, "channel data")
		silent(t, victim, "refused peer")
		if _, err := victim.WriteTo([]byte("from the victim"), net.UDPAddrFromAddrPort(relayed)); err != nil {
			t.Fatal(err)
		}
		if from, data, ok := c.readData(quiet); ok {
			t.Errorf("client received %q from %s, a refused peer", data, from)
		}

		e := apOf(echo.LocalAddr())
		succeeded(t, "create permission to the echo peer", c.request(stun.MethodCreatePermission, xorPeer(e)))
		c.send(e, "ping")
		if from, data, ok := c.readData(5 * time.Second); !ok || data != "ping" || from != e.String() {
			t.Fatalf("echo through the relay: got %q from %s (ok %v), want %q from %s", data, from, ok, "ping", e)
		}
	})
}

// TestOwnAddressRelayPortsOnly: the server's own address (127.0.0.2 here)
// is a valid peer, since two clients of one server relay to each other
// (TestTwoClientsThroughOneServer), but only on ports its live allocations
// hold: a service on the own address is out of reach both outside
// relay_ports and inside them (a resolver's ephemeral port, say), in either
// direction.
func TestOwnAddressRelayPortsOnly(t *testing.T) {
	forDataPaths(t, func(t *testing.T, pionData bool) {
		testutil.LeakCheck(t)
		in := udpPeer(t, "127.0.0.2:0")
		out := udpPeer(t, "127.0.0.2:0")
		pin, pout := apOf(in.LocalAddr()), apOf(out.LocalAddr())
		cfg := testConfig(t)
		cfg.Relay.AllowPeers = nil
		cfg.Relay.RelayPorts = portRangeWith(int(pin.Port()), int(pout.Port()))
		cfg.Relay.RelayBind = netip.MustParseAddr("127.0.0.2") // relayed addresses are own addresses too
		r := startRelay(t, cfg, Deps{PionData: pionData, OwnAddrs: ownAddrs("127.0.0.2")})
		udp, _, _ := r.Addrs()

		c := newRawClient(t, udp[0], "alice", "wonderland")
		relayed := relayedAddr(t, c.allocate())
		if !cfg.Relay.RelayPorts.Contains(int(relayed.Port())) {
			t.Fatalf("relayed port %d outside %v", relayed.Port(), cfg.Relay.RelayPorts)
		}
		mappedOut := netip.AddrPortFrom(netip.AddrFrom16(pout.Addr().As16()), pout.Port())

		t.Run("permission to the own address", func(t *testing.T) {
			succeeded(t, "create permission", c.request(stun.MethodCreatePermission, xorPeer(pin)))
			// Permissions are per IP, so a channel to any port is granted; the
			// port rule acts on every datagram.
			succeeded(t, "channel bind", c.request(stun.MethodChannelBind, xorPeer(pout), channelNumber(0x4001)))
			// A neighbouring loopback address is not the server's own.
			refused(t, c, c.request(stun.MethodCreatePermission, xorPeer(netip.MustParseAddrPort("127.0.0.3:5000"))), stun.CodeForbidden)
		})
		t.Run("client to own address", func(t *testing.T) {
			c.send(pin, "inside the range, not an allocation")
			silent(t, in, "own address inside relay_ports but no allocation")
			c.send(pout, "outside the range")
			c.send(mappedOut, "outside the range, mapped")
			c.channelData(0x4001, "outside the range, channel")
			silent(t, out, "own address outside relay_ports")
		})
		t.Run("own address to client", func(t *testing.T) {
			to := net.UDPAddrFromAddrPort(relayed)
			for _, p := range []*net.UDPConn{in, out} {
				if _, err := p.WriteTo([]byte("from the server's own service"), to); err != nil {
					t.Fatal(err)
				}
			}
			if from, data, ok := c.readData(quiet); ok {
				t.Errorf("client got %q from %s, which is no allocation", data, from)
			}
		})
		t.Run("another allocation on the own address", func(t *testing.T) {
			// The positive case: a second client's relayed address is reachable.
			c2 := newRawClient(t, udp[0], "alice", "wonderland")
			relayed2 := relayedAddr(t, c2.allocate())
			succeeded(t, "permission for the first client", c2.request(stun.MethodCreatePermission, xorPeer(relayed)))
			c.send(relayed2, "to the second allocation")
			if from, data, ok := c2.readData(5 * time.Second); !ok || data != "to the second allocation" || from != relayed.String() {
				t.Fatalf("second client got %q from %s (ok %v), want it from %s", data, from, ok, relayed)
			}
		})
	})
}

// TestTwoClientsThroughOneServer is the "two family members" call: each
// client's peer is the other's relayed address on the same server, with
// 127.0.0.1 as the server's own address rather than in allow_peers. A local
// service on that address outside relay_ports stays out of reach although
// both clients hold a permission for its IP.
func TestTwoClientsThroughOneServer(t *testing.T) {
	forDataPaths(t, func(t *testing.T, pionData bool) {
		testutil.LeakCheck(t)
		service := udpPeer(t, "127.0.0.1:0")
		cfg := testConfig(t)
		cfg.Relay.AllowPeers = nil
		cfg.Relay.RelayIP = addrs("127.0.0.1")
		cfg.Relay.RelayPorts = portRangeWith(0, int(apOf(service.LocalAddr()).Port()))
		r := startRelay(t, cfg, Deps{PionData: pionData, OwnAddrs: ownAddrs("127.0.0.1")})

		credA := MintCredentials(testSecret, "@alice:example.org", time.Hour, time.Now())
		credB := MintCredentials(testSecret, "@bob:example.org", time.Hour, time.Now())
		relayA, err := r.client(t, "udp", credA.Username, credA.Password).Allocate()
		if err != nil {
			t.Fatalf("alice allocate: %v", err)
		}
		defer relayA.Close()
		relayB, err := r.client(t, "tcp", credB.Username, credB.Password).Allocate()
		if err != nil {
			t.Fatalf("bob allocate: %v", err)
		}
		defer relayB.Close()
		for _, a := range []net.Addr{relayA.LocalAddr(), relayB.LocalAddr()} {
			if ap := apOf(a); ap.Addr() != netip.MustParseAddr("127.0.0.1") || !cfg.Relay.RelayPorts.Contains(int(ap.Port())) {
				t.Fatalf("relayed address %v, want 127.0.0.1 in %v", a, cfg.Relay.RelayPorts)
			}
		}

		// Bob knocks first so that he holds a permission for Alice's address;
		// the knock itself is dropped by Alice's allocation, which has none yet.
		if _, err := relayB.WriteTo([]byte("knock"), relayA.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		expect := func(to net.PacketConn, from net.Addr, msg string) {
			t.Helper()
			for {
				data, src := recv(t, to)
				if data == "knock" {
					continue // it may win the race with Alice's permission
				}
				if data != msg || src.String() != from.String() {
					t.Fatalf("got %q from %v, want %q from %v", data, src, msg, from)
				}
				return
			}
		}
		if _, err := relayA.WriteTo([]byte("hello bob"), relayB.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		expect(relayB, relayA.LocalAddr(), "hello bob")
		if _, err := relayB.WriteTo([]byte("hello alice"), relayA.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		expect(relayA, relayB.LocalAddr(), "hello alice")

		t.Run("local service outside relay_ports", func(t *testing.T) {
			if _, err := relayA.WriteTo([]byte("to the service"), service.LocalAddr()); err != nil {
				t.Fatal(err)
			}
			silent(t, service, "service outside relay_ports")
			if _, err := service.WriteTo([]byte("from the service"), relayA.LocalAddr()); err != nil {
				t.Fatal(err)
			}
			silent(t, relayA, "alice's allocation")
		})
	})
}

// TestTCPRelayConnect: with relay.tcp_relay on, an RFC 6062 Connect
// reaches an allowed TCP peer from the relayed port, also when relay_ip is
// on no local interface (a VPS behind 1:1 NAT), and the data connection
// carries bytes both ways after ConnectionBind. Connect to a refused peer
// gets 403; to the server's own address outside relay_ports, 447 and no
// connection.
func TestTCPRelayConnect(t *testing.T) {
	testutil.LeakCheck(t)
	own, err := net.Listen("tcp", "127.0.0.2:0") // the server's own address, outside relay_ports
	if err != nil {
		t.Fatal(err)
	}
	defer own.Close()
	for _, tc := range []struct {
		name    string
		relayIP []netip.Addr
		adv     netip.Addr
	}{
		{"relay_ip unset", nil, netip.MustParseAddr("127.0.0.1")},
		// 192.0.2.10 is only advertised in XOR-RELAYED-ADDRESS; nothing is sent to it.
		{"relay_ip behind 1:1 NAT", addrs("192.0.2.10"), netip.MustParseAddr("192.0.2.10")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.Relay.TCPRelay = true
			cfg.Relay.RelayIP = tc.relayIP
			cfg.Relay.RelayPorts = portRangeWith(0, int(apOf(own.Addr()).Port()))
			r := startRelay(t, cfg, Deps{OwnAddrs: ownAddrs("127.0.0.2")})
			peer, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer peer.Close()

			c := r.rawClientOver(t, "tcp", "alice", "wonderland")
			resp := c.request(stun.MethodAllocate, rawAttr{attrRequestedTransport, []byte{protoTCP, 0, 0, 0}})
			succeeded(t, "allocate tcp", resp)
			relayed := relayedAddr(t, resp)
			if relayed.Addr() != tc.adv {
				t.Errorf("relayed address %v, want %v", relayed, tc.adv)
			}
			resp = c.request(stun.MethodConnect, xorPeer(apOf(peer.Addr())))
			succeeded(t, "connect", resp)
			cid, err := resp.Get(stun.AttrConnectionID)
			if err != nil {
				t.Fatalf("connect response without CONNECTION-ID: %v", err)
			}
			peer.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
			pc, err := peer.Accept()
			if err != nil {
				t.Fatalf("peer accept: %v", err)
			}
			defer pc.Close()
			if from := apOf(pc.RemoteAddr()); from.Port() != relayed.Port() {
				t.Errorf("peer connection from %v, want the relayed port %d", from, relayed.Port())
			}

			d := r.rawClientOver(t, "tcp", "alice", "wonderland")
			succeeded(t, "connection bind", d.request(stun.MethodConnectionBind, rawAttr{stun.AttrConnectionID, cid}))
			// The first byte is neither STUN nor ChannelData on purpose.
			for _, dir := range []struct {
				name     string
				from, to net.Conn
			}{{"client to peer", d.conn, pc}, {"peer to client", pc, d.conn}} {
				msg := "\x01raw " + dir.name
				if _, err := dir.from.Write([]byte(msg)); err != nil {
					t.Fatal(err)
				}
				dir.to.SetReadDeadline(time.Now().Add(5 * time.Second))
				buf := make([]byte, len(msg))
				if _, err := io.ReadFull(dir.to, buf); err != nil || string(buf) != msg {
					t.Fatalf("%s: read %q, %v; want %q", dir.name, buf, err, msg)
				}
			}

			refused(t, c, c.request(stun.MethodConnect, xorPeer(netip.MustParseAddrPort("10.0.0.1:80"))), stun.CodeForbidden)
			refused(t, c, c.request(stun.MethodConnect, xorPeer(apOf(own.Addr()))), stun.CodeConnTimeoutOrFailure)
			own.(*net.TCPListener).SetDeadline(time.Now().Add(quiet))
			if oc, err := own.Accept(); err == nil {
				oc.Close()
				t.Errorf("own address outside relay_ports got a connection from %v", oc.RemoteAddr())
			}
		})
	}
}

// TestConnectionBindWithoutTCPRelay: with relay.tcp_relay off an
// authenticated ConnectionBind cannot succeed, so it must not turn the
// control connection into an unframed data connection: the gate still
// answers a refused ChannelBind on it with 403.
func TestConnectionBindWithoutTCPRelay(t *testing.T) {
	testutil.LeakCheck(t)
	r := startRelay(t, testConfig(t), Deps{})
	c := r.rawClientOver(t, "tcp", "alice", "wonderland")
	succeeded(t, "allocate", c.allocate())
	refused(t, c, c.request(stun.MethodConnectionBind, rawAttr{stun.AttrConnectionID, []byte{1, 2, 3, 4}}), stun.CodeBadRequest)
	refused(t, c, c.request(stun.MethodChannelBind, xorPeer(netip.MustParseAddrPort("10.0.0.1:5000")), channelNumber(0x4000)), stun.CodeForbidden)
}

// cloneConfig copies cfg deeply enough for Reload tests to change it.
func cloneConfig(cfg *config.Config) *config.Config {
	c := *cfg
	c.Relay.Users = make(map[string]config.Secret, len(cfg.Relay.Users))
	for k, v := range cfg.Relay.Users {
		c.Relay.Users[k] = v
	}
	return &c
}

func TestReloadUsers(t *testing.T) {
	testutil.LeakCheck(t)
	cfg := testConfig(t)
	r := startRelay(t, cfg, Deps{})
	peer := echoPeer(t)
	live, err := r.client(t, "udp", "alice", "wonderland").Allocate()
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	roundTrip(t, live, peer.LocalAddr(), "before the reload")

	next := cloneConfig(cfg)
	next.Relay.Users = map[string]config.Secret{"carol": "through-the-looking-glass"}
	if err := r.Reload(next); err != nil {
		t.Fatalf("reload: %v", err)
	}
	t.Run("new user allocates at once", func(t *testing.T) {
		relayed, err := r.client(t, "udp", "carol", "through-the-looking-glass").Allocate()
		if err != nil {
			t.Fatalf("carol: %v", err)
		}
		defer relayed.Close()
		roundTrip(t, relayed, peer.LocalAddr(), "carol")
	})
	t.Run("removed user cannot allocate", func(t *testing.T) {
		_, err := r.client(t, "udp", "alice", "wonderland").Allocate()
		if err == nil || !strings.Contains(err.Error(), "401") {
			t.Fatalf("alice after removal: %v, want 401", err)
		}
	})
	t.Run("allocation made before the reload keeps relaying", func(t *testing.T) {
		roundTrip(t, live, peer.LocalAddr(), "after the reload")
	})
}

// TestReloadDenyPeers: a peer newly in deny_peers is cut off from a live
// allocation at once, in both directions, and let through again when the
// rule goes.
func TestReloadDenyPeers(t *testing.T) {
	forDataPaths(t, func(t *testing.T, pionData bool) {
		testutil.LeakCheck(t)
		cfg := testConfig(t)
		r := startRelay(t, cfg, Deps{PionData: pionData})
		peer := udpPeer(t, "127.0.0.1:0")
		c := r.client(t, "udp", "alice", "wonderland")
		relayed, err := c.Allocate()
		if err != nil {
			t.Fatal(err)
		}
		defer relayed.Close()
		exchange := func(t *testing.T, msg string) {
			t.Helper()
			if _, err := relayed.WriteTo([]byte(msg), peer.LocalAddr()); err != nil {
				t.Fatal(err)
			}
			if data, _ := recv(t, peer); data != msg {
				t.Fatalf("peer got %q, want %q", data, msg)
			}
			if _, err := peer.WriteTo([]byte(msg+" back"), relayed.LocalAddr()); err != nil {
				t.Fatal(err)
			}
			if data, _ := recv(t, relayed); data != msg+" back" {
				t.Fatalf("client got %q, want %q", data, msg+" back")
			}
		}
		exchange(t, "before")

		deny := cloneConfig(cfg)
		deny.Relay.DenyPeers = prefixes("127.0.0.1/32")
		if err := r.Reload(deny); err != nil {
			t.Fatalf("reload: %v", err)
		}
		t.Run("denied", func(t *testing.T) {
			before := r.Stats().PeersDenied()["deny_peers"]
			if _, err := relayed.WriteTo([]byte("to a denied peer"), peer.LocalAddr()); err != nil {
				t.Fatal(err)
			}
			silent(t, peer, "peer denied by reload")
			if _, err := peer.WriteTo([]byte("from a denied peer"), relayed.LocalAddr()); err != nil {
				t.Fatal(err)
			}
			silent(t, relayed, "client after reload denied the peer")
			if err := c.CreatePermission(peer.LocalAddr()); err == nil || !strings.Contains(err.Error(), "403") {
				t.Errorf("new permission to a denied peer: %v, want 403", err)
			}
			if after := r.Stats().PeersDenied()["deny_peers"]; after <= before {
				t.Errorf("deny_peers counter %d, want more than %d", after, before)
			}
		})
		if err := r.Reload(cloneConfig(cfg)); err != nil {
			t.Fatalf("reload: %v", err)
		}
		t.Run("allowed again", func(t *testing.T) { exchange(t, "after") })
	})
}

// TestReloadRefusesRestartKeys: a key that needs a restart is refused by
// name, while the live parts of the same reload (a new user) apply.
func TestReloadRefusesRestartKeys(t *testing.T) {
	testutil.LeakCheck(t)
	cfg := testConfig(t)
	r := startRelay(t, cfg, Deps{})
	udpBefore, _, _ := r.Addrs()
	for i, tc := range []struct {
		key    string
		change func(c *config.Config)
	}{
		{"relay.listen_udp", func(c *config.Config) { c.Relay.ListenUDP = []string{"127.0.0.2:0"} }},
		{"relay.listen_tcp", func(c *config.Config) { c.Relay.ListenTCP = nil }},
		{"relay.listen_tls", func(c *config.Config) { c.Relay.ListenTLS = []string{"127.0.0.1:0", "127.0.0.2:0"} }},
		{"relay.relay_ip", func(c *config.Config) { c.Relay.RelayIP = addrs("127.0.0.1") }},
		{"relay.relay_bind", func(c *config.Config) { c.Relay.RelayBind = netip.MustParseAddr("127.0.0.2") }},
		{"relay.relay_ports", func(c *config.Config) { c.Relay.RelayPorts = config.PortRange{Min: 50000, Max: 50100} }},
		{"relay.tcp_relay", func(c *config.Config) { c.Relay.TCPRelay = true }},
		{"relay.realm", func(c *config.Config) { c.Relay.Realm = "elsewhere.example" }},
	} {
		t.Run(tc.key, func(t *testing.T) {
			next := cloneConfig(cfg)
			user := fmt.Sprintf("user%d", i)
			next.Relay.Users[user] = "a-password-for-" + config.Secret(user)
			tc.change(next)
			err := r.Reload(next)
			var keys []string
			for _, e := range flatten(err) {
				var fe *config.FieldError
				if !errors.As(e, &fe) {
					t.Fatalf("reload error %v is not a *config.FieldError", e)
				}
				keys = append(keys, fe.Key)
			}
			if len(keys) != 1 || keys[0] != tc.key {
				t.Fatalf("reload refused %v (%v), want exactly [%s]", keys, err, tc.key)
			}
			relayed, err := r.client(t, "udp", user, "a-password-for-"+user).Allocate()
			if err != nil {
				t.Fatalf("user added in the same reload: %v", err)
			}
			relayed.Close()
		})
	}
	if udpAfter, _, _ := r.Addrs(); fmt.Sprint(udpAfter) != fmt.Sprint(udpBefore) {
		t.Errorf("listeners changed from %v to %v", udpBefore, udpAfter)
	}
}

// flatten returns the errors joined in err (errors.Join), or err alone.
func flatten(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

// TestSecretRotation: with relay.secrets [new, old], credentials signed by
// either allocate and relay (every request after the Allocate needs the
// gate's hint too), over UDP and TCP; a secret not in the list fails.
func TestSecretRotation(t *testing.T) {
	testutil.LeakCheck(t)
	const newSecret, oldSecret, retired = "new-secret-0123456789abcdef", testSecret, "retired-secret-0123456789abcdef"
	cfg := testConfig(t)
	cfg.Relay.Secrets = []config.Secret{newSecret, oldSecret}
	r := startRelay(t, cfg, Deps{})
	peer := echoPeer(t)
	for _, transport := range []string{"udp", "tcp"} {
		for _, tc := range []struct{ name, secret string }{{"new", newSecret}, {"old", oldSecret}} {
			t.Run(transport+"/"+tc.name, func(t *testing.T) {
				cred := MintCredentials(tc.secret, "@alice:example.org", time.Hour, time.Now())
				relayed, err := r.client(t, transport, cred.Username, cred.Password).Allocate()
				if err != nil {
					t.Fatalf("allocate: %v", err)
				}
				defer relayed.Close()
				roundTrip(t, relayed, peer.LocalAddr(), "signed by the "+tc.name+" secret")
			})
		}
		t.Run(transport+"/retired", func(t *testing.T) {
			before := r.Stats().AuthFailures()["bad-integrity"]
			cred := MintCredentials(retired, "@alice:example.org", time.Hour, time.Now())
			if _, err := r.client(t, transport, cred.Username, cred.Password).Allocate(); err == nil || !strings.Contains(err.Error(), "401") {
				t.Fatalf("allocate with a secret not in the list: %v, want 401", err)
			}
			if after := r.Stats().AuthFailures()["bad-integrity"]; after <= before {
				t.Errorf("bad-integrity failures %d, want more than %d", after, before)
			}
		})
	}
	t.Run("every method with the old secret", func(t *testing.T) {
		udp, _, _ := r.Addrs()
		cred := MintCredentials(oldSecret, "bob", time.Hour, time.Now())
		c := newRawClient(t, udp[0], cred.Username, cred.Password)
		succeeded(t, "allocate", c.allocate())
		e := apOf(peer.LocalAddr())
		succeeded(t, "refresh", c.request(stun.MethodRefresh, lifetime(10*time.Minute)))
		succeeded(t, "create permission", c.request(stun.MethodCreatePermission, xorPeer(e)))
		succeeded(t, "channel bind", c.request(stun.MethodChannelBind, xorPeer(e), channelNumber(0x4000)))
		refused(t, c, c.request(stun.MethodChannelBind, xorPeer(netip.MustParseAddrPort("10.0.0.1:5000")), channelNumber(0x4001)), stun.CodeForbidden)
		succeeded(t, "refresh to zero", c.request(stun.MethodRefresh, lifetime(0)))
	})
}

// testClock is a clock the test moves by hand.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// TestExpiryOnlyOnAllocate: a REST credential's expiry is checked when an
// allocation is made, as coturn does, so a call outlives a short credential:
// Refresh, CreatePermission and ChannelBind with the expired credential
// succeed and data flows, while a new Allocate with it gets 401.
func TestExpiryOnlyOnAllocate(t *testing.T) {
	testutil.LeakCheck(t)
	clock := &testClock{now: time.Now()}
	r := startRelay(t, testConfig(t), Deps{Now: clock.Now})
	udp, _, _ := r.Addrs()
	e := apOf(echoPeer(t).LocalAddr())
	cred := MintCredentials(testSecret, "bob", 2*time.Second, clock.Now())

	c := newRawClient(t, udp[0], cred.Username, cred.Password)
	succeeded(t, "allocate before expiry", c.allocate())
	clock.Advance(time.Hour)

	t.Run("refresh", func(t *testing.T) {
		succeeded(t, "refresh", c.request(stun.MethodRefresh, lifetime(10*time.Minute)))
	})
	t.Run("create permission", func(t *testing.T) {
		succeeded(t, "create permission", c.request(stun.MethodCreatePermission, xorPeer(e)))
	})
	t.Run("channel bind", func(t *testing.T) {
		succeeded(t, "channel bind", c.request(stun.MethodChannelBind, xorPeer(e), channelNumber(0x4000)))
	})
	t.Run("data flows", func(t *testing.T) {
		c.channelData(0x4000, "still talking")
		if from, data, ok := c.readData(5 * time.Second); !ok || data != "still talking" || from != "channel 0x4000" {
			t.Fatalf("got %q from %s (ok %v), want the echo on channel 0x4000", data, from, ok)
		}
	})
	t.Run("new allocate refused", func(t *testing.T) {
		before := r.Stats().AuthFailures()["expired"]
		c2 := newRawClient(t, udp[0], cred.Username, cred.Password)
		if resp := c2.allocate(); errorCode(resp) != stun.CodeUnauthorized {
			t.Fatalf("allocate with an expired credential: %v code %d, want 401", resp.Type, errorCode(resp))
		}
		if after := r.Stats().AuthFailures()["expired"]; after <= before {
			t.Errorf("expired failures %d, want more than %d", after, before)
		}
	})
}

// requireIPv6Loopback skips (fails under CI) when ::1 cannot be bound.
func requireIPv6Loopback(t *testing.T) {
	t.Helper()
	c, err := net.ListenPacket("udp6", "[::1]:0")
	if err == nil {
		c.Close()
		return
	}
	out, _ := exec.Command("ip", "-6", "addr", "show", "lo").CombinedOutput()
	msg := fmt.Sprintf("no IPv6 loopback (%v); ip -6 addr show lo: %s", err, out)
	if testutil.InCI() {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// TestIPv6Relay: relay_bind ::1 gives an IPv6 relayed address to a client
// asking for one (RFC 6156), over an IPv4 or IPv6 control connection, and
// relays to an IPv6 peer; it refuses IPv6 forms of internal addresses with
// 403 and answers an IPv4 Allocate with 440.
//
// relay_ip ::1 makes ::1 one of the server's own addresses; allow_peers
// ::1/128 lifts the own-address rule (Filter, precedence 3 before 4), so the
// echo peer on ::1 is reachable on any port.
func TestIPv6Relay(t *testing.T) {
	requireIPv6Loopback(t)
	testutil.LeakCheck(t)
	echo, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := echo.ReadFrom(buf)
			if err != nil {
				return
			}
			echo.WriteTo(buf[:n], from)
		}
	}()
	cfg := testConfig(t)
	cfg.Relay.ListenUDP = []string{"127.0.0.1:0", "[::1]:0"}
	cfg.Relay.RelayBind = netip.MustParseAddr("::1")
	cfg.Relay.RelayIP = addrs("::1")
	cfg.Relay.AllowPeers = prefixes("::1/128")
	r := startRelay(t, cfg, Deps{})
	udp, _, _ := r.Addrs()
	server := map[string]net.Addr{}
	for _, a := range udp {
		if apOf(a).Addr().Is4() {
			server["udp4"] = a
		} else {
			server["udp6"] = a
		}
	}

	for _, control := range []string{"udp4", "udp6"} {
		t.Run("control over "+control, func(t *testing.T) {
			local := map[string]string{"udp4": "127.0.0.1:0", "udp6": "[::1]:0"}[control]
			conn, err := net.ListenPacket(control, local)
			if err != nil {
				t.Fatal(err)
			}
			c, err := turn.NewClient(&turn.ClientConfig{
				STUNServerAddr:         server[control].String(),
				TURNServerAddr:         server[control].String(),
				Conn:                   conn,
				Username:               "alice",
				Password:               "wonderland",
				Realm:                  r.Realm(),
				RequestedAddressFamily: turn.RequestedAddressFamilyIPv6,
				LoggerFactory:          pionLogs{slog.New(slog.DiscardHandler)},
			})
			if err != nil {
				t.Fatal(err)
			}
			defer func() { c.Close(); conn.Close() }()
			if err := c.Listen(); err != nil {
				t.Fatal(err)
			}
			relayed, err := c.Allocate()
			if err != nil {
				t.Fatalf("allocate: %v", err)
			}
			defer relayed.Close()
			ra := apOf(relayed.LocalAddr())
			if ra.Addr() != netip.IPv6Loopback() || !cfg.Relay.RelayPorts.Contains(int(ra.Port())) {
				t.Fatalf("relayed address %v, want [::1] in %v", ra, cfg.Relay.RelayPorts)
			}
			roundTrip(t, relayed, echo.LocalAddr(), "hello over IPv6 via "+control)
		})
	}

	t.Run("refused IPv6 peers", func(t *testing.T) {
		c := newRawClient(t, server["udp6"], "alice", "wonderland")
		succeeded(t, "allocate", c.allocate(rawAttr{attrRequestedFamily, []byte{2, 0, 0, 0}}))
		for i, p := range []string{
			"::", "::2", "fe80::1", "fd00:ec2::254", "fc00::1", "fec0::1", "ff02::1", "2001:db8::1",
			"::127.0.0.1", "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "2002:7f00:1::", "2002:a9fe:a9fe::",
			"2001:0:4136:e378:8000:63bf:80ff:fffe", "100::1",
		} {
			t.Run(p, func(t *testing.T) {
				peer := xorPeer(netip.AddrPortFrom(netip.MustParseAddr(p), 5000))
				refused(t, c, c.request(stun.MethodCreatePermission, peer), stun.CodeForbidden)
				refused(t, c, c.request(stun.MethodChannelBind, peer, channelNumber(0x4000+uint16(i))), stun.CodeForbidden)
			})
		}
		t.Run("::ffff:127.0.0.1", func(t *testing.T) {
			// An IPv4 peer on an IPv6 allocation: refused for its family
			// (443) or as loopback (403), never granted.
			peer := xorPeer(netip.MustParseAddrPort("[::ffff:127.0.0.1]:5000"))
			for _, m := range []stun.Method{stun.MethodCreatePermission, stun.MethodChannelBind} {
				resp := c.request(m, peer, channelNumber(0x7000))
				if code := errorCode(resp); code != stun.CodePeerAddrFamilyMismatch && code != stun.CodeForbidden {
					t.Errorf("%v: %v code %d, want 443 or 403", m, resp.Type, code)
				}
			}
		})
	})
	t.Run("IPv4 allocate gets 440", func(t *testing.T) {
		c := newRawClient(t, server["udp4"], "alice", "wonderland")
		refused(t, c, c.allocate(), stun.CodeAddrFamilyNotSupported)
	})
}

// TestBindingWithoutCredentials: clients (ICE) send plain STUN Binding
// requests with no credentials and must get their mapped address back.
func TestBindingWithoutCredentials(t *testing.T) {
	testutil.LeakCheck(t)
	r := startRelay(t, testConfig(t), Deps{})
	udp, tcp, _ := r.Addrs()
	for _, tc := range []struct {
		name   string
		dial   func() (net.Conn, error)
		framed bool
	}{
		{"udp", func() (net.Conn, error) { return net.Dial("udp", udp[0].String()) }, false},
		{"tcp", func() (net.Conn, error) { return net.Dial("tcp", tcp[0].String()) }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := tc.dial()
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			resp := binding(t, conn, tc.framed)
			var mapped stun.XORMappedAddress
			if err := mapped.GetFrom(resp); err != nil {
				t.Fatalf("binding response without XOR-MAPPED-ADDRESS: %v", err)
			}
			if mapped.String() != conn.LocalAddr().String() {
				t.Errorf("mapped address %v, want %v", mapped, conn.LocalAddr())
			}
		})
	}
}

// binding sends a Binding request on conn and returns the success response,
// skipping anything else the relay sent on conn before it.
func binding(t *testing.T, conn net.Conn, framed bool) *stun.Message {
	t.Helper()
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	if _, err := conn.Write(req.Raw); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	framer := turn.NewSTUNConn(conn)
	buf := make([]byte, 2048)
	for {
		var n int
		var err error
		if framed {
			n, _, err = framer.ReadFrom(buf)
		} else {
			n, err = conn.Read(buf)
		}
		if err != nil {
			t.Fatalf("binding: %v", err)
		}
		resp := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
		if resp.Decode() != nil || resp.TransactionID != req.TransactionID {
			continue
		}
		if resp.Type != stun.BindingSuccess {
			t.Fatalf("binding: got %v, want a success response", resp.Type)
		}
		return resp
	}
}

// garbage is what an attacker or a confused client throws at the listeners.
func garbage() map[string][]byte {
	stunHeader := func(typ uint16, length uint16, body ...byte) []byte {
		b := binary.BigEndian.AppendUint16(nil, typ)
		b = binary.BigEndian.AppendUint16(b, length)
		b = binary.BigEndian.AppendUint32(b, stunMagicCookie)
		return append(append(b, make([]byte, 12)...), body...)
	}
	random := make([]byte, 1400)
	for i := range random {
		random[i] = byte(i*131 + i>>3)
	}
	return map[string][]byte{
		"text":                      []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		"zeros":                     make([]byte, 20),
		"one byte":                  {0x00},
		"truncated header":          stunHeader(0x0003, 0)[:19],
		"allocate claiming 64k":     stunHeader(0x0003, 0xFFFC),
		"attribute overrunning":     stunHeader(0x0003, 8, 0x00, 0x06, 0xFF, 0xFF, 'a', 'b', 'c', 'd'),
		"integrity of wrong length": stunHeader(0x0009, 12, 0x00, 0x06, 0x00, 0x01, 'a', 0, 0, 0, 0x00, 0x08, 0x00, 0x00),
		"channel data claiming 64k": {0x40, 0x00, 0xFF, 0xFF, 1, 2, 3, 4},
		"unknown method":            stunHeader(0x3EEF, 0),
		"random":                    random,
	}
}

// TestGarbageDoesNotStopRelay: malformed input on UDP and TCP is dropped
// (a TCP connection that breaks framing is closed) and the next valid
// client is served.
func TestGarbageDoesNotStopRelay(t *testing.T) {
	forDataPaths(t, func(t *testing.T, pionData bool) {
		testutil.LeakCheck(t)
		r := startRelay(t, testConfig(t), Deps{PionData: pionData})
		udp, tcp, _ := r.Addrs()
		peer := echoPeer(t)

		t.Run("udp", func(t *testing.T) {
			conn, err := net.Dial("udp", udp[0].String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			for _, b := range garbage() {
				conn.Write(b)
			}
			// Authenticated but malformed: gets past the gate's integrity check.
			c := newRawClient(t, udp[0], "alice", "wonderland")
			succeeded(t, "allocate", c.allocate())
			for _, attrs := range [][]stun.Setter{
				{rawAttr{stun.AttrXORPeerAddress, []byte{0, 1, 2}}, channelNumber(0x4000)},
				{rawAttr{stun.AttrXORPeerAddress, []byte{0, 9, 0, 0, 1, 2, 3, 4}}, channelNumber(0x4000)},
				{rawAttr{stun.AttrXORPeerAddress, []byte{0, 2, 0, 0, 1, 2, 3, 4}}, channelNumber(0x4000)},
				{channelNumber(0x4000)},
			} {
				if resp := c.request(stun.MethodChannelBind, attrs...); resp.Type.Class != stun.ClassErrorResponse {
					t.Errorf("malformed channel bind answered %v", resp.Type)
				}
			}
			binding(t, conn, false)
			relayed, err := r.client(t, "udp", "alice", "wonderland").Allocate()
			if err != nil {
				t.Fatalf("allocate after garbage: %v", err)
			}
			defer relayed.Close()
			roundTrip(t, relayed, peer.LocalAddr(), "after udp garbage")
		})
		t.Run("tcp", func(t *testing.T) {
			for _, b := range garbage() {
				conn, err := net.Dial("tcp", tcp[0].String())
				if err != nil {
					t.Fatal(err)
				}
				conn.Write(b)
				conn.Close()
			}
			// A frame that is neither STUN nor ChannelData breaks the framing:
			// the relay closes the connection rather than guess.
			conn, err := net.Dial("tcp", tcp[0].String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.Write(append([]byte{0x80}, make([]byte, 40)...))
			if err := waitClosed(conn); err != nil {
				t.Errorf("connection with broken framing: %v", err)
			}
			relayed, err := r.client(t, "tcp", "alice", "wonderland").Allocate()
			if err != nil {
				t.Fatalf("allocate after garbage: %v", err)
			}
			defer relayed.Close()
			roundTrip(t, relayed, peer.LocalAddr(), "after tcp garbage")
		})
	})
}

// waitClosed returns nil once the server closes conn (EOF or reset), or
// an error if it is still open after 5 s.
func waitClosed(conn net.Conn) error {
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2048)
	for {
		_, err := conn.Read(buf)
		if err == nil {
			continue
		}
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			return errors.New("still open after 5s")
		}
		return nil
	}
}

// TestIdleStreamCutOff: a TCP or TLS client that connects and sends
// nothing (or stalls its TLS handshake) is cut off; one that sent a frame
// is not held to the first-frame deadline.
func TestIdleStreamCutOff(t *testing.T) {
	testutil.LeakCheck(t)
	const firstFrame = 300 * time.Millisecond
	r := startRelay(t, testConfig(t), Deps{Streams: StreamLimits{FirstFrame: firstFrame, Handshake: 300 * time.Millisecond}})
	_, tcp, tlsAddrs := r.Addrs()
	tlsConf := &tls.Config{RootCAs: r.caPool, ServerName: "127.0.0.1", NextProtos: []string{"stun.turn"}}

	for _, tc := range []struct {
		name string
		dial func() (net.Conn, error)
	}{
		{"tcp sends nothing", func() (net.Conn, error) { return net.Dial("tcp", tcp[0].String()) }},
		{"tls handshake never starts", func() (net.Conn, error) { return net.Dial("tcp", tlsAddrs[0].String()) }},
		{"tls sends nothing after the handshake", func() (net.Conn, error) { return tls.Dial("tcp", tlsAddrs[0].String(), tlsConf) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := tc.dial()
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if err := waitClosed(conn); err != nil {
				t.Error(err)
			}
		})
	}
	t.Run("tcp that spoke stays open", func(t *testing.T) {
		conn, err := net.Dial("tcp", tcp[0].String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		binding(t, conn, true)
		time.Sleep(3 * firstFrame)
		binding(t, conn, true)
	})
}
