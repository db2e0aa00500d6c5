package mux

import (
	"container/list"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Limits bound the connections the mux holds before it hands them over:
// those still in the TLS handshake or yet to send their first bytes. Such a
// connection costs a socket and a goroutine and proves nothing about its
// client, so one address (or a few) must not be able to hold them all
// (issue 9, item 6: about 1,030 stalled handshakes from one IP locked every
// member out). A source is an IPv4 address or an IPv6 /64 (source.Key).
//
// How a new connection from source s is admitted, with P pending in all
// and n from s:
//
//   - n = PerSource: refused; one source never holds more.
//   - P < MaxPending-Reserve, or n = 0 and P < MaxPending: admitted. The
//     last Reserve slots are only for sources with nothing pending, so
//     however the sources that already wait fill the rest, a new one gets
//     in (a single source fills at most PerSource, well below the cap).
//   - otherwise the oldest pending connection of the source that has the
//     most pending is cut to make room, if that source has more than s;
//     else s is refused. Many sources at once (an IPv6 attacker has many
//     /64s) thus share the slots evenly, and a stalled connection lasts
//     only until MaxPending newer ones have arrived.
//
// Under pressure, when more than Busy are pending, a new connection may
// stay pending for BusyTimeout in all instead of the two timeouts; and a
// connection that arrives when Busy or more are pending first cuts those
// pending for longer than BusyTimeout, so the deadline shortens for the
// connections already waiting too.
//
// A zero field takes its default (DefaultLimits); fields are then clamped
// to fit together (Reserve < MaxPending, PerSource <= MaxPending-Reserve,
// Busy <= MaxPending; Busy = MaxPending means pressure only when full).
type Limits struct {
	// MaxPending bounds pending connections, all sources together.
	MaxPending int
	// PerSource bounds pending connections from one source.
	PerSource int
	// Reserve is how many of MaxPending only a source with nothing
	// pending may take.
	Reserve int
	// Busy is the number of pending connections above which BusyTimeout
	// applies.
	Busy int
	// HandshakeTimeout bounds the TLS handshake, SniffTimeout the wait
	// for the first bytes after it.
	HandshakeTimeout time.Duration
	SniffTimeout     time.Duration
	// BusyTimeout bounds handshake and first bytes together under pressure.
	BusyTimeout time.Duration
}

// DefaultLimits returns the limits a zero Limits field takes: a handful of
// members' browsers and TURN clients never come near them.
func DefaultLimits() Limits {
	return Limits{
		MaxPending:       1024,
		PerSource:        32,
		Reserve:          128,
		Busy:             512,
		HandshakeTimeout: 10 * time.Second,
		SniffTimeout:     10 * time.Second,
		// A TLS 1.3 handshake is one round trip after TCP's: 3 s leaves a
		// slow mobile link room, but not a stalled client.
		BusyTimeout: 3 * time.Second,
	}
}

// withDefaults fills the zero fields of l from DefaultLimits and clamps
// them to fit together.
func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	or := func(v *int, def int) {
		if *v <= 0 {
			*v = def
		}
	}
	orDur := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	or(&l.MaxPending, d.MaxPending)
	or(&l.Reserve, max(1, min(d.Reserve, l.MaxPending/8)))
	or(&l.PerSource, d.PerSource)
	or(&l.Busy, max(1, min(d.Busy, l.MaxPending/2)))
	l.Reserve = min(l.Reserve, l.MaxPending-1)
	l.PerSource = max(min(l.PerSource, l.MaxPending-l.Reserve), 1)
	l.Busy = min(l.Busy, l.MaxPending)
	orDur(&l.HandshakeTimeout, d.HandshakeTimeout)
	orDur(&l.SniffTimeout, d.SniffTimeout)
	orDur(&l.BusyTimeout, d.BusyTimeout)
	return l
}

// pendingSet tracks the pending connections and admits new ones as Limits
// says.
type pendingSet struct {
	lim Limits

	mu     sync.Mutex           // guards the fields below
	all    list.List            // of *pendingConn, oldest first
	n      map[netip.Prefix]int // pending connections per source
	levels []int                // levels[k], k >= 1: how many sources have k pending
	closed bool
}

