package main

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestVPNEndToEnd: two family members' devices (upstream wireguard-go,
// configured from `tariq peer add`) reach the internet host through
// tariq over IPv4 and IPv6, NATed out of its uplink; the handshake shows
// on both sides; a restart brings them back with their configs unchanged;
// removing one cuts it off at once, for good, and leaves the other.
func TestVPNEndToEnd(t *testing.T) {
	l := newLab(t, labOptions{})
	phone, tablet := l.addDevice("phone"), l.addDevice("tablet")
	phone.up()
	tablet.up()

	phone.mustReach("first connection")
	tablet.mustReach("first connection")

	// A TCP transfer through the tunnel, NATed out of the uplink.
	const size = 8 << 20
	for _, addr := range []string{"10.10.2.2:5001", "[fd10:2::2]:5001"} {
		got, err := phone.transfer(addr, size, 20*time.Second)
		want := fmt.Sprintf("%d ", size)
		if err != nil || !strings.HasPrefix(got, want) || !(strings.Contains(got, "10.10.2.1:") || strings.Contains(got, "[fd10:2::1]:")) {
			t.Fatalf("TCP transfer to %s: %q %v", addr, got, err)
		}
	}

	// The handshake is visible on both sides: wg on the device, tariq
	// status (and `wg show` through tariq's UAPI socket) on the server.
	if phone.handshake().IsZero() {
		t.Errorf("device reports no handshake: %q", phone.ns.Run("wg", "show", "wgphone", "latest-handshakes"))
	}
	if out := l.server.Run("wg", "show", l.iface); !strings.Contains(out, "latest handshake") || !strings.Contains(out, "listening port: 51820") {
		t.Errorf("wg show %s on the server:\n%s", l.iface, out)
	}
	status := l.cli("status")
	if !strings.Contains(status, "phone") || strings.Contains(statusLine(status, "phone"), "never") {
		t.Errorf("status does not show phone's handshake:\n%s", status)
	}

	// A restart brings back the same key, peers and addresses: the
	// devices get through again with their configs unchanged.
	l.stopDaemon()
	if out := l.server.Run("nft", "list", "tables"); strings.Contains(out, "tariq") {
		t.Errorf("nft table left after stop:\n%s", out)
	}
	l.startDaemon()
	phone.mustReach("after restart")
	tablet.mustReach("after restart")

	// Removing one peer cuts it off at once; the other keeps flowing.
	l.cli("peer", "remove", "phone")
	phone.mustNotReach("after remove")
	tablet.mustReach("after removing phone")

	// And it stays removed across a restart.
	l.stopDaemon()
	l.startDaemon()
	phone.mustNotReach("removed, after restart")
	tablet.mustReach("after the second restart")
}

// statusLine returns the line of status output about peer.
func statusLine(status, peer string) string {
	for _, line := range strings.Split(status, "\n") {
		if strings.HasPrefix(line, peer+" ") {
			return line
		}
	}
	return ""
}
