package relay

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	mrand "math/rand/v2"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// dataLoop relays the UDP clients' data of its listener sockets and of the
// relayed sockets of their allocations, from one goroutine and its own
// epoll instance: one wake-up serves every socket that has datagrams,
// each socket is read with recvmmsg, data to peers goes out at once
// (sendto on the allocation's relayed socket), and data to clients is
// gathered and sent with one sendmmsg per listener socket at the end of
// each round. A socket is read once per round (level-triggered), so a
// flood on one delays the others by at most one batch.
//
// The goroutine waits in Go's poller on the epoll descriptor itself, which
// is readable when any of its sockets is: a goroutine blocked in
// epoll_wait instead would keep the runtime's sysmon thread waking every
// 20 µs to take its P back, which costs more than the relaying.
//
// A datagram the data path does not relay (a request, a response, a
// Binding, an odd Send indication) goes to pion, copied, through its
// listener's queue (loopListener.ReadFrom).
type dataLoop struct {
	s    *Service
	epfd int
	ep   *os.File        // epfd, in Go's poller
	rc   syscall.RawConn // ep's
	wake *sockFD         // eventfd: Close wakes the loop with it
	quit atomic.Bool
	done chan struct{}

	mu     sync.Mutex // guards nextID, free and gen, and growing slots
	nextID uint32
	free   []uint32
	gen    uint32
	slots  atomic.Pointer[[]*slotChunk] // by id: what an epoll event names

	// Used by the loop goroutine only.
	rx                                             *mmsgBatch // client datagrams
	rxBufs                                         [][]byte
	peerRx                                         *mmsgBatch // peer datagrams, read straight into tx buffers
	tx                                             *mmsgBatch // datagrams to clients, sent at the end of the round
	txBufs                                         [][]byte   // every tx buffer
	txFree                                         []int      // indices of unused tx buffers
	txUsed                                         []int      // tx buffer of each queued message
	txq                                            int        // queued messages
	txLis                                          *loopListener
	peerIdx                                        []int // tx buffer each peerRx message reads into
	rng                                            *mrand.ChaCha8
	tid                                            [12]byte
	pol                                            *policy
	events                                         []unix.EpollEvent
	full                                           bool               // a socket had more than one batch this round
	roundFn                                        func(uintptr) bool // round, made once
	toPeers, fromPeers, toPeerBytes, fromPeerBytes uint64
}

const (
	rxBatch   = 32  // client datagrams per recvmmsg
	peerBatch = 16  // peer datagrams per recvmmsg of one relayed socket
	txSlots   = 128 // datagrams to clients gathered per round at most
	epollMax  = 128
)

// loopSock is what an epoll event names: a listener socket, a relayed
// socket, or the wake-up eventfd.
type loopSock struct {
	id, gen uint32
	lis     *loopListener
	rel     *loopRelay
}

type slotChunk [256]atomic.Pointer[loopSock]

func newDataLoop(s *Service) (*dataLoop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("creating epoll: %w", err)
	}
	if err := unix.SetNonblock(epfd, true); err != nil { // so os.NewFile puts it in the poller
		unix.Close(epfd)
		return nil, fmt.Errorf("creating epoll: %w", err)
	}
	ep := os.NewFile(uintptr(epfd), "epoll")
	rc, err := ep.SyscallConn()
	if err != nil {
		ep.Close()
		return nil, fmt.Errorf("creating epoll: %w", err)
	}
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		ep.Close()
		return nil, fmt.Errorf("creating eventfd: %w", err)
	}
	var seed [32]byte
	rand.Read(seed[:])
	l := &dataLoop{
		s: s, epfd: epfd, ep: ep, rc: rc, wake: &sockFD{fd: efd}, done: make(chan struct{}),
		events: make([]unix.EpollEvent, epollMax),
		rx:     newMmsgBatch(rxBatch, packetInfoSpace),
		peerRx: newMmsgBatch(peerBatch, 0),
		tx:     newMmsgBatch(txSlots, 0),
		rng:    mrand.NewChaCha8(seed),
	}
	dir := []*slotChunk{}
	l.slots.Store(&dir)
	for range rxBatch {
		l.rxBufs = append(l.rxBufs, make([]byte, slotSize))
	}
	for i := range txSlots {
		l.txBufs = append(l.txBufs, make([]byte, slotSize))
		l.txFree = append(l.txFree, i)
	}
	l.txUsed = make([]int, txSlots)
	l.peerIdx = make([]int, peerBatch)
	l.roundFn = l.round
	if _, err := l.register(l.wake, &loopSock{}); err != nil {
		l.wake.close()
		ep.Close()
		return nil, err
	}
	return l, nil
}

