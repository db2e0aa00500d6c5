package vpn

import (
	"errors"
	"math"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/tun"
)

// Counting and shaping per member, around the unmodified wireguard-go
// engine.
//
// shapedTUN sits between the device and its TUN. Every packet's inner
// address names the device it belongs to (wireguard-go has already
// dropped any packet whose source is outside its peer's allowed IPs), and
// the device names its group: the member who owns it. For each group it
//
//   - counts bytes both ways (the inner packets: what the member's
//     devices sent and what went to them), for usage and metrics;
//   - cuts the group off at once when its byte budget runs out (a data
//     limit), before the device even learns of it;
//   - shapes each direction to the group's rate with a token bucket
//     shared by all its devices, in two bands: packets of at most
//     smallPacket bytes (voice, ACKs, DNS) never wait behind the group's
//     bulk transfer; bulk waits for tokens in a bounded queue and is
//     dropped beyond it, which TCP reads as congestion.
//
// Toward the member (TUN Read, to be encrypted) a reader goroutine reads
// the TUN into the shaper's own buffers, so that packets released later by
// a bucket can be handed to the device's single TUN reader without waiting
// for other traffic. From the member (TUN Write, after decryption) the
// device's per-peer goroutines call Write; packets that must wait are
// copied into their bucket and written by the release goroutine.

const (
	// smallPacket is the largest packet (IP header included) of the
	// priority band: a 20 ms Opus frame with RTP, UDP and IPv6 headers is
	// about 200 bytes, TCP ACKs 52-72.
	smallPacket = 256
	// smallQueue bounds a bucket's queued small packets.
	smallQueue = 256
)

// Traffic is a group's byte counts since the process started.
type Traffic struct {
	// In is what the group's devices sent through the tunnel; Out is what
	// the tunnel delivered to them.
	In, Out uint64
}

// Total is both directions.
func (t Traffic) Total() uint64 { return t.In + t.Out }

// GroupLimits are what a group may pass.
type GroupLimits struct {
	// Rate caps each direction, in bytes per second; 0 means no cap.
	Rate uint64
	// Budgeted says Remaining applies: past AsOf (the group's Total when
	// Remaining was worked out) it may pass Remaining more bytes, both
	// directions together, and no more. The first packet that does not
	// fit what is left is dropped and spends the rest, so that the
	// group's Total reaches the budget exactly: a budget that stops
	// traffic reads as used up, never as a few bytes short of it.
	Budgeted  bool
	Remaining uint64
	AsOf      uint64
}

// group is one member's counters and buckets. Groups live as long as the
// shaper, so that counters never go backwards while a member's devices
// come and go.
type group struct {
	name    string
	in, out atomic.Uint64
	// sum is in + out, taken before either grows: the budget is checked
	// and counted on it in one compare-and-swap, so that packets passing
	// at once from the device's goroutines and the TUN reader never take
	// the group past its budget together.
	sum      atomic.Uint64
	cutAt    atomic.Uint64 // sum beyond which packets drop; MaxUint64: no budget
	up, down bucket
}

func (g *group) total() uint64 { return g.sum.Load() }

// pass reports whether n more bytes fit the group's budget, and counts
// them toward dir (g.in or g.out) if so. A packet that does not fit
// spends what is left of the budget (counted toward dir).
func (g *group) pass(n int, dir *atomic.Uint64) bool {
	cut := g.cutAt.Load()
	if cut == math.MaxUint64 {
		g.sum.Add(uint64(n))
		dir.Add(uint64(n))
		return true
	}
	for {
		t := g.sum.Load()
		if t+uint64(n) <= cut {
			if g.sum.CompareAndSwap(t, t+uint64(n)) {
				dir.Add(uint64(n))
				return true
			}
			continue
		}
		if t >= cut {
			return false
		}
		if g.sum.CompareAndSwap(t, cut) {
			dir.Add(cut - t)
			return false
		}
	}
}

// shapePolicy maps device addresses to their groups; it is replaced
// whole, never modified.
type shapePolicy struct {
	byAddr map[netip.Addr]*group
}

func (p *shapePolicy) lookup(a netip.Addr) *group {
	if p == nil {
		return nil
	}
	return p.byAddr[a]
}

// packetAddrs returns an IP packet's source and destination.
func packetAddrs(pkt []byte) (src, dst netip.Addr, ok bool) {
	if len(pkt) == 0 {
		return src, dst, false
	}
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < 20 {
			return src, dst, false
		}
		return netip.AddrFrom4([4]byte(pkt[12:16])), netip.AddrFrom4([4]byte(pkt[16:20])), true
	case 6:
		if len(pkt) < 40 {
			return src, dst, false
		}
		return netip.AddrFrom16([16]byte(pkt[8:24])), netip.AddrFrom16([16]byte(pkt[24:40])), true
	}
	return src, dst, false
}

