package vpn

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/conn"
)

// The bind is the seam between wireguard-go and UDP: tests put in-memory
// or namespaced binds there (Deps.NewBind). tariq's bind wraps one single-port bind per UDP port
// (conn.NewDefaultBind, a StdNetBind, in production):
//
//   - socket 0 is vpn.listen_port, the port wireguard-go itself asks Open
//     for (so `wg show` reports it);
//   - then one per vpn.extra_ports entry, speaking stock WireGuard too;
//   - then, if enabled, vpn.obfuscation.listen_port, speaking AmneziaWG
//     (see awg.go).
//
// Every socket answers STUN Binding requests itself (stun.go).
//
// With one socket, the wrapper only looks at each received datagram's first
// byte (STUN starts 0x00, WireGuard 0x01-0x04) and hands wireguard-go the
// StdNetBind's own endpoints, batches and GSO/GRO unchanged. With several,
// an endpoint must remember its socket, so that replies leave from the port
// the peer talks to (a client, or its NAT, drops datagrams from any other):
// received endpoints are wrapped in a portEndpoint, looked up in a
// per-receiver cache so that the steady state allocates nothing beyond what
// StdNetBind does (BenchmarkBindReceive).
//
// What the wrapper gives up: wireguard-go starts its route listener (which
// drops a peer's sticky source address when routes change) only for a bare
// *conn.StdNetBind (device/sticky_linux.go, startRouteListener). A server's
// routes rarely change; handshake retries still clear the source address.

// socket is one UDP port of the bind. Sockets live as long as the bind,
// across Close and Open (wireguard-go rebinds when listen_port changes), so
// endpoints keep pointing at the right one.
type socket struct {
	key   string // the config key naming the port, for errors
	port  uint16 // 0 for socket 0: wireguard-go says which port
	awg   *awg   // nil for stock WireGuard
	inner conn.Bind
	b     *bind
}

type bind struct {
	socks []*socket
	wrap  bool // more than one socket: endpoints carry theirs
	log   *slog.Logger
	stun  *stunBudget // STUN answers, all sockets together
}

var _ conn.Bind = (*bind)(nil)

// newBind returns a bind over socks; socks[0] is the listen_port socket.
func newBind(socks []*socket, log *slog.Logger) *bind {
	b := &bind{socks: socks, wrap: len(socks) > 1, log: log, stun: newSTUNBudget(defaultSTUNLimits())}
	for _, s := range socks {
		s.b = b
	}
	return b
}

// portError is a UDP port the bind could not open, named by its config key.
type portError struct {
	Port int
	Key  string
	Err  error
}

func (e *portError) Error() string {
	if e.Key == "vpn.listen_port" {
		return fmt.Sprintf("listening on UDP port %d: %v", e.Port, e.Err)
	}
	return fmt.Sprintf("listening on UDP port %d (%s): %v", e.Port, e.Key, e.Err)
}

func (e *portError) Unwrap() error { return e.Err }

// Open opens every socket, socket 0 on port; it returns socket 0's port.
// If one fails, those opened are closed again.
func (b *bind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	var fns []conn.ReceiveFunc
	var actual uint16
	for i, s := range b.socks {
		p := s.port
		if i == 0 {
			p = port
		}
		sfns, got, err := s.inner.Open(p)
		if err != nil {
			for _, o := range b.socks[:i] {
				o.inner.Close()
			}
			return nil, 0, &portError{Port: int(p), Key: s.key, Err: err}
		}
		if i == 0 {
			actual = got
		}
		for _, fn := range sfns {
			fns = append(fns, s.receiver(fn))
		}
	}
	return fns, actual, nil
}

