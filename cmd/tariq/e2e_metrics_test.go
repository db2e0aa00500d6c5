package main

import (
	"net"
	"testing"

	"github.com/pion/turn/v5"
)

// TestMetricsWithLivePeerAndAllocation scrapes the metrics endpoint while a
// WireGuard peer has traffic and a TURN allocation is live, and parses it.
func TestMetricsWithLivePeerAndAllocation(t *testing.T) {
	l := newLab(t, labOptions{Config: map[string]string{
		"relay.enabled":     "true",
		"relay.listen_udp":  `["127.0.0.1:3478"]`,
		"relay.listen_tcp":  "[]",
		"relay.listen_tls":  "[]",
		"relay.relay_bind":  "127.0.0.1",
		"relay.allow_peers": "[127.0.0.1/32]",
		"relay.users":       "{alice: wonderland}",
	}})
	phone := l.addDevice("phone")
	phone.up()
	phone.mustReach("before scraping")

	// A TURN client inside the server's namespace keeps an allocation open.
	var conn net.PacketConn
	if err := l.server.Do(func() (err error) {
		conn, err = net.ListenPacket("udp4", "127.0.0.1:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c, err := turn.NewClient(&turn.ClientConfig{STUNServerAddr: "127.0.0.1:3478", TURNServerAddr: "127.0.0.1:3478",
		Conn: conn, Username: "alice", Password: "wonderland", Realm: labServer})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	relayed, err := c.Allocate()
	if err != nil {
		t.Fatalf("allocate: %v", err)
	}
	defer relayed.Close()

	fams := l.metrics()
	for _, c := range []struct {
		name   string
		labels map[string]string
		min    float64
	}{
		{"tariq_wireguard_peers", map[string]string{"state": "enabled"}, 1},
		{"tariq_wireguard_peer_last_handshake_seconds", map[string]string{"peer": "phone"}, 1},
		{"tariq_wireguard_peer_received_bytes_total", map[string]string{"peer": "phone"}, 1},
		{"tariq_wireguard_peer_sent_bytes_total", map[string]string{"peer": "phone"}, 1},
		{"tariq_turn_allocations", nil, 1},
		{"tariq_certificate_expiry_seconds", nil, 1},
	} {
		if v, ok := metricValue(fams, c.name, c.labels); !ok || v < c.min {
			t.Errorf("%s%v = %v (present %v), want at least %v", c.name, c.labels, v, ok, c.min)
		}
	}
}
