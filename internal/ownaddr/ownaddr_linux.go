package ownaddr

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

type host struct {
	nl *netlink.Handle
	ns netns.NsHandle // the namespace Open ran in, for subscribing again from any thread

	mu      sync.Mutex    // guards stop and done
	stop    chan struct{} // closed by close to end the watch; nil when not watching
	done    chan struct{} // closed when the watch has ended
	closeMu sync.Once
}

func openHost() (*host, error) {
	ns, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("opening the network namespace: %w", err)
	}
	nl, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("opening netlink socket: %w", err)
	}
	return &host{nl: nl, ns: ns}, nil
}

func (h *host) list() ([]netip.Addr, error) {
	addrs, err := h.nl.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("listing addresses: %w", err)
	}
	out := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && !slices.Contains(out, ip.Unmap()) {
			out = append(out, ip.Unmap())
		}
	}
	return out, nil
}

// sub is one subscription to the kernel's address events
// (RTNLGRP_IPV4_IFADDR, RTNLGRP_IPV6_IFADDR). netlink closes ch when its
// socket fails, for instance when events overflowed the socket buffer
// (ENOBUFS); closing done closes the socket.
type sub struct {
	ch   chan netlink.AddrUpdate
	done chan struct{}
}

func (h *host) subscribe(log *slog.Logger) (*sub, error) {
	s := &sub{ch: make(chan netlink.AddrUpdate, 64), done: make(chan struct{})}
	err := netlink.AddrSubscribeWithOptions(s.ch, s.done, netlink.AddrSubscribeOptions{
		Namespace:     &h.ns,
		ErrorCallback: func(err error) { log.Debug("address event", "err", err) },
	})
	if err != nil {
		return nil, fmt.Errorf("subscribing to address events: %w", err)
	}
	return s, nil
}

// stop closes the subscription and drains its channel, so netlink's
// receiving goroutine never blocks on a send and exits.
func (s *sub) stop() {
	close(s.done)
	for range s.ch {
	}
}

func (h *host) watch(log *slog.Logger, changed func()) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stop != nil {
		return errors.New("already watching address events")
	}
	s, err := h.subscribe(log)
	if err != nil {
		return err
	}
	h.stop, h.done = make(chan struct{}), make(chan struct{})
	go h.run(s, log, changed, h.stop, h.done)
	return nil
}

func (h *host) run(s *sub, log *slog.Logger, changed func(), stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	var backoff time.Duration // grows while subscribing fails
	for {
		if !follow(s, changed, stop) {
			s.stop()
			return
		}
		s.stop()
		log.Warn("address events interrupted; subscribing again")
		for {
			backoff = min(max(2*backoff, 100*time.Millisecond), 30*time.Second)
			select {
			case <-time.After(backoff):
			case <-stop:
				return
			}
			var err error
			if s, err = h.subscribe(log); err == nil {
				backoff = 0
				break
			}
			log.Warn("subscribing to address events failed", "err", err, "retry_in", backoff.String())
		}
		changed()
	}
}

// follow calls changed after every burst of events on s. It returns false
// when the watch is to stop, true when s broke.
func follow(s *sub, changed func(), stop <-chan struct{}) bool {
	for {
		select {
		case <-stop:
			return false
		case _, ok := <-s.ch:
			if !ok {
				return true
			}
		}
		for drained := false; !drained; {
			select {
			case _, ok := <-s.ch:
				if !ok {
					changed()
					return true
				}
			default:
				drained = true
			}
		}
		changed()
	}
}

func (h *host) close() error {
	h.closeMu.Do(func() {
		h.mu.Lock()
		stop, done := h.stop, h.done
		h.mu.Unlock()
		if stop != nil {
			close(stop)
			<-done
		}
		h.nl.Close()
		h.ns.Close()
	})
	return nil
}
