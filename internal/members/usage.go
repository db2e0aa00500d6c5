package members

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/tariq-vpn/tariq/internal/store"
	"github.com/tariq-vpn/tariq/internal/wgconf"
)

// Timings of the limits loop, injected so that tests need not wait.
type Timings struct {
	// Tick is how often usage is read from the paths and limits are
	// enforced.
	Tick time.Duration
	// Flush is how often counted usage is written to the store: a kill -9
	// loses at most this much of the counting.
	Flush time.Duration
}

// DefaultTimings are the daemon's.
func DefaultTimings() Timings { return Timings{Tick: time.Second, Flush: time.Minute} }

// Why a member's devices are off, beyond a device being disabled.
const (
	BlockExpired   = "expired"
	BlockOverLimit = "over-limit"
)

// blockReason says why m's devices may not connect at now with this
// month's usage u, or "" when they may.
func blockReason(m *store.Member, u store.Usage, now time.Time) string {
	switch {
	case !m.Expires.IsZero() && !now.Before(m.Expires):
		return BlockExpired
	case m.DataLimit > 0 && u.Total() >= m.DataLimit:
		return BlockOverLimit
	}
	return ""
}

// pendingKey is a member's usage counted in one calendar month.
type pendingKey struct{ member, month string }

// usageNow is m's usage this month (at now) with what is counted but not
// yet stored.
func (s *Service) usageNowLocked(m *store.Member, now time.Time) store.Usage {
	month := Month(now)
	u := m.Usage
	if u.Month != month {
		u = store.Usage{Month: month}
	}
	p := s.pending[pendingKey{m.Name, month}]
	u.In += p.In
	u.Out += p.Out
	return u
}

// desiredLocked works out what the paths should be from st at now.
func (s *Service) desiredLocked(st *store.State, now time.Time) (Desired, map[string]string) {
	d := Desired{Limits: map[string]PathLimits{}}
	blocked := map[string]string{}
	for i := range st.Members {
		m := &st.Members[i]
		u := s.usageNowLocked(m, now)
		s.used[m.Name] = u
		if why := blockReason(m, u, now); why != "" {
			blocked[m.Name] = why
			continue
		}
		lim := PathLimits{Rate: m.Rate / 8}
		if m.DataLimit > 0 {
			lim.Budgeted, lim.Remaining = true, m.DataLimit-u.Total()
		}
		d.Limits[m.Name] = lim
	}
	for _, p := range st.Peers {
		if p.Disabled {
			continue
		}
		member := memberOf(st, p)
		if _, ok := d.Limits[member]; !ok {
			if _, isBlocked := blocked[member]; isBlocked {
				continue
			}
			d.Limits[member] = PathLimits{} // a device whose member entry is missing (hand-edited state)
		}
		pub, err1 := wgconf.ParseKey(p.PublicKey)
		psk, err2 := wgconf.ParseKey(p.PresharedKey.Reveal())
		if err1 != nil || err2 != nil || !p.IPv4.Is4() || (p.IPv6.IsValid() && !p.IPv6.Is6()) {
			s.log.Error("device skipped: damaged entry in the state", "peer", p.Name)
			continue
		}
		d.Devices = append(d.Devices, WireGuardDevice{Name: p.Name, Member: member, PublicKey: pub, PresharedKey: psk, IPv4: p.IPv4, IPv6: p.IPv6})
	}
	d.Outline = s.outlineLocked(st, blocked)
	d.OutlineRetired = slices.Clone(st.Outline.Retired)
	return d, blocked
}

// memberOf names p's member: its own name for a device whose member entry
// is missing.
func memberOf(st *store.State, p store.Peer) string {
	if p.Member != "" && st.Member(p.Member) != nil {
		return p.Member
	}
	return p.Name
}

// memberNamed returns the member named name or, if none is, the member of
// the device named name with that device; the member is nil if the
// device's entry is missing (a hand-edited state).
func memberNamed(st *store.State, name string) (*store.Member, *store.Peer) {
	if m := st.Member(name); m != nil {
		return m, nil
	}
	p := st.Peer(name)
	if p == nil {
		return nil, nil
	}
	return st.Member(memberOf(st, *p)), p
}

// applyLocked puts st on every path, and logs members whose devices were
// cut off or let back in since the last time.
func (s *Service) applyLocked(st *store.State) error {
	d, blocked := s.desiredLocked(st, s.deps.Now())
	for _, p := range s.deps.Paths {
		if err := p.Apply(d); err != nil {
			return err
		}
	}
	for name, why := range blocked {
		if s.blocked[name] != why {
			s.log.Info("member cut off", "member", name, "reason", why)
		}
	}
	for name := range s.blocked {
		if _, still := blocked[name]; !still && st.Member(name) != nil {
			s.log.Info("member let back in", "member", name)
		}
	}
	s.blocked = blocked
	return nil
}

// Serve counts usage from the paths and enforces limits until ctx is
// done: every Tick it adds what each path counted since the last read,
// and reapplies the members (an expiry passing, a limit reached, a new
// month); every Flush, and when ctx ends, it stores what it counted. A
// change of the store made elsewhere (another node, the CLI) is applied
// as soon as the store reports it.
func (s *Service) Serve(ctx context.Context, t Timings) error {
	tick := time.NewTicker(t.Tick)
	defer tick.Stop()
	flush := time.NewTicker(t.Flush)
	defer flush.Stop()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	changed := s.deps.Store.Watch(wctx)
	for {
		select {
		case <-ctx.Done():
			if err := s.Flush(); err != nil {
				s.log.Error("usage not stored at shutdown", "err", err)
			}
			return nil
		case <-changed:
			if err := s.Tick(); err != nil {
				s.log.Warn("a change of the store not applied; retried every tick", "err", err)
			}
		case <-tick.C:
			if err := s.Tick(); err != nil {
				s.log.Warn("limits not enforced this round", "err", err)
			}
		case <-flush.C:
			if err := s.Flush(); err != nil {
				s.log.Warn("usage not stored; it is kept and stored next time", "err", err)
			}
		}
	}
}

// Tick reads usage from the paths and reapplies the members.
func (s *Service) Tick() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.readUsageLocked()
	st, err := s.deps.Store.Load()
	if err != nil {
		return err
	}
	return s.applyLocked(st)
}

// readUsageLocked adds to pending what each path counted since its last
// read, toward the month it is now. A counter that went backwards (a path
// restarted) counts from zero.
func (s *Service) readUsageLocked() {
	month := Month(s.deps.Now())
	for i, p := range s.deps.Paths {
		now := p.Usage()
		last := s.seen[i]
		for member, t := range now {
			l := last[member]
			key := pendingKey{member, month}
			d := s.pending[key]
			if t.In >= l.In {
				d.In += t.In - l.In
			} else {
				d.In += t.In
			}
			if t.Out >= l.Out {
				d.Out += t.Out - l.Out
			} else {
				d.Out += t.Out
			}
			if d != (Traffic{}) {
				s.pending[key] = d
			}
		}
		s.seen[i] = now
	}
}

// Flush stores the usage counted since the last Flush.
func (s *Service) Flush() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.readUsageLocked()
	if len(s.pending) == 0 {
		return nil
	}
	add := make([]store.MemberUsage, 0, len(s.pending))
	for key, d := range s.pending {
		add = append(add, store.MemberUsage{Member: key.member, Usage: store.Usage{Month: key.month, In: d.In, Out: d.Out}})
	}
	if err := s.deps.Store.AddUsage(add); err != nil {
		return fmt.Errorf("storing usage: %w", err)
	}
	clear(s.pending)
	return nil
}
