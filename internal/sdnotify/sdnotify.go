// Package sdnotify tells systemd about the daemon's state (sd_notify(3)):
// READY=1 once every listener is up, RELOADING=1 around a SIGHUP reload,
// STOPPING=1 on the way out. Outside systemd (no NOTIFY_SOCKET) every call
// does nothing.
package sdnotify

import (
	"fmt"

	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"
)

// Ready reports that start-up is complete, with a status line.
func Ready(status string) error { return notify("READY=1\nSTATUS=" + status) }

// Reloading reports that a reload began; systemd's notify-reload wants the
// monotonic time with it.
func Reloading() error {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	usec := ts.Sec*1e6 + ts.Nsec/1e3
	return notify(fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d", usec))
}

// Stopping reports that shutdown began.
func Stopping() error { return notify("STOPPING=1") }

func notify(state string) error {
	_, err := daemon.SdNotify(false, state)
	return err
}
