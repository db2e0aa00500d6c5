package testutil

import (
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// ForwardTCP joins every connection ln accepts to one that dial makes,
// both ways, with half-closes passed on, until t ends: a port on one side
// of a lab standing for an address on another. Pebble's validation
// authority, say, runs in the test's own namespace and cannot route to a
// server in a lab namespace: a listener there on the port Pebble dials,
// forwarded to the server's lab address from a namespace that routes to
// it, lets it validate a real challenge. A listener opened inside a
// namespace (NetNS.Do) stays there, so the other way round works too.
//
// ln and every joined connection are closed when t ends, and the
// forwarder's goroutines have returned by then; a dial gets 10 seconds.
// The returned function says how many connections ln has accepted.
func ForwardTCP(t testing.TB, ln net.Listener, dial func(ctx context.Context) (net.Conn, error)) (accepted func() int64) {
	t.Helper()
	var n atomic.Int64
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex // guards conns and done
		conns = map[net.Conn]bool{}
		done  bool
	)
	track := func(c net.Conn) bool {
		mu.Lock()
		defer mu.Unlock()
		if done {
			c.Close()
			return false
		}
		conns[c] = true
		return true
	}
	untrack := func(c net.Conn) {
		mu.Lock()
		delete(conns, c)
		mu.Unlock()
		c.Close()
	}
	ctx, cancel := context.WithCancel(context.Background())
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			if !track(in) {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer untrack(in)
				dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
				out, err := dial(dctx)
				dcancel()
				if err != nil || !track(out) {
					if out != nil {
						out.Close()
					}
					return
				}
				defer untrack(out)
				var pipes sync.WaitGroup
				pipes.Go(func() { pipe(out, in) })
				pipe(in, out)
				pipes.Wait()
			}()
		}
	}()
	t.Cleanup(func() {
		cancel()
		ln.Close()
		mu.Lock()
		done = true
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return n.Load
}

// pipe copies src to dst, then half-closes dst's write side (or closes it,
// if it cannot) so that the far end sees the end of the stream.
func pipe(dst, src net.Conn) {
	io.Copy(dst, src)
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	} else {
		dst.Close()
	}
}
