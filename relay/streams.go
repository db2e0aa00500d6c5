package relay

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// StreamLimits bounds the relay's TCP and TLS control connections, those
// the shared HTTPS port hands over included. Zero fields take the defaults
// (tests shorten them).
type StreamLimits struct {
	// Handshake bounds a TLS handshake; default 10 s.
	Handshake time.Duration
	// FirstFrame bounds the wait for a connection's first frame; default 30 s.
	FirstFrame time.Duration
	// NoAllocation is how long a connection may stay open without an
	// allocation, counted from its acceptance or from the end of its
	// allocation; default 30 s.
	NoAllocation time.Duration
	// Idle bounds the silence on a connection that holds an allocation
	// (allocations refresh well inside 10 minutes); default 15 min.
	Idle time.Duration
	// MaxStreams caps the stream connections open at once over every
	// listener; 0 derives it from the open-file limit (see fdBudget). It
	// never exceeds relay.max_allocations.
	MaxStreams int
	// PerSource caps the stream connections from one IPv4 address or one
	// IPv6 /64; 0 derives it from the stream cap (see perSourceFor).
	PerSource int
}

func (l StreamLimits) withDefaults() StreamLimits {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&l.Handshake, 10*time.Second)
	def(&l.FirstFrame, 30*time.Second)
	def(&l.NoAllocation, 30*time.Second)
	def(&l.Idle, 15*time.Minute)
	return l
}

// fdBudget splits the open-file limit n (the soft RLIMIT_NOFILE, which Go
// raises to the hard limit at start; systemd/tariq.service sets 1048576)
// between the relay's clients and everything else:
//
//   - reserve, max(256, n/8), is never taken by TURN clients: the admin
//     socket, HTTPS, WireGuard, the UDP listeners, the state store and
//     ACME keep working however many clients come;
//   - streams, a quarter of the rest, caps TCP and TLS control connections
//     (each also holds at most one relayed socket, so streams and their
//     allocations take at most half of the rest);
//   - allocs, half of the rest, caps allocations (one relayed socket each),
//     so UDP clients keep at least a quarter of the rest whatever the
//     streams hold.
//
// n <= 0 (unknown) leaves both uncapped.
func fdBudget(n int) (streams, allocs, reserve int) {
	if n <= 0 {
		return 0, 0, 0
	}
	reserve = max(256, n/8)
	rest := max(n-reserve, 4)
	return rest / 4, rest / 2, reserve
}

// perSourceFor is the default per-source stream cap under a global cap of
// limit: an eighth of it, at least 16 (but at most half the cap, so small
// caps keep room for a second source) and at most 256: a household or an
// office behind one address needs a few dozen, one attacker gets no more.
func perSourceFor(limit int) int {
	return min(256, max(limit/8, min(16, max(1, limit/2))))
}

// sourceKey is what per-source stream limits count by: the IPv4 address,
// or the IPv6 /64 (one customer's prefix, which one host can fill with
// addresses).
func sourceKey(a net.Addr) netip.Prefix {
	ap, ok := addrPort(a)
	if !ok {
		if p, err := netip.ParseAddrPort(a.String()); err == nil {
			ap = netip.AddrPortFrom(p.Addr().Unmap(), p.Port())
		}
	}
	ip := ap.Addr()
	switch {
	case !ip.IsValid():
		return netip.Prefix{} // unknown sources share one count
	case ip.Is4():
		return netip.PrefixFrom(ip, 32)
	}
	p, _ := ip.WithZone("").Prefix(64)
	return p
}

// streamSlots counts open stream connections, in total and per source,
// across every stream listener and the shared HTTPS port.
type streamSlots struct {
	mu       sync.Mutex // guards total and bySource
	total    int
	bySource map[netip.Prefix]int
}

// streamCap returns the cap on open stream connections and the per-source
// cap under it.
func (s *Service) streamCap() (limit, perSource int) {
	limit = s.policy.Load().maxAllocs
	if s.limits.MaxStreams > 0 {
		limit = min(limit, s.limits.MaxStreams)
	} else if s.fdStreams > 0 {
		limit = min(limit, s.fdStreams)
	}
	perSource = s.limits.PerSource
	if perSource <= 0 {
		perSource = perSourceFor(limit)
	}
	return limit, min(perSource, limit)
}

// takeStreamSlot counts a new stream connection from remote in, unless a
// cap is reached; reason names the cap for the log and the counters.
func (s *Service) takeStreamSlot(remote net.Addr) (key netip.Prefix, ok bool, reason string) {
	key = sourceKey(remote)
	limit, perSource := s.streamCap()
	sl := &s.slots
	sl.mu.Lock()
	defer sl.mu.Unlock()
	switch {
	case sl.total >= limit:
		return key, false, "too-many"
	case sl.bySource[key] >= perSource:
		return key, false, "too-many-from-source"
	}
	if sl.bySource == nil {
		sl.bySource = map[netip.Prefix]int{}
	}
	sl.total++
	sl.bySource[key]++
	s.stats.Streams.Add(1)
	return key, true, ""
}

func (s *Service) releaseStreamSlot(key netip.Prefix) {
	sl := &s.slots
	sl.mu.Lock()
	sl.total--
	if sl.bySource[key]--; sl.bySource[key] <= 0 {
		delete(sl.bySource, key)
	}
	sl.mu.Unlock()
	s.stats.Streams.Add(-1)
}

// streamTuple identifies one stream connection as pion's allocation events
// name it: the client's address and the server's.
type streamTuple struct{ remote, local netip.AddrPort }

func tupleOf(remote, local net.Addr) (streamTuple, bool) {
	r, ok1 := addrPort(remote)
	l, ok2 := addrPort(local)
	return streamTuple{r, l}, ok1 && ok2
}

// registerStream makes c findable by its addresses, for the allocation
// events; unregisterStream forgets it.
func (s *Service) registerStream(c *gateStreamConn) {
	if !c.tupleOK {
		return
	}
	s.streamMu.Lock()
	s.streamConns[c.tuple] = c
	s.streamMu.Unlock()
}

func (s *Service) unregisterStream(c *gateStreamConn) {
	if !c.tupleOK {
		return
	}
	s.streamMu.Lock()
	if s.streamConns[c.tuple] == c {
		delete(s.streamConns, c.tuple)
	}
	s.streamMu.Unlock()
}

// streamAllocation tells the stream connection an allocation event is
// about (if it is about one) that it gained (+1) or lost (-1) an
// allocation. pion names every allocation's 5-tuple "UDP", so streams are
// told apart by their local address, a *net.TCPAddr where UDP has a
// *net.UDPAddr.
func (s *Service) streamAllocation(src, dst net.Addr, delta int) {
	if _, udp := dst.(*net.UDPAddr); udp {
		return
	}
	if c := s.streamConnOf(src, dst); c != nil {
		c.allocationChanged(delta)
	}
}

// streamConnOf returns the live stream connection with the 5-tuple of an
// allocation event (src, dst), or nil.
func (s *Service) streamConnOf(src, dst net.Addr) *gateStreamConn {
	t, ok := tupleOf(src, dst)
	if !ok {
		return nil
	}
	s.streamMu.Lock()
	defer s.streamMu.Unlock()
	return s.streamConns[t]
}
