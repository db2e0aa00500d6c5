package vpn

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/stun/v4"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/tariq-vpn/tariq/config"
	"github.com/tariq-vpn/tariq/internal/testutil"
)

// anyPortBind is a real UDP bind (conn.NewDefaultBind) that opens on a
// port of the kernel's choosing whatever port it is asked for, and says
// which: the test's WireGuard ports without fixed port numbers.
type anyPortBind struct {
	conn.Bind
	port atomic.Uint32
}

var _ conn.Bind = (*anyPortBind)(nil)

func (b *anyPortBind) Open(uint16) ([]conn.ReceiveFunc, uint16, error) {
	fns, port, err := b.Bind.Open(0)
	b.port.Store(uint32(port))
	return fns, port, err
}

// startUDPServer runs the Service on real UDP sockets on loopback (and a
// channel TUN) and returns the ports its sockets got, in the bind's order:
// vpn.listen_port, then vpn.extra_ports, then the obfuscated port.
func startUDPServer(t *testing.T, cfg *config.Config) []int {
	t.Helper()
	var mu sync.Mutex
	var binds []*anyPortBind
	newBind := func() conn.Bind {
		mu.Lock()
		defer mu.Unlock()
		b := &anyPortBind{Bind: conn.NewDefaultBind()}
		binds = append(binds, b)
		return b
	}
	ct := tuntest.NewChannelTUN()
	s, err := New(cfg, Deps{Logger: testLogger(t), Identity: identity(t, cfg, testStore(t, cfg)), TUN: ct.TUN(), NewBind: newBind, DisableUAPI: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	mu.Lock()
	defer mu.Unlock()
	ports := make([]int, len(binds))
	for i, b := range binds {
		ports[i] = int(b.port.Load())
	}
	return ports
}

// TestSTUNFloodOneSource: while one address floods the WireGuard ports
// with Binding requests (10 times what the old global budget answered, for
// a bounded count), a member at another address who sends 20 requests,
// spread over the ports, gets every one answered (issue 9, item 8): it is
// far below its own per-source budget, which the flood cannot touch. The
// flood itself gets no more than its own budget.
func TestSTUNFloodOneSource(t *testing.T) {
	testutil.LeakCheck(t)
	cfg := testConfig(t)
	cfg.VPN.ExtraPorts = []int{443}
	cfg.VPN.Obfuscation = config.ObfuscationConfig{Enabled: true, ListenPort: 51821}
	ports := startUDPServer(t, cfg)
	if len(ports) != 3 {
		t.Fatalf("%d sockets, want 3", len(ports))
	}
	to := func(i int) *net.UDPAddr { return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: ports[i%len(ports)]} }

	flooder, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer flooder.Close()
	// The flood: 2,000 requests a second in bursts of 10, for as long as
	// the member takes, at most 10,000 requests.
	const floodMax = 10000
	start := time.Now()
	stop := make(chan struct{})
	var sent int
	flooded := make(chan struct{})
	go func() {
		defer close(flooded)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for sent < floodMax {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			for range 10 {
				req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
				flooder.WriteToUDP(req.Raw, to(sent))
				sent++
			}
		}
	}()
	var floodAnswered atomic.Int64
	readFlood := make(chan struct{})
	go func() {
		defer close(readFlood)
		b := make([]byte, 1500)
		for {
			n, _, err := flooder.ReadFromUDP(b)
			if err != nil {
				return
			}
			if m := (&stun.Message{Raw: b[:n]}); m.Decode() == nil && m.Type == stun.BindingSuccess {
				floodAnswered.Add(1)
			}
		}
	}()
	time.Sleep(200 * time.Millisecond) // the flood first: the old budget is gone

	member, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
	if err != nil {
		t.Fatal(err)
	}
	defer member.Close()
	// The member's requests, 50 ms apart, each to the next port; answers
	// are collected meanwhile, until 2 s after the last request.
	type answer struct {
		port int
		xa   stun.XORMappedAddress
	}
	want := map[[stun.TransactionIDSize]byte]int{} // transaction: request number
	got := map[[stun.TransactionIDSize]byte]answer{}
	collected := make(chan struct{})
	go func() {
		defer close(collected)
		b := make([]byte, 1500)
		for {
			n, from, err := member.ReadFromUDP(b)
			if err != nil {
				return
			}
			m := &stun.Message{Raw: append([]byte(nil), b[:n]...)}
			if m.Decode() != nil || m.Type != stun.BindingSuccess {
				continue
			}
			var a answer
			a.port = from.Port
			a.xa.GetFrom(m)
			got[m.TransactionID] = a
		}
	}()
	for i := range 20 {
		req := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
		want[req.TransactionID] = i
		if _, err := member.WriteToUDP(req.Raw, to(i)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	member.SetReadDeadline(time.Now().Add(2 * time.Second))
	<-collected
	answered := 0
	for id, i := range want {
		a, ok := got[id]
		if !ok {
			continue
		}
		answered++
		if a.port != to(i).Port || !a.xa.IP.Equal(net.IPv4(127, 0, 0, 2)) {
			t.Errorf("request %d to port %d: answer from port %d mapping %v", i, to(i).Port, a.port, a.xa)
		}
	}
	close(stop)
	<-flooded
	time.Sleep(200 * time.Millisecond) // the last answers to the flood
	flooder.Close()
	<-readFlood
	elapsed := time.Since(start)

	if answered != 20 {
		t.Errorf("the member got %d of 20 Binding requests answered during a one-source flood, want all", answered)
	}
	// The flood's source got at most its own bucket: the burst, and the
	// rate over the time it flooded.
	lim := defaultSTUNLimits()
	if most := int64(lim.PerSourceBurst) + int64(float64(lim.PerSourceRate)*elapsed.Seconds()) + 1; floodAnswered.Load() > most {
		t.Errorf("the flooding source got %d answers to %d requests in %v, more than its budget allows (%d)", floodAnswered.Load(), sent, elapsed, most)
	}
	t.Logf("flood: %d requests, %d answered in %v; member: %d of 20 answered", sent, floodAnswered.Load(), elapsed, answered)
}

// TestSTUNBudget: on a clock of the test's own, each source (an IPv4
// address, mapped or not; an IPv6 /64) has its own burst and rate; a
// source over its budget takes nothing from the global one; the global
// budget stops a flood from many sources; and memory stays bounded.
func TestSTUNBudget(t *testing.T) {
	lim := stunLimits{PerSourceRate: 10, PerSourceBurst: 5, Sources: 50, GlobalRate: 100, GlobalBurst: 100}
	b := newSTUNBudget(lim)
	now := time.Unix(1_000_000, 0)
	answered := func(src string, n int) int {
		a := netip.MustParseAddr(src)
		got := 0
		for range n {
			if b.allow(a, now) {
				got++
			}
		}
		return got
	}
	for _, tc := range []struct {
		src  string
		n    int
		want int
	}{
		{"192.0.2.1", 1000, 5},         // a flood: its burst, nothing more
		{"::ffff:192.0.2.1", 10, 0},    // the same source, mapped
		{"192.0.2.2", 5, 5},            // another source: untouched by the flood
		{"2001:db8:1:2::1", 3, 3},      // an IPv6 /64 …
		{"2001:db8:1:2:ffff::9", 5, 2}, // … shares one budget
		{"2001:db8:1:3::1", 5, 5},      // the next /64 has its own
	} {
		if got := answered(tc.src, tc.n); got != tc.want {
			t.Errorf("%s: %d of %d answered, want %d", tc.src, got, tc.n, tc.want)
		}
	}
	now = now.Add(100 * time.Millisecond) // one more for each source
	if got := answered("192.0.2.1", 1000); got != 1 {
		t.Errorf("the flooding source 100 ms later: %d answered, want 1", got)
	}

	// Many sources, 5 each, ten seconds later: the global budget, full
	// again, runs out at its burst, and the sources tracked stay within
	// Sources.
	now = now.Add(10 * time.Second)
	total := 0
	for i := range 200 {
		total += answered(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}).String(), 5)
	}
	if total != lim.GlobalBurst {
		t.Errorf("200 sources got %d answers in all, want the global burst %d", total, lim.GlobalBurst)
	}
	if n := b.per.Len(); n > lim.Sources {
		t.Errorf("%d sources tracked, more than %d", n, lim.Sources)
	}
}
