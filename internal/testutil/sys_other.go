//go:build !linux

package testutil

import (
	"errors"
	"os"
	"syscall"
)

// setns is Linux-only: network namespaces do not exist elsewhere.
func setns(*os.File) error { return errors.New("network namespaces need Linux") }

// browserProcAttr puts Chromium in a process group of its own.
func browserProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

// lockFile does nothing here: builds may race, each into a file of its own.
func lockFile(*os.File) error { return nil }
