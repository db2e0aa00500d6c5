package relay

import (
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Stats counts relay events. The hot-path counters are plain atomics, read
// by the Prometheus collector at scrape time rather than updated through
// client_golang on every packet.
type Stats struct {
	AllocationsCreated atomic.Uint64
	AllocationsDeleted atomic.Uint64
	QuotaRejected      atomic.Uint64
	BytesToPeers       atomic.Uint64 // relayed client → peer
	BytesFromPeers     atomic.Uint64 // relayed peer → client
	PacketsToPeers     atomic.Uint64
	PacketsFromPeers   atomic.Uint64
	Streams            atomic.Int64 // open TCP and TLS control connections

	mu           sync.Mutex
	authFailures map[string]uint64 // by reason: unknown-user, expired, bad-integrity
	peersDenied  map[string]uint64 // by rule name
	streamsShut  map[string]uint64 // stream connections refused or closed, by reason
}

func newStats() *Stats {
	return &Stats{authFailures: map[string]uint64{}, peersDenied: map[string]uint64{}, streamsShut: map[string]uint64{}}
}

// sendingToPeers counts n datagrams, of bytes in all, relayed to peers
// before they are sent: a peer's answer can reach the client, and the
// client read the counters, before the sender runs again. unsentToPeers
// takes back what then could not be sent.
func (s *Stats) sendingToPeers(n, bytes uint64) {
	s.PacketsToPeers.Add(n)
	s.BytesToPeers.Add(bytes)
}

func (s *Stats) unsentToPeers(n, bytes uint64) {
	s.PacketsToPeers.Add(-n)
	s.BytesToPeers.Add(-bytes)
}

func (s *Stats) authFailed(reason string) {
	s.mu.Lock()
	s.authFailures[reason]++
	s.mu.Unlock()
}

func (s *Stats) peerDenied(reason string) {
	s.mu.Lock()
	s.peersDenied[reason]++
	s.mu.Unlock()
}

func (s *Stats) streamShut(reason string) {
	s.mu.Lock()
	s.streamsShut[reason]++
	s.mu.Unlock()
}

// StreamsShut returns the stream connections refused (too-many,
// too-many-from-source) or closed for holding no allocation
// (no-allocation), by reason.
func (s *Stats) StreamsShut() map[string]uint64 { return s.snapshot(s.streamsShut) }

// AuthFailures returns the auth failure counts by reason.
func (s *Stats) AuthFailures() map[string]uint64 { return s.snapshot(s.authFailures) }

// PeersDenied returns the refused peer counts by rule.
func (s *Stats) PeersDenied() map[string]uint64 { return s.snapshot(s.peersDenied) }

func (s *Stats) snapshot(m map[string]uint64) map[string]uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]uint64, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// Collector returns a Prometheus collector over s and the live allocation
// count given by active.
func (s *Stats) Collector(active func() int) prometheus.Collector {
	return &statsCollector{s: s, active: active}
}

var (
	descAllocs       = prometheus.NewDesc("tariq_turn_allocations", "Live TURN allocations.", nil, nil)
	descAllocsTotal  = prometheus.NewDesc("tariq_turn_allocations_created_total", "TURN allocations created.", nil, nil)
	descQuota        = prometheus.NewDesc("tariq_turn_quota_rejections_total", "Allocate requests refused with 486 Allocation Quota Reached.", nil, nil)
	descAuthFailures = prometheus.NewDesc("tariq_turn_auth_failures_total", "TURN requests refused for their credentials.", []string{"reason"}, nil)
	descPeersDenied  = prometheus.NewDesc("tariq_turn_peers_denied_total", "Peer addresses refused by the peer filter.", []string{"rule"}, nil)
	descBytes        = prometheus.NewDesc("tariq_turn_relayed_bytes_total", "Payload bytes relayed.", []string{"direction"}, nil)
	descPackets      = prometheus.NewDesc("tariq_turn_relayed_packets_total", "Packets relayed.", []string{"direction"}, nil)
	descStreams      = prometheus.NewDesc("tariq_turn_streams", "Open TURN TCP and TLS connections.", nil, nil)
	descStreamsShut  = prometheus.NewDesc("tariq_turn_streams_shut_total", "TURN TCP and TLS connections refused at a cap or closed for holding no allocation.", []string{"reason"}, nil)
)

type statsCollector struct {
	s      *Stats
	active func() int
}

func (c *statsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descAllocs, descAllocsTotal, descQuota, descAuthFailures, descPeersDenied, descBytes, descPackets, descStreams, descStreamsShut} {
		ch <- d
	}
}

func (c *statsCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	ch <- prometheus.MustNewConstMetric(descAllocs, prometheus.GaugeValue, float64(c.active()))
	ch <- prometheus.MustNewConstMetric(descAllocsTotal, prometheus.CounterValue, float64(s.AllocationsCreated.Load()))
	ch <- prometheus.MustNewConstMetric(descQuota, prometheus.CounterValue, float64(s.QuotaRejected.Load()))
	for reason, n := range s.AuthFailures() {
		ch <- prometheus.MustNewConstMetric(descAuthFailures, prometheus.CounterValue, float64(n), reason)
	}
	for rule, n := range s.PeersDenied() {
		ch <- prometheus.MustNewConstMetric(descPeersDenied, prometheus.CounterValue, float64(n), rule)
	}
	ch <- prometheus.MustNewConstMetric(descStreams, prometheus.GaugeValue, float64(s.Streams.Load()))
	for reason, n := range s.StreamsShut() {
		ch <- prometheus.MustNewConstMetric(descStreamsShut, prometheus.CounterValue, float64(n), reason)
	}
	ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(s.BytesToPeers.Load()), "to_peer")
	ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(s.BytesFromPeers.Load()), "from_peer")
	ch <- prometheus.MustNewConstMetric(descPackets, prometheus.CounterValue, float64(s.PacketsToPeers.Load()), "to_peer")
	ch <- prometheus.MustNewConstMetric(descPackets, prometheus.CounterValue, float64(s.PacketsFromPeers.Load()), "from_peer")
}
