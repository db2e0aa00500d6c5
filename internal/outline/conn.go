package outline

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/Jigsaw-Code/outline-sdk/transport"
	"golang.org/x/time/rate"
)

// clientConn is the member's side of a session: the WebSocket stream,
// counted and shaped per member once it authenticates.
type clientConn struct {
	transport.StreamConn          // x/websocket's connection
	raw                  net.Conn // the hijacked connection under it
	sess                 *session
	remote               net.Addr

	acct      atomic.Pointer[account]
	pending   atomic.Uint64 // bytes read before the account was known
	closeOnce sync.Once
}

var _ transport.StreamConn = (*clientConn)(nil)

func newClientConn(ws transport.StreamConn, raw net.Conn, sess *session) *clientConn {
	c := &clientConn{StreamConn: ws, raw: raw, sess: sess, remote: ws.RemoteAddr()}
	if sess.proto == protoUDP {
		c.remote = udpAddr(c.remote)
	}
	return c
}

// udpAddr turns a into a *net.UDPAddr: the association handler
// type-asserts its connection's RemoteAddr to one (to order the cipher
// search by client IP), as outline-ss-server's own main provides.
func udpAddr(a net.Addr) *net.UDPAddr {
	switch a := a.(type) {
	case *net.TCPAddr:
		return &net.UDPAddr{IP: a.IP, Port: a.Port, Zone: a.Zone}
	case *net.UDPAddr:
		return a
	}
	if a != nil {
		if ap, err := netip.ParseAddrPort(a.String()); err == nil {
			return net.UDPAddrFromAddrPort(ap)
		}
	}
	return &net.UDPAddr{}
}

// RemoteAddr returns the member's address (a *net.UDPAddr on the UDP path).
func (c *clientConn) RemoteAddr() net.Addr { return c.remote }

// attach starts counting and shaping for a, which the connection just
// authenticated as; what it read before counts too.
func (c *clientConn) attach(a *account) {
	c.acct.Store(a)
	a.in.Add(c.pending.Swap(0))
}

func (c *clientConn) account() *account { return c.acct.Load() }

// Read reads from the member, then waits for the member's inbound rate.
//
// On the UDP path any error ends the association: the upstream loop stops
// only on io.EOF or net.ErrClosed and otherwise reads again, and a failed
// WebSocket connection answers every later read with the same error (and
// gorilla panics on the thousandth), so an abrupt disconnect would spin.
func (c *clientConn) Read(b []byte) (int, error) {
	n, err := c.StreamConn.Read(b)
	if n > 0 {
		if a := c.acct.Load(); a != nil {
			a.in.Add(uint64(n))
			if werr := waitN(c.sess.ctx, a.inLim, n); werr != nil {
				return 0, net.ErrClosed
			}
		} else {
			c.pending.Add(uint64(n))
		}
	}
	if err != nil && c.sess.proto == protoUDP {
		err = io.EOF
	}
	return n, err
}

// Write waits for the member's outbound rate, then writes to the member.
func (c *clientConn) Write(b []byte) (int, error) {
	a := c.acct.Load()
	if a != nil {
		if err := waitN(c.sess.ctx, a.outLim, len(b)); err != nil {
			return 0, net.ErrClosed
		}
	}
	n, err := c.StreamConn.Write(b)
	if a != nil {
		a.out.Add(uint64(n))
	}
	return n, err
}

// Close closes the hijacked connection, which fails every read and write
// in progress. Safe from any goroutine, any number of times.
func (c *clientConn) Close() error {
	c.closeOnce.Do(func() { c.raw.Close() })
	return nil
}

// waitN waits until lim allows n bytes, in steps no larger than its burst.
// It fails only when ctx ends (the session is cut).
func waitN(ctx context.Context, lim *rate.Limiter, n int) error {
	for n > 0 {
		if lim.Limit() == rate.Inf {
			return nil
		}
		k := min(n, max(lim.Burst(), 1))
		if err := lim.WaitN(ctx, k); err != nil {
			if ctx.Err() != nil {
				return err
			}
			continue // the burst shrank meanwhile (SetLimits): step again
		}
		n -= k
	}
	return nil
}

// minBurst is the smallest token bucket: room for a full Shadowsocks TCP
// chunk (16 KiB payload plus overhead) in one step.
const minBurst = 17 << 10

