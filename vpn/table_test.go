package vpn

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestSpans: an nftables interval set takes sorted, disjoint ranges, so
// overlapping and adjacent prefixes merge, up to the family's last address.
func TestSpans(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want []string
	}{
		{nil, nil},
		{[]string{"10.0.0.0/8"}, []string{"10.0.0.0-10.255.255.255"}},
		{[]string{"10.1.0.0/16", "10.0.0.0/8", "10.0.0.5/32"}, []string{"10.0.0.0-10.255.255.255"}},
		{[]string{"224.0.0.0/4", "240.0.0.0/4"}, []string{"224.0.0.0-255.255.255.255"}},
		{[]string{"127.0.0.1/32", "127.0.0.0/8", "0.0.0.0/8", "10.77.0.1/32"}, []string{"0.0.0.0-0.255.255.255", "10.77.0.1-10.77.0.1", "127.0.0.0-127.255.255.255"}},
		{[]string{"10.0.0.1/32", "10.0.0.2/32", "10.0.0.4/32"}, []string{"10.0.0.1-10.0.0.2", "10.0.0.4-10.0.0.4"}},
		{[]string{"::1/128", "::/128", "::/96"}, []string{"::-::ffff:ffff"}},
		{[]string{"ff00::/8", "fe80::/10", "fec0::/10"}, []string{"fe80::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"}},
		{[]string{"0.0.0.0/0"}, []string{"0.0.0.0-255.255.255.255"}},
	} {
		var in []netip.Prefix
		for _, s := range tc.in {
			in = append(in, netip.MustParsePrefix(s))
		}
		var got []string
		for _, s := range spans(in) {
			got = append(got, s.first.String()+"-"+s.last.String())
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("spans(%v) (-want +got):\n%s", tc.in, diff)
		}
	}
}

func TestMergePorts(t *testing.T) {
	got := fmt.Sprint(mergePorts([][2]uint16{{51820, 51820}, {3478, 3478}, {49152, 65535}, {3479, 3479}, {443, 443}, {65535, 65535}}))
	if want := "[[443 443] [3478 3479] [49152 65535]]"; got != want {
		t.Errorf("mergePorts = %s, want %s", got, want)
	}
}
