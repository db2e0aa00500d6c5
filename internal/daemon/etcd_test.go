package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tariq-vpn/tariq/config"
	"github.com/tariq-vpn/tariq/internal/admin"
	"github.com/tariq-vpn/tariq/internal/certs"
	"github.com/tariq-vpn/tariq/internal/etcdstore"
	"github.com/tariq-vpn/tariq/internal/testutil"
	"github.com/tariq-vpn/tariq/relay"
)

// etcdNode starts a daemon on loopback (relay and page, no VPN) whose
// shared state is the cluster's prefix, named node; dir is its
// directory (a new one if empty), returned with it.
func etcdNode(t *testing.T, c *testutil.EtcdCluster, prefix, node, dir string) (*running, string) {
	t.Helper()
	return etcdNodeWith(t, c, prefix, node, dir, 0)
}

// etcdNodeWith is etcdNode with Options.StoreTimeout.
func etcdNodeWith(t *testing.T, c *testutil.EtcdCluster, prefix, node, dir string, timeout time.Duration) (*running, string) {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	yaml := strings.Replace(loopbackYAML(dir, ""), "server:\n", fmt.Sprintf("server:\n  store: etcd\n  node_name: %s\n  etcd:\n    endpoints: [%s]\n    prefix: %s\n",
		node, strings.Join(c.Endpoints(), ", "), prefix), 1)
	file := filepath.Join(dir, "tariq.yaml")
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	r, _ := runDaemon(t, file, nil, func(o *Options) { o.StoreTimeout = timeout })
	return r, dir
}

func (r *running) cfg(t *testing.T) *config.Config {
	t.Helper()
	l, err := config.Load(config.Options{File: r.file})
	if err != nil {
		t.Fatal(err)
	}
	return l.Config
}