// receiver wraps one of the socket's receive functions: STUN requests are
// answered and dropped, AmneziaWG is turned into WireGuard (anything else
// on that socket dropped), and with several sockets endpoints are wrapped.
// A dropped datagram gets size 0, which wireguard-go skips (conn.ReceiveFunc).
func (s *socket) receiver(fn conn.ReceiveFunc) conn.ReceiveFunc {
	var cache *epCache
	if s.b.wrap {
		cache = &epCache{sock: s, m: map[epKey]*portEndpoint{}}
	}
	return func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		n, err := fn(bufs, sizes, eps)
		for i := range n {
			size := sizes[i]
			if size == 0 {
				continue
			}
			m, stun := s.filter(bufs[i][:size], eps[i])
			if stun {
				s.answerSTUN(bufs[i][:size], eps[i])
			}
			if sizes[i] = m; m > 0 && cache != nil {
				eps[i] = cache.wrap(eps[i])
			}
		}
		return n, err
	}
}

// filter decides what becomes of datagram p from src: the length of the
// WireGuard message it is (rewritten in place on the obfuscated socket),
// or 0 to drop it; stun reports a STUN Binding request to answer. On the
// obfuscated socket AmneziaWG is recognised first, so none of its messages
// is ever taken for STUN; anything that is neither is dropped there.
func (s *socket) filter(p []byte, src conn.Endpoint) (n int, stun bool) {
	if s.awg != nil {
		n, ok := s.awg.decode(p, src)
		if !ok {
			return 0, isSTUNBinding(p)
		}
		return n, false
	}
	if isSTUNBinding(p) { // its first test after the length is p[0] == 0; WireGuard's is 1-4
		return 0, true
	}
	return len(p), false
}

func (s *socket) answerSTUN(req []byte, src conn.Endpoint) {
	ap, ok := endpointAddrPort(src)
	if !ok || !s.b.stun.allow(ap.Addr(), time.Now()) {
		return
	}
	resp := stunReply(req, ap)
	if resp == nil {
		return
	}
	if err := s.inner.Send([][]byte{resp}, src); err != nil {
		s.b.log.Debug("vpn stun answer not sent", "remote", src.DstToString(), "listen", s.key, "err", err)
		return
	}
	s.b.log.Debug("vpn stun binding answered", "remote", src.DstToString(), "listen", s.key)
}

// Send sends bufs out of the socket ep came in on (socket 0 for endpoints
// from ParseEndpoint), in AmneziaWG form on the obfuscated socket.
func (b *bind) Send(bufs [][]byte, ep conn.Endpoint) error {
	s, inner := b.socks[0], ep
	if b.wrap {
		pe, ok := ep.(*portEndpoint)
		if !ok {
			return conn.ErrWrongEndpointType
		}
		s, inner = pe.sock, pe.inner()
	}
	if s.awg == nil {
		return s.inner.Send(bufs, inner)
	}
	return s.sendAWG(bufs, inner)
}

// sendAWG sends a batch of transport data with H4 put in place (the
// common case: no copy, batches and GSO kept), else each message as
// encode says, junk datagrams first before an initiation.
func (s *socket) sendAWG(bufs [][]byte, ep conn.Endpoint) error {
	if s.awg.encodeTransport(bufs) {
		return s.inner.Send(bufs, ep)
	}
	bs := max(s.inner.BatchSize(), 1)
	for _, buf := range bufs {
		junk, msg, ok := s.awg.encode(buf, ep)
		if !ok {
			continue
		}
		for len(junk) > 0 {
			n := min(len(junk), bs)
			if err := s.inner.Send(junk[:n], ep); err != nil {
				return err
			}
			junk = junk[n:]
		}
		if err := s.inner.Send([][]byte{msg}, ep); err != nil {
			return err
		}
	}
	return nil
}

