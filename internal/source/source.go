// Package source keys per-client limits by where traffic comes from: one
// IPv4 address, or one IPv6 /64, the block a single home network or phone
// is given (RFC 6177), so that a client cannot dodge a limit by hopping
// between the addresses of its own /64. An IPv4-mapped IPv6 address
// (::ffff:a.b.c.d, as a dual-stack socket reports an IPv4 client) is the
// IPv4 address it maps: keyed by its /64 it would put every IPv4 client in
// one bucket.
package source

import (
	"container/list"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// IPv6Bits is the prefix length that keys an IPv6 source.
const IPv6Bits = 64

// Key returns the key that limits count a's traffic under: a's /32 for
// IPv4 (IPv4-mapped IPv6 unmapped first), its /64 for IPv6, without zone.
// An invalid a gives the zero Prefix, one key shared by everything whose
// address is unknown.
func Key(a netip.Addr) netip.Prefix {
	a = a.Unmap().WithZone("")
	bits := 32
	if a.Is6() {
		bits = IPv6Bits
	}
	p, err := a.Prefix(bits)
	if err != nil {
		return netip.Prefix{}
	}
	return p
}

// KeyOf returns Key of the IP address in a (a *net.TCPAddr, *net.UDPAddr
// or anything whose String is host:port).
func KeyOf(a net.Addr) netip.Prefix {
	switch a := a.(type) {
	case *net.TCPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return Key(ip)
	case *net.UDPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return Key(ip)
	case nil:
		return netip.Prefix{}
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Prefix{}
	}
	return Key(ap.Addr())
}

// Limiter is a token bucket per source key, in bounded memory: it tracks
// at most a fixed number of keys, forgetting the least recently used one to make room.
// A forgotten key starts again with a full bucket, as a new one does, so
// only a flood from more sources than it tracks can reset a source's
// budget; a global limit behind this one is what bounds such a flood.
type Limiter struct {
	every rate.Limit
	burst int
	max   int

	mu   sync.Mutex // guards keys and lru
	keys map[netip.Prefix]*list.Element
	lru  list.List // of *bucket, most recently used first
}

type bucket struct {
	key netip.Prefix
	lim *rate.Limiter
}

// NewLimiter returns a Limiter allowing each key r events a second with
// bursts of burst, tracking at most maxKeys keys (at least 1).
func NewLimiter(r rate.Limit, burst, maxKeys int) *Limiter {
	return &Limiter{every: r, burst: burst, max: max(maxKeys, 1), keys: map[netip.Prefix]*list.Element{}}
}

// Allow reports whether key may have one event at now, and takes it.
func (l *Limiter) Allow(key netip.Prefix, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e, ok := l.keys[key]; ok {
		l.lru.MoveToFront(e)
		return e.Value.(*bucket).lim.AllowN(now, 1)
	}
	var b *bucket
	if l.lru.Len() >= l.max {
		e := l.lru.Back() // reuse the least recently used bucket
		b = l.lru.Remove(e).(*bucket)
		delete(l.keys, b.key)
		b.key, b.lim = key, rate.NewLimiter(l.every, l.burst)
	} else {
		b = &bucket{key: key, lim: rate.NewLimiter(l.every, l.burst)}
	}
	l.keys[key] = l.lru.PushFront(b)
	return b.lim.AllowN(now, 1)
}

// Len returns how many keys l tracks.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lru.Len()
}
