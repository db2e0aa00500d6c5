package relay

import (
	"context"
	"crypto/tls"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/tariq-vpn/tariq/internal/accept"
)

const socketBufferBytes = 4 << 20

// listenUDP opens n sockets on addr sharing the port through SO_REUSEPORT,
// so the kernel spreads clients over n pion read loops (one core each).
func listenUDP(ctx context.Context, addr string, n int) ([]net.PacketConn, error) {
	var conns []net.PacketConn
	for i := range n {
		lc := net.ListenConfig{Control: udpControl(n > 1)}
		pc, err := lc.ListenPacket(ctx, "udp", addr)
		if err != nil {
			for _, c := range conns {
				c.Close()
			}
			return nil, err
		}
		if i == 0 && n > 1 {
			// Later sockets must bind the port the first one got (":0" in tests).
			addr = pc.LocalAddr().String()
		}
		if uc, ok := pc.(*net.UDPConn); ok {
			uc.SetReadBuffer(socketBufferBytes)
			uc.SetWriteBuffer(socketBufferBytes)
		}
		conns = append(conns, pc)
	}
	return conns, nil
}

// streamListener accepts TCP (or TLS) control connections for pion. It does
// the TLS handshake itself, under a deadline and off the accept loop, so a
// client that stalls mid-handshake delays nobody; wraps each connection in
// the gate; takes a stream slot for each (Service.takeStreamSlot: one cap
// over every listener and the shared HTTPS port, and one per source); and
// closes every one on Close. Connections may also be handed in by
// PushReady (the shared HTTPS port).
type streamListener struct {
	ln      net.Listener // nil for a listener fed only by Push
	tls     *tls.Config  // nil for plain TCP
	s       *Service
	addr    net.Addr
	ready   chan net.Conn
	done    chan struct{}
	closing sync.Once
	wg      sync.WaitGroup

	mu   sync.Mutex                // guards live
	live map[net.Conn]netip.Prefix // open connections and their stream slots' source keys
}

var _ net.Listener = (*streamListener)(nil)

func newStreamListener(s *Service, ln net.Listener, tlsConf *tls.Config, addr net.Addr) *streamListener {
	l := &streamListener{
		ln: ln, tls: tlsConf, s: s, addr: addr,
		ready: make(chan net.Conn),
		done:  make(chan struct{}),
		live:  map[net.Conn]netip.Prefix{},
	}
	if ln != nil {
		l.wg.Add(1)
		go l.acceptLoop()
	}
	return l
}

func (l *streamListener) acceptLoop() {
	defer l.wg.Done()
	accept.Loop(l.ln, l.done, l.s.log, "turn", l.Push)
}

// Push hands l a freshly accepted connection. It returns at once; the
// handshake and the hand-over to pion happen on their own goroutine.
func (l *streamListener) Push(c net.Conn) {
	if l.admit(c, c) {
		go l.prepare(c, time.Now())
	}
}

// admit takes a stream slot for raw and tracks it, or closes closer (raw,
// or the TLS layer over it) and returns false. On true the caller runs a
// hand-over goroutine, which calls wg.Done.
func (l *streamListener) admit(raw, closer net.Conn) bool {
	key, ok, reason := l.s.takeStreamSlot(raw.RemoteAddr())
	if !ok {
		l.s.stats.streamShut(reason)
		l.s.log.Debug("turn connection refused", "remote", raw.RemoteAddr().String(), "reason", reason)
		closer.Close()
		return false
	}
	l.mu.Lock()
	select {
	case <-l.done:
		l.mu.Unlock()
		l.s.releaseStreamSlot(key)
		closer.Close()
		return false
	default:
	}
	l.live[raw] = key
	l.wg.Add(1)
	l.mu.Unlock()
	return true
}

// forget stops tracking c and frees its stream slot; it may be called more
// than once.
func (l *streamListener) forget(c net.Conn) {
	l.mu.Lock()
	key, ok := l.live[c]
	delete(l.live, c)
	l.mu.Unlock()
	if ok {
		l.s.releaseStreamSlot(key)
	}
}

