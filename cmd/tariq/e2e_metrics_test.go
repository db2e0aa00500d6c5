package main

import (
	"net"
	"strings"
	"testing"

	"github.com/pion/turn/v5"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// metricValue returns the value of the sample of family name whose labels
// include want.
func metricValue(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f, ok := fams[name]
	if !ok {
		return 0, false
	}
	for _, m := range f.GetMetric() {
		match := 0
		for _, lp := range m.GetLabel() {
			if v, ok := want[lp.GetName()]; ok && v == lp.GetValue() {
				match++
			}
		}
		if match != len(want) {
			continue
		}
		if m.Gauge != nil {
			return m.Gauge.GetValue(), true
		}
		return m.Counter.GetValue(), true
	}
	return 0, false
}

// TestMetricsWithLivePeerAndAllocation scrapes the metrics endpoint while a
// WireGuard peer has traffic and a TURN allocation is live, and parses it.
func TestMetricsWithLivePeerAndAllocation(t *testing.T) {
	l := newVPNLabWith(t, `relay:
  listen_udp: ["127.0.0.1:3478"]
  listen_tcp: []
  listen_tls: []
  relay_bind: 127.0.0.1
  allow_peers: [127.0.0.1/32]
  users: {alice: wonderland}
`)
	phone := l.addDevice("phone", 1)
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
		Conn: conn, Username: "alice", Password: "wonderland", Realm: "10.10.1.1"})
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

	text := l.server.Run("curl", "-sS", "--max-time", "5", "http://127.0.0.1:9477/metrics")
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("metrics do not parse: %v", err)
	}
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
