package vpn

import (
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"golang.zx2c4.com/wireguard/tun"
)

// memTUN is an inner TUN in memory: packets put on toRead come out of
// Read, one per call; Write records what the shaper passed.
type memTUN struct {
	toRead chan []byte
	events chan tun.Event
	closed chan struct{}
	once   sync.Once

	mu      sync.Mutex
	written [][]byte
}

func newMemTUN() *memTUN {
	return &memTUN{toRead: make(chan []byte, 4096), events: make(chan tun.Event), closed: make(chan struct{})}
}

func (m *memTUN) File() *os.File { return nil }
func (m *memTUN) Read(bufs [][]byte, sizes []int, off int) (int, error) {
	select {
	case p := <-m.toRead:
		sizes[0] = copy(bufs[0][off:], p)
		return 1, nil
	case <-m.closed:
		return 0, os.ErrClosed
	}
}
func (m *memTUN) Write(bufs [][]byte, off int) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, b := range bufs {
		m.written = append(m.written, append([]byte(nil), b[off:]...))
	}
	return len(bufs), nil
}
func (m *memTUN) MTU() (int, error)        { return 1420, nil }
func (m *memTUN) Name() (string, error)    { return "mem0", nil }
func (m *memTUN) Events() <-chan tun.Event { return m.events }
func (m *memTUN) BatchSize() int           { return 1 }
func (m *memTUN) Close() error {
	m.once.Do(func() { close(m.closed); close(m.events) })
	return nil
}

func (m *memTUN) takeWritten() [][]byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	w := m.written
	m.written = nil
	return w
}

// ipv4Packet returns an IPv4 packet of n bytes from src to dst.
func ipv4Packet(src, dst string, n int) []byte {
	p := make([]byte, n)
	p[0] = 0x45
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(p[12:16], s[:])
	copy(p[16:20], d[:])
	return p
}

const (
	momAddr   = "10.77.0.2"
	dadAddr   = "10.77.0.3"
	internet  = "198.51.100.7"
	writeOff  = 16
	testBatch = 8
)

// harness reads what the shaper hands the device toward members.
type harness struct {
	t     *testing.T
	inner *memTUN
	s     *shapedTUN
	mu    sync.Mutex
	down  [][]byte // what Read returned
}

func newHarness(t *testing.T) *harness {
	h := &harness{t: t, inner: newMemTUN()}
	h.s = newShapedTUN(h.inner, nil)
	h.s.SetGroups(map[netip.Addr]string{
		netip.MustParseAddr(momAddr): "mom",
		netip.MustParseAddr(dadAddr): "dad",
	}, map[string]GroupLimits{"mom": {}, "dad": {}})
	go func() {
		bufs := make([][]byte, testBatch)
		for i := range bufs {
			bufs[i] = make([]byte, 2048)
		}
		sizes := make([]int, testBatch)
		for {
			n, err := h.s.Read(bufs, sizes, writeOff)
			if err != nil {
				return
			}
			h.mu.Lock()
			for i := range n {
				h.down = append(h.down, append([]byte(nil), bufs[i][writeOff:writeOff+sizes[i]]...))
			}
			h.mu.Unlock()
		}
	}()
	t.Cleanup(func() { h.s.Close() })
	return h
}

func (h *harness) takeDown() [][]byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	d := h.down
	h.down = nil
	return d
}

// up writes packets as the device does after decrypting them.
func (h *harness) up(pkts ...[]byte) {
	bufs := make([][]byte, len(pkts))
	for i, p := range pkts {
		bufs[i] = append(make([]byte, writeOff), p...)
	}
	h.s.Write(bufs, writeOff)
}

func totalLen(pkts [][]byte) (n int) {
	for _, p := range pkts {
		n += len(p)
	}
	return n
}

func TestShaperCountsPerGroup(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		h.up(ipv4Packet(momAddr, internet, 100), ipv4Packet(dadAddr, internet, 300), ipv4Packet("10.77.0.9", internet, 50))
		h.inner.toRead <- ipv4Packet(internet, momAddr, 1000)
		h.inner.toRead <- ipv4Packet(internet, dadAddr, 400)
		synctest.Wait()
		if got := len(h.inner.takeWritten()); got != 3 {
			t.Errorf("%d packets written toward the internet, want 3 (an unknown source passes uncounted)", got)
		}
		if got := len(h.takeDown()); got != 2 {
			t.Errorf("%d packets read toward members, want 2", got)
		}
		u := h.s.Usage()
		if u["mom"] != (Traffic{In: 100, Out: 1000}) || u["dad"] != (Traffic{In: 300, Out: 400}) {
			t.Errorf("usage %+v", u)
		}
	})
}

func TestShaperBudgetCutsAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		h.up(ipv4Packet(momAddr, internet, 500))
		synctest.Wait()
		total := h.s.Usage()["mom"].Total()
		// 1200 bytes left past what was counted: two 500-byte packets
		// pass, the third (either way) does not, nor anything after.
		h.s.SetGroups(map[netip.Addr]string{netip.MustParseAddr(momAddr): "mom", netip.MustParseAddr(dadAddr): "dad"},
			map[string]GroupLimits{"mom": {Budgeted: true, Remaining: 1200, AsOf: total}, "dad": {}})
		h.inner.takeWritten()
		h.up(ipv4Packet(momAddr, internet, 500))
		h.inner.toRead <- ipv4Packet(internet, momAddr, 500)
		h.inner.toRead <- ipv4Packet(internet, momAddr, 500)
		synctest.Wait()
		h.up(ipv4Packet(momAddr, internet, 500), ipv4Packet(dadAddr, internet, 500))
		synctest.Wait()
		if got, want := len(h.takeDown()), 1; got != want {
			t.Errorf("%d packets to mom, want %d", got, want)
		}
		if got := h.inner.takeWritten(); len(got) != 2 {
			t.Errorf("%d packets from mom and dad, want 2 (mom's first, and dad's)", len(got))
		}
		// The packet that did not fit spent the 200 bytes left: her count
		// reaches the budget, which the members model reads as used up.
		if got := h.s.Usage()["mom"].Total(); got != total+1200 {
			t.Errorf("mom's total %d, want %d (the budget, used up)", got, total+1200)
		}
		// A raised budget lets her through again.
		h.s.SetGroups(map[netip.Addr]string{netip.MustParseAddr(momAddr): "mom"},
			map[string]GroupLimits{"mom": {Budgeted: true, Remaining: 10000, AsOf: h.s.Usage()["mom"].Total()}})
		h.up(ipv4Packet(momAddr, internet, 500))
		synctest.Wait()
		if got := len(h.inner.takeWritten()); got != 1 {
			t.Errorf("after raising the budget %d packets passed, want 1", got)
		}
	})
}

// TestShaperBudgetReadsUsedUp: the packet that does not fit a group's
// budget spends what is left, so that its count reaches the budget
// exactly, and packets passing at once from several goroutines (the
// device's receivers, the TUN reader) never take it past. The members
// model cuts a member off when their count reaches the data limit: a
// count left a packet short of it, as it was, stopped the member's
// traffic while status, the metrics and the invite page called them
// active and their devices still handshook.
func TestShaperBudgetReadsUsedUp(t *testing.T) {
	const budget = 1 << 20
	for range 20 {
		var g group
		g.cutAt.Store(budget)
		var passed atomic.Uint64
		var wg sync.WaitGroup
		for i := range 8 {
			dir := &g.in
			if i%2 == 1 {
				dir = &g.out
			}
			n := 40 + i*197 // sizes that do not add up to the budget
			wg.Go(func() {
				for g.pass(n, dir) {
					passed.Add(uint64(n))
				}
			})
		}
		wg.Wait()
		if p := passed.Load(); p > budget {
			t.Fatalf("%d bytes passed a budget of %d", p, budget)
		}
		if got := g.in.Load() + g.out.Load(); got != budget || g.total() != budget {
			t.Fatalf("count %d (sum %d) once the budget of %d stopped every packet, want the budget, used up", got, g.total(), budget)
		}
		if g.pass(20, &g.in) || g.total() != budget {
			t.Fatalf("a packet passed a used-up budget, or the count moved: %d", g.total())
		}
	}
}

func TestShaperRate(t *testing.T) {
	const rate = 1 << 20 // 1 MiB/s, i.e. 8.4 Mbit/s
	for _, dir := range []string{"up", "down"} {
		t.Run(dir, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := newHarness(t)
				h.s.SetGroups(map[netip.Addr]string{netip.MustParseAddr(momAddr): "mom", netip.MustParseAddr(dadAddr): "dad"},
					map[string]GroupLimits{"mom": {Rate: rate}, "dad": {}})
				// Offer 4 MiB/s in 1400-byte packets for 5 s: a tick every
				// millisecond with 3 packets.
				start := time.Now()
				var got int
				for time.Since(start) < 5*time.Second {
					for range 3 {
						if dir == "up" {
							h.up(ipv4Packet(momAddr, internet, 1400))
						} else {
							h.inner.toRead <- ipv4Packet(internet, momAddr, 1400)
						}
					}
					time.Sleep(time.Millisecond)
					synctest.Wait()
					if dir == "up" {
						got += totalLen(h.inner.takeWritten())
					} else {
						got += totalLen(h.takeDown())
					}
				}
				want := 5 * rate
				if got < want*95/100 || got > want*105/100+64<<10 {
					t.Errorf("passed %d bytes in 5 s at %d B/s, want %d (within 5%% plus one burst)", got, rate, want)
				}
			})
		})
	}
}

