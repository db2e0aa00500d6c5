package relay

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

var errClosedSocket = errors.New("socket closed")

// fastPathSupported reports whether this platform has tariq's data path.
const fastPathSupported = true

// loopListener is one UDP listener socket served by a data loop. To pion
// it is the net.PacketConn of a PacketConnConfig: ReadFrom yields what the
// loop hands over (requests, Bindings, odd Send indications), after the
// gate, and WriteTo answers from the address the request arrived on.
type loopListener struct {
	s       *Service
	loop    *dataLoop
	fd      *sockFD
	sock    *loopSock
	local   *net.UDPAddr
	clients clientTable
	gso     atomic.Bool // the socket takes UDP_SEGMENT (sendSegmented)

	addrs addrCache // the loop's, without locking
	ctrl  chan ctrlFrame
	done  chan struct{}
	once  sync.Once
}

var _ net.PacketConn = (*loopListener)(nil)

// ctrlFrame is a datagram the loop hands to pion.
type ctrlFrame struct {
	buf  *[slotSize]byte
	n    int
	from *net.UDPAddr
}

// relayBufferBytes is the receive buffer of a UDP client's relayed socket.
const relayBufferBytes = 1 << 20

// ctrlQueue is how many datagrams may wait for pion per socket; past it
// they are dropped, as a full socket buffer would drop them.
const ctrlQueue = 512

// openLoopListener opens a UDP listener socket on addr for loop l.
func (s *Service) openLoopListener(l *dataLoop, addr netip.AddrPort, reuse bool) (*loopListener, error) {
	fd, local, inet6, err := openUDP(addr, "udp", reuse)
	if err != nil {
		return nil, err
	}
	fd.acquire()
	unix.SetsockoptInt(fd.fd, unix.SOL_SOCKET, unix.SO_RCVBUF, socketBufferBytes)
	unix.SetsockoptInt(fd.fd, unix.SOL_SOCKET, unix.SO_SNDBUF, socketBufferBytes)
	var src *replySources
	if a, ok := addrOf(local); ok && a.IsUnspecified() {
		if err := packetInfoOn(fd.fd); err != nil {
			s.log.Warn("turn over udp replies from the address the kernel picks, which may not be the one a client wrote to",
				"listen", local.String(), "err", err)
		} else {
			src = newReplySources()
		}
	}
	fd.release()
	ls := &loopListener{
		s: s, loop: l, fd: fd, local: local,
		clients: clientTable{inet6: inet6, src: src},
		ctrl:    make(chan ctrlFrame, ctrlQueue),
		done:    make(chan struct{}),
	}
	sock, err := l.register(fd, &loopSock{lis: ls})
	if err != nil {
		fd.close()
		return nil, err
	}
	ls.sock = sock
	if _, err := unix.GetsockoptInt(fd.fd, unix.SOL_UDP, unix.UDP_SEGMENT); err == nil {
		ls.gso.Store(true)
		l.gsoPeers = true // set before the loop starts
	}
	return ls, nil
}

// toPion hands the datagram d from src to pion (called by the loop).
func (ls *loopListener) toPion(l *dataLoop, src netip.AddrPort, d, oob []byte, ctrunc bool) {
	if r := ls.clients.src; r != nil && !ctrunc {
		if turn := r.noteArrival(src, oob, d); turn != nil {
			if e := ls.clients.get(src); e != nil && e.src.Load() != turn {
				e.src.Store(turn)
			}
		}
	}
	buf := ls.s.bufs.Get().(*[slotSize]byte)
	n := copy(buf[:], d)
	select {
	case ls.ctrl <- ctrlFrame{buf, n, ls.addrs.get(src)}:
	default:
		ls.s.bufs.Put(buf)
	}
}

func (ls *loopListener) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		select {
		case f := <-ls.ctrl:
			n := copy(b, f.buf[:f.n])
			ls.s.bufs.Put(f.buf)
			if reply, _ := ls.s.inspect(b[:n], f.from, ls.local); reply != nil {
				ls.WriteTo(reply, f.from)
				continue
			}
			return n, f.from, nil
		case <-ls.done:
			return 0, nil, net.ErrClosed
		}
	}
}