// setRate sets a's limiters to bps bytes a second each way (0: none), with
// a quarter second's worth of burst.
func setRate(a *account, bps uint64) {
	for _, l := range []*rate.Limiter{a.inLim, a.outLim} {
		if bps == 0 {
			l.SetLimit(rate.Inf)
			continue
		}
		l.SetBurst(int(max(min(bps/4, 1<<30), minBurst)))
		l.SetLimit(rate.Limit(bps))
	}
}

// errRefused is a target the destination policy refused.
type errRefused struct{ rule string }

func (e errRefused) Error() string { return "destination refused (" + e.rule + ")" }

// check asks the policy about ip for proto, counting a refusal by rule.
func (s *Service) check(proto int, ip netip.Addr) error {
	ip = ip.Unmap()
	ok, rule := s.allow(ip)
	if !ok {
		if rule == "" {
			rule = "policy"
		}
		s.stats.refused(proto, rule)
		return errRefused{rule}
	}
	return nil
}

// checkUDPTarget is the association handler's target validator, called
// for every packet after name resolution.
func (s *Service) checkUDPTarget(ip net.IP) error {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		s.stats.refused(protoUDP, "invalid")
		return errRefused{"invalid"}
	}
	return s.check(protoUDP, a)
}

// targetDialer connects to TCP targets: after name resolution, each
// address is checked by the policy before the connect (net.Dialer.Control
// runs on the socket of every attempt), and the connection closes when
// its session ends.
type targetDialer struct{ s *Service }

var _ transport.StreamDialer = targetDialer{}

func (d targetDialer) DialStream(ctx context.Context, addr string) (transport.StreamConn, error) {
	nd := net.Dialer{
		Timeout: d.s.cfg.DialTimeout,
		Control: func(_, address string, _ syscall.RawConn) error {
			host, _, err := net.SplitHostPort(address)
			if err != nil {
				return fmt.Errorf("target %q: %w", address, err)
			}
			ip, err := netip.ParseAddr(host)
			if err != nil {
				d.s.stats.refused(protoTCP, "invalid")
				return errRefused{"invalid"}
			}
			return d.s.check(protoTCP, ip)
		},
	}
	c, err := nd.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	tc := c.(*net.TCPConn)
	context.AfterFunc(ctx, func() { tc.Close() })
	return tc, nil
}

// targetListener makes the UDP target sockets of associations, each one
// killed when its session ends.
type targetListener struct {
	s     *Service
	inner transport.PacketListener
}

var _ transport.PacketListener = targetListener{}

func (l targetListener) ListenPacket(ctx context.Context) (net.PacketConn, error) {
	pc, err := l.inner.ListenPacket(ctx)
	if err != nil {
		return nil, err
	}
	l.s.targetsWG.Add(1)
	t := &targetPacketConn{PacketConn: pc, closed: l.s.targetsWG.Done}
	context.AfterFunc(ctx, t.kill)
	return t, nil
}

// targetPacketConn is an association's target socket. The upstream relay
// goroutine reading it stops only on a timeout (a closed socket makes it
// read again at once, forever), so ending the association does not close
// the socket: kill makes every read time out, and the relay closes it.
type targetPacketConn struct {
	net.PacketConn
	closed func()

	// mu is held for writing by kill and for reading around WriteTo, so
	// no write runs after kill: the upstream's timed socket pushes its
	// read deadline forward on every write.
	mu        sync.RWMutex
	dead      atomic.Bool
	closeOnce sync.Once
}

func (t *targetPacketConn) kill() {
	t.mu.Lock()
	t.dead.Store(true)
	t.PacketConn.SetReadDeadline(aLongTimeAgo)
	t.mu.Unlock()
}

func (t *targetPacketConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, addr, err := t.PacketConn.ReadFrom(b)
	if t.dead.Load() {
		return 0, nil, os.ErrDeadlineExceeded
	}
	return n, addr, err
}

func (t *targetPacketConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.dead.Load() {
		return 0, net.ErrClosed
	}
	return t.PacketConn.WriteTo(b, addr)
}

func (t *targetPacketConn) Close() error {
	var err error
	t.closeOnce.Do(func() {
		err = t.PacketConn.Close()
		t.closed()
	})
	return err
}

// aLongTimeAgo is a deadline in the past: reads fail at once.
var aLongTimeAgo = time.Unix(1, 0)
