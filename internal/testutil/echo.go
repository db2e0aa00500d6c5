package testutil

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// EchoRound writes msg on c and reads it back from an echo within d.
// Writing and reading overlap, so msg may be larger than the buffers
// between c and the echo.
func EchoRound(c net.Conn, msg []byte, d time.Duration) error {
	c.SetDeadline(time.Now().Add(d))
	defer c.SetDeadline(time.Time{})
	errc := make(chan error, 1)
	go func() { _, err := c.Write(msg); errc <- err }()
	got := make([]byte, len(msg))
	_, rerr := io.ReadFull(c, got)
	werr := <-errc // the deadline bounds the write too
	if err := errors.Join(rerr, werr); err != nil {
		return err
	}
	if !bytes.Equal(got, msg) {
		return errors.New("the echo differs")
	}
	return nil
}

// UDPRound sends msg to target through pc and waits up to d for its echo,
// passing over any other datagram.
func UDPRound(pc net.PacketConn, target net.Addr, msg []byte, d time.Duration) error {
	pc.SetDeadline(time.Now().Add(d))
	defer pc.SetDeadline(time.Time{})
	if _, err := pc.WriteTo(msg, target); err != nil {
		return err
	}
	buf := make([]byte, 2048)
	for {
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			return err
		}
		if bytes.Equal(buf[:n], msg) {
			return nil
		}
	}
}

// TCPEcho serves a TCP echo on addr until the test ends, and returns
// where it listens.
func TCPEcho(t testing.TB, addr string) net.Addr { return tcpEcho(t, addr, false) }

// StubbornTCPEcho is TCPEcho but keeps each connection open after the
// client's FIN, until the test ends, as many servers do: only closing the
// connection from the near side ends such a stream.
func StubbornTCPEcho(t testing.TB, addr string) net.Addr { return tcpEcho(t, addr, true) }

func tcpEcho(t testing.TB, addr string, stubborn bool) net.Addr {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				io.Copy(c, c)
				if stubborn {
					<-stop
				}
				c.Close()
			}()
		}
	}()
	t.Cleanup(func() {
		close(stop)
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr()
}

// UDPEchoOn serves a UDP echo (UDPEcho) on addr until the test ends, and
// returns its socket.
func UDPEchoOn(t testing.TB, addr string) net.PacketConn {
	t.Helper()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); UDPEcho(pc) }()
	t.Cleanup(func() { pc.Close(); <-done })
	return pc
}

// IsTimeout reports whether err is a deadline passing. errors.Is with
// os.ErrDeadlineExceeded does not see through every wrapper (gorilla's
// websocket replaces temporary network errors with its own).
func IsTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
