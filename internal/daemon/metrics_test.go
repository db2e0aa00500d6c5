package daemon

import (
	"net/http"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/tariq-vpn/tariq/internal/testutil"
)

// scrape fetches and parses the metrics endpoint.
func scrape(t *testing.T, r *running) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + r.d.MetricsAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct == "" {
		t.Error("no content type")
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("metrics do not parse: %v", err)
	}
	return fams
}

func gauge(fams map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	f, ok := fams[name]
	if !ok {
		return 0, false
	}
	for _, m := range f.GetMetric() {
		match := true
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			match = match && found
		}
		if !match {
			continue
		}
		switch {
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		}
	}
	return 0, false
}

func TestMetricsShowLiveAllocation(t *testing.T) {
	r := startDaemon(t, "  users: {alice: wonderland}\n")
	relayed, err := r.allocate(t, "alice", "wonderland")
	if err != nil {
		t.Fatal(err)
	}
	if err := relayOnce(relayed, testutil.UDPEchoOn(t, "127.0.0.1:0").LocalAddr()); err != nil {
		t.Fatal(err)
	}
	r.allocate(t, "alice", "wrong") // one auth failure
	fams := scrape(t, r)
	for _, c := range []struct {
		name   string
		labels []string
		min    float64
	}{
		{"tariq_turn_allocations", nil, 1},
		{"tariq_turn_allocations_created_total", nil, 1},
		{"tariq_turn_relayed_bytes_total", []string{"direction", "to_peer"}, 18},
		{"tariq_turn_relayed_bytes_total", []string{"direction", "from_peer"}, 18},
		{"tariq_turn_auth_failures_total", []string{"reason", "bad-integrity"}, 1},
		{"tariq_certificate_expiry_seconds", nil, 1},
		{"go_goroutines", nil, 1},
	} {
		v, ok := gauge(fams, c.name, c.labels...)
		if !ok || v < c.min {
			t.Errorf("%s%v = %v (present %v), want at least %v", c.name, c.labels, v, ok, c.min)
		}
	}
	if v, _ := gauge(fams, "tariq_turn_allocations"); v != 1 {
		t.Errorf("live allocations = %v, want exactly 1", v)
	}
}