// bucket is a token bucket with a two-band queue, for one direction of
// one group. Rate 0 passes everything.
type bucket struct {
	capped atomic.Bool // rate > 0; read without mu on the hot path

	mu        sync.Mutex // guards everything below
	rate      float64    // bytes per second
	burst     float64    // most tokens it holds
	tokens    float64    // may go down to -burst for small packets
	last      time.Time
	small     [][]byte
	bulk      [][]byte
	bulkBytes int
	bulkLimit int
}

// setRate changes the bucket's rate; it reports whether packets are
// queued that the new rate may release (the caller kicks the releaser).
func (b *bucket) setRate(rate uint64, now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refillLocked(now)
	b.rate = float64(rate)
	// A burst of 50 ms of traffic, and never less than a few full
	// packets, so that a TCP flow reaches the rate; a queue of 100 ms.
	b.burst = max(b.rate/20, 16<<10)
	b.bulkLimit = int(max(b.rate/10, 64<<10))
	b.tokens = min(b.tokens, b.burst)
	b.capped.Store(rate > 0)
	return len(b.small)+len(b.bulk) > 0
}

func (b *bucket) refillLocked(now time.Time) {
	if !b.last.IsZero() && b.rate > 0 {
		b.tokens = min(b.burst, b.tokens+b.rate*now.Sub(b.last).Seconds())
	}
	b.last = now
}

// takeLocked reports whether a packet of n bytes may pass now, ahead of
// nothing queued in its band, and takes its tokens if so.
func (b *bucket) takeLocked(now time.Time, n int) bool {
	if b.rate == 0 {
		return true
	}
	b.refillLocked(now)
	if n <= smallPacket {
		if len(b.small) == 0 && b.tokens > -b.burst {
			b.tokens -= float64(n)
			return true
		}
		return false
	}
	if len(b.small) == 0 && len(b.bulk) == 0 && b.tokens >= 0 {
		b.tokens -= float64(n)
		return true
	}
	return false
}

// queueLocked keeps pkt (the bucket now owns it) until tokens allow; it
// reports false if the band is full and pkt was not kept.
func (b *bucket) queueLocked(pkt []byte, n int) bool {
	if n <= smallPacket {
		if len(b.small) >= smallQueue {
			return false
		}
		b.small = append(b.small, pkt)
		return true
	}
	if b.bulkBytes+n > b.bulkLimit {
		return false
	}
	b.bulk = append(b.bulk, pkt)
	b.bulkBytes += n
	return true
}

// releaseLocked appends to out the queued packets whose tokens are there
// (size returns a packet's IP length), small ones first, and returns how
// long until the next one may go (0: nothing left).
func (b *bucket) releaseLocked(now time.Time, out [][]byte, size func([]byte) int) ([][]byte, time.Duration) {
	if b.rate == 0 { // uncapped since: everything goes
		out = append(append(out, b.small...), b.bulk...)
		b.small, b.bulk, b.bulkBytes = b.small[:0], b.bulk[:0], 0
		return out, 0
	}
	b.refillLocked(now)
	for len(b.small) > 0 && b.tokens > -b.burst {
		p := b.small[0]
		b.small = b.small[1:]
		b.tokens -= float64(size(p))
		out = append(out, p)
	}
	for len(b.small) == 0 && len(b.bulk) > 0 && b.tokens >= 0 {
		p := b.bulk[0]
		b.bulk = b.bulk[1:]
		n := size(p)
		b.bulkBytes -= n
		b.tokens -= float64(n)
		out = append(out, p)
	}
	var need float64
	switch {
	case len(b.small) > 0:
		need = -b.burst - b.tokens + 1
	case len(b.bulk) > 0:
		need = -b.tokens
	default:
		return out, 0
	}
	return out, max(time.Duration(need/b.rate*float64(time.Second)), time.Millisecond)
}

// direction is the release side of one direction: the groups whose
// bucket has queued packets, and a kick when one gets its first.
//
// Lock order: a bucket's mu, then its direction's mu.
type direction struct {
	mu     sync.Mutex // guards active
	active map[*group]struct{}
	kick   chan struct{}
}

// activate lists g, whose bucket in d just queued a packet; the caller
// holds that bucket's mu.
func (d *direction) activate(g *group) {
	d.mu.Lock()
	d.active[g] = struct{}{}
	d.mu.Unlock()
	d.poke()
}

