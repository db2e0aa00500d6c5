package vpn

import (
	"fmt"
	"net"
	"net/netip"
	"sync"

	"golang.zx2c4.com/wireguard/conn"
)

// hub is an in-memory UDP network for wireguard-go devices: each bind
// gets a port on 127.0.0.1, datagrams to a port nobody holds are dropped,
// as UDP's are. Unlike conn/bindtest, which pairs exactly two binds, it
// lets one server talk to several clients.
type hub struct {
	mu    sync.Mutex // guards ports and next
	ports map[uint16]chan datagram
	next  uint16
}

type datagram struct {
	from uint16
	data []byte
}

func newHub() *hub { return &hub{ports: map[uint16]chan datagram{}, next: 40000} }

// bind returns a new, unopened bind on h.
func (h *hub) bind() conn.Bind { return &hubBind{h: h} }

type hubBind struct {
	h      *hub
	mu     sync.Mutex // guards port, rx and closed
	port   uint16
	rx     chan datagram
	closed chan struct{}
}

var _ conn.Bind = (*hubBind)(nil)

func (b *hubBind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	b.h.mu.Lock()
	defer b.h.mu.Unlock()
	if port == 0 {
		for b.h.ports[b.h.next] != nil {
			b.h.next++
		}
		port = b.h.next
	}
	if b.h.ports[port] != nil {
		return nil, 0, fmt.Errorf("listen udp 127.0.0.1:%d: address already in use", port)
	}
	rx, closed := make(chan datagram, 1024), make(chan struct{})
	b.h.ports[port] = rx
	b.mu.Lock()
	b.port, b.rx, b.closed = port, rx, closed
	b.mu.Unlock()
	recv := func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		select {
		case <-closed:
			return 0, net.ErrClosed
		case d := <-rx:
			sizes[0] = copy(bufs[0], d.data)
			eps[0] = hubEndpoint(d.from)
			return 1, nil
		}
	}
	return []conn.ReceiveFunc{recv}, port, nil
}

func (b *hubBind) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed == nil {
		return nil
	}
	close(b.closed)
	b.h.mu.Lock()
	if b.h.ports[b.port] == b.rx {
		delete(b.h.ports, b.port)
	}
	b.h.mu.Unlock()
	b.closed, b.rx = nil, nil
	return nil
}

func (b *hubBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	b.mu.Lock()
	from, open := b.port, b.closed != nil
	b.mu.Unlock()
	if !open {
		return net.ErrClosed
	}
	b.h.mu.Lock()
	dst := b.h.ports[uint16(ep.(hubEndpoint))]
	b.h.mu.Unlock()
	for _, buf := range bufs {
		if dst == nil {
			continue
		}
		select {
		case dst <- datagram{from: from, data: append([]byte(nil), buf...)}:
		default: // full: dropped, as UDP would
		}
	}
	return nil
}

func (b *hubBind) ParseEndpoint(s string) (conn.Endpoint, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return nil, err
	}
	return hubEndpoint(ap.Port()), nil
}

func (b *hubBind) SetMark(uint32) error { return nil }
func (b *hubBind) BatchSize() int       { return 1 }

type hubEndpoint uint16

var _ conn.Endpoint = hubEndpoint(0)

func (e hubEndpoint) ClearSrc()           {}
func (e hubEndpoint) SrcToString() string { return "" }
func (e hubEndpoint) DstToString() string { return fmt.Sprintf("127.0.0.1:%d", uint16(e)) }
func (e hubEndpoint) DstToBytes() []byte  { return []byte{byte(e >> 8), byte(e)} }
func (e hubEndpoint) DstIP() netip.Addr   { return netip.AddrFrom4([4]byte{127, 0, 0, 1}) }
func (e hubEndpoint) SrcIP() netip.Addr   { return netip.Addr{} }
