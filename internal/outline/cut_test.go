package outline

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/tariq-vpn/tariq/internal/testutil"
)

// TestCutIsDoneWhenSetKeysReturns: once SetKeys has returned without a
// member, nothing the member sends on a connection opened before gets an
// answer, not even a packet sent the moment its TCP stream is seen cut:
// the cut has closed every connection of the member by then, not merely
// started closing them. (Each connection used to close from a goroutine
// of its own that the cut started, so a UDP packet sent once the stream
// was seen closed could still be relayed and answered: the daemon's
// Outline test caught it.) Repeated, with several streams to cut,
// because the window was goroutines' scheduling.
func TestCutIsDoneWhenSetKeysReturns(t *testing.T) {
	testutil.LeakCheck(t)
	h := newHarness(t, Config{})
	echo := testutil.StubbornTCPEcho(t, "127.0.0.1:0")
	uecho := testutil.UDPEchoOn(t, "127.0.0.1:0").LocalAddr()
	ctx := context.Background()
	const rounds, streams = 30, 8
	for i := range rounds {
		h.setKeys(map[string]string{"alice": NewSecret()})
		alice := h.memberClient("alice")
		var conns []net.Conn
		for range streams {
			c, err := alice.stream.DialStream(ctx, echo.String())
			if err != nil {
				t.Fatal(err)
			}
			if err := testutil.EchoRound(c, []byte("open"), 10*time.Second); err != nil {
				t.Fatalf("round %d: alice's TCP echo: %v", i, err)
			}
			conns = append(conns, c)
		}
		pc, err := alice.packet.ListenPacket(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := testutil.UDPRound(pc, uecho, []byte("before"), 10*time.Second); err != nil {
			t.Fatalf("round %d: alice's UDP echo: %v", i, err)
		}
		h.setKeys(map[string]string{})
		conns[0].SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := conns[0].Read(make([]byte, 1)); err == nil || testutil.IsTimeout(err) {
			t.Fatalf("round %d: alice's stream not cut: %v", i, err)
		}
		pc.WriteTo([]byte("after"), uecho)
		pc.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _, err := pc.ReadFrom(make([]byte, 100))
		pc.Close()
		for _, c := range conns {
			c.Close()
		}
		if err == nil || testutil.IsTimeout(err) {
			t.Fatalf("round %d: a packet sent once the stream was seen cut: read %d, %v; want the association closed, no answer", i, n, err)
		}
	}
}