func (d *direction) poke() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// shapedTUN is the TUN device as the wireguard-go device sees it.
type shapedTUN struct {
	inner tun.Device
	now   func() time.Time

	policy atomic.Pointer[shapePolicy]

	mu     sync.Mutex // guards groups
	groups map[string]*group

	up, down direction

	// Toward the member: the reader fills batches from the inner TUN;
	// Read hands them to the device. released carries packets a bucket
	// let go. leftover is only touched by Read (one caller: the device's
	// TUN reader).
	ready    chan *readBatch
	free     chan *readBatch
	released chan [][]byte
	leftover [][]byte
	mtu      atomic.Int64

	upOffset atomic.Int64 // the offset Write was last called with
	scratch  sync.Pool    // *[][]byte for Write's kept packets
	pktPool  sync.Pool    // *[]byte copies of queued packets

	events    chan tun.Event
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error
	wg        sync.WaitGroup
}

type readBatch struct {
	bufs  [][]byte
	sizes []int
	n     int
	err   error
}

var _ tun.Device = (*shapedTUN)(nil)

// readBatches is how many batches the reader may fill ahead of Read.
const readBatches = 2

// newShapedTUN wraps inner; now is the clock (nil: time.Now).
func newShapedTUN(inner tun.Device, now func() time.Time) *shapedTUN {
	if now == nil {
		now = time.Now
	}
	s := &shapedTUN{
		inner:    inner,
		now:      now,
		groups:   map[string]*group{},
		up:       direction{active: map[*group]struct{}{}, kick: make(chan struct{}, 1)},
		down:     direction{active: map[*group]struct{}{}, kick: make(chan struct{}, 1)},
		ready:    make(chan *readBatch, readBatches),
		free:     make(chan *readBatch, readBatches),
		released: make(chan [][]byte),
		events:   make(chan tun.Event, 4),
		done:     make(chan struct{}),
	}
	mtu, err := inner.MTU()
	if err != nil || mtu <= 0 {
		mtu = 1500
	}
	s.mtu.Store(int64(mtu))
	s.upOffset.Store(-1)
	for range readBatches {
		s.free <- s.newBatch()
	}
	s.wg.Add(4)
	go s.readLoop()
	go s.releaseLoop(&s.up, s.writeReleased)
	go s.releaseLoop(&s.down, s.sendReleased)
	go s.eventLoop()
	return s
}

// newBatch sizes a batch for the TUN's MTU. The first buffer takes any
// packet the TUN can hand over unsplit (wireguard-go reads a
// non-segmented packet into it); segments of a GSO read are at most the
// MTU plus headers.
func (s *shapedTUN) newBatch() *readBatch {
	n := max(s.inner.BatchSize(), 1)
	size := int(s.mtu.Load()) + 128
	b := &readBatch{bufs: make([][]byte, n), sizes: make([]int, n)}
	b.bufs[0] = make([]byte, 65535)
	for i := 1; i < n; i++ {
		b.bufs[i] = make([]byte, size)
	}
	return b
}

// SetGroups replaces which addresses belong to which group, and each
// group's limits. Addresses not listed are neither counted nor shaped.
func (s *shapedTUN) SetGroups(addrs map[netip.Addr]string, limits map[string]GroupLimits) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	pol := &shapePolicy{byAddr: make(map[netip.Addr]*group, len(addrs))}
	for a, name := range addrs {
		pol.byAddr[a.Unmap()] = s.groupLocked(name)
	}
	for name, g := range s.groups {
		lim := limits[name]
		cut := uint64(math.MaxUint64)
		if lim.Budgeted {
			cut = lim.AsOf + min(lim.Remaining, math.MaxUint64-lim.AsOf-1)
		}
		g.cutAt.Store(cut)
		if _, live := limits[name]; !live {
			lim.Rate = 0
		}
		if g.up.setRate(lim.Rate, now) {
			s.up.poke()
		}
		if g.down.setRate(lim.Rate, now) {
			s.down.poke()
		}
	}
	s.policy.Store(pol)
}

func (s *shapedTUN) groupLocked(name string) *group {
	g := s.groups[name]
	if g == nil {
		g = &group{name: name}
		g.cutAt.Store(math.MaxUint64)
		s.groups[name] = g
	}
	return g
}

// Usage returns every group's counters.
func (s *shapedTUN) Usage() map[string]Traffic {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]Traffic, len(s.groups))
	for name, g := range s.groups {
		out[name] = Traffic{In: g.in.Load(), Out: g.out.Load()}
	}
	return out
}

