package relay

import "github.com/tariq-vpn/tariq/internal/ownaddr"

// startAddrWatch follows the kernel's address events (internal/ownaddr)
// until Close: every event (a burst counts as one) lists the own addresses
// again, as does a subscription that had to be renewed.
func (s *Service) startAddrWatch() error {
	h, err := ownaddr.Open()
	if err != nil {
		return err
	}
	if err := h.Watch(s.log, s.refreshOwnAddrs); err != nil {
		h.Close()
		return err
	}
	s.watchStop, s.watchDone = make(chan struct{}), make(chan struct{})
	go func() {
		<-s.watchStop
		h.Close() // waits for a refresh under way
		close(s.watchDone)
	}()
	return nil
}