// WriteTo sends b to addr from the address addr wrote to (see
// replySources), or from wherever the kernel picks.
func (ls *loopListener) WriteTo(b []byte, addr net.Addr) (int, error) {
	ap, ok := addrPort(addr)
	if !ok {
		return 0, &net.OpError{Op: "write", Net: "udp", Addr: addr, Err: net.InvalidAddrError("not a UDP address")}
	}
	sa := sockaddrOf(ap, ls.clients.inet6)
	if r := ls.clients.src; r != nil {
		if oob := r.source(ap, b); oob != nil {
			if err := sendmsg(ls.fd, b, &sa, oob); err == nil {
				return len(b), nil
			}
			// The address may have gone (a floating IP moved away): the
			// kernel's pick beats no reply.
		}
	}
	if err := sendmsg(ls.fd, b, &sa, nil); err != nil {
		return 0, &net.OpError{Op: "write", Net: "udp", Source: ls.local, Addr: addr, Err: err}
	}
	return len(b), nil
}

func (ls *loopListener) Close() error {
	ls.once.Do(func() {
		close(ls.done)
		ls.loop.unregister(ls.sock)
		ls.fd.close()
	})
	return nil
}

func (ls *loopListener) LocalAddr() net.Addr                { return ls.local }
func (ls *loopListener) SetDeadline(t time.Time) error      { return nil }
func (ls *loopListener) SetReadDeadline(t time.Time) error  { return nil }
func (ls *loopListener) SetWriteDeadline(t time.Time) error { return nil }

// sendmsg sends b to sa with control messages oob, without blocking.
func sendmsg(s *sockFD, b []byte, sa *rawSockaddr, oob []byte) error {
	if !s.acquire() {
		return net.ErrClosed
	}
	defer s.release()
	var iov unix.Iovec
	if len(b) > 0 {
		iov.Base = &b[0]
	}
	iov.SetLen(len(b))
	var h unix.Msghdr
	h.Name = &sa.b[0]
	h.Namelen = sa.n
	h.Iov = &iov
	h.SetIovlen(1)
	if len(oob) > 0 {
		h.Control = &oob[0]
		h.SetControllen(len(oob))
	}
	_, _, e := unix.RawSyscall(unix.SYS_SENDMSG, uintptr(s.fd), uintptr(unsafe.Pointer(&h)), unix.MSG_DONTWAIT)
	if e != 0 {
		return errnoErr(e)
	}
	return nil
}

// loopRelay is the relayed socket of a UDP client's allocation, read by
// its listener's data loop. pion's read loop for the allocation waits in
// ReadFrom until the socket closes: the loop relays everything.
type loopRelay struct {
	s     *Service
	loop  *dataLoop
	fd    *sockFD
	sock  *loopSock
	local *net.UDPAddr
	inet6 bool
	entry *allocEntry
	done  chan struct{}
	once  sync.Once
	noGSO bool // the route to a peer refused a segmented message; the loop's
}

var _ net.PacketConn = (*loopRelay)(nil)

// openLoopRelay opens the relayed socket key for an allocation made on ls,
// read by ls's data loop, with its entry registered (addEntry).
func (s *Service) openLoopRelay(ls *loopListener, network string, bind netip.Addr, port int, key relayPort) (*loopRelay, error) {
	fd, local, inet6, err := openUDP(netip.AddrPortFrom(bind, uint16(port)), network, false)
	if err != nil {
		return nil, err
	}
	// Room for a burst from the peers while the loop serves the other
	// sockets; the kernel charges only what is queued (and caps it at
	// net.core.rmem_max).
	unix.SetsockoptInt(fd.fd, unix.SOL_SOCKET, unix.SO_RCVBUF, relayBufferBytes)
	r := &loopRelay{s: s, loop: ls.loop, fd: fd, local: local, inet6: inet6, done: make(chan struct{})}
	r.entry = newAllocEntry(key, r, ls)
	sock, err := ls.loop.register(fd, &loopSock{rel: r})
	if err != nil {
		fd.close()
		return nil, err
	}
	r.sock = sock
	s.addEntry(r.entry)
	return r, nil
}