func (s *shapedTUN) getPacket(n int) []byte {
	if n <= 2048 {
		if p, ok := s.pktPool.Get().(*[]byte); ok {
			return (*p)[:n]
		}
		b := make([]byte, n, 2048)
		return b
	}
	return make([]byte, n)
}

func (s *shapedTUN) putPacket(p []byte) {
	if cap(p) == 2048 {
		p = p[:cap(p)]
		s.pktPool.Put(&p)
	}
}

// readLoop reads the inner TUN, counts each packet toward its group, and
// either leaves it in the batch for Read or moves it to its group's
// bucket (its size set to 0 in the batch).
func (s *shapedTUN) readLoop() {
	defer s.wg.Done()
	for {
		var b *readBatch
		select {
		case b = <-s.free:
		case <-s.done:
			return
		}
		if len(b.bufs) > 1 && len(b.bufs[1]) < int(s.mtu.Load())+128 {
			b = s.newBatch() // the MTU grew
		}
		n, err := s.inner.Read(b.bufs, b.sizes, 0)
		if errors.Is(err, tun.ErrTooManySegments) {
			err = nil // what was split is there; the rest is dropped, as wireguard-go does
		}
		b.n, b.err = n, err
		pol := s.policy.Load()
		now := time.Time{}
		for i := range n {
			pkt := b.bufs[i][:b.sizes[i]]
			_, dst, ok := packetAddrs(pkt)
			if !ok {
				continue
			}
			g := pol.lookup(dst)
			if g == nil {
				continue
			}
			if !g.down.capped.Load() {
				if !g.pass(len(pkt), &g.out) {
					b.sizes[i] = 0
				}
				continue
			}
			if now.IsZero() {
				now = s.now()
			}
			b.sizes[i] = 0
			g.down.mu.Lock()
			if g.down.takeLocked(now, len(pkt)) {
				g.down.mu.Unlock()
				if g.pass(len(pkt), &g.out) {
					b.sizes[i] = len(pkt)
				}
				continue
			}
			cp := s.getPacket(len(pkt))
			copy(cp, pkt)
			if g.down.queueLocked(cp, len(pkt)) {
				s.down.activate(g)
			} else {
				s.putPacket(cp)
			}
			g.down.mu.Unlock()
		}
		select {
		case s.ready <- b:
		case <-s.done:
			return
		}
		if err != nil {
			return
		}
	}
}

// Read hands the device the next packets toward members: those the reader
// passed, and those buckets released.
func (s *shapedTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	for {
		if len(s.leftover) > 0 {
			return s.deliverReleased(bufs, sizes, offset), nil
		}
		select {
		case b := <-s.ready:
			n, j := 0, 0
			for i := 0; i < b.n && j < len(bufs); i++ {
				if b.sizes[i] == 0 {
					continue
				}
				sizes[j] = copy(bufs[j][offset:], b.bufs[i][:b.sizes[i]])
				j++
				n++
			}
			err := b.err
			if err == nil {
				s.free <- b
			}
			if n > 0 || err != nil {
				return n, err
			}
		case pkts := <-s.released:
			s.leftover = pkts
		case <-s.done:
			return 0, os.ErrClosed
		}
	}
}

func (s *shapedTUN) deliverReleased(bufs [][]byte, sizes []int, offset int) int {
	n := 0
	for n < len(bufs) && len(s.leftover) > 0 {
		p := s.leftover[0]
		s.leftover = s.leftover[1:]
		sizes[n] = copy(bufs[n][offset:], p)
		s.putPacket(p)
		n++
	}
	return n
}

// Write passes the device's decrypted packets to the TUN, but for those
// their group's bucket holds back.
func (s *shapedTUN) Write(bufs [][]byte, offset int) (int, error) {
	pol := s.policy.Load()
	if pol == nil || len(pol.byAddr) == 0 {
		return s.inner.Write(bufs, offset)
	}
	s.upOffset.Store(int64(offset))
	sp, _ := s.scratch.Get().(*[][]byte)
	if sp == nil {
		sp = new([][]byte)
	}
	kept := (*sp)[:0]
	var now time.Time
	held := 0
	for _, buf := range bufs {
		pkt := buf[offset:]
		src, _, ok := packetAddrs(pkt)
		g := pol.lookup(src)
		switch {
		case !ok || g == nil:
			kept = append(kept, buf)
		case !g.up.capped.Load():
			if g.pass(len(pkt), &g.in) {
				kept = append(kept, buf)
			} else {
				held++
			}
		default:
			if now.IsZero() {
				now = s.now()
			}
			held++
			g.up.mu.Lock()
			if g.up.takeLocked(now, len(pkt)) {
				g.up.mu.Unlock()
				if g.pass(len(pkt), &g.in) {
					kept = append(kept, buf)
					held--
				}
				continue
			}
			cp := s.getPacket(offset + len(pkt))
			copy(cp[offset:], pkt)
			if g.up.queueLocked(cp, len(pkt)) {
				s.up.activate(g)
			} else {
				s.putPacket(cp)
			}
			g.up.mu.Unlock()
		}
	}
	var n int
	var err error
	if len(kept) > 0 {
		n, err = s.inner.Write(kept, offset)
	}
	clear(kept)
	*sp = kept[:0]
	s.scratch.Put(sp)
	return n + held, err
}