// register adds fd to the loop for sock, returning sock with its id set.
func (l *dataLoop) register(fd *sockFD, sock *loopSock) (*loopSock, error) {
	l.mu.Lock()
	var id uint32
	if n := len(l.free); n > 0 {
		id, l.free = l.free[n-1], l.free[:n-1]
	} else {
		id = l.nextID
		l.nextID++
	}
	l.gen++
	sock.id, sock.gen = id, l.gen
	dir := *l.slots.Load()
	if int(id>>8) >= len(dir) {
		grown := append(append([]*slotChunk(nil), dir...), new(slotChunk))
		l.slots.Store(&grown)
		dir = grown
	}
	dir[id>>8][id&255].Store(sock)
	l.mu.Unlock()
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(sock.gen), Pad: int32(id)}
	var err error
	if fd.acquire() {
		err = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd.fd, &ev)
		fd.release()
	} else {
		err = errClosedSocket
	}
	if err != nil {
		l.unregister(sock)
		return nil, fmt.Errorf("adding a socket to epoll: %w", err)
	}
	return sock, nil
}

// unregister forgets sock; its descriptor leaves the epoll set when it is
// closed. An event already read for it finds nothing.
func (l *dataLoop) unregister(sock *loopSock) {
	l.mu.Lock()
	dir := *l.slots.Load()
	if p := &dir[sock.id>>8][sock.id&255]; p.Load() == sock {
		p.Store(nil)
		l.free = append(l.free, sock.id)
	}
	l.mu.Unlock()
}

func (l *dataLoop) lookup(ev *unix.EpollEvent) *loopSock {
	id, gen := uint32(ev.Pad), uint32(ev.Fd)
	dir := *l.slots.Load()
	if int(id>>8) >= len(dir) {
		return nil
	}
	sock := dir[id>>8][id&255].Load()
	if sock == nil || sock.gen != gen {
		return nil
	}
	return sock
}

// stop ends the loop and waits for it.
func (l *dataLoop) stop() {
	l.quit.Store(true)
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	if l.wake.acquire() {
		unix.Write(l.wake.fd, one[:])
		l.wake.release()
	}
	<-l.done
	l.wake.close()
	l.ep.Close()
}

func (l *dataLoop) run() {
	defer close(l.done)
	if err := l.rc.Read(l.roundFn); err != nil {
		l.s.log.Error("relay data loop stopped", "err", err)
	}
}

// round serves what the sockets hold; false means wait until the epoll
// descriptor is readable again, true that the loop is to end.
func (l *dataLoop) round(epfd uintptr) bool {
	for !l.quit.Load() {
		n, err := epollWait(int(epfd), l.events)
		if err != nil {
			return err != unix.EINTR && err != unix.EAGAIN
		}
		if n == 0 {
			return false
		}
		l.pol = l.s.policy.Load()
		l.full = n == len(l.events)
		for i := range n {
			sock := l.lookup(&l.events[i])
			switch {
			case sock == nil:
			case sock.lis != nil:
				l.readClients(sock.lis)
			case sock.rel != nil:
				l.readPeers(sock.rel)
			default:
				var buf [8]byte
				if l.wake.acquire() {
					unix.Read(l.wake.fd, buf[:])
					l.wake.release()
				}
			}
		}
		l.flush()
		l.count()
		if !l.full {
			// Every socket read was drained, so nothing is left that the
			// poller will not announce afresh.
			return false
		}
	}
	return true
}

