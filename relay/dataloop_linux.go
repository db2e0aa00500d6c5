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
	// started is set by start, before the loop runs, and read by stop:
	// both on the goroutine that opens and closes the service.
	started bool

	mu      sync.Mutex // guards nextID, freeIDs and gen, and growing slots
	nextID  uint32
	freeIDs []uint32
	gen     uint32
	slots   atomic.Pointer[[]*slotChunk] // by id: what an epoll event names

	// Used by the loop goroutine only. Every datagram is read into one
	// of bufs and stays there, framed in place, until it is sent at the
	// end of the round.
	bufs    [][]byte
	free    []int          // indices of unused bufs
	batch   []int          // the buffer of each message of the read under way
	rx      *mmsgBatch     // client datagrams
	peerRx  *mmsgBatch     // peer datagrams
	tx      *mmsgBatch     // datagrams to clients, sent at the end of the round
	gsoHdrs []unix.Mmsghdr // tx's datagrams in runs, for sendSegmented
	gsoCtl  [][]byte       // a control-message buffer per gsoHdrs entry
	// gsoPeers is set when the kernel takes UDP_SEGMENT: runs of data for
	// one peer leave as one message too (sendPeerRun).
	gsoPeers bool
	peerIov  [gsoMaxSegments]unix.Iovec
	peerCtl  [24]byte
	txBuf    []int // buffer of each queued datagram to a client
	txq      int   // queued datagrams to clients
	txLis    *loopListener
	pq       []peerSend // datagrams to peers, sent at the end of the round
	rng      *mrand.ChaCha8
	tid      [12]byte
	pol      *policy
	events   []unix.EpollEvent
	full     bool               // a socket had more than one batch this round
	roundFn  func(uintptr) bool // round, made once

	fromPeers, fromPeerBytes uint64 // read this round, not yet counted
}

// peerSend is a datagram for a peer, queued.
type peerSend struct {
	r    *loopRelay
	peer netip.AddrPort
	buf  int
	data []byte
}

