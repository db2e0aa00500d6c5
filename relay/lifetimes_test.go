package relay

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun/v4"

	"github.com/tariq-vpn/tariq/internal/testutil"
)

// entryOf returns the data path's entry for the allocation relayed at ap.
func (r *testRelay) entryOf(t *testing.T, ap netip.AddrPort) *allocEntry {
	t.Helper()
	e := r.entryFor(net.UDPAddrFromAddrPort(ap))
	if e == nil {
		t.Fatalf("no data path entry for the allocation relayed at %v", ap)
	}
	return e
}

// both checks that a datagram goes from client c to peer p (by channel ch
// or, if ch is 0, a Send indication) and back.
func both(t *testing.T, c *rawClient, p *net.UDPConn, relayed netip.AddrPort, ch uint16, msg string) {
	t.Helper()
	if ch != 0 {
		c.channelData(ch, msg)
	} else {
		c.send(apOf(p.LocalAddr()), msg)
	}
	if got, _ := recv(t, p); got != msg {
		t.Fatalf("peer got %q, want %q", got, msg)
	}
	if _, err := p.WriteToUDPAddrPort([]byte(msg+" back"), relayed); err != nil {
		t.Fatal(err)
	}
	if _, got, ok := c.readData(5 * time.Second); !ok || got != msg+" back" {
		t.Fatalf("client got %q (ok %v), want %q", got, ok, msg+" back")
	}
}

// neither checks that nothing goes from c to p (by channel ch, and by a
// Send indication) nor back.
func neither(t *testing.T, c *rawClient, p *net.UDPConn, relayed netip.AddrPort, ch uint16, why string) {
	t.Helper()
	if ch != 0 {
		c.channelData(ch, "by channel: "+why)
	}
	c.send(apOf(p.LocalAddr()), "by send indication: "+why)
	silent(t, p, why)
	if _, err := p.WriteToUDPAddrPort([]byte("back: "+why), relayed); err != nil {
		t.Fatal(err)
	}
	if from, got, ok := c.readData(quiet); ok {
		t.Errorf("%s: client got %q from %s", why, got, from)
	}
}

// TestDataPathLifetimes: with lifetimes shortened, tariq's data path stops
// relaying the moment pion ends what allowed it: a permission that
// expired (on a channel that is still bound too, which pion itself would
// go on relaying), a channel that expired and was bound to another peer,
// an allocation deleted or expired, and a peer that a reload denied. A
// refreshed permission keeps relaying past its first lifetime.
func TestDataPathLifetimes(t *testing.T) {
	testutil.LeakCheck(t)
	const permission, channel = time.Second, 1500 * time.Millisecond
	for _, transport := range []string{"udp", "tcp"} {
		t.Run(transport, func(t *testing.T) {
			t.Run("permission refreshed, then expired", func(t *testing.T) {
				r := startRelay(t, testConfig(t), Deps{Lifetimes: Lifetimes{Permission: permission, Channel: time.Hour}})
				p := udpPeer(t, "127.0.0.1:0")
				c := r.rawClientOver(t, transport, "alice", "wonderland")
				relayed := relayedAddr(t, c.allocate())
				succeeded(t, "channel bind", c.request(stun.MethodChannelBind, xorPeer(apOf(p.LocalAddr())), channelNumber(0x4000)))
				for end := time.Now().Add(2 * permission); time.Now().Before(end); {
					succeeded(t, "refresh permission", c.request(stun.MethodCreatePermission, xorPeer(apOf(p.LocalAddr()))))
					both(t, c, p, relayed, 0x4000, "refreshed")
					both(t, c, p, relayed, 0, "refreshed")
					time.Sleep(permission / 4)
				}
				e := r.entryOf(t, relayed)
				testutil.WaitFor(t, 10*time.Second, "permission to expire", func() bool { return e.perms.Load().len() == 0 })
				if _, ok := e.chans.Load().peerOf(0x4000); !ok {
					t.Fatal("the channel went with the permission; this case needs it bound")
				}
				neither(t, c, p, relayed, 0x4000, "permission expired, channel bound")
			})
			t.Run("channel expired and bound elsewhere", func(t *testing.T) {
				r := startRelay(t, testConfig(t), Deps{Lifetimes: Lifetimes{Permission: time.Hour, Channel: channel}})
				p1, p2 := udpPeer(t, "127.0.0.1:0"), udpPeer(t, "127.0.0.1:0")
				c := r.rawClientOver(t, transport, "alice", "wonderland")
				relayed := relayedAddr(t, c.allocate())
				succeeded(t, "channel bind", c.request(stun.MethodChannelBind, xorPeer(apOf(p1.LocalAddr())), channelNumber(0x4000)))
				both(t, c, p1, relayed, 0x4000, "first binding")
				e := r.entryOf(t, relayed)
				testutil.WaitFor(t, 10*time.Second, "channel to expire", func() bool { return e.chans.Load().len() == 0 })
				succeeded(t, "bind the channel elsewhere", c.request(stun.MethodChannelBind, xorPeer(apOf(p2.LocalAddr())), channelNumber(0x4000)))
				c.channelData(0x4000, "rebound")
				if got, _ := recv(t, p2); got != "rebound" {
					t.Fatalf("new peer got %q", got)
				}
				silent(t, p1, "old peer of a rebound channel")
				// The old peer keeps its permission, so it reaches the client,
				// by Data indication, not on the channel it no longer has.
				if _, err := p1.WriteToUDPAddrPort([]byte("old peer"), relayed); err != nil {
					t.Fatal(err)
				}
				if from, got, ok := c.readData(5 * time.Second); !ok || got != "old peer" || from != p1.LocalAddr().String() {
					t.Fatalf("client got %q from %s (ok %v), want a Data indication from %v", got, from, ok, p1.LocalAddr())
				}
				both(t, c, p2, relayed, 0x4000, "new binding")
			})
			t.Run("allocation deleted", func(t *testing.T) {
				r := startRelay(t, testConfig(t), Deps{})
				p := udpPeer(t, "127.0.0.1:0")
				c := r.rawClientOver(t, transport, "alice", "wonderland")
				relayed := relayedAddr(t, c.allocate())
				succeeded(t, "channel bind", c.request(stun.MethodChannelBind, xorPeer(apOf(p.LocalAddr())), channelNumber(0x4000)))
				both(t, c, p, relayed, 0x4000, "before delete")
				succeeded(t, "delete", c.request(stun.MethodRefresh, lifetime(0)))
				neither(t, c, p, relayed, 0x4000, "allocation deleted")
				// The same 5-tuple allocates again: nothing of the old
				// allocation carries over.
				relayed2 := relayedAddr(t, c.allocate())
				c.channelData(0x4000, "old channel on a new allocation")
				silent(t, p, "old channel on a new allocation")
				succeeded(t, "channel bind", c.request(stun.MethodChannelBind, xorPeer(apOf(p.LocalAddr())), channelNumber(0x4000)))
				both(t, c, p, relayed2, 0x4000, "new allocation")
			})
			t.Run("allocation expired", func(t *testing.T) {
				r := startRelay(t, testConfig(t), Deps{})
				p := udpPeer(t, "127.0.0.1:0")
				c := r.rawClientOver(t, transport, "alice", "wonderland")
				relayed := relayedAddr(t, c.allocate(lifetime(time.Second)))
				succeeded(t, "channel bind", c.request(stun.MethodChannelBind, xorPeer(apOf(p.LocalAddr())), channelNumber(0x4000)))
				both(t, c, p, relayed, 0x4000, "before expiry")
				testutil.WaitFor(t, 10*time.Second, "allocation to expire", func() bool { return r.Allocations() == 0 })
				neither(t, c, p, relayed, 0x4000, "allocation expired")
			})
			t.Run("peer denied by reload", func(t *testing.T) {
				cfg := testConfig(t)
				r := startRelay(t, cfg, Deps{})
				p := udpPeer(t, "127.0.0.1:0")
				c := r.rawClientOver(t, transport, "alice", "wonderland")
				relayed := relayedAddr(t, c.allocate())
				succeeded(t, "channel bind", c.request(stun.MethodChannelBind, xorPeer(apOf(p.LocalAddr())), channelNumber(0x4000)))
				both(t, c, p, relayed, 0x4000, "before the reload")
				deny := cloneConfig(cfg)
				deny.Relay.DenyPeers = prefixes("127.0.0.1/32")
				if err := r.Reload(deny); err != nil {
					t.Fatal(err)
				}
				neither(t, c, p, relayed, 0x4000, "peer denied by reload")
				if err := r.Reload(cloneConfig(cfg)); err != nil {
					t.Fatal(err)
				}
				both(t, c, p, relayed, 0x4000, "allowed again")
			})
		})
	}
}