// epollWait returns the events ready now, without waiting.
func epollWait(epfd int, events []unix.EpollEvent) (int, error) {
	n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// count moves the round's counters to the service's.
func (l *dataLoop) count() {
	st := l.s.stats
	if l.toPeers > 0 {
		st.PacketsToPeers.Add(l.toPeers)
		st.BytesToPeers.Add(l.toPeerBytes)
		l.toPeers, l.toPeerBytes = 0, 0
	}
	if l.fromPeers > 0 {
		st.PacketsFromPeers.Add(l.fromPeers)
		st.BytesFromPeers.Add(l.fromPeerBytes)
		l.fromPeers, l.fromPeerBytes = 0, 0
	}
}

// readClients reads one batch of client datagrams from ls and relays
// their data, or hands them to pion.
func (l *dataLoop) readClients(ls *loopListener) {
	b := l.rx
	for i := range rxBatch {
		b.prepRecv(i, l.rxBufs[i])
	}
	n, err := recvmmsg(ls.fd, b.hdrs)
	if err != nil {
		return
	}
	if n == len(b.hdrs) {
		l.full = true
	}
	for i := range n {
		h := &b.hdrs[i]
		if h.Hdr.Flags&unix.MSG_TRUNC != 0 {
			continue // larger than a slot, far past pion's 1600 bytes
		}
		src, ok := addrPortOf(&b.names[i].b)
		if !ok {
			continue
		}
		d := l.rxBufs[i][:h.Len]
		l.fromClient(ls, src, d, b.control(i), h.Hdr.Flags&unix.MSG_CTRUNC != 0)
	}
}

func (l *dataLoop) fromClient(ls *loopListener, src netip.AddrPort, d, oob []byte, ctrunc bool) {
	if len(d) >= pionMTU {
		return // pion's read loop drops these too
	}
	var peer netip.AddrPort
	var data []byte
	switch {
	case len(d) >= 4 && d[0]&0xC0 == 0x40:
		num, cd, ok := channelData(d)
		if !ok {
			break // pion decides what this is
		}
		e := ls.clients.get(src)
		if e == nil {
			return
		}
		l.noteSource(ls, e, src, oob, ctrunc)
		p, ok := e.chans.Load().byNum[num]
		if !ok {
			return
		}
		peer, data = p, cd
		l.toPeer(e, peer, data)
		return
	case isSendIndication(d):
		p, sd, v := parseSend(d)
		if v == sendPion {
			break
		}
		e := ls.clients.get(src)
		if v == sendDrop || e == nil {
			return
		}
		l.noteSource(ls, e, src, oob, ctrunc)
		if family(p.Addr()) != e.fam() {
			return // RFC 8656 §11.2: silently discarded, as pion does
		}
		l.toPeer(e, p, sd)
		return
	}
	ls.toPion(l, src, d, oob, ctrunc)
}

// noteSource keeps a UDP client's reply source on the address its data
// arrives at, as replySources does for everything pion sends.
func (l *dataLoop) noteSource(ls *loopListener, e *allocEntry, src netip.AddrPort, oob []byte, ctrunc bool) {
	r := ls.clients.src
	if r == nil || ctrunc {
		return
	}
	la := r.arrival(oob)
	if la == nil || la == e.src.Load() {
		return
	}
	e.src.Store(r.note(src, la, false))
}

func (l *dataLoop) toPeer(e *allocEntry, peer netip.AddrPort, data []byte) {
	if !e.live.Load() || !l.s.permitted(e, l.pol, peer) {
		return
	}
	if e.relay.sendPeer(data, peer) {
		l.toPeers++
		l.toPeerBytes += uint64(len(data))
	}
}

// readPeers reads one batch of peers' datagrams from the relayed socket r
// and queues them for its client.
func (l *dataLoop) readPeers(r *loopRelay) {
	if len(l.txFree) < peerBatch {
		l.flush()
	}
	b := l.peerRx
	for i := range peerBatch {
		k := l.txFree[len(l.txFree)-1]
		l.txFree = l.txFree[:len(l.txFree)-1]
		l.peerIdx[i] = k
		b.prepRecv(i, l.txBufs[k][dataHeadroom:dataHeadroom+maxPeerData])
	}
	n, err := recvmmsg(r.fd, b.hdrs)
	if err != nil {
		n = 0
	}
	if n == len(b.hdrs) {
		l.full = true
	}
	e := r.entry
	for i := range n {
		h := &b.hdrs[i]
		if h.Hdr.Flags&unix.MSG_TRUNC != 0 || !e.live.Load() {
			continue
		}
		peer, ok := addrPortOf(&b.names[i].b)
		if !ok || !l.s.permitted(e, l.pol, peer) {
			continue
		}
		k := l.peerIdx[i]
		buf := l.txBufs[k]
		size := int(h.Len)
		var frame []byte
		if num, ok := e.chans.Load().byPeer[peer]; ok {
			frame = frameChannelData(buf, size, num)
		} else {
			l.rng.Read(l.tid[:])
			frame = frameDataIndication(buf, size, peer, &l.tid)
		}
		l.queue(e, k, frame)
		l.peerIdx[i] = -1
		l.fromPeers++
		l.fromPeerBytes += uint64(size)
	}
	for _, k := range l.peerIdx {
		if k >= 0 {
			l.txFree = append(l.txFree, k)
		}
	}
}

// queue adds frame, in tx buffer k, to the datagrams for e's client.
func (l *dataLoop) queue(e *allocEntry, k int, frame []byte) {
	ls := e.lis
	if l.txq > 0 && l.txLis != ls {
		l.flush()
	}
	l.txLis = ls
	var oob []byte
	if la := e.src.Load(); la != nil {
		oob = la.oob
	}
	l.tx.prepSend(l.txq, frame, &e.sa, oob)
	l.txUsed[l.txq] = k
	l.txq++
}

// flush sends the queued datagrams to clients.
func (l *dataLoop) flush() {
	if l.txq == 0 {
		return
	}
	sendmmsg(l.txLis.fd, l.tx.hdrs[:l.txq])
	l.txFree = append(l.txFree, l.txUsed[:l.txq]...)
	l.txq = 0
	l.txLis = nil
}