// Close closes every socket.
func (b *bind) Close() error {
	var errs []error
	for _, s := range b.socks {
		if err := s.inner.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// SetMark sets the mark on every socket.
func (b *bind) SetMark(mark uint32) error {
	for _, s := range b.socks {
		if err := s.inner.SetMark(mark); err != nil {
			return err
		}
	}
	return nil
}

// ParseEndpoint parses an endpoint on socket 0 (`wg set … endpoint`).
func (b *bind) ParseEndpoint(str string) (conn.Endpoint, error) {
	ep, err := b.socks[0].inner.ParseEndpoint(str)
	if err != nil || !b.wrap {
		return ep, err
	}
	return newPortEndpoint(b.socks[0], ep), nil
}

// BatchSize is the inner binds' (they are all of one kind).
func (b *bind) BatchSize() int { return b.socks[0].inner.BatchSize() }

// portEndpoint is a remote address together with the socket it talks to.
// A StdNetBind endpoint is held by value, so that the inner bind gets the
// *conn.StdNetEndpoint it requires; ClearSrc only sets a flag, so an
// endpoint shared through the cache is never written once published.
type portEndpoint struct {
	sock    *socket
	std     conn.StdNetEndpoint // the inner endpoint, from a StdNetBind
	bare    conn.StdNetEndpoint // std without its sticky source address
	other   conn.Endpoint       // the inner endpoint, from any other bind (tests)
	cleared atomic.Bool         // ClearSrc was called: send from bare
}

var _ conn.Endpoint = (*portEndpoint)(nil)

func newPortEndpoint(s *socket, ep conn.Endpoint) *portEndpoint {
	std, ok := ep.(*conn.StdNetEndpoint)
	if !ok {
		return &portEndpoint{sock: s, other: ep}
	}
	return &portEndpoint{sock: s, std: *std, bare: conn.StdNetEndpoint{AddrPort: std.AddrPort}}
}

func (e *portEndpoint) inner() conn.Endpoint {
	switch {
	case e.other != nil:
		return e.other
	case e.cleared.Load():
		return &e.bare
	}
	return &e.std
}

func (e *portEndpoint) ClearSrc() {
	if e.other != nil {
		e.other.ClearSrc()
		return
	}
	e.cleared.Store(true)
}

func (e *portEndpoint) SrcToString() string { return e.inner().SrcToString() }
func (e *portEndpoint) DstToString() string { return e.inner().DstToString() }
func (e *portEndpoint) DstToBytes() []byte  { return e.inner().DstToBytes() }
func (e *portEndpoint) DstIP() netip.Addr   { return e.inner().DstIP() }
func (e *portEndpoint) SrcIP() netip.Addr   { return e.inner().SrcIP() }

// epCacheSize bounds one receiver's endpoint cache; a flood of spoofed
// sources empties it rather than growing it.
const epCacheSize = 1024

type epKey struct {
	dst   netip.AddrPort
	src   netip.Addr
	ifidx int32
}

// epCache hands out one portEndpoint per remote address and sticky source.
// It belongs to one receive function, which wireguard-go calls from one
// goroutine, so it needs no lock.
type epCache struct {
	sock *socket
	m    map[epKey]*portEndpoint
}

func (c *epCache) wrap(ep conn.Endpoint) conn.Endpoint {
	std, ok := ep.(*conn.StdNetEndpoint)
	if !ok {
		return newPortEndpoint(c.sock, ep)
	}
	k := epKey{std.AddrPort, std.SrcIP(), std.SrcIfidx()}
	if pe := c.m[k]; pe != nil && !pe.cleared.Load() {
		return pe
	}
	if len(c.m) >= epCacheSize {
		clear(c.m)
	}
	pe := newPortEndpoint(c.sock, std)
	c.m[k] = pe
	return pe
}

// endpointAddrPort returns the remote address and port of ep.
func endpointAddrPort(ep conn.Endpoint) (netip.AddrPort, bool) {
	switch e := ep.(type) {
	case *conn.StdNetEndpoint:
		return e.AddrPort, true
	case *portEndpoint:
		return endpointAddrPort(e.inner())
	}
	ap, err := netip.ParseAddrPort(ep.DstToString())
	return ap, err == nil
}