// TestDataPathChurn: clients allocate, relay and delete their allocations
// while others' traffic flows, under the race detector. A peer only ever
// gets its own client's data, and never data a client sent after its
// allocation was deleted.
func TestDataPathChurn(t *testing.T) {
	testutil.LeakCheck(t)
	r := startRelay(t, testConfig(t), Deps{})
	const clients, rounds, packets = 6, 12, 20
	var mu sync.Mutex
	var stray []string
	var wg sync.WaitGroup
	for id := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			transport := []string{"udp", "tcp"}[id%2]
			peer := udpPeer(t, "127.0.0.1:0")
			got := make(chan string, 4*packets)
			go func() {
				buf := make([]byte, 2048)
				for {
					n, from, err := peer.ReadFromUDPAddrPort(buf)
					if err != nil {
						close(got)
						return
					}
					msg := string(buf[:n])
					if !strings.HasPrefix(msg, fmt.Sprintf("client %d ", id)) || strings.Contains(msg, "late") {
						mu.Lock()
						stray = append(stray, fmt.Sprintf("peer of client %d got %q", id, msg))
						mu.Unlock()
					}
					peer.WriteToUDPAddrPort(buf[:n], from)
					select {
					case got <- msg:
					default:
					}
				}
			}()
			for round := range rounds {
				c := r.rawClientOver(t, transport, "alice", "wonderland")
				resp := c.allocate()
				if resp.Type.Class != stun.ClassSuccessResponse {
					mu.Lock()
					stray = append(stray, fmt.Sprintf("client %d round %d: allocate: %v", id, round, resp.Type))
					mu.Unlock()
					return
				}
				c.request(stun.MethodChannelBind, xorPeer(apOf(peer.LocalAddr())), channelNumber(0x4000+uint16(round)))
				for i := range packets {
					c.channelData(0x4000+uint16(round), fmt.Sprintf("client %d round %d packet %d", id, round, i))
				}
				deadline := time.After(5 * time.Second)
				for range packets {
					select {
					case <-got:
					case <-deadline:
						mu.Lock()
						stray = append(stray, fmt.Sprintf("client %d round %d: packets missing", id, round))
						mu.Unlock()
					}
				}
				c.request(stun.MethodRefresh, lifetime(0))
				c.channelData(0x4000+uint16(round), fmt.Sprintf("client %d round %d late", id, round))
				c.conn.Close()
			}
		}()
	}
	wg.Wait()
	time.Sleep(quiet) // late packets would have landed by now
	mu.Lock()
	defer mu.Unlock()
	for _, s := range stray {
		t.Error(s)
	}
	testutil.WaitFor(t, 10*time.Second, "every allocation to go", func() bool { return r.Allocations() == 0 })
}
