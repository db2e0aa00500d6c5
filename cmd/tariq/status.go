package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tariq-vpn/tariq/internal/admin"
	"github.com/tariq-vpn/tariq/internal/certs"
	"github.com/tariq-vpn/tariq/internal/members"
	"github.com/tariq-vpn/tariq/internal/store"
)

func (a *app) statusCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show peers, allocations and certificates of the running daemon",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := a.load()
			if err != nil {
				return err
			}
			st, err := admin.NewClient(l.Server.AdminSocket).Status(ctxOf(cmd))
			if err != nil {
				return err
			}
			printStatus(a, st, time.Now())
			return nil
		},
	}
}

func printStatus(a *app, st *admin.Status, now time.Time) {
	w := tabwriter.NewWriter(a.stdout, 2, 4, 2, ' ', 0)
	defer w.Flush()
	fmt.Fprintf(w, "tariq %s on %s, up %s\n", st.Version, st.PublicHost, now.Sub(st.StartedAt).Round(time.Second))
	if c := st.TLS; c != nil {
		fmt.Fprintf(w, "\nCertificate\t%s, expires %s (%s)\n", certDescription(c),
			c.NotAfter.UTC().Format("2006-01-02 15:04 MST"), untilStr(c.NotAfter.Sub(now)))
		switch c.Source {
		case certs.SourceFallback:
			fmt.Fprintf(w, "\tstill obtaining a certificate from %s\n", c.CA)
		case certs.SourceACME:
			fmt.Fprintf(w, "\trenewed automatically from %s\n", c.CA)
		}
		if c.ACMEError != "" {
			fmt.Fprintf(w, "\tlast ACME error: %s\n", c.ACMEError)
		}
	}
	if c := st.Cluster; c != nil {
		printCluster(w, c, now)
	}
	if r := st.Relay; r != nil {
		fmt.Fprintf(w, "\nRelay\trealm %s, %d allocations, relayed %s to peers, %s from peers\n", r.Realm, r.Allocations,
			bytesStr(r.BytesToPeers), bytesStr(r.BytesFromPeers))
		for _, u := range r.URIs {
			fmt.Fprintf(w, "\t%s\n", u)
		}
		if len(r.ByUser) > 0 {
			fmt.Fprintf(w, "\nUSER\tALLOCATIONS\n")
			for _, u := range slices.Sorted(maps.Keys(r.ByUser)) {
				fmt.Fprintf(w, "%s\t%d\n", u, r.ByUser[u])
			}
		}
		if len(r.AuthFailures) > 0 {
			var parts []string
			for _, k := range slices.Sorted(maps.Keys(r.AuthFailures)) {
				parts = append(parts, fmt.Sprintf("%s %d", k, r.AuthFailures[k]))
			}
			fmt.Fprintf(w, "Auth failures\t%s\n", strings.Join(parts, ", "))
		}
	}
	if v := st.VPN; v != nil {
		ports := fmt.Sprint(v.ListenPort)
		for _, p := range v.ExtraPorts {
			ports += fmt.Sprintf(",%d", p)
		}
		w.Flush()
		if v.ObfuscationPort != 0 {
			ports += fmt.Sprintf(" and %d (AmneziaWG)", v.ObfuscationPort)
		}
		fmt.Fprintf(w, "\nWireGuard\t%s, UDP %s, public key %s\n", v.Interface, ports, v.PublicKey)
		if o := v.Outline; o != nil {
			printOutline(w, o)
		}
		if len(v.Peers) > 0 {
			fmt.Fprintf(w, "\nPEER\tMEMBER\tADDRESS\tSTATE\tLAST HANDSHAKE\tRECEIVED\tSENT\tENDPOINT\n")
			for _, p := range v.Peers {
				hs := "never"
				if !p.LastHandshake.IsZero() {
					hs = now.Sub(p.LastHandshake).Round(time.Second).String() + " ago"
				}
				ep := "-"
				if p.Endpoint.IsValid() {
					ep = p.Endpoint.String()
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.Name, p.Member, p.IPv4, deviceState(p), hs, bytesStr(p.RxBytes), bytesStr(p.TxBytes), ep)
			}
			printReach(w, v.Peers, now)
		}
		if len(v.Members) > 0 {
			w.Flush()
			fmt.Fprintln(a.stdout)
			printMembers(a.stdout, v.Members, now)
		}
	}
}

// certDescription says where the live certificate comes from, for which
// names and who issued it, naming "self-signed" once.
func certDescription(c *admin.CertStatus) string {
	names := strings.Join(c.Names, ",")
	issuer := ", issued by " + c.Issuer
	if c.SelfSigned {
		issuer = ", self-signed"
	}
	switch c.Source {
	case certs.SourceSelfSigned:
		return "self-signed for " + names
	case certs.SourceFallback:
		return "self-signed for " + names + " until ACME issues one"
	case certs.SourceACME:
		return "from ACME for " + names + issuer
	case certs.SourceFiles:
		return "from tls.cert_file for " + names + issuer
	}
	return c.Source + " for " + names + issuer
}

