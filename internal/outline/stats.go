package outline

import (
	"maps"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// stats counts the events that are not per member. Per-member counters
// live in the accounts.
type stats struct {
	mu          sync.Mutex           // guards the maps
	refusals    map[[2]string]uint64 // by proto, rule
	authFailure map[[2]string]uint64 // by proto, reason
	cuts        map[string]uint64    // by reason
}

func newStats() *stats {
	return &stats{refusals: map[[2]string]uint64{}, authFailure: map[[2]string]uint64{}, cuts: map[string]uint64{}}
}

func (s *stats) refused(proto int, rule string) {
	s.mu.Lock()
	s.refusals[[2]string{protoNames[proto], rule}]++
	s.mu.Unlock()
}

func (s *stats) authFailed(proto int, reason string) {
	s.mu.Lock()
	s.authFailure[[2]string{protoNames[proto], reason}]++
	s.mu.Unlock()
}

func (s *stats) cut(reason string) {
	s.mu.Lock()
	s.cuts[reason]++
	s.mu.Unlock()
}

// Refusals returns the targets the destination policy refused, by path
// ("tcp", "udp") and rule. A UDP association counts every refused packet.
func (s *Service) Refusals() map[string]map[string]uint64 {
	s.stats.mu.Lock()
	defer s.stats.mu.Unlock()
	out := map[string]map[string]uint64{}
	for k, n := range s.stats.refusals {
		if out[k[0]] == nil {
			out[k[0]] = map[string]uint64{}
		}
		out[k[0]][k[1]] = n
	}
	return out
}

// AuthFailures returns the connections that showed no valid key, by
// path and reason (unknown-key, replay, server-salt).
func (s *Service) AuthFailures() map[string]map[string]uint64 {
	s.stats.mu.Lock()
	defer s.stats.mu.Unlock()
	out := map[string]map[string]uint64{}
	for k, n := range s.stats.authFailure {
		if out[k[0]] == nil {
			out[k[0]] = map[string]uint64{}
		}
		out[k[0]][k[1]] = n
	}
	return out
}

// Cuts returns the open connections cut, by reason (removed, blocked).
func (s *Service) Cuts() map[string]uint64 {
	s.stats.mu.Lock()
	defer s.stats.mu.Unlock()
	return maps.Clone(s.stats.cuts)
}

var (
	descConns       = prometheus.NewDesc("tariq_outline_connections", "Open Outline connections (TCP streams, UDP associations) by member.", []string{"member", "proto"}, nil)
	descConnsTotal  = prometheus.NewDesc("tariq_outline_connections_total", "Outline connections that authenticated, by member.", []string{"member", "proto"}, nil)
	descBytes       = prometheus.NewDesc("tariq_outline_bytes_total", "Bytes on the Outline WebSocket paths, by member.", []string{"member", "direction"}, nil)
	descRefused     = prometheus.NewDesc("tariq_outline_targets_refused_total", "Outline targets refused by the destination policy (UDP: per packet), by rule.", []string{"proto", "rule"}, nil)
	descAuthFailure = prometheus.NewDesc("tariq_outline_auth_failures_total", "Outline connections that showed no valid key.", []string{"proto", "reason"}, nil)
	descCuts        = prometheus.NewDesc("tariq_outline_connections_cut_total", "Open Outline connections cut because their member was removed or blocked.", []string{"reason"}, nil)
)

// Collector returns a Prometheus collector over the service, reading its
// counters at scrape time.
func (s *Service) Collector() prometheus.Collector { return collector{s} }

type collector struct{ s *Service }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descConns, descConnsTotal, descBytes, descRefused, descAuthFailure, descCuts} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	type row struct {
		name  string
		t     Traffic
		open  [2]int
		total [2]uint64
	}
	c.s.mu.Lock()
	rows := make([]row, 0, len(c.s.accounts))
	for name, a := range c.s.accounts {
		rows = append(rows, row{name, a.traffic(), a.open, a.total})
	}
	c.s.mu.Unlock()
	for _, r := range rows {
		for p, proto := range protoNames {
			ch <- prometheus.MustNewConstMetric(descConns, prometheus.GaugeValue, float64(r.open[p]), r.name, proto)
			ch <- prometheus.MustNewConstMetric(descConnsTotal, prometheus.CounterValue, float64(r.total[p]), r.name, proto)
		}
		ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(r.t.In), r.name, "from_member")
		ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(r.t.Out), r.name, "to_member")
	}
	for proto, rules := range c.s.Refusals() {
		for rule, n := range rules {
			ch <- prometheus.MustNewConstMetric(descRefused, prometheus.CounterValue, float64(n), proto, rule)
		}
	}
	for proto, reasons := range c.s.AuthFailures() {
		for reason, n := range reasons {
			ch <- prometheus.MustNewConstMetric(descAuthFailure, prometheus.CounterValue, float64(n), proto, reason)
		}
	}
	for reason, n := range c.s.Cuts() {
		ch <- prometheus.MustNewConstMetric(descCuts, prometheus.CounterValue, float64(n), reason)
	}
}
