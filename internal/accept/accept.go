// Package accept is the accept loop every tariq listener shares: a
// failure that passes (too many open files, a connection aborted before it
// was accepted) is retried after a backoff that doubles up to a second,
// never spun on and never the end of the listener; the loop ends when the
// listener is closed or its owner says stop.
package accept

import (
	"errors"
	"log/slog"
	"net"
	"time"
)

// Backoff bounds: the first retry waits minBackoff, each failure in a row
// doubles it, up to maxBackoff.
const (
	minBackoff = 5 * time.Millisecond
	maxBackoff = time.Second
)

// Loop accepts connections on ln and hands each to handle, on the calling
// goroutine (handle starts its own if it needs one), until ln is closed or
// done is closed (nil: only ln's closing ends it). Failures are logged at
// Warn with the listener's address, under what, and retried after a
// backoff, which done also interrupts.
func Loop(ln net.Listener, done <-chan struct{}, log *slog.Logger, what string, handle func(net.Conn)) {
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err == nil {
			backoff = 0
			handle(c)
			continue
		}
		if errors.Is(err, net.ErrClosed) || stopped(done) {
			return
		}
		backoff = min(max(2*backoff, minBackoff), maxBackoff)
		log.Warn(what+" accept failed; retrying", "listen", ln.Addr().String(), "err", err, "retry_in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-done:
			t.Stop()
			return
		}
	}
}

func stopped(done <-chan struct{}) bool {
	select {
	case <-done:
		return true
	default:
		return false
	}
}
