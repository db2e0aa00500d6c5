//go:build !linux

package relay

import (
	"fmt"
	"runtime"
	"syscall"
)

// udpControl does nothing off Linux, where SO_REUSEPORT does not balance load.
func udpControl(bool) func(network, address string, c syscall.RawConn) error { return nil }

// udpSocketsPerListener is 1 off Linux.
func udpSocketsPerListener(int) int { return 1 }

// openFileLimit is not read off Linux.
func openFileLimit() (int, error) {
	return 0, fmt.Errorf("reading the open-file limit is not supported on %s", runtime.GOOS)
}
