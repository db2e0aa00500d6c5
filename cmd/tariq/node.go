package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tariq-vpn/tariq/internal/admin"
	"github.com/tariq-vpn/tariq/internal/daemon"
)

func (a *app) nodeCmd() *cobra.Command {
	node := &cobra.Command{Use: "node", Short: "The nodes that share this network through etcd"}
	list := &cobra.Command{
		Use:   "list",
		Short: "List the live nodes: public host, version, uptime, health",
		Long: `List the nodes serving this network (server.store: etcd, the same
server.etcd.prefix): each keeps an entry under an etcd lease while it runs,
so a node that stopped, or lost etcd, leaves the list within ten seconds.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := a.load()
			if err != nil {
				return err
			}
			nodes, err := daemon.Nodes(ctxOf(cmd), l.Config)
			if err != nil {
				return err
			}
			if len(nodes) == 0 {
				fmt.Fprintf(a.stdout, "no node is live on prefix %s\n", l.Server.Etcd.Prefix)
				return nil
			}
			var rows []admin.NodeStatus
			for _, n := range nodes {
				rows = append(rows, admin.NodeStatus{Name: n.Name, PublicHost: n.PublicHost, Version: n.Version, StartedAt: n.StartedAt, Health: n.Health})
			}
			w := tabwriter.NewWriter(a.stdout, 2, 4, 2, ' ', 0)
			defer w.Flush()
			fmt.Fprint(w, "NODE\tPUBLIC HOST\tVERSION\tUP\tHEALTH\n")
			now := time.Now()
			for _, n := range rows {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", n.Name, n.PublicHost, n.Version, now.Sub(n.StartedAt).Round(time.Second), n.Health)
			}
			return nil
		},
	}
	node.AddCommand(list)
	return node
}

func (a *app) storeCmd() *cobra.Command {
	st := &cobra.Command{Use: "store", Short: "Where the shared state lives"}
	var to string
	migrate := &cobra.Command{
		Use:   "migrate --to etcd",
		Short: "Copy this server's state into an empty etcd prefix",
		Long: `Copy this server's state (state.json: its identity, members, devices,
invites, REST secrets, and this month's usage) and its ACME account and
certificates into the etcd prefix the config names (server.store: etcd,
server.etcd.endpoints, server.etcd.prefix). Every device and app keeps its
configuration: the nodes serving the prefix are this same server to them.
Stop tariq first. A prefix holding any key is refused and nothing is
written.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if to != "etcd" {
				return usageErr(fmt.Errorf("--to %q: the one store to migrate to is etcd", to))
			}
			l, err := a.load()
			if err != nil {
				return err
			}
			st, err := daemon.MigrateToEtcd(ctxOf(cmd), l.Config)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "copied %s, %s, %s and the server's identity into etcd prefix %s\n",
				count(len(st.Members), "member"), count(len(st.Peers), "device"), count(len(st.Invites), "invite"), l.Server.Etcd.Prefix)
			fmt.Fprintf(a.stdout, "start tariq on this and the other nodes with this config; %s is no longer read\n", l.Server.DataDir+"/state.json")
			return nil
		},
	}
	migrate.Flags().StringVar(&to, "to", "", "the store to copy to: etcd")
	migrate.MarkFlagRequired("to")
	st.AddCommand(migrate)
	return st
}

// count writes n things, singular or plural.
func count(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}