// releaseLoop lets queued packets of one direction go as their buckets
// allow, through emit.
func (s *shapedTUN) releaseLoop(d *direction, emit func(g *group, pkts [][]byte)) {
	defer s.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var out [][]byte
	var active []*group
	for {
		d.mu.Lock()
		active = active[:0]
		for g := range d.active {
			active = append(active, g)
		}
		d.mu.Unlock()
		now := s.now()
		next := time.Hour
		size := s.ipLen(d)
		for _, g := range active {
			b := &g.up
			if d == &s.down {
				b = &g.down
			}
			b.mu.Lock()
			var wait time.Duration
			out, wait = b.releaseLocked(now, out[:0], size)
			if wait == 0 {
				d.mu.Lock()
				delete(d.active, g)
				d.mu.Unlock()
			} else {
				next = min(next, wait)
			}
			b.mu.Unlock()
			if len(out) > 0 {
				emit(g, out)
				clear(out)
			}
		}
		timer.Reset(next)
		select {
		case <-timer.C:
		case <-d.kick:
		case <-s.done:
			return
		}
	}
}

// ipLen returns how to read a queued packet's IP length in direction d:
// upward copies carry the device's write offset in front.
func (s *shapedTUN) ipLen(d *direction) func([]byte) int {
	if d == &s.up {
		off := int(s.upOffset.Load())
		return func(p []byte) int { return len(p) - off }
	}
	return func(p []byte) int { return len(p) }
}

// writeReleased writes packets from a group's devices that its bucket let
// go, counting those its budget still allows.
func (s *shapedTUN) writeReleased(g *group, pkts [][]byte) {
	off := int(s.upOffset.Load())
	kept := pkts[:0]
	for _, p := range pkts {
		if g.pass(len(p)-off, &g.in) {
			kept = append(kept, p)
		} else {
			s.putPacket(p)
		}
	}
	if len(kept) > 0 {
		s.inner.Write(kept, off) // errors: the packets are lost, as on any TUN write
	}
	for _, p := range kept {
		s.putPacket(p)
	}
}

// sendReleased hands packets toward a group's devices to Read.
func (s *shapedTUN) sendReleased(g *group, pkts [][]byte) {
	var kept [][]byte
	for _, p := range pkts {
		if g.pass(len(p), &g.out) {
			kept = append(kept, p)
		} else {
			s.putPacket(p)
		}
	}
	if len(kept) == 0 {
		return
	}
	select {
	case s.released <- kept:
	case <-s.done:
	}
}

func (s *shapedTUN) eventLoop() {
	defer s.wg.Done()
	defer close(s.events)
	for {
		select {
		case ev, ok := <-s.inner.Events():
			if !ok {
				return
			}
			if ev&tun.EventMTUUpdate != 0 {
				if mtu, err := s.inner.MTU(); err == nil && mtu > 0 {
					s.mtu.Store(int64(mtu))
				}
			}
			select {
			case s.events <- ev:
			case <-s.done:
				return
			}
		case <-s.done:
			return
		}
	}
}

// File returns the inner TUN's file.
func (s *shapedTUN) File() *os.File { return s.inner.File() }

// MTU returns the inner TUN's MTU.
func (s *shapedTUN) MTU() (int, error) { return s.inner.MTU() }

// Name returns the inner TUN's name.
func (s *shapedTUN) Name() (string, error) { return s.inner.Name() }

// Events forwards the inner TUN's events.
func (s *shapedTUN) Events() <-chan tun.Event { return s.events }

// BatchSize is the inner TUN's.
func (s *shapedTUN) BatchSize() int { return s.inner.BatchSize() }

// Close stops the shaper's goroutines and closes the inner TUN.
func (s *shapedTUN) Close() error {
	s.closeOnce.Do(func() {
		s.closeErr = s.inner.Close()
		close(s.done)
		s.wg.Wait()
	})
	return s.closeErr
}
