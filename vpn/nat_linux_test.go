package vpn

import (
	"os"
	"strings"
	"testing"

	"github.com/google/nftables"

	"github.com/tariq-vpn/tariq/internal/testutil"
)

// natInNS opens tariq's NAT table handle inside ns.
func natInNS(t *testing.T, ns *testutil.NetNS) *nat {
	t.Helper()
	f, err := os.Open(ns.Path())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	n, err := openNAT(nftables.WithNetNSFd(int(f.Fd())))
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

func TestNATTable(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireBinary(t, "nft")
	ns := testutil.NewNetNS(t)
	other := otherTable(t, ns)
	n := natInNS(t, ns)

	rules := []natRule{{pfx("10.77.0.0/24"), "eth0"}, {pfx("fd12:3456:789a::/64"), "eth0"}}
	if err := n.apply(rules); err != nil {
		t.Fatal(err)
	}
	got := ns.Run("nft", "list", "table", "inet", NATTable)
	for _, want := range []string{
		"type nat hook postrouting priority srcnat; policy accept;",
		`oifname "eth0" ip saddr 10.77.0.0/24 counter packets 0 bytes 0 masquerade comment "tariq vpn clients"`,
		`oifname "eth0" ip6 saddr fd12:3456:789a::/64 counter packets 0 bytes 0 masquerade comment "tariq vpn clients"`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("table lacks %q:\n%s", want, got)
		}
	}
	// Applying again replaces the contents: the old uplink's rules go.
	if err := n.apply([]natRule{{pfx("10.9.0.0/16"), "ens3"}}); err != nil {
		t.Fatal(err)
	}
	got = ns.Run("nft", "list", "table", "inet", NATTable)
	if strings.Contains(got, "eth0") || strings.Count(got, "masquerade") != 1 || !strings.Contains(got, `oifname "ens3" ip saddr 10.9.0.0/16`) {
		t.Errorf("after re-apply:\n%s", got)
	}
	if err := n.remove(); err != nil {
		t.Fatal(err)
	}
	if tables := ns.Run("nft", "list", "tables"); strings.Contains(tables, "inet "+NATTable+"\n") {
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