// A round reads up to rxBatch datagrams from each listener socket and up
// to peerBatch from each relayed socket. peerBatch is no smaller: a client
// sending at full speed puts up to rxBatch datagrams a round through its
// allocation, and its peer's answers must drain as fast, or they pile up
// in the relayed socket until the kernel drops them.
const (
	rxBatch   = 64
	peerBatch = 64
	loopBufs  = 512 // packet buffers of a loop (1 MiB)
	// listenerBatches is how many batches a listener socket may give in
	// one round: it carries every client's datagrams, and must not
	// overflow under load while the relayed sockets are served.
	listenerBatches = 4
	// firstBatch is how many datagrams a round first asks a socket for.
	firstBatch = 8
	txSlots    = loopBufs
	epollMax   = 128
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
	for i := range loopBufs {
		l.bufs = append(l.bufs, make([]byte, slotSize))
		l.free = append(l.free, i)
	}
	l.batch = make([]int, max(rxBatch, peerBatch))
	l.txBuf = make([]int, txSlots)
	l.gsoHdrs = make([]unix.Mmsghdr, txSlots)
	for range txSlots {
		l.gsoCtl = append(l.gsoCtl, make([]byte, 0, packetInfoSpace+unix.CmsgSpace(2)))
	}
	l.pq = make([]peerSend, 0, loopBufs)
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
	if n := len(l.freeIDs); n > 0 {
		id, l.freeIDs = l.freeIDs[n-1], l.freeIDs[:n-1]
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
		l.freeIDs = append(l.freeIDs, sock.id)
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

// start runs the loop on its own goroutine.
func (l *dataLoop) start() {
	l.started = true
	go l.run()
}

// stop ends the loop, if started, waits for it and releases it.
func (l *dataLoop) stop() {
	if !l.started {
		l.wake.close()
		l.ep.Close()
		return
	}
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

// countFromPeers moves what was read from peers to the service's
// counters, before it is sent on to clients.
func (l *dataLoop) countFromPeers() {
	st := l.s.stats
	if l.fromPeers > 0 {
		st.PacketsFromPeers.Add(l.fromPeers)
		st.BytesFromPeers.Add(l.fromPeerBytes)
		l.fromPeers, l.fromPeerBytes = 0, 0
	}
}

// take moves n buffers from the free list to l.batch, sending what is
// queued first if too few are free.
func (l *dataLoop) take(n int) {
	if len(l.free) < n {
		l.flush()
	}
	for i := range n {
		l.batch[i] = l.free[len(l.free)-1]
		l.free = l.free[:len(l.free)-1]
	}
}

// untake returns the buffers of l.batch[:n] not queued (marked -1) to the
// free list.
func (l *dataLoop) untake(n int) {
	for _, k := range l.batch[:n] {
		if k >= 0 {
			l.free = append(l.free, k)
		}
	}
}

// readClients reads client datagrams from ls, up to listenerBatches full
// batches, and relays their data or hands them to pion. A quiet socket
// has a datagram or two: the first read asks for a few, so that a round
// does not prepare (and the cache does not carry) a full batch for them.
func (l *dataLoop) readClients(ls *loopListener) {
	want := firstBatch
	for total := 0; ; {
		n := l.readClientBatch(ls, want)
		total += n
		if n < want {
			return
		}
		if total >= listenerBatches*rxBatch {
			l.full = true
			return
		}
		want = rxBatch
	}
}

// readClientBatch reads up to want client datagrams from ls and relays
// them; it returns how many it read.
func (l *dataLoop) readClientBatch(ls *loopListener, want int) int {
	b := l.rx
	l.take(want)
	for i := range want {
		b.prepRecv(i, l.bufs[l.batch[i]])
	}
	n, err := recvmmsg(ls.fd, b.hdrs[:want])
	if err != nil {
		l.untake(want)
		return 0
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
		k := l.batch[i]
		if l.fromClient(ls, src, l.bufs[k][:h.Len], b.control(i), h.Hdr.Flags&unix.MSG_CTRUNC != 0, k) {
			l.batch[i] = -1
		}
	}
	l.untake(want)
	// The batch's data for peers goes now, a batch at a time rather than
	// the round's at once, which a single busy peer could not take in.
	l.flushPeers()
	return n
}

// fromClient relays or hands on the datagram d, in buffer k, and reports
// whether it queued it for a peer (keeping k).
func (l *dataLoop) fromClient(ls *loopListener, src netip.AddrPort, d, oob []byte, ctrunc bool, k int) bool {
	if len(d) >= pionMTU {
		return false // pion's read loop drops these too
	}
	switch {
	case len(d) >= 4 && d[0]&0xC0 == 0x40:
		num, cd, ok := channelData(d)
		if !ok {
			break // pion decides what this is
		}
		e := ls.clients.get(src)
		if e == nil {
			return false
		}
		l.noteSource(ls, e, src, oob, ctrunc)
		peer, ok := e.chans.Load().peerOf(num)
		if !ok {
			return false
		}
		return l.toPeer(e, peer, cd, k)
	case isSendIndication(d):
		peer, sd, v := parseSend(d)
		if v == sendPion {
			break
		}
		e := ls.clients.get(src)
		if v == sendDrop || e == nil {
			return false
		}
		l.noteSource(ls, e, src, oob, ctrunc)
		if family(peer.Addr()) != e.fam() {
			return false // RFC 8656 §11.2: silently discarded, as pion does
		}
		return l.toPeer(e, peer, sd, k)
	}
	ls.toPion(l, src, d, oob, ctrunc)
	return false
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

// toPeer queues data, in buffer k, for peer if e may send it there.
func (l *dataLoop) toPeer(e *allocEntry, peer netip.AddrPort, data []byte, k int) bool {
	if !e.live.Load() || !l.s.permitted(e, l.pol, peer) {
		return false
	}
	r, ok := e.relay.(*loopRelay)
	if !ok {
		return false
	}
	l.pq = append(l.pq, peerSend{r, peer, k, data})
	return true
}

// readPeers reads peers' datagrams from the relayed socket r, up to
// peerBatch, and queues them for its client; like readClients it asks for
// a few first.
func (l *dataLoop) readPeers(r *loopRelay) {
	want := firstBatch
	for total := 0; ; {
		n := l.readPeerBatch(r, want)
		total += n
		if n < want {
			return
		}
		if total >= peerBatch {
			l.full = true
			return
		}
		want = peerBatch - total
	}
}

func (l *dataLoop) readPeerBatch(r *loopRelay, want int) int {
	b := l.peerRx
	l.take(want)
	for i := range want {
		b.prepRecv(i, l.bufs[l.batch[i]][dataHeadroom:dataHeadroom+maxPeerData])
	}
	n, err := recvmmsg(r.fd, b.hdrs[:want])
	if err != nil {
		l.untake(want)
		return 0
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
		k := l.batch[i]
		buf := l.bufs[k]
		size := int(h.Len)
		var frame []byte
		if num, ok := e.chans.Load().numOf(peer); ok {
			frame = frameChannelData(buf, size, num)
		} else {
			l.rng.Read(l.tid[:])
			frame = frameDataIndication(buf, size, peer, &l.tid)
		}
		l.queue(e, k, frame)
		l.batch[i] = -1
		l.fromPeers++
		l.fromPeerBytes += uint64(size)
	}
	l.untake(want)
	return n
}

// queue adds frame, in buffer k, to the datagrams for e's client.
func (l *dataLoop) queue(e *allocEntry, k int, frame []byte) {
	ls := e.lis
	if l.txq > 0 && l.txLis != ls {
		l.flushClients()
	}
	l.txLis = ls
	var oob []byte
	if la := e.src.Load(); la != nil {
		oob = la.oob
	}
	l.tx.prepSend(l.txq, frame, &e.sa, oob)
	l.txBuf[l.txq] = k
	l.txq++
}

// flush sends what is queued: to peers, each from its relayed socket, and
// to clients, gathered per listener socket.
func (l *dataLoop) flush() {
	l.flushPeers()
	l.flushClients()
}

func (l *dataLoop) flushPeers() {
	if len(l.pq) == 0 {
		return
	}
	var bytes, unsent, unsentBytes uint64
	for i := range l.pq {
		bytes += uint64(len(l.pq[i].data))
	}
	l.s.stats.sendingToPeers(uint64(len(l.pq)), bytes)
	for i := 0; i < len(l.pq); {
		q := &l.pq[i]
		size := len(q.data)
		j := i + 1
		if l.gsoPeers && !q.r.noGSO && size > 0 && size <= gsoMaxFrame {
			for j < len(l.pq) && j-i < gsoMaxSegments && (j-i+1)*size <= gsoMaxBytes &&
				l.pq[j].r == q.r && l.pq[j].peer == q.peer && len(l.pq[j].data) == size {
				j++
			}
		}
		handled, sent := false, false
		if j-i > 1 {
			handled, sent = l.sendPeerRun(l.pq[i:j])
		}
		for k := i; k < j; k++ {
			p := &l.pq[k]
			if !handled {
				sent = p.r.sendPeer(p.data, p.peer)
			}
			if !sent {
				unsent++
				unsentBytes += uint64(len(p.data))
			}
		}
		i = j
	}
	if unsent > 0 {
		l.s.stats.unsentToPeers(unsent, unsentBytes)
	}
	for i := range l.pq {
		l.free = append(l.free, l.pq[i].buf)
		l.pq[i] = peerSend{}
	}
	l.pq = l.pq[:0]
}

// sendPeerRun sends run, datagrams of one size from one relayed socket to
// one peer, as one segmented message (see sendSegmented). It reports
// whether the message was handled (not handled: the route cannot take it,
// send the datagrams one by one) and, if so, whether it went.
func (l *dataLoop) sendPeerRun(run []peerSend) (handled, sent bool) {
	r := run[0].r
	for i := range run {
		l.peerIov[i].Base = &run[i].data[0]
		l.peerIov[i].SetLen(len(run[i].data))
	}
	sa := sockaddrOf(run[0].peer, r.inet6)
	var h unix.Msghdr
	h.Name = &sa.b[0]
	h.Namelen = sa.n
	h.Iov = &l.peerIov[0]
	h.SetIovlen(len(run))
	ctl := appendSegmentSize(l.peerCtl[:0], len(run[0].data))
	h.Control = &ctl[0]
	h.SetControllen(len(ctl))
	if !r.fd.acquire() {
		return true, false // closed: nothing to send
	}
	_, _, e := unix.RawSyscall(unix.SYS_SENDMSG, uintptr(r.fd.fd), uintptr(unsafe.Pointer(&h)), unix.MSG_DONTWAIT)
	r.fd.release()
	switch e {
	case 0:
		return true, true
	case unix.EIO:
		r.noGSO = true
		return false, false
	case unix.EINVAL:
		return false, false
	}
	return true, false // dropped, as a UDP socket drops
}

func (l *dataLoop) flushClients() {
	l.countFromPeers()
	if l.txq == 0 {
		return
	}
	if l.txLis.gso.Load() {
		l.sendSegmented()
	} else {
		sendmmsg(l.txLis.fd, l.tx.hdrs[:l.txq])
	}
	l.free = append(l.free, l.txBuf[:l.txq]...)
	l.txq = 0
	l.txLis = nil
}

// UDP generic segmentation offload (UDP_SEGMENT, Linux 4.18): datagrams to
// one client of one size, which a relayed socket's batch mostly is (a
// peer's burst, framed alike), go down the stack as one message the kernel
// cuts up late, instead of one trip each. gsoMaxFrame keeps a segment
// within the smallest path MTU a client is likely behind (1280 bytes less
// the IPv6 and UDP headers); larger frames, and clients whose route cannot
// take a segmented message, go one by one.
const (
	gsoMaxSegments = 64
	gsoMaxBytes    = 60000
	gsoMaxFrame    = 1232
)

// sendSegmented sends the queued datagrams to clients, each run of equal
// frames to one address and from one source as one segmented message.
func (l *dataLoop) sendSegmented() {
	tx, g := l.tx, l.gsoHdrs
	var runs [txSlots + 1]int // runs[i] is where message i's run starts
	h := 0
	for i := 0; i < l.txq; {
		size := int(tx.iovs[i].Len)
		j := i + 1
		if size <= gsoMaxFrame {
			for j < l.txq && j-i < gsoMaxSegments && (j-i+1)*size <= gsoMaxBytes &&
				int(tx.iovs[j].Len) == size && tx.names[j] == tx.names[i] &&
				tx.hdrs[j].Hdr.Control == tx.hdrs[i].Hdr.Control {
				j++
			}
		}
		m := &g[h].Hdr
		*m = tx.hdrs[i].Hdr
		m.SetIovlen(j - i)
		if j-i > 1 {
			ctl := l.gsoCtl[h][:0]
			if oobLen := int(tx.hdrs[i].Hdr.Controllen); oobLen > 0 {
				ctl = append(ctl, unsafe.Slice(tx.hdrs[i].Hdr.Control, oobLen)...)
			}
			ctl = appendSegmentSize(ctl, size)
			m.Control = &ctl[0]
			m.SetControllen(len(ctl))
		}
		runs[h] = i
		h++
		i = j
	}
	runs[h] = l.txq
	for sent := 0; sent < h; {
		n, err := sendmmsg(l.txLis.fd, g[sent:h])
		sent += n
		if err == nil || sent >= h {
			break
		}
		if err == errAgain {
			return
		}
		// The message that failed went as one segmented message: the
		// route cannot take it (EIO without checksum offload, EINVAL past
		// its MTU). Send its datagrams one by one, and stop segmenting on
		// this socket if the device cannot.
		if err == unix.EIO {
			l.txLis.gso.Store(false)
		}
		sendmmsg(l.txLis.fd, tx.hdrs[runs[sent]:runs[sent+1]])
		sent++
	}
}

// appendSegmentSize appends a UDP_SEGMENT control message for segments of
// size bytes to ctl.
func appendSegmentSize(ctl []byte, size int) []byte {
	off := len(ctl)
	ctl = append(ctl, make([]byte, unix.CmsgSpace(2))...)
	h := (*unix.Cmsghdr)(unsafe.Pointer(&ctl[off]))
	h.Level = unix.SOL_UDP
	h.Type = unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(ctl[off+unix.CmsgLen(0):], uint16(size))
	return ctl
}
