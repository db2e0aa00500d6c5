package testutil

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// setns moves the calling OS thread into the network namespace f.
func setns(f *os.File) error { return unix.Setns(int(f.Fd()), unix.CLONE_NEWNET) }

// browserProcAttr puts Chromium in a process group of its own, so cleanup
// can kill every helper process (zygote, renderer, network service) by the
// group's id, and has the kernel SIGKILL it if the test binary dies first.
func browserProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// lockFile takes an exclusive flock on f, waiting for whoever holds it;
// closing f releases it.
func lockFile(f *os.File) error { return unix.Flock(int(f.Fd()), unix.LOCK_EX) }