// TestShaperSmallPacketsSkipTheQueue: while mom's download saturates her
// cap, her voice packets go at once, not behind the queued bulk.
func TestShaperSmallPacketsSkipTheQueue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		h.s.SetGroups(map[netip.Addr]string{netip.MustParseAddr(momAddr): "mom"},
			map[string]GroupLimits{"mom": {Rate: 64 << 10}})
		for range 40 { // ~56 KB of bulk: most of it queued (burst 16 KiB)
			h.inner.toRead <- ipv4Packet(internet, momAddr, 1400)
		}
		synctest.Wait()
		h.takeDown()
		var late []time.Duration
		for range 20 {
			sent := time.Now()
			h.inner.toRead <- ipv4Packet(internet, momAddr, 188)
			h.up(ipv4Packet(momAddr, internet, 188))
			synctest.Wait()
			var small int
			for _, p := range h.takeDown() {
				if len(p) == 188 {
					small++
				}
			}
			for _, p := range h.inner.takeWritten() {
				if len(p) == 188 {
					small++
				}
			}
			if small != 2 {
				late = append(late, time.Since(sent))
			}
			time.Sleep(20 * time.Millisecond)
		}
		if len(late) > 0 {
			t.Errorf("%d of 20 voice packet pairs waited behind bulk", len(late))
		}
	})
}

func TestShaperUncappingReleasesQueue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		addrs := map[netip.Addr]string{netip.MustParseAddr(momAddr): "mom"}
		h.s.SetGroups(addrs, map[string]GroupLimits{"mom": {Rate: 10 << 10}})
		for range 30 {
			h.up(ipv4Packet(momAddr, internet, 1400))
		}
		synctest.Wait()
		first := len(h.inner.takeWritten())
		h.s.SetGroups(addrs, map[string]GroupLimits{"mom": {}})
		synctest.Wait()
		if got := first + len(h.inner.takeWritten()); got < 30-2 {
			t.Errorf("%d of 30 packets passed after the cap was lifted", got)
		}
	})
}

func TestShaperCloseStopsEverything(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		inner := newMemTUN()
		s := newShapedTUN(inner, nil)
		s.SetGroups(map[netip.Addr]string{netip.MustParseAddr(momAddr): "mom"}, map[string]GroupLimits{"mom": {Rate: 1000}})
		for range 10 {
			inner.toRead <- ipv4Packet(internet, momAddr, 1400)
		}
		done := make(chan error)
		go func() {
			bufs, sizes := [][]byte{make([]byte, 2048)}, []int{0}
			for {
				if _, err := s.Read(bufs, sizes, 0); err != nil {
					done <- err
					return
				}
			}
		}()
		time.Sleep(100 * time.Millisecond)
		s.Close()
		if err := <-done; err == nil {
			t.Error("Read after Close returned no error")
		}
		// synctest.Test fails if any goroutine of the bubble is left.
	})
}

func BenchmarkShapedTUNWrite(b *testing.B) {
	for _, mode := range []string{"plain", "counted", "capped-high"} {
		b.Run(mode, func(b *testing.B) {
			inner := &discardTUN{memTUN: newMemTUN()}
			var dev tun.Device = inner
			var s *shapedTUN
			if mode != "plain" {
				s = newShapedTUN(inner, nil)
				lim := GroupLimits{}
				if mode == "capped-high" {
					lim.Rate = 1 << 40
				}
				s.SetGroups(map[netip.Addr]string{netip.MustParseAddr(momAddr): "mom"}, map[string]GroupLimits{"mom": lim})
				dev = s
				defer s.Close()
			}
			bufs := make([][]byte, 64)
			for i := range bufs {
				bufs[i] = append(make([]byte, writeOff), ipv4Packet(momAddr, internet, 1400)...)
			}
			b.SetBytes(64 * 1400)
			b.ReportAllocs()
			for b.Loop() {
				dev.Write(bufs, writeOff)
			}
		})
	}
}

type discardTUN struct{ *memTUN }

func (d *discardTUN) Write(bufs [][]byte, off int) (int, error) { return len(bufs), nil }
