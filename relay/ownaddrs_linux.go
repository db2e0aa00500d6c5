package relay

import (
	"time"

	"github.com/vishvananda/netlink"
)

// addrSub is one subscription to the kernel's address events
// (RTNLGRP_IPV4_IFADDR, RTNLGRP_IPV6_IFADDR). netlink closes ch when its
// socket fails, for instance when events overflowed the socket buffer
// (ENOBUFS); closing done closes the socket.
type addrSub struct {
	ch   chan netlink.AddrUpdate
	done chan struct{}
}

func (s *Service) subscribeAddrs() (*addrSub, error) {
	sub := &addrSub{ch: make(chan netlink.AddrUpdate, 64), done: make(chan struct{})}
	err := netlink.AddrSubscribeWithOptions(sub.ch, sub.done, netlink.AddrSubscribeOptions{
		ErrorCallback: func(err error) { s.log.Debug("address event", "err", err) },
	})
	if err != nil {
		return nil, err
	}
	return sub, nil
}

// stop closes the subscription and drains its channel, so netlink's
// receiving goroutine never blocks on a send and exits.
func (sub *addrSub) stop() {
	close(sub.done)
	for range sub.ch {
	}
}

// startAddrWatch subscribes to address events and follows them on a
// goroutine of its own until Close: every event (a burst counts as one)
// lists the own addresses again. If the subscription breaks, events may
// have been lost, so it subscribes again and lists again.
func (s *Service) startAddrWatch() error {
	sub, err := s.subscribeAddrs()
	if err != nil {
		return err
	}
	s.watchStop, s.watchDone = make(chan struct{}), make(chan struct{})
	go s.watchAddrs(sub)
	return nil
}

func (s *Service) watchAddrs(sub *addrSub) {
	defer close(s.watchDone)
	var backoff time.Duration // grows while subscribing fails
	for {
		if !s.followAddrs(sub) {
			sub.stop()
			return
		}
		sub.stop()
		s.log.Warn("relay address events interrupted; subscribing again")
		for {
			backoff = min(max(2*backoff, 100*time.Millisecond), 30*time.Second)
			select {
			case <-time.After(backoff):
			case <-s.watchStop:
				return
			}
			var err error
			if sub, err = s.subscribeAddrs(); err == nil {
				backoff = 0
				break
			}
			s.log.Warn("subscribing to address events failed", "err", err, "retry_in", backoff.String())
		}
		s.refreshOwnAddrs()
	}
}

// followAddrs lists the own addresses after every burst of events on sub.
// It returns false when the watch is to stop, true when sub broke.
func (s *Service) followAddrs(sub *addrSub) bool {
	for {
		select {
		case <-s.watchStop:
			return false
		case _, ok := <-sub.ch:
			if !ok {
				return true
			}
		}
		for drained := false; !drained; {
			select {
			case _, ok := <-sub.ch:
				if !ok {
					s.refreshOwnAddrs()
					return true
				}
			default:
				drained = true
			}
		}
		s.refreshOwnAddrs()
	}
}
