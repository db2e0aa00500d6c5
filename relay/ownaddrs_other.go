//go:build !linux

package relay

import (
	"fmt"
	"runtime"
)

// startAddrWatch has no address events to follow off Linux; the relay lists
// its addresses again every minute instead.
func (s *Service) startAddrWatch() error {
	return fmt.Errorf("address events are not supported on %s", runtime.GOOS)
}