// pendingConn is one pending connection.
type pendingConn struct {
	key   netip.Prefix
	conn  net.Conn // closed to cut it
	start time.Time
	el    *list.Element // nil once it left the set
}

func newPendingSet(lim Limits) *pendingSet {
	return &pendingSet{lim: lim, n: map[netip.Prefix]int{}, levels: make([]int, lim.PerSource+1)}
}

// admission is what admit decided.
type admission struct {
	p      *pendingConn   // nil: refused
	cut    []*pendingConn // to close: cut to make room, or for age under pressure
	busy   bool           // under pressure: p has BusyTimeout in all
	reason string         // why p is nil
}

// admit decides about conn from source key arriving at now. The caller
// closes the connections in cut (outside the lock: closing a socket may
// take time).
func (s *pendingSet) admit(key netip.Prefix, conn net.Conn, now time.Time) admission {
	s.mu.Lock()
	defer s.mu.Unlock()
	var a admission
	if s.closed {
		a.reason = "closing"
		return a
	}
	if s.all.Len() >= s.lim.Busy {
		// The newcomer brings pressure: cut what has outlived BusyTimeout.
		for e := s.all.Front(); e != nil; e = s.all.Front() {
			p := e.Value.(*pendingConn)
			if now.Sub(p.start) < s.lim.BusyTimeout {
				break
			}
			s.removeLocked(p)
			a.cut = append(a.cut, p)
		}
	}
	n, total := s.n[key], s.all.Len()
	switch {
	case n >= s.lim.PerSource:
		a.reason = "too many from this source"
		return a
	case total < s.lim.MaxPending-s.lim.Reserve, n == 0 && total < s.lim.MaxPending:
	default:
		v := s.victimLocked(n)
		if v == nil {
			a.reason = "too many pending"
			return a
		}
		s.removeLocked(v)
		a.cut = append(a.cut, v)
	}
	a.p = &pendingConn{key: key, conn: conn, start: now}
	a.p.el = s.all.PushBack(a.p)
	s.setCountLocked(key, n+1)
	a.busy = s.all.Len() > s.lim.Busy
	return a
}

// victimLocked returns the oldest pending connection of the source with
// the most pending, if that is more than n; else nil.
func (s *pendingSet) victimLocked(n int) *pendingConn {
	most := 0
	for k := len(s.levels) - 1; k > n; k-- {
		if s.levels[k] > 0 {
			most = k
			break
		}
	}
	if most == 0 {
		return nil
	}
	for e := s.all.Front(); e != nil; e = e.Next() {
		if p := e.Value.(*pendingConn); s.n[p.key] == most {
			return p
		}
	}
	return nil
}

// busy reports whether the set is under pressure.
func (s *pendingSet) busy() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.all.Len() > s.lim.Busy
}

// done takes p out of the set, as it is handed over or dropped, and
// reports whether it was still there: false means it was cut (and closed
// or about to be), so it must not be handed over.
func (s *pendingSet) done(p *pendingConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p.el == nil {
		return false
	}
	s.removeLocked(p)
	return true
}

// close cuts every pending connection and admits no more; it returns the
// connections for the caller to close.
func (s *pendingSet) close() []*pendingConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	var out []*pendingConn
	for e := s.all.Front(); e != nil; e = s.all.Front() {
		p := e.Value.(*pendingConn)
		s.removeLocked(p)
		out = append(out, p)
	}
	return out
}

// len returns how many connections are pending.
func (s *pendingSet) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.all.Len()
}

func (s *pendingSet) removeLocked(p *pendingConn) {
	s.all.Remove(p.el)
	p.el = nil
	s.setCountLocked(p.key, s.n[p.key]-1)
}

func (s *pendingSet) setCountLocked(key netip.Prefix, n int) {
	if old := s.n[key]; old > 0 {
		s.levels[old]--
	}
	if n == 0 {
		delete(s.n, key)
		return
	}
	s.n[key] = n
	s.levels[n]++
}
