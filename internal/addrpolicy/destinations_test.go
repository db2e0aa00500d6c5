package addrpolicy

import (
	"net/netip"
	"slices"
	"testing"
)

// destCase is one address and the answer Destinations.Allow must give.
type destCase struct {
	addr string
	ok   bool
	rule string
}

// TestDestinations checks the order in the Destinations doc comment.
func TestDestinations(t *testing.T) {
	members := prefixes("10.77.0.1/24", "fd1e:77::1/64")
	own := addrs("10.77.0.1", "fd1e:77::1", "198.20.0.1", "::ffff:198.20.0.2", "2a0e:8f02:f017::1", "fe80::1%eth0")
	for _, tc := range []struct {
		name  string
		rules DestinationRules
		cases []destCase
	}{
		{
			name:  "defaults",
			rules: DestinationRules{Members: members},
			cases: []destCase{
				{"", false, RuleInvalid},
				{"8.8.8.8", true, ""},
				{"::ffff:8.8.8.8", true, ""},
				{"2606:4700::1111", true, ""},
				{"198.20.0.3", true, ""},
				{"198.20.0.1", false, RuleOwn},
				{"198.20.0.2", false, RuleOwn},
				{"::ffff:198.20.0.1", false, RuleOwn},
				{"2a0e:8f02:f017::1", false, RuleOwn},
				{"fe80::1", false, RuleOwn},
				{"10.77.0.1", false, RuleOwn}, // the server's tunnel address: only WireGuard's ping and DNS, in nftables
				{"fd1e:77::1", false, RuleOwn},
				{"10.77.0.2", false, RuleMember},
				{"::ffff:10.77.0.2", false, RuleMember},
				{"fd1e:77::2", false, RuleMember},
				{"127.0.0.1", false, "loopback"},
				{"127.0.0.53", false, "loopback"},
				{"::1", false, "loopback"},
				{"0.0.0.0", false, "this-network"},
				{"::", false, "unspecified"},
				{"169.254.169.254", false, "link-local"},
				{"fd00:ec2::254", false, "unique-local"},
				{"100.100.100.200", false, "shared-cgnat"},
				{"168.63.129.16", false, "metadata"},
				{"192.168.1.1", false, "private"},
				{"10.78.0.1", false, "private"},
				{"100.64.0.1", false, "shared-cgnat"},
				{"fc00::1", false, "unique-local"},
				{"224.0.0.251", false, "multicast"},
				{"ff02::fb", false, "multicast"},
				{"64:ff9b::a9fe:a9fe", false, "embedded-link-local"},
				{"2002:a9fe:a9fe::1", false, "embedded-link-local"},
				{"::ffff:0:a9fe:a9fe", false, "embedded-link-local"},
			},
		},
		{
			name:  "member to member",
			rules: DestinationRules{Members: members, MemberToMember: true},
			cases: []destCase{
				{"10.77.0.2", true, ""},
				{"fd1e:77::2", true, ""},
				{"10.77.0.1", false, RuleOwn},
				{"10.78.0.1", false, "private"},
			},
		},
		{
			name:  "allow_destinations opens the built-in list, not the server",
			rules: DestinationRules{Members: members, Allow: prefixes("10.0.0.0/8", "169.254.169.254/32", "0.0.0.0/0", "::/0")},
			cases: []destCase{
				{"10.1.2.3", true, ""},
				{"169.254.169.254", true, ""},
				{"192.168.1.1", true, ""},
				{"fd00:ec2::254", true, ""},
				{"10.77.0.2", false, RuleMember},
				{"10.77.0.1", false, RuleOwn},
				{"198.20.0.1", false, RuleOwn},
				{"127.0.0.1", false, "loopback"},
				{"::ffff:127.0.0.1", false, "loopback"},
				{"::1", false, "loopback"},
				{"0.0.0.0", false, "this-network"},
				{"::", false, "unspecified"},
			},
		},
		{
			name: "deny_destinations wins, by the address or the IPv4 address inside it",
			rules: DestinationRules{Members: members, MemberToMember: true,
				Allow: prefixes("10.0.0.0/8", "64:ff9b::/96"), Deny: prefixes("10.1.0.0/16", "93.184.216.0/24", "10.77.0.5/32", "2606:4700::/32")},
			cases: []destCase{
				{"10.1.2.3", false, RuleDeny},
				{"10.2.0.1", true, ""},
				{"93.184.216.34", false, RuleDeny},
				{"::ffff:93.184.216.34", false, RuleDeny},
				{"64:ff9b::5db8:d822", false, RuleDeny},
				{"2002:5db8:d822::1", false, RuleDeny},
				{"64:ff9b::808:808", true, ""},
				{"10.77.0.5", false, RuleDeny},
				{"10.77.0.6", true, ""},
				{"2606:4700::1111", false, RuleDeny},
				{"2606:4701::1", true, ""},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := NewDestinations(tc.rules, own)
			for _, c := range tc.cases {
				if ok, rule := d.Allow(parseAddr(c.addr)); ok != c.ok || rule != c.rule {
					t.Errorf("Allow(%q) = %v %q, want %v %q", c.addr, ok, rule, c.ok, c.rule)
				}
			}
		})
	}
}

func TestDestinationsWithOwn(t *testing.T) {
	d := NewDestinations(DestinationRules{}, addrs("198.20.0.1", "::ffff:198.20.0.2"))
	if same, changed := d.WithOwn(addrs("198.20.0.2", "198.20.0.1", "198.20.0.1")); changed || same != d {
		t.Error("the same addresses in another order and form count as a change")
	}
	e, changed := d.WithOwn(addrs("198.20.0.7"))
	if !changed || e == d {
		t.Fatal("a new address is no change")
	}
	if ok, _ := e.Allow(netip.MustParseAddr("198.20.0.1")); !ok {
		t.Error("an address the server no longer has is still refused")
	}
	if ok, rule := e.Allow(netip.MustParseAddr("198.20.0.7")); ok || rule != RuleOwn {
		t.Errorf("the new address: %v %q", ok, rule)
	}
	if ok, _ := d.Allow(netip.MustParseAddr("198.20.0.7")); !ok {
		t.Error("WithOwn changed the original")
	}
	if got := e.Own(); !slices.Equal(got, addrs("198.20.0.7")) {
		t.Errorf("Own() = %v", got)
	}
}

func TestDestinationRulesCanonical(t *testing.T) {
	d := NewDestinations(DestinationRules{
		Allow:   prefixes("::ffff:10.1.2.3/104", "fd00::1/8", "1.2.3.4/32"),
		Deny:    []netip.Prefix{{}, netip.MustParsePrefix("93.184.216.34/24")},
		Members: prefixes("10.77.0.1/24"),
	}, nil)
	r := d.Rules()
	for name, pair := range map[string][2][]netip.Prefix{
		"allow":   {r.Allow, prefixes("10.0.0.0/8", "fd00::/8", "1.2.3.4/32")},
		"deny":    {r.Deny, prefixes("93.184.216.0/24")},
		"members": {r.Members, prefixes("10.77.0.0/24")},
	} {
		if !slices.Equal(pair[0], pair[1]) {
			t.Errorf("%s = %v, want %v", name, pair[0], pair[1])
		}
	}
	r.Allow[0] = netip.Prefix{}
	if d.Rules().Allow[0] != netip.MustParsePrefix("10.0.0.0/8") {
		t.Error("Rules shares its slices with the policy")
	}
}
