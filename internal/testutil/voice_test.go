package testutil

import (
	"context"
	"fmt"
	"io"
	"net"
	"testing"
	"time"
)

// TestVoice: a stream to an echo on loopback comes back whole, each
// packet once, with its round trips sorted; to a port that drops it, it is
// all lost within its linger; the quantiles pick by nearest rank.
func TestVoice(t *testing.T) {
	LeakCheck(t)
	echo, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go UDPEcho(echo)
	defer echo.Close()
	// A second echo of every packet: duplicates count once.
	dup, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer dup.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := dup.ReadFrom(buf)
			if err != nil {
				return
			}
			dup.WriteTo(buf[:n], from)
			dup.WriteTo(buf[:n], from)
		}
	}()
	o := VoiceOptions{Packets: 50, Size: 160, Interval: time.Millisecond, Linger: 2 * time.Second}
	for _, to := range []net.Addr{echo.LocalAddr(), dup.LocalAddr()} {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		r, err := Voice(pc, to, o)
		pc.Close()
		if err != nil || r.Sent != 50 || r.Got != 50 || len(r.RTTs) != 50 || r.LossPercent() != 0 {
			t.Errorf("to %s: %v %v", to, r, err)
		}
		for i := 1; i < len(r.RTTs); i++ {
			if r.RTTs[i] < r.RTTs[i-1] || r.RTTs[0] <= 0 {
				t.Fatalf("to %s: round trips not sorted or not positive: %v", to, r.RTTs)
			}
		}
	}

	// Nothing answers: all lost once the linger runs out.
	sink, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	r, err := Voice(pc, sink.LocalAddr(), VoiceOptions{Packets: 5, Size: 160, Interval: time.Millisecond, Linger: 200 * time.Millisecond})
	pc.Close()
	if err != nil || r.Sent != 5 || r.Got != 0 || r.LossPercent() != 100 || r.RTT(0.5) != 0 || time.Since(start) > 5*time.Second {
		t.Errorf("to a silent port: %v %v after %s", r, err, time.Since(start))
	}

	q := VoiceResult{Sent: 4, Got: 4, RTTs: []time.Duration{1, 2, 3, 4}}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0, 1}, {0.25, 1}, {0.5, 2}, {0.51, 3}, {0.99, 4}, {1, 4}} {
		if got := q.RTT(c.q); got != c.want {
			t.Errorf("RTT(%v) of %v = %v, want %v", c.q, q.RTTs, got, c.want)
		}
	}
	if _, err := Voice(pc, sink.LocalAddr(), VoiceOptions{Packets: 1, Size: 4, Interval: time.Millisecond}); err == nil {
		t.Error("a packet too small for the header was accepted")
	}
}

// TestForwardTCP: connections to the forwarder reach the far end, both
// ways, and a half-close crosses it (the far end answers after EOF); the
// forwarder stops when the test ends.
func TestForwardTCP(t *testing.T) {
	LeakCheck(t)
	far, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer far.Close()
	go func() {
		for {
			c, err := far.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				n, _ := io.Copy(io.Discard, c)
				fmt.Fprintf(c, "%d", n)
			}()
		}
	}()
	t.Run("forward", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		accepted := ForwardTCP(t, ln, func(ctx context.Context) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", far.Addr().String())
		})
		for range 3 {
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(10 * time.Second))
			c.Write(make([]byte, 100000))
			c.(*net.TCPConn).CloseWrite()
			b, err := io.ReadAll(c)
			c.Close()
			if err != nil || string(b) != "100000" {
				t.Errorf("through the forwarder: %q %v", b, err)
			}
		}
		if n := accepted(); n != 3 {
			t.Errorf("the forwarder counts %d connections, want 3", n)
		}
		// One left open when the test ends: closed with it.
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
	})
}
