//go:build !linux

package relay

import "syscall"

// udpControl does nothing off Linux, where SO_REUSEPORT does not balance load.
func udpControl(bool) func(network, address string, c syscall.RawConn) error { return nil }

// udpSocketsPerListener is 1 off Linux.
func udpSocketsPerListener(int) int { return 1 }
