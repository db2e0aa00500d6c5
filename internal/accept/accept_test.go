package accept

import (
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"
)

// flaky is a listener that fails its first n Accepts with EMFILE, then
// hands out connections from conns until closed.
type flaky struct {
	mu     sync.Mutex
	fails  int
	calls  atomic.Int32
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func (f *flaky) Accept() (net.Conn, error) {
	f.calls.Add(1)
	f.mu.Lock()
	if f.fails > 0 {
		f.fails--
		f.mu.Unlock()
		return nil, &net.OpError{Op: "accept", Err: syscall.EMFILE}
	}
	f.mu.Unlock()
	select {
	case c := <-f.conns:
		return c, nil
	case <-f.closed:
		return nil, net.ErrClosed
	}
}

func (f *flaky) Close() error   { f.once.Do(func() { close(f.closed) }); return nil }
func (f *flaky) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }

// TestLoopRetriesThenServes: failures are retried with a growing backoff,
// not spun on; a connection after them is handled; closing the listener
// ends the loop.
func TestLoopRetriesThenServes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ln := &flaky{fails: 5, conns: make(chan net.Conn, 1), closed: make(chan struct{})}
		a, b := net.Pipe()
		defer b.Close()
		ln.conns <- a
		got := make(chan net.Conn, 1)
		ended := make(chan struct{})
		start := time.Now()
		go func() {
			Loop(ln, nil, slog.New(slog.DiscardHandler), "test", func(c net.Conn) { got <- c })
			close(ended)
		}()
		c := <-got
		c.Close()
		// 5+10+20+40+80 ms of backoff before the sixth Accept.
		if waited := time.Since(start); waited != 155*time.Millisecond {
			t.Errorf("waited %v before serving, want the backoff's 155ms", waited)
		}
		if n := ln.calls.Load(); n < 6 || n > 7 {
			t.Errorf("%d Accept calls: spun or gave up", n)
		}
		ln.Close()
		<-ended
	})
}

// TestLoopStopsOnDone: done interrupts a backoff wait.
func TestLoopStopsOnDone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ln := &flaky{fails: 1 << 20, conns: make(chan net.Conn), closed: make(chan struct{})}
		done := make(chan struct{})
		ended := make(chan struct{})
		go func() {
			Loop(ln, done, slog.New(slog.DiscardHandler), "test", func(net.Conn) { t.Error("handled a connection") })
			close(ended)
		}()
		time.Sleep(10 * time.Second)
		if n := ln.calls.Load(); n > 20 {
			t.Errorf("%d Accept calls in 10s: the backoff does not cap at a second per try", n)
		}
		close(done)
		select {
		case <-ended:
		case <-time.After(2 * time.Second):
			t.Fatal("Loop did not stop on done")
		}
	})
}