func (l *streamListener) prepare(raw net.Conn, accepted time.Time) {
	defer l.wg.Done()
	conn := raw
	if l.tls != nil {
		tc := tls.Server(raw, l.tls)
		ctx, cancel := context.WithTimeout(context.Background(), l.s.limits.Handshake)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			l.s.log.Debug("turn tls handshake failed", "remote", raw.RemoteAddr().String(), "err", err)
			raw.Close()
			l.forget(raw)
			return
		}
		conn = tc
	}
	l.deliver(raw, conn, accepted)
}

// deliver wraps conn (raw's TLS layer, or raw itself), accepted at the given
// time, in the gate and hands it to pion.
func (l *streamListener) deliver(raw, conn net.Conn, accepted time.Time) {
	lim := &l.s.limits
	g := &gateStreamConn{
		Conn: conn, s: l.s,
		framer:     newStreamFramer(conn, maxFrame),
		firstFrame: lim.FirstFrame,
		idle:       lim.Idle,
		noAlloc:    lim.NoAllocation,
		noAllocBy:  accepted.Add(lim.NoAllocation),
	}
	g.tuple, g.tupleOK = tupleOf(conn.RemoteAddr(), conn.LocalAddr())
	g.onClose = func() {
		l.s.unregisterStream(g)
		l.forget(raw)
	}
	l.s.registerStream(g)
	select {
	case l.ready <- g:
	case <-l.done:
		g.Close()
	}
}

// PushReady hands l a connection whose TLS handshake (if any) is done, such
// as one the HTTPS port identified as TURN. raw is the socket to close and
// forget; conn is what pion reads.
func (l *streamListener) PushReady(raw, conn net.Conn) {
	if !l.admit(raw, conn) {
		return
	}
	accepted := time.Now()
	go func() {
		defer l.wg.Done()
		l.deliver(raw, conn, accepted)
	}()
}

func (l *streamListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ready:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops accepting and closes every connection, live or mid-handshake.
func (l *streamListener) Close() error {
	l.closing.Do(func() {
		l.mu.Lock()
		close(l.done)
		conns := make([]net.Conn, 0, len(l.live))
		for c := range l.live {
			conns = append(conns, c)
		}
		l.mu.Unlock()
		if l.ln != nil {
			l.ln.Close()
		}
		for _, c := range conns {
			c.Close()
		}
	})
	return nil
}

// wait blocks until the accept loop and every hand-over goroutine are gone.
func (l *streamListener) wait() { l.wg.Wait() }

func (l *streamListener) Addr() net.Addr { return l.addr }

// addrCache hands out one *net.UDPAddr per source address, so reading a
// datagram allocates nothing once a peer has been seen: net.UDPConn's
// ReadFrom allocates an address for every packet, which is most of the
// garbage a relay makes. The net.Addr values are shared and must not be
// mutated (pion only formats and compares them). One reader per socket
// uses it, without locking.
type addrCache struct {
	m map[netip.AddrPort]*net.UDPAddr
}

const addrCacheMax = 4096

func (c *addrCache) get(ap netip.AddrPort) *net.UDPAddr {
	if a, ok := c.m[ap]; ok {
		return a
	}
	if c.m == nil || len(c.m) >= addrCacheMax {
		c.m = make(map[netip.AddrPort]*net.UDPAddr)
	}
	a := net.UDPAddrFromAddrPort(ap)
	c.m[ap] = a
	return a
}

// readFrom reads one datagram from pc, through the cache when pc is a
// *net.UDPConn.
func (c *addrCache) readFrom(pc net.PacketConn, b []byte) (int, net.Addr, error) {
	uc, ok := pc.(*net.UDPConn)
	if !ok {
		return pc.ReadFrom(b)
	}
	n, ap, err := uc.ReadFromUDPAddrPort(b)
	if err != nil {
		return n, nil, err
	}
	return n, c.get(ap), nil
}
