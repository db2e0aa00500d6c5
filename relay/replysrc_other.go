//go:build !linux

package relay

import (
	"fmt"
	"net"
	"net/netip"
	"runtime"
)

const packetInfoSpace = 0

// enablePacketInfo is not supported off Linux: replies leave from the
// address the kernel picks.
func enablePacketInfo(*net.UDPConn) error {
	return fmt.Errorf("choosing the source of UDP replies is not supported on %s", runtime.GOOS)
}

func packetDst([]byte) (netip.Addr, int32, bool) { return netip.Addr{}, 0, false }

func sourceControl(netip.Addr, int32) []byte { return nil }

const msgCtrunc = 0
