package vpn

import (
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/google/nftables"

	"github.com/tariq-vpn/tariq/config"
	"github.com/tariq-vpn/tariq/internal/addrpolicy"
	"github.com/tariq-vpn/tariq/internal/testutil"
)

// nftInNS opens tariq's table handle inside ns.
func nftInNS(t *testing.T, ns *testutil.NetNS) *nft {
	t.Helper()
	f, err := os.Open(ns.Path())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	n, err := openNFT(nftables.WithNetNSFd(int(f.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.close() })
	return n
}

// otherTable makes a table that is not tariq's, for checking it is left
// alone, and returns its listing.
func otherTable(t *testing.T, ns *testutil.NetNS) string {
	t.Helper()
	ns.Run("nft", "add table ip other; "+
		"add chain ip other input { type filter hook input priority 0; policy accept; }; "+
		"add rule ip other input tcp dport 9 counter drop; "+
		"add table inet tariqx; add chain inet tariqx c")
	return ns.Run("nft", "list", "table", "ip", "other") + ns.Run("nft", "list", "table", "inet", "tariqx")
}

// testSpec is a table as a server with the default config, one own public
// address and some operator rules would have it.
func testSpec() tableSpec {
	d := addrpolicy.NewDestinations(addrpolicy.DestinationRules{
		Allow:   []netip.Prefix{pfx("192.168.50.0/24"), pfx("64:ff9b::/96")},
		Deny:    []netip.Prefix{pfx("93.184.216.0/24"), pfx("2606:4700::/32")},
		Members: []netip.Prefix{pfx("10.77.0.0/24"), pfx("fd12:3456:789a::/64")},
	}, []netip.Addr{addr("203.0.113.7"), addr("10.77.0.1"), addr("127.0.0.1"), addr("fd12:3456:789a::1"), addr("2001:db8::7")})
	cfg := config.Default()
	return tableSpec{
		tunnel:      "tariq0",
		tunnelAddrs: []netip.Addr{addr("10.77.0.1"), addr("fd12:3456:789a::1")},
		dest:        d.Rules(),
		host:        hostPrefixes(d),
		services:    cfg.ServicePorts(),
		nat:         []natRule{{pfx("10.77.0.0/24"), "eth0"}, {pfx("fd12:3456:789a::/64"), "eth0"}},
	}
}

// listTable returns `nft list table inet tariq` in ns.
func listTable(t *testing.T, ns *testutil.NetNS) string {
	t.Helper()
	return ns.Run("nft", "list", "table", "inet", Table)
}

// withoutHostSets is a listing without sets host4 and host6.
func withoutHostSets(listing string) string {
	for _, name := range []string{setHost4, setHost6} {
		start := strings.Index(listing, "\tset "+name+" {")
		if start < 0 {
			continue
		}
		end := strings.Index(listing[start:], "\n\t}\n")
		listing = listing[:start] + listing[start+end+len("\n\t}\n"):]
	}
	return listing
}

func wantLines(t *testing.T, got string, lines ...string) {
	t.Helper()
	for _, want := range lines {
		if !strings.Contains(got, want) {
			t.Errorf("table lacks %q:\n%s", want, got)
		}
	}
}

// TestTable writes the table in a namespace and reads it back with nft(8):
// every rule of the destination policy in its order, the sets merged into
// intervals the kernel takes, the exceptions of member_in, NAT; writing
// again replaces it whole; the server's addresses change without touching
// anything else; remove deletes it; no other table changes.
func TestTable(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireBinary(t, "nft")
	ns := testutil.NewNetNS(t)
	other := otherTable(t, ns)
	n := nftInNS(t, ns)

	spec := testSpec()
	if err := n.apply(spec); err != nil {
		t.Fatal(err)
	}
	got := listTable(t, ns)
	wantLines(t, got,
		// The sets, overlapping ranges merged (::/128 and ::1/128;
		// 224.0.0.0/4 and 240.0.0.0/4; fe80::/10 to the end).
		"set host4 {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\telements = { 0.0.0.0/8, 10.77.0.1,\n\t\t\t     127.0.0.0/8, 203.0.113.7 }",
		"elements = { ::/127,\n\t\t\t     2001:db8::7,\n\t\t\t     fd12:3456:789a::1 }",
		"elements = { 93.184.216.0/24 }", "elements = { 2606:4700::/32 }",
		"elements = { 192.168.50.0/24 }", "elements = { 64:ff9b::/96 }",
		"168.63.129.16, 169.254.0.0/16,", "203.0.113.0/24, 224.0.0.0/3 }",
		"fe80::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff }",
		"set udp_services {\n\t\ttype inet_service\n\t\tflags interval\n\t\telements = { 3478, 49152-65535 }",
		"set tcp_services {\n\t\ttype inet_service\n\t\tflags interval\n\t\telements = { 443, 3478, 5349 }",
		// Members' traffic, in the policy's order.
		"chain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n\t\tiifname \"tariq0\" jump member_out\n\t}",
		"chain member_out {\n"+
			"\t\tip daddr @deny4 counter packets 0 bytes 0 drop comment \"deny_destinations\"\n"+
			"\t\tip6 daddr @deny6 counter packets 0 bytes 0 drop comment \"deny_destinations\"\n"+
			"\t\tip6 daddr ::/96 ip6 daddr != ::/112 @nh,288,32 @deny4 counter packets 0 bytes 0 drop comment \"deny_destinations\"\n"+
			"\t\tip6 daddr ::ffff:0:0:0/96 @nh,288,32 @deny4 counter packets 0 bytes 0 drop comment \"deny_destinations\"\n"+
			"\t\tip6 daddr 64:ff9b::/96 @nh,288,32 @deny4 counter packets 0 bytes 0 drop comment \"deny_destinations\"\n"+
			"\t\tip6 daddr 2002::/16 @nh,208,32 @deny4 counter packets 0 bytes 0 drop comment \"deny_destinations\"\n"+
			"\t\tip6 daddr 2001::/32 @nh,288,32 ^ 0xffffffff == @deny4 counter packets 0 bytes 0 drop comment \"deny_destinations\"\n"+
			"\t\tip6 daddr ::ffff:0.0.0.0/96 counter packets 0 bytes 0 drop comment \"ipv4-mapped\"\n"+
			"\t\tip daddr @host4 counter packets 0 bytes 0 drop comment \"server\"\n"+
			"\t\tip6 daddr @host6 counter packets 0 bytes 0 drop comment \"server\"\n"+
			"\t\tip daddr 10.77.0.0/24 counter packets 0 bytes 0 drop comment \"member-to-member\"\n"+
			"\t\tip6 daddr fd12:3456:789a::/64 counter packets 0 bytes 0 drop comment \"member-to-member\"\n"+
			"\t\tip daddr @allow4 counter packets 0 bytes 0 accept comment \"allow_destinations\"\n"+
			"\t\tip6 daddr @allow6 counter packets 0 bytes 0 accept comment \"allow_destinations\"\n"+
			"\t\tip daddr @special4 counter packets 0 bytes 0 drop comment \"special-purpose\"\n"+
			"\t\tip6 daddr @special6 counter packets 0 bytes 0 drop comment \"special-purpose\"\n"+
			"\t}",
		// What of the server members reach.
		"chain input {\n\t\ttype filter hook input priority filter; policy accept;\n\t\tiifname \"tariq0\" jump member_in\n\t}",
		"chain member_in {\n"+
			"\t\tct state established,related accept\n"+
			"\t\tip daddr 10.77.0.1 icmp type echo-request counter packets 0 bytes 0 accept comment \"ping\"\n"+
			"\t\tip6 daddr fd12:3456:789a::1 icmpv6 type echo-request counter packets 0 bytes 0 accept comment \"ping\"\n"+
			"\t\tip daddr 10.77.0.1 udp dport 53 counter packets 0 bytes 0 accept comment \"dns\"\n"+
			"\t\tip daddr 10.77.0.1 tcp dport 53 counter packets 0 bytes 0 accept comment \"dns\"\n"+
			"\t\tip6 daddr fd12:3456:789a::1 udp dport 53 counter packets 0 bytes 0 accept comment \"dns\"\n"+
			"\t\tip6 daddr fd12:3456:789a::1 tcp dport 53 counter packets 0 bytes 0 accept comment \"dns\"\n"+
			"\t\tudp dport @udp_services counter packets 0 bytes 0 accept comment \"tariq\"\n"+
			"\t\ttcp dport @tcp_services counter packets 0 bytes 0 accept comment \"tariq\"\n"+
			"\t\tcounter packets 0 bytes 0 drop comment \"server\"\n"+
			"\t}",
		"type nat hook postrouting priority srcnat; policy accept;",
		`oifname "eth0" ip saddr 10.77.0.0/24 counter packets 0 bytes 0 masquerade comment "tariq vpn clients"`,
		`oifname "eth0" ip6 saddr fd12:3456:789a::/64 counter packets 0 bytes 0 masquerade comment "tariq vpn clients"`,
	)

	t.Run("server addresses change alone", func(t *testing.T) {
		host := append(spec.host, pfx("198.20.0.7/32"), pfx("2a0e:8f02:f017::1/128"))
		if err := n.setHost(host); err != nil {
			t.Fatal(err)
		}
		now := listTable(t, ns)
		wantLines(t, now, "127.0.0.0/8, 198.20.0.7,", "2001:db8::7,\n\t\t\t     2a0e:8f02:f017::1,")
		if a, b := withoutHostSets(got), withoutHostSets(now); a != b {
			t.Errorf("more than the server's sets changed:\nbefore:\n%s\nafter:\n%s", a, b)
		}
		if err := n.setHost(nil); err != nil {
			t.Fatal(err)
		}
		wantLines(t, listTable(t, ns), "set host4 {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t}")
	})

	t.Run("rewritten whole", func(t *testing.T) {
		next := spec
		next.dest.MemberToMember = true
		next.dest.Deny = nil
		next.nat = nil
		next.services = nil
		if err := n.apply(next); err != nil {
			t.Fatal(err)
		}
		got := listTable(t, ns)
		wantLines(t, got,
			`ip daddr 10.77.0.0/24 counter packets 0 bytes 0 accept comment "member-to-member"`,
			"set udp_services {\n\t\ttype inet_service\n\t\tflags interval\n\t}")
		for _, gone := range []string{"@nh,", "postrouting", "masquerade", "93.184.216.0/24"} {
			if strings.Contains(got, gone) {
				t.Errorf("%q outlived the rewrite:\n%s", gone, got)
			}
		}
	})

	if err := n.remove(); err != nil {
		t.Fatal(err)
	}
	if tables := ns.Run("nft", "list", "tables"); strings.Contains(tables, "inet "+Table+"\n") {
		t.Errorf("table still there after remove:\n%s", tables)
	}
	if err := n.remove(); err != nil {
		t.Errorf("removing an absent table: %v", err)
	}
	if now := ns.Run("nft", "list", "table", "ip", "other") + ns.Run("nft", "list", "table", "inet", "tariqx"); now != other {
		t.Errorf("another table changed:\nbefore:\n%s\nafter:\n%s", other, now)
	}
	// Nothing leaked into the host's ruleset.
	if host, err := nftables.New(); err == nil {
		if tabs, err := host.ListTablesOfFamily(nftables.TableFamilyINet); err == nil {
			for _, tab := range tabs {
				if tab.Name == "tariqx" {
					t.Error("the test's table appeared in the host namespace")
				}
			}
		}
	}
}

func TestMasqueradeExprsRefuseBadUplink(t *testing.T) {
	for _, name := range []string{"", "a-name-longer-than-15"} {
		if _, err := masqueradeExprs(natRule{pfx("10.0.0.0/24"), name}); err == nil {
			t.Errorf("uplink %q accepted", name)
		}
	}
}
