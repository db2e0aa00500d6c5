//go:build !linux

package ownaddr

import (
	"fmt"
	"log/slog"
	"net/netip"
	"runtime"
)

// Off Linux a Host lists the addresses through the standard library and
// follows nothing.
type host struct{}

func openHost() (*host, error) { return &host{}, nil }

func (h *host) list() ([]netip.Addr, error) { return InterfaceAddrs() }

func (h *host) watch(log *slog.Logger, changed func()) error {
	return fmt.Errorf("address events are not supported on %s", runtime.GOOS)
}

func (h *host) close() error { return nil }
