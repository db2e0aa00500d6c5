package relay

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// udpControl sets SO_REUSEPORT when several sockets share a port.
func udpControl(reuse bool) func(network, address string, c syscall.RawConn) error {
	return func(network, address string, c syscall.RawConn) error {
		if !reuse {
			return nil
		}
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		})
		if err != nil {
			return err
		}
		return serr
	}
}

// udpSocketsPerListener is how many SO_REUSEPORT sockets share each UDP
// listen address: one per core, since one pion read loop is one core's work.
func udpSocketsPerListener(cores int) int { return max(1, cores) }

// openFileLimit returns the soft RLIMIT_NOFILE, which the Go runtime has
// raised to the hard limit at start.
func openFileLimit() (int, error) {
	var r unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &r); err != nil {
		return 0, err
	}
	if r.Cur > 1<<30 {
		return 1 << 30, nil // RLIM_INFINITY
	}
	return int(r.Cur), nil
}
