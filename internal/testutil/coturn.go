package testutil

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// coturn's turnutils_uclient is a TURN client written independently of
// pion, and turnutils_peer an echo peer for it (Debian package coturn).
// uclient exits 0 even when nothing comes back, so every run is judged by
// the totals it prints.

// UclientRun is one turnutils_uclient run and the summary it printed.
type UclientRun struct {
	Args    []string
	Out     string
	Err     error // exit status
	Totals  bool  // the final "tot_send_msgs=…, tot_recv_msgs=…" line was printed
	Sent    int
	Recv    int
	Lost    int
	LostPct float64
	RTTMs   float64
}

var (
	reTotals = regexp.MustCompile(`start_mclient: tot_send_msgs=(\d+), tot_recv_msgs=(\d+)`)
	reLost   = regexp.MustCompile(`Total lost packets (\d+) \(([0-9.]+)%\)`)
	reRTT    = regexp.MustCompile(`Average round trip delay ([0-9.]+) ms`)
)

// ParseUclient reads the summary turnutils_uclient prints at the end of a run.
func ParseUclient(out string) UclientRun {
	r := UclientRun{Out: out}
	if m := reTotals.FindAllStringSubmatch(out, -1); m != nil {
		last := m[len(m)-1]
		r.Totals = true
		r.Sent, _ = strconv.Atoi(last[1])
		r.Recv, _ = strconv.Atoi(last[2])
	}
	if m := reLost.FindStringSubmatch(out); m != nil {
		r.Lost, _ = strconv.Atoi(m[1])
		r.LostPct, _ = strconv.ParseFloat(m[2], 64)
	} else {
		r.Totals = false
	}
	if m := reRTT.FindStringSubmatch(out); m != nil {
		r.RTTMs, _ = strconv.ParseFloat(m[1], 64)
	}
	return r
}

// Delivered returns an error unless the run sent want messages and (nearly)
// all of them came back through the relay: at most 5% lost.
func (r UclientRun) Delivered(want int) error {
	switch {
	case r.Err != nil:
		return fmt.Errorf("exit: %v", r.Err)
	case !r.Totals:
		return errors.New("no totals in the output")
	case r.Sent != want:
		return fmt.Errorf("sent %d messages, want %d", r.Sent, want)
	case r.Recv+r.Lost != r.Sent:
		return fmt.Errorf("received %d + lost %d != sent %d", r.Recv, r.Lost, r.Sent)
	case r.Recv*20 < want*19 || r.LostPct > 5:
		return fmt.Errorf("received %d of %d messages (%.1f%% lost)", r.Recv, want, r.LostPct)
	}
	return nil
}

func (r UclientRun) String() string {
	return "turnutils_uclient " + strings.Join(r.Args, " ") + "\n" + r.Out
}

// RunUclient runs turnutils_uclient with args under a 60 s deadline,
// skipping (failing under CI) when it is not installed.
func RunUclient(t testing.TB, args ...string) UclientRun {
	t.Helper()
	bin := RequireBinary(t, "turnutils_uclient")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("turnutils_uclient %s: no result within 60s\n%s", strings.Join(args, " "), out)
	}
	r := ParseUclient(string(out))
	r.Args, r.Err = args, err
	return r
}

// StartCoturnPeer starts turnutils_peer on 127.0.0.1 and returns its port
// once it echoes; it is killed by PID when t ends. The peer binds PORT and
// PORT+1, so both must be free.
func StartCoturnPeer(t testing.TB) int {
	t.Helper()
	bin := RequireBinary(t, "turnutils_peer")
	for range 5 {
		port := freeUDPPortPair(t)
		cmd := exec.Command(bin, "-L", "127.0.0.1", "-p", strconv.Itoa(port))
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatalf("starting turnutils_peer: %v", err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		stop := func() {
			cmd.Process.Kill()
			<-exited
		}
		if echoes(port, exited) {
			t.Cleanup(stop)
			return port
		}
		stop()
		t.Logf("turnutils_peer on port %d did not echo (%s); retrying", port, out.String())
	}
	t.Fatal("turnutils_peer never echoed")
	return 0
}

// freeUDPPortPair returns a port P such that P and P+1 were both free on
// 127.0.0.1 a moment ago.
func freeUDPPortPair(t testing.TB) int {
	t.Helper()
	for range 50 {
		a, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		port := a.LocalAddr().(*net.UDPAddr).Port
		b, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port + 1})
		a.Close()
		if err == nil {
			b.Close()
			return port
		}
	}
	t.Fatal("no free pair of UDP ports")
	return 0
}

// echoes reports whether something on 127.0.0.1:port sends a datagram back
// within five seconds, giving up early if exited closes.
func echoes(port int, exited <-chan struct{}) bool {
	c, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	if err != nil {
		return false
	}
	defer c.Close()
	buf := make([]byte, 64)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return false
		default:
		}
		c.Write([]byte("probe"))
		c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if n, err := c.Read(buf); err == nil && string(buf[:n]) == "probe" {
			return true
		}
	}
	return false
}