func (r *loopRelay) sendPeer(b []byte, peer netip.AddrPort) bool {
	sa := sockaddrOf(peer, r.inet6)
	return sendto(r.fd, b, &sa)
}

// ReadFrom blocks until the socket closes: the data loop reads it.
func (r *loopRelay) ReadFrom([]byte) (int, net.Addr, error) {
	<-r.done
	return 0, nil, net.ErrClosed
}

// WriteTo is pion relaying a Send indication the data path left to it.
func (r *loopRelay) WriteTo(b []byte, addr net.Addr) (int, error) {
	ap, ok := addrPort(addr)
	if !ok || !r.s.permitted(r.entry, r.s.policy.Load(), ap) {
		return len(b), nil // dropped as a firewall would: the sender is not told
	}
	r.s.stats.sendingToPeers(1, uint64(len(b)))
	if !r.sendPeer(b, ap) {
		r.s.stats.unsentToPeers(1, uint64(len(b)))
		return 0, &net.OpError{Op: "write", Net: "udp", Source: r.local, Addr: addr, Err: errClosedSocket}
	}
	return len(b), nil
}

func (r *loopRelay) Close() error {
	r.once.Do(func() {
		r.s.retireEntry(r.entry)
		r.s.trackRelay(r, r.entry.key, false)
		r.loop.unregister(r.sock)
		r.fd.close()
		close(r.done)
	})
	return nil
}

func (r *loopRelay) LocalAddr() net.Addr                { return r.local }
func (r *loopRelay) SetDeadline(t time.Time) error      { return nil }
func (r *loopRelay) SetReadDeadline(t time.Time) error  { return nil }
func (r *loopRelay) SetWriteDeadline(t time.Time) error { return nil }

// streamRelay is the relayed socket of a TCP or TLS client's allocation,
// a socket in Go's poller read by pion's goroutine for the allocation:
// ReadFrom never returns a datagram but relays each batch itself, framed,
// in one write to the client's connection.
type streamRelay struct {
	*net.UDPConn
	s     *Service
	rc    syscall.RawConn
	entry *allocEntry
	fwd   func(uintptr) bool // forward, made once
	rerr  error              // a read error forward met
	once  sync.Once
}

var _ net.PacketConn = (*streamRelay)(nil)

// streamBatch is the buffers of one streamRelay read, pooled so an idle
// allocation holds none.
type streamBatch struct {
	m    *mmsgBatch
	bufs [][]byte
	out  []byte
	tid  [12]byte
}

const streamBatchSize = 8

func newStreamBatch() *streamBatch {
	b := &streamBatch{m: newMmsgBatch(streamBatchSize, 0), out: make([]byte, 0, streamBatchSize*slotSize)}
	for range streamBatchSize {
		b.bufs = append(b.bufs, make([]byte, slotSize))
	}
	return b
}

// openStreamRelay opens the relayed socket key for a TCP or TLS client's
// allocation, with its entry registered (addEntry).
func (s *Service) openStreamRelay(network string, bind netip.Addr, port int, key relayPort) (*streamRelay, error) {
	pc, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(netip.AddrPortFrom(bind, uint16(port))))
	if err != nil {
		return nil, err
	}
	rc, err := pc.SyscallConn()
	if err != nil {
		pc.Close()
		return nil, err
	}
	r := &streamRelay{UDPConn: pc, s: s, rc: rc}
	r.entry = newAllocEntry(key, r, nil)
	r.fwd = r.forward
	s.addEntry(r.entry)
	return r, nil
}

func (r *streamRelay) sendPeer(b []byte, peer netip.AddrPort) bool {
	_, err := r.UDPConn.WriteToUDPAddrPort(b, peer)
	return err == nil
}

// ReadFrom relays peers' datagrams to the client until the socket closes,
// then fails, which ends pion's read loop for the allocation.
func (r *streamRelay) ReadFrom([]byte) (int, net.Addr, error) {
	err := r.rc.Read(r.fwd)
	if err == nil {
		err = r.rerr
	}
	if err == nil {
		err = net.ErrClosed
	}
	return 0, nil, err
}

