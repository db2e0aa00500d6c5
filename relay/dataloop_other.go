//go:build !linux

package relay

import (
	"errors"
	"net"
	"net/netip"
)

// fastPathSupported reports whether this platform has tariq's data path:
// off Linux pion relays the data.
const fastPathSupported = false

var errNoDataPath = errors.New("tariq's data path is only on Linux")

type dataLoop struct{}

func (*dataLoop) stop() {}

type loopListener struct {
	net.PacketConn
	clients clientTable
}

type loopRelay struct {
	net.PacketConn
	entry *allocEntry
}

type streamRelay struct {
	net.PacketConn
	entry *allocEntry
}

type streamBatch struct{}

func newStreamBatch() *streamBatch { return nil }

type rawSockaddr struct{}

func sockaddrOf(netip.AddrPort, bool) rawSockaddr { return rawSockaddr{} }

func (s *Service) openDataPath(int) error { return errNoDataPath }

func (s *Service) openLoopRelay(*loopListener, string, netip.Addr, int, relayPort) (*loopRelay, error) {
	return nil, errNoDataPath
}

func (s *Service) openStreamRelay(string, netip.Addr, int, relayPort) (*streamRelay, error) {
	return nil, errNoDataPath
}
