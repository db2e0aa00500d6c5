package relay

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v4"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// TestReplySources: the reply source for a remote is the address its last
// datagram arrived on, except that a Binding request moves only the source
// of the Binding response, never that of TURN responses and relayed data;
// remotes are told apart by address and port, IPv4-mapped or not; and
// noting a remote whose datagrams keep arriving where they did allocates
// nothing, nor does looking up a source.
func TestReplySources(t *testing.T) {
	// A received IP_PKTINFO has the layout of a sent one: ifindex,
	// ipi_spec_dst, ipi_addr.
	pktinfo4 := func(a string) []byte {
		return (&ipv4.ControlMessage{Src: netip.MustParseAddr(a).AsSlice(), IfIndex: 3}).Marshal()
	}
	pktinfo6 := func(a string) []byte {
		// Marshal leaves an IPv4-mapped source out; the kernel puts one in
		// for an IPv4 datagram on a dual-stack socket.
		b := (&ipv6.ControlMessage{Src: net.IPv6loopback, IfIndex: 3}).Marshal()
		addr := netip.MustParseAddr(a).As16()
		copy(b[unix.CmsgLen(0):], addr[:])
		return b
	}
	binding := stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw
	bindingOK := stun.MustBuild(stun.TransactionID, stun.BindingSuccess).Raw
	allocate := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest)).Raw
	allocateOK := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassSuccessResponse)).Raw
	channelData := []byte{0x40, 0x00, 0x00, 0x04, 1, 2, 3, 4}

	r := newReplySources()
	remote := netip.MustParseAddrPort("198.51.100.7:40000")
	mapped := netip.AddrPortFrom(netip.AddrFrom16(remote.Addr().As16()), remote.Port())
	source := func(to netip.AddrPort, b []byte) string {
		oob := r.source(to, b)
		if oob == nil {
			return "none"
		}
		dst, _, ok := packetDst(oob)
		if !ok {
			return "unparsable"
		}
		return dst.String()
	}
	check := func(step string, cases map[string]string) {
		t.Helper()
		for what, want := range cases {
			var b []byte
			switch what {
			case "binding response":
				b = bindingOK
			case "allocate response":
				b = allocateOK
			case "channel data":
				b = channelData
			}
			if got := source(remote, b); got != want {
				t.Errorf("%s: %s leaves from %s, want %s", step, what, got, want)
			}
			if got := source(mapped, b); got != want {
				t.Errorf("%s: %s to the mapped remote leaves from %s, want %s", step, what, got, want)
			}
		}
	}

	if got := source(remote, allocateOK); got != "none" {
		t.Fatalf("an unknown remote has source %s", got)
	}
	r.noteArrival(mapped, pktinfo6("::ffff:203.0.113.1"), allocate)
	check("allocate to the first address", map[string]string{"allocate response": "203.0.113.1", "binding response": "203.0.113.1", "channel data": "203.0.113.1"})
	r.noteArrival(remote, pktinfo4("203.0.113.2"), binding)
	check("binding to the second address", map[string]string{"binding response": "203.0.113.2", "channel data": "203.0.113.1"})
	r.noteArrival(remote, pktinfo4("203.0.113.2"), channelData)
	check("channel data to the second address", map[string]string{"binding response": "203.0.113.2", "channel data": "203.0.113.2"})

	other := netip.MustParseAddrPort("[2001:db8::9]:5000")
	r.noteArrival(other, pktinfo6("2001:db8::1"), allocate)
	if got := source(other, allocateOK); got != "2001:db8::1" {
		t.Errorf("ipv6 remote: source %s, want 2001:db8::1", got)
	}
	if got := source(netip.MustParseAddrPort("198.51.100.7:40001"), allocateOK); got != "none" {
		t.Errorf("another port of a known address has source %s, want none", got)
	}

	oob := pktinfo4("203.0.113.2")
	if n := testing.AllocsPerRun(1000, func() {
		r.noteArrival(remote, oob, channelData)
		r.source(remote, channelData)
	}); n != 0 {
		t.Errorf("noting a known remote and looking it up: %v allocations, want 0", n)
	}
}

// TestPacketInfoSockets: on an IPv4 socket and on an IPv6 one, the kernel
// reports each datagram's local address once enablePacketInfo asked it to,
// and a reply sent with sourceControl leaves from that address.
func TestPacketInfoSockets(t *testing.T) {
	for _, tc := range []struct{ network, local string }{{"udp4", "127.0.0.1:0"}, {"udp6", "[::1]:0"}} {
		t.Run(tc.network, func(t *testing.T) {
			if tc.network == "udp6" {
				requireIPv6Loopback(t)
			}
			srv, err := net.ListenUDP(tc.network, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(tc.local)))
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			if err := enablePacketInfo(srv); err != nil {
				t.Fatalf("enablePacketInfo: %v", err)
			}
			cli, err := net.DialUDP(tc.network, nil, srv.LocalAddr().(*net.UDPAddr))
			if err != nil {
				t.Fatal(err)
			}
			defer cli.Close()
			if _, err := cli.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			srv.SetReadDeadline(time.Now().Add(5 * time.Second))
			b, oob := make([]byte, 64), make([]byte, packetInfoSpace)
			n, oobn, flags, from, err := srv.ReadMsgUDPAddrPort(b, oob)
			if err != nil || flags&msgCtrunc != 0 {
				t.Fatalf("read: %v (flags %#x)", err, flags)
			}
			want := apOf(srv.LocalAddr()).Addr()
			dst, _, ok := packetDst(oob[:oobn])
			if !ok || dst != want {
				t.Fatalf("local address %v (ok %v), want %v", dst, ok, want)
			}
			if _, _, err := srv.WriteMsgUDPAddrPort(b[:n], sourceControl(dst, 0), from); err != nil {
				t.Fatalf("reply with a source: %v", err)
			}
			cli.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := cli.Read(b); err != nil {
				t.Fatalf("the connected client got no reply: %v", err)
			}
		})
	}
}
