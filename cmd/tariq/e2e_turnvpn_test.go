package main

import (
	"context"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tariq-vpn/tariq/internal/testutil"
)

// TestTURNOverUDPThroughTheTunnel: a member whose WireGuard tunnel is up
// (AllowedIPs 0.0.0.0/0, the default, which covers the server's public
// address) points a TURN client at the server's public address. The
// request travels through the tunnel and arrives on tariq's TUN interface;
// the answers must come back from the public address, not the tunnel's,
// or the member's TURN client (coturn's turnutils_uclient, whose socket is
// connected to the server, as browsers' TURN clients in effect are) drops
// them and the allocation never completes.
func TestTURNOverUDPThroughTheTunnel(t *testing.T) {
	uclient := testutil.RequireBinary(t, "turnutils_uclient")
	// relay.listen_udp stays the default ":3478": the wildcard.
	l := newLab(t, labOptions{Config: map[string]string{
		"relay.enabled":    "true",
		"relay.users":      "{alice: wonderland}",
		"relay.listen_tcp": "[]",
		"relay.listen_tls": "[]",
	}})
	phone := l.addDevice("phone")
	phone.up()
	phone.mustReach("tunnel up")

	// On the internet the server's public address is no neighbour of the
	// member: only the default route leads there, and wg-quick's rules send
	// everything but the tunnel's own packets through the tunnel.
	phone.ns.Run("ip", "route", "del", "10.10.1.0/24", "dev", "eth0")
	phone.ns.Run("ip", "route", "replace", "default", "via", "10.10.1.1", "dev", "eth0", "onlink")
	if out := phone.ns.Run("ip", "route", "get", "10.10.1.1"); !strings.Contains(out, "dev wgphone") {
		t.Fatalf("the member's packets to the server's public address do not take the tunnel: %s", out)
	}
	phone.mustReach("public address behind the tunnel")

	const clients, msgs = 2, 10
	args := []string{"-y", "-c", "-n", strconv.Itoa(msgs), "-m", strconv.Itoa(clients), "-u", "alice", "-w", "wonderland", "-p", "3478", "10.10.1.1"}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", phone.ns.Name, uclient}, args...)...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("turnutils_uclient %s through the tunnel: no result within 60s\n%s", strings.Join(args, " "), out)
	}
	run := testutil.ParseUclient(string(out))
	run.Args, run.Err = args, err
	if err := run.Delivered(clients * msgs); err != nil {
		t.Fatalf("TURN over UDP through the tunnel: %v\n%v", err, run)
	}
}