// forward reads what the socket holds and relays it; false means wait for
// more.
func (r *streamRelay) forward(fd uintptr) bool {
	b := r.s.streamBatches.Get().(*streamBatch)
	defer r.s.streamBatches.Put(b)
	s := sockFD{fd: int(fd)} // the poller holds the descriptor for the call
	for {
		for i := range streamBatchSize {
			b.m.prepRecv(i, b.bufs[i][dataHeadroom:dataHeadroom+maxPeerData])
		}
		n, err := recvmmsg(&s, b.m.hdrs)
		if err == errAgain {
			return false
		}
		if err != nil {
			r.rerr = err
			return true
		}
		r.relayBatch(b, n)
		if n < streamBatchSize {
			return false
		}
	}
}

func (r *streamRelay) relayBatch(b *streamBatch, n int) {
	e := r.entry
	c := e.stream
	if !e.live.Load() || c == nil {
		return
	}
	pol := r.s.policy.Load()
	b.out = b.out[:0]
	var pkts, bytes uint64
	for i := range n {
		h := &b.m.hdrs[i]
		if h.Hdr.Flags&unix.MSG_TRUNC != 0 {
			continue
		}
		peer, ok := addrPortOf(&b.m.names[i].b)
		if !ok || !r.s.permitted(e, pol, peer) {
			continue
		}
		size := int(h.Len)
		var frame []byte
		if num, ok := e.chans.Load().numOf(peer); ok {
			frame = frameChannelData(b.bufs[i], size, num)
		} else {
			rand.Read(b.tid[:])
			frame = frameDataIndication(b.bufs[i], size, peer, &b.tid)
		}
		b.out = append(b.out, frame...)
		pkts++
		bytes += uint64(size)
	}
	if len(b.out) == 0 {
		return
	}
	if _, err := c.Conn.Write(b.out); err != nil {
		return // the connection is going; pion ends the allocation
	}
	r.s.stats.PacketsFromPeers.Add(pkts)
	r.s.stats.BytesFromPeers.Add(bytes)
}

// WriteTo is pion relaying a Send indication the data path left to it.
func (r *streamRelay) WriteTo(b []byte, addr net.Addr) (int, error) {
	ap, ok := addrPort(addr)
	if !ok || !r.s.permitted(r.entry, r.s.policy.Load(), ap) {
		return len(b), nil
	}
	r.s.stats.sendingToPeers(1, uint64(len(b)))
	n, err := r.UDPConn.WriteToUDPAddrPort(b, ap)
	if n == 0 && len(b) > 0 {
		r.s.stats.unsentToPeers(1, uint64(len(b)))
	}
	return n, err
}

func (r *streamRelay) Close() error {
	r.once.Do(func() {
		r.s.retireEntry(r.entry)
		r.s.trackRelay(r, r.entry.key, false)
	})
	return r.UDPConn.Close()
}

// openDataPath opens the UDP listener sockets on data loops, one loop and
// one socket per address per core, and starts the loops.
func (s *Service) openDataPath(cores int) error {
	for range max(1, cores/2) {
		l, err := newDataLoop(s)
		if err != nil {
			return err
		}
		s.loops = append(s.loops, l)
	}
	for _, addr := range s.cfg.Relay.ListenUDP {
		ua, err := net.ResolveUDPAddr("udp", addr)
		if err != nil {
			return fmt.Errorf("listen udp %s: %w", addr, err)
		}
		ap := ua.AddrPort()
		if ua.IP == nil {
			ap = netip.AddrPortFrom(netip.IPv6Unspecified(), uint16(ua.Port))
		}
		for i, l := range s.loops {
			ls, err := s.openLoopListener(l, ap, cores > 1)
			if err != nil {
				return &net.OpError{Op: "listen", Net: "udp", Addr: ua, Err: err}
			}
			if i == 0 {
				// Later sockets bind the port the first one got (":0" in tests).
				ap = netip.AddrPortFrom(ap.Addr(), uint16(ls.local.Port))
			}
			s.packetConns = append(s.packetConns, ls)
		}
	}
	for _, l := range s.loops {
		l.start()
	}
	return nil
}