// printReach lists the last reachability check each member's invite page
// ran from their network: when, the advice it gave, whether the member's
// device then connected (or, its stock handshake never arriving, the page
// switched it to AmneziaWG), what got through.
func printReach(w io.Writer, peers []members.DeviceStatus, now time.Time) {
	header := false
	for _, p := range peers {
		r := p.Reach
		if r == nil {
			continue
		}
		if !header {
			fmt.Fprintf(w, "\nReachability, as each member's invite page checked it from their network:\n")
			fmt.Fprintf(w, "PEER\tLAST CHECK\tADVICE\tCONFIRMED\tGOT THROUGH\tBLOCKED\n")
			header = true
		}
		advice := map[string]string{
			"wireguard": fmt.Sprintf("WireGuard app, UDP %d", r.Port),
			"outline":   "Outline app (no UDP path)",
			"amneziawg": fmt.Sprintf("AmneziaWG app, UDP %d", r.Port),
			"calls":     "VPN blocked; relayed calls work",
			"none":      "nothing got through",
		}[r.Verdict]
		if advice == "" {
			advice = r.Verdict
		}
		fmt.Fprintf(w, "%s\t%s ago\t%s\t%s\t%s\t%s\n", p.Name, now.Sub(r.CheckedAt).Round(time.Second), advice,
			confirmation(r), orDash(r.Reached), orDash(r.Failed))
	}
}

// confirmation says what the page saw once the member switched the
// connection on.
func confirmation(r *store.Reachability) string {
	switched := "stock handshake never arrived, switched to AmneziaWG"
	if r.Verdict == "outline" {
		switched = r.SwitchedFrom + " handshake never arrived, switched to Outline"
	}
	switch {
	case r.Confirmed == "connected" && r.SwitchedFrom != "":
		return "connected (" + switched + ")"
	case r.Confirmed == "connected":
		return "connected"
	case r.Confirmed == "no-handshake":
		return switched
	}
	return "-"
}

// printOutline describes the Outline path: whether its keys work, and
// what it refused.
func printOutline(w io.Writer, o *admin.OutlineStatus) {
	state := "keys work"
	if o.Untrusted != "" {
		state = "no key works: " + o.Untrusted
	}
	fmt.Fprintf(w, "Outline\tShadowsocks over WebSocket on the HTTPS port; %s\n", state)
	counts := func(by map[string]map[string]uint64) string {
		var parts []string
		for _, path := range slices.Sorted(maps.Keys(by)) {
			for _, k := range slices.Sorted(maps.Keys(by[path])) {
				parts = append(parts, fmt.Sprintf("%s %s %d", path, k, by[path][k]))
			}
		}
		return strings.Join(parts, ", ")
	}
	if len(o.Refused) > 0 {
		fmt.Fprintf(w, "\ttargets refused: %s\n", counts(o.Refused))
	}
	if len(o.AuthFailures) > 0 {
		fmt.Fprintf(w, "\tconnections without a valid key: %s\n", counts(o.AuthFailures))
	}
	if len(o.Cuts) > 0 {
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(o.Cuts)) {
			parts = append(parts, fmt.Sprintf("%s %d", k, o.Cuts[k]))
		}
		fmt.Fprintf(w, "\tconnections cut: %s\n", strings.Join(parts, ", "))
	}
}

func orDash(s []string) string {
	if len(s) == 0 {
		return "-"
	}
	return strings.Join(s, " ")
}

// untilStr says how long is left before an expiry d away, in days and
// hours (a shortlived certificate lives 160 hours), or how long ago it was.
func untilStr(d time.Duration) string {
	minutes := func(d time.Duration) string {
		if d < time.Minute {
			return "under a minute"
		}
		return strings.TrimSuffix(d.Round(time.Minute).String(), "0s") // 1h30m, not 1h30m0s
	}
	if d < 0 {
		return "expired " + minutes(-d) + " ago"
	}
	days, hours := int(d/(24*time.Hour)), int(d%(24*time.Hour)/time.Hour)
	switch {
	case days == 0:
		return "in " + minutes(d)
	case hours == 0:
		return fmt.Sprintf("in %dd", days)
	}
	return fmt.Sprintf("in %dd%dh", days, hours)
}

func bytesStr(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// printCluster shows the etcd store the nodes share and the live nodes.
func printCluster(w io.Writer, c *admin.ClusterStatus, now time.Time) {
	fmt.Fprintf(w, "\nCluster\tnode %s, etcd %s, prefix %s\n", c.Node, strings.Join(c.Endpoints, ", "), c.Prefix)
	if c.Unreachable != "" {
		fmt.Fprintf(w, "\tetcd unreachable, serving the state last seen: %s\n", c.Unreachable)
		return
	}
	printNodes(w, c.Nodes, now)
}

// printNodes lists the live nodes.
func printNodes(w io.Writer, nodes []admin.NodeStatus, now time.Time) {
	fmt.Fprintf(w, "\nNODE\tPUBLIC HOST\tVERSION\tUP\tHEALTH\n")
	for _, n := range nodes {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", n.Name, n.PublicHost, n.Version, now.Sub(n.StartedAt).Round(time.Second), n.Health)
	}
}
