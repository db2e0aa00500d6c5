package testutil

import (
	"bytes"
	"errors"
	"io"
	"net"
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
