package testutil

import (
	_ "embed"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// CensorWireGuardFingerprint is censor profile 2 of the censor lab: an
// nftables ruleset (table inet tariq_censor) that drops UDP payloads
// starting like a WireGuard message (type 1-4 little-endian, then three
// zero bytes) at the sizes of WireGuard's fixed-size messages. The same
// file, censor/wg-fingerprint.nft, loads with `nft -f` in a script.
//
//go:embed censor/wg-fingerprint.nft
var CensorWireGuardFingerprint string

// CensorTable is the nftables table every censor ruleset here defines.
const CensorTable = "tariq_censor"

// Censor loads ruleset (one of the Censor… rulesets) into ns, never into
// the host's own ruleset, and removes it again when the test ends if the
// test has not done so with Uncensor.
func Censor(t testing.TB, ns *NetNS, ruleset string) {
	t.Helper()
	RequireBinary(t, "nft")
	cmd := ns.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(ruleset)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("in %s: nft -f: %v: %s", ns.Name, err, out)
	}
	t.Cleanup(func() { ns.TryRun("nft", "delete", "table", "inet", CensorTable) })
}

// Uncensor removes the censor's table from ns.
func Uncensor(t testing.TB, ns *NetNS) {
	t.Helper()
	ns.Run("nft", "delete", "table", "inet", CensorTable)
}

var counterPackets = regexp.MustCompile(`packets (\d+)`)

// CensorDrops returns how many packets the named counter of the censor's
// table in ns has counted (wg_fingerprint for CensorWireGuardFingerprint).
func CensorDrops(t testing.TB, ns *NetNS, counter string) int {
	t.Helper()
	out := ns.Run("nft", "list", "counter", "inet", CensorTable, counter)
	m := counterPackets.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no packet count in:\n%s", out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}