// TestDaemonsShareEtcd: two daemons on one etcd prefix are one relay to
// apps: credentials minted on one node allocate on the other; a REST
// secret added (tariq turn secret add) is verified by both within
// seconds, and once signing, `turn credentials` of either node uses it.
// Each node's status shows the cluster with both nodes live, and a node
// that stops leaves the list.
func TestDaemonsShareEtcd(t *testing.T) {
	c := testutil.Etcd(t, 1)
	const prefix = "/tariq-daemons"
	a, _ := etcdNode(t, c, prefix, "a", "")
	b, _ := etcdNode(t, c, prefix, "b", "")

	creds, _, err := TURNCredentials(a.cfg(t), "@alice:example.org", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.allocate(t, creds.Username, creds.Password); err != nil {
		t.Fatalf("credentials minted on a, allocating on b: %v", err)
	}

	added, err := AddRESTSecret(context.Background(), a.cfg(t))
	if err != nil {
		t.Fatal(err)
	}
	fresh := mint(added.Secret.Reveal())
	for _, r := range []*running{a, b} {
		testutil.WaitFor(t, 3*time.Second, "the added secret verified on "+r.file, func() bool {
			_, err := r.allocate(t, fresh.Username, fresh.Password)
			return err == nil
		})
	}
	if err := SignWithSecret(context.Background(), b.cfg(t), added.ID); err != nil {
		t.Fatal(err)
	}
	if creds, _, err := TURNCredentials(a.cfg(t), "x", time.Hour); err != nil || creds.Password != mintFor(added.Secret.Reveal(), creds.Username) {
		t.Fatalf("credentials after sign: %v", err)
	}

	for _, r := range []*running{a, b} {
		testutil.WaitFor(t, 10*time.Second, "both nodes in "+r.file+"'s status", func() bool {
			st, err := admin.NewClient(r.cfg(t).Server.AdminSocket).Status(context.Background())
			return err == nil && st.Cluster != nil && len(st.Cluster.Nodes) == 2 && st.Cluster.Unreachable == ""
		})
	}
	st, _ := admin.NewClient(b.cfg(t).Server.AdminSocket).Status(context.Background())
	if n := st.Cluster.Nodes; n[0].Name != "a" || n[1].Name != "b" || n[0].PublicHost != "127.0.0.1" || n[0].Version != "test" || n[0].Health != "ok" {
		t.Errorf("nodes: %+v", n)
	}
	a.stop(t)
	testutil.WaitFor(t, 15*time.Second, "a off the node list", func() bool {
		nodes, err := Nodes(context.Background(), b.cfg(t))
		return err == nil && len(nodes) == 1 && nodes[0].Name == "b"
	})
}

// TestDaemonStartsWithEtcdDown: a node restarted while etcd is away
// serves from its cache: the relay verifies the secret it last saw.
func TestDaemonStartsWithEtcdDown(t *testing.T) {
	c := testutil.Etcd(t, 1)
	const prefix = "/tariq-down"
	a, dir := etcdNode(t, c, prefix, "a", "")
	creds, _, err := TURNCredentials(a.cfg(t), "bob", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "the cache written", func() bool {
		b, _ := os.ReadFile(filepath.Join(dir, "data", etcdstore.CacheFile))
		return strings.Contains(string(b), `"secret"`)
	})
	a.stop(t)
	c.Stop()
	a2, _ := etcdNodeWith(t, c, prefix, "a", dir, 2*time.Second)
	if _, err := a2.allocate(t, creds.Username, creds.Password); err != nil {
		t.Fatalf("allocate on a node started with etcd down: %v", err)
	}
	st, err := admin.NewClient(a2.cfg(t).Server.AdminSocket).Status(context.Background())
	if err != nil || st.Cluster == nil || !strings.Contains(st.Cluster.Unreachable, "unreachable") {
		t.Fatalf("status with etcd down: %v %+v", err, st.Cluster)
	}
	if !strings.Contains(a2.logs.String(), "serving the shared state last seen") {
		t.Errorf("no warning logged:\n%s", a2.logs)
	}
}

func mint(secret string) relay.Credentials {
	return relay.MintCredentials(secret, "@carol:example.org", time.Hour, time.Now())
}

func mintFor(secret, username string) string { return relay.RESTPassword(secret, username) }

// TestDaemonsShareACME: with certmagic's storage in etcd, the first node
// orders the certificate (answering TLS-ALPN-01 on its shared port) and
// a second node on the same prefix and public host serves that same
// certificate without ordering one: the CA sees one order.
func TestDaemonsShareACME(t *testing.T) {
	testutil.LeakCheck(t, testutil.PebbleLeakOptions()...)
	c := testutil.Etcd(t, 1)
	const ip, ipB, prefix = "127.0.0.5", "127.0.0.6", "/tariq-acme"
	webPort := freePortOn(t, ip)
	p := testutil.NewPebble(t, testutil.PebbleOptions{TLSPort: webPort,
		Profiles: map[string]time.Duration{"default": 90 * 24 * time.Hour, certs.ProfileShortlived: 160 * time.Hour}})
	p.Start()
	node := func(name, listen string, port int) *running {
		dir := t.TempDir()
		file := writeConfig(t, dir, fmt.Sprintf(`server:
  public_host: %[2]s
  data_dir: %[1]s/data
  admin_socket: %[1]s/admin.sock
  metrics_listen: ""
  store: etcd
  node_name: %[7]s
  etcd:
    endpoints: [%[8]s]
    prefix: %[9]s
tls:
  mode: auto
  acme_ca: %[3]s
  acme_ca_roots: %[4]s
vpn:
  enabled: false
web:
  listen: ["%[6]s:%[5]d"]
relay:
  listen_udp: ["127.0.0.1:0"]
  listen_tcp: ["127.0.0.1:0"]
  listen_tls: ["127.0.0.1:0"]
  relay_bind: 127.0.0.1
  allow_peers: [127.0.0.1/32]
`, dir, ip, p.DirectoryURL, p.RootsFile, port, listen, name, c.Endpoints()[0], prefix))
		r, _ := runDaemon(t, file, func(d *certs.Deps) {
			d.PublicIP = func(a netip.Addr) bool { return a.IsLoopback() || config.IsPublicIP(a) }
			d.ACMEListenHost = listen
			d.ACMETLSALPNPort = port
			d.ACMEDisableHTTP01 = true
			d.ACMERetry = 200 * time.Millisecond
		})
		return r
	}
	a := node("a", ip, webPort)
	waitCert(t, a, certs.SourceACME)
	served, err := handshake(a.d.WebAddrs()[0].String(), "", p.RootPool(), "h2")
	if err != nil {
		t.Fatal(err)
	}
	b := node("b", ipB, freePortOn(t, ipB))
	waitCert(t, b, certs.SourceACME)
	got, err := handshake(b.d.WebAddrs()[0].String(), ip, p.RootPool(), "h2") // as a client that resolved the shared name to b
	if err != nil {
		t.Fatalf("the second node, trusting only the CA's root: %v", err)
	}
	if !got.Equal(served) {
		t.Errorf("the second node serves another certificate (serial %v, the first's %v)", got.SerialNumber, served.SerialNumber)
	}
	if n := len(p.OrderLog()); n != 1 {
		t.Errorf("%d orders, want one: the second node ordered its own", n)
	}
	if kv, err := c.Get(0, prefix+"/certmagic/"); err != nil || len(kv) == 0 {
		t.Errorf("no certmagic key in etcd: %v", err)
	}
}
