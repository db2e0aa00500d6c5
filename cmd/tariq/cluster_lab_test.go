package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tariq-vpn/tariq/internal/testutil"
)

// The cluster lab: one family network served by several tariq nodes (the
// real binary, `tariq serve`) that share their state through a
// three-member etcd cluster, each node, etcd member and device in a
// network namespace of its own.
//
//	etcd e0 e1 e2       10.10.0.21-23 ─┐
//	nodes a b c         10.10.0.11-13 ─┴─ br0 10.10.0.1 ┐ wan: routes between its links;
//	device N  10.10.N.2 ── 10.10.N.1 (a link each, N ≥ 100) ┘ the internet host 10.10.2.2 on its loopback
//
// Every node is configured alike but for its name and data directory:
// server.public_host is the network's DNS name, clusterHost, so a member's
// config names no node. A device resolves that name through its
// namespace's own /etc/hosts (`ip netns exec` binds /etc/netns/NAME/hosts
// over /etc/hosts), and pointing the name at another node, then restarting
// the tunnel, is the DNS change that moves a member to another node with the
// config they have. The internet host answers HTTP on :80 with the address
// it sees ("you are 10.10.0.12:…": which node's NAT the request came
// through) and echoes UDP on :3480 (a TURN peer).
//
// The nodes' CLI runs as the real binary inside the node's namespace, as an
// operator's shell on that machine would: with the daemon down it reaches
// etcd itself, which only the node's namespace can.

// clusterHost is the network's public name, every node's
// server.public_host.
const clusterHost = "vpn.cluster.test"

// clusterInternet is the internet host's address; clusterEcho its UDP
// echo, the TURN tests' peer.
const (
	clusterInternet = "10.10.2.2"
	clusterEcho     = "10.10.2.2:3480"
)

// clusterOptions say how a cluster lab differs from the plain one.
type clusterOptions struct {
	// Nodes is how many tariq nodes serve the network (a, b, c, …).
	Nodes int
	// FileStore gives every node server.store file instead of etcd, and
	// starts no etcd: separate one-server networks, the benchmark's
	// baseline.
	FileStore bool
	// TLS starts etcd with TLS client certificates required, and gives the
	// nodes the CA and a client certificate (server.etcd.ca_file,
	// cert_file, key_file).
	TLS bool
	// Config holds config keys by path with YAML values, over the lab's
	// own, for every node.
	Config map[string]string
	// NoStart leaves the nodes' daemons to the test (clusterNode.start).
	NoStart bool
}

// clusterLab is one cluster topology with its nodes.
type clusterLab struct {
	t      testing.TB
	bin    string
	dir    string
	prefix string // server.etcd.prefix
	wan    *testutil.NetNS
	etcd   *testutil.EtcdCluster // nil with FileStore
	nodes  []*clusterNode
	links  int // device links made so far
}

// clusterNode is one tariq node: its namespace, config and daemon.
type clusterNode struct {
	c      *clusterLab
	name   string // server.node_name: node-a, …
	addr   string // its public address, 10.10.0.11, …
	ns     *testutil.NetNS
	dir    string
	conf   string
	keys   map[string]string // what conf holds: config keys by path, YAML values
	iface  string
	daemon *daemonProc
}

// newClusterLab builds the topology, starts etcd (unless FileStore) and
// every node, and waits until each answers.
func newClusterLab(t testing.TB, opts clusterOptions) *clusterLab {
	t.Helper()
	testutil.RequireRoot(t)
	for _, b := range []string{"wg", "ip", "nft", "curl"} {
		testutil.RequireBinary(t, b)
	}
	bin, err := buildTariq()
	if err != nil {
		t.Fatal(err)
	}
	var rnd [4]byte
	rand.Read(rnd[:])
	c := &clusterLab{t: t, bin: bin, dir: t.TempDir(), prefix: "/lab-" + hex.EncodeToString(rnd[:]), links: 99}
	c.wan = testutil.NewNetNS(t)
	c.wan.Run("ip", "link", "add", "br0", "type", "bridge")
	c.wan.Run("ip", "addr", "add", "10.10.0.1/24", "dev", "br0")
	c.wan.Run("ip", "link", "set", "br0", "up")
	c.wan.Run("ip", "addr", "add", clusterInternet+"/32", "dev", "lo")
	if err := c.wan.Do(func() error { return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644) }); err != nil {
		t.Fatal(err)
	}
	c.serveInternet()

	var endpoints []string
	if !opts.FileStore {
		var nss []*testutil.NetNS
		var addrs []netip.Addr
		for i := range 3 {
			ns := c.onBridge(fmt.Sprintf("e%d", i), fmt.Sprintf("10.10.0.%d", 21+i))
			nss, addrs = append(nss, ns), append(addrs, netip.AddrFrom4([4]byte{10, 10, 0, byte(21 + i)}))
		}
		c.etcd = testutil.NewEtcd(t, testutil.EtcdOptions{NS: nss, Addrs: addrs, TLS: opts.TLS})
		endpoints = c.etcd.Endpoints()
	}
	for i := range opts.Nodes {
		letter := string(rune('a' + i))
		n := &clusterNode{c: c, name: "node-" + letter, addr: fmt.Sprintf("10.10.0.%d", 11+i),
			dir: filepath.Join(c.dir, "node-"+letter), iface: "tq" + hex.EncodeToString(rnd[:3])}
		n.ns = c.onBridge("n"+letter, n.addr)
		n.ns.Run("ip", "route", "add", "default", "via", "10.10.0.1")
		if err := os.MkdirAll(n.dir, 0o700); err != nil {
			t.Fatal(err)
		}
		keys := map[string]string{
			"server.public_host":     clusterHost,
			"server.node_name":       n.name,
			"server.data_dir":        filepath.Join(n.dir, "data"),
			"server.admin_socket":    filepath.Join(n.dir, "admin.sock"),
			"vpn.interface":          n.iface,
			"vpn.allow_destinations": "[10.10.2.0/24]", // the lab's internet host has a private address
			"relay.listen_tcp":       "[]",
			"relay.listen_tls":       "[]",
			"relay.allow_peers":      "[10.10.2.0/24]",
			"tls.mode":               "self-signed",
			"server.store":           "file",
			"server.etcd.endpoints":  "[]",
			"server.etcd.prefix":     c.prefix,
			"server.metrics_listen":  `""`,
			"web.listen":             `[":443"]`,
		}
		if !opts.FileStore {
			keys["server.store"] = "etcd"
			keys["server.etcd.endpoints"] = "[" + strings.Join(endpoints, ", ") + "]"
			if opts.TLS {
				f := c.etcd.ClientTLS()
				keys["server.etcd.ca_file"], keys["server.etcd.cert_file"], keys["server.etcd.key_file"] = f.CAFile, f.CertFile, f.KeyFile
			}
		} else { // the defaults: a network of its own
			for _, k := range []string{"server.store", "server.node_name", "server.etcd.endpoints", "server.etcd.prefix"} {
				delete(keys, k)
			}
		}
		n.conf, n.keys = filepath.Join(n.dir, "tariq.yaml"), keys
		n.configure(opts.Config)
		c.nodes = append(c.nodes, n)
	}
	if opts.NoStart {
		return c
	}
	// The first node makes the network's identity (its key pair, its
	// ULA); the others find it in etcd.
	for _, n := range c.nodes {
		n.start()
	}
	return c
}

// configure changes the node's config keys (an empty value removes one)
// and rewrites its config file; a running daemon is not told.
func (n *clusterNode) configure(change map[string]string) {
	for k, v := range change {
		if v == "" {
			delete(n.keys, k)
		} else {
			n.keys[k] = v
		}
	}
	if err := os.WriteFile(n.conf, []byte(labYAML(n.keys)), 0o600); err != nil {
		n.c.t.Fatal(err)
	}
}

// onBridge makes a namespace with eth0 at addr/24 on wan's bridge; port
// names the bridge's end.
func (c *clusterLab) onBridge(port, addr string) *testutil.NetNS {
	ns := testutil.NewNetNS(c.t)
	testutil.Veth(c.t, testutil.VethEnd{NS: ns, Name: "eth0", Addrs: []netip.Prefix{pfx(addr + "/24")}},
		testutil.VethEnd{NS: c.wan, Name: port})
	c.wan.Run("ip", "link", "set", port, "master", "br0")
	return ns
}

// serveInternet runs the internet host's HTTP server and UDP echo in wan.
func (c *clusterLab) serveInternet() {
	var web net.Listener
	var echo net.PacketConn
	if err := c.wan.Do(func() (err error) {
		if web, err = net.Listen("tcp", clusterInternet+":80"); err != nil {
			return err
		}
		echo, err = net.ListenPacket("udp4", clusterEcho)
		return err
	}); err != nil {
		c.t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "you are %s\n", r.RemoteAddr)
	})}
	go srv.Serve(web)
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := echo.ReadFrom(buf)
			if err != nil {
				return
			}
			echo.WriteTo(buf[:n], from)
		}
	}()
	c.t.Cleanup(func() { srv.Close(); echo.Close() })
}

// node returns the node named by its letter.
func (c *clusterLab) node(letter string) *clusterNode {
	for _, n := range c.nodes {
		if n.name == "node-"+letter {
			return n
		}
	}
	c.t.Fatalf("no node %s", letter)
	return nil
}

// start starts the node's daemon and waits until its admin socket answers
// and `tariq status` does.
func (n *clusterNode) start() {
	t := n.c.t
	t.Helper()
	p := &daemonProc{out: &lockedBuffer{}, done: make(chan struct{})}
	p.cmd = n.ns.Command(n.c.bin, "serve", "--config", n.conf)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	n.daemon = p
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s daemon (pid %d) output:\n%s", n.name, p.cmd.Process.Pid, p.out)
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := testutil.WaitListening(filepath.Join(n.dir, "admin.sock"), 100*time.Millisecond)
		if err == nil {
			if _, err = n.run("status"); err == nil {
				return
			}
		}
		select {
		case <-p.done:
			t.Fatalf("%s: the daemon exited (%v):\n%s", n.name, p.err, p.out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: the daemon did not come up (%v):\n%s", n.name, err, p.out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop stops the node's daemon as systemd would (SIGTERM) and wants a
// clean exit within 20 s.
func (n *clusterNode) stop() {
	t := n.c.t
	t.Helper()
	p := n.daemon
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
		t.Fatalf("%s: the daemon did not exit within 20 s of SIGTERM:\n%s", n.name, p.out)
	}
	if p.err != nil {
		t.Fatalf("%s: daemon exit after SIGTERM: %v\n%s", n.name, p.err, p.out)
	}
}

// kill kills the node's daemon outright (kill -9): no shutdown runs.
func (n *clusterNode) kill() {
	n.daemon.cmd.Process.Kill()
	<-n.daemon.done
}

// run runs `tariq args… --config <the node's>` inside the node's
// namespace, bounded to 30 s, and returns its stdout; the error carries
// the exit status and stderr.
func (n *clusterNode) run(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	argv := append([]string{n.c.bin}, append(args, "--config", n.conf)...)
	cmd := n.ns.Command(argv...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		return "", err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		cmd.Process.Kill()
		err = fmt.Errorf("killed after 30 s: %w", <-done)
	}
	if err != nil {
		return stdout.String(), &cliError{args: args, err: err, stderr: stderr.String()}
	}
	return stdout.String(), nil
}

// cliError is a failed CLI run on a node.
type cliError struct {
	args   []string
	err    error
	stderr string
}

func (e *cliError) Error() string {
	return fmt.Sprintf("tariq %s: %v: %s", strings.Join(e.args, " "), e.err, strings.TrimSpace(e.stderr))
}

// cli is run that fails the test on an error.
func (n *clusterNode) cli(args ...string) string {
	n.c.t.Helper()
	out, err := n.run(args...)
	if err != nil {
		n.c.t.Fatalf("%s: %v", n.name, err)
	}
	return out
}

// wgPeers returns the public keys on the node's WireGuard device, as
// `wg show IFACE peers` lists them through its UAPI socket.
func (n *clusterNode) wgPeers() (map[string]bool, error) {
	out, err := n.ns.TryRun("wg", "show", n.iface, "peers")
	if err != nil {
		return nil, err
	}
	keys := map[string]bool{}
	for _, k := range strings.Fields(out) {
		keys[k] = true
	}
	return keys, nil
}

// selfSigned returns the node's self-signed certificate (tls.mode
// self-signed).
func (n *clusterNode) selfSigned() *x509.Certificate {
	t := n.c.t
	t.Helper()
	b, err := os.ReadFile(filepath.Join(n.dir, "data", "tls", "self-signed.crt"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM in self-signed.crt", n.name)
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// https returns a client in ns for the page of node n, at
// https://clusterHost/…, trusting n's certificate alone.
func (c *clusterLab) https(ns *testutil.NetNS, n *clusterNode) *http.Client {
	roots := x509.NewCertPool()
	roots.AddCert(n.selfSigned())
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: clusterHost},
		DialContext: func(ctx context.Context, network, _ string) (conn net.Conn, err error) {
			err = ns.Do(func() error {
				conn, err = (&net.Dialer{}).DialContext(ctx, "tcp", n.addr+":443")
				return err
			})
			return conn, err
		},
	}
	c.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// newLink makes a namespace on a link of its own to wan, its default
// route there: a machine on the internet.
func (c *clusterLab) newLink() *testutil.NetNS {
	c.t.Helper()
	c.links++
	gw, addr := fmt.Sprintf("10.10.%d.1", c.links), fmt.Sprintf("10.10.%d.2", c.links)
	ns := testutil.NewNetNS(c.t)
	testutil.Veth(c.t, testutil.VethEnd{NS: ns, Name: "eth0", Addrs: []netip.Prefix{pfx(addr + "/24")}},
		testutil.VethEnd{NS: c.wan, Name: fmt.Sprintf("d%d", c.links), Addrs: []netip.Prefix{pfx(gw + "/24")}})
	ns.Run("ip", "route", "add", "default", "via", gw)
	return ns
}

// newDevice makes a device namespace on a link of its own to wan, with
// wg-quick's policy routing in place and clusterHost resolving to node at;
// its config is the caller's to set (device.up brings the client up).
func (c *clusterLab) newDevice(name string, at *clusterNode) *device {
	t, ok := c.t.(*testing.T)
	if !ok {
		c.t.Fatal("devices are for tests")
	}
	t.Helper()
	ns := c.newLink()
	for _, fam := range []string{"-4", "-6"} {
		ns.Run("ip", fam, "rule", "add", "not", "fwmark", "51820", "table", "51820")
		ns.Run("ip", fam, "rule", "add", "table", "main", "suppress_prefixlength", "0")
	}
	// The device's helpers report to t and keep their files in the lab's
	// directory: a lab of theirs holding just that.
	d := &device{l: &lab{t: t, root: t, dir: c.dir}, ns: ns, name: name}
	etc := filepath.Join("/etc/netns", ns.Name)
	if err := os.MkdirAll(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(etc) })
	pointAt(d, at)
	return d
}

// pointAt makes clusterHost resolve to node n on device d: the DNS change.
// A client already up keeps the address it resolved when it started, as
// the WireGuard apps do; restart it (down, up) to follow.
func pointAt(d *device, n *clusterNode) {
	hosts := fmt.Sprintf("127.0.0.1 localhost\n%s %s\n", n.addr, clusterHost)
	if err := os.WriteFile(filepath.Join("/etc/netns", d.ns.Name, "hosts"), []byte(hosts), 0o644); err != nil {
		d.l.t.Fatal(err)
	}
}

// reachVia waits until d's HTTP request to the internet host goes
// through node n's NAT: the tunnel is up through n. A client whose first
// handshake initiation met a node that did not know it yet retries after
// 5 s (REKEY_TIMEOUT); within bounds several retries.
func reachVia(d *device, n *clusterNode, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		body, err := d.ns.TryRun("curl", "-sS", "--max-time", "2", "http://"+clusterInternet+"/")
		switch {
		case err == nil && strings.Contains(body, "you are "+n.addr+":"):
			return nil
		case err == nil:
			return fmt.Errorf("%s reached the internet host, not through %s: %q", d.name, n.name, body)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s does not get through %s within %v: %w", d.name, n.name, within, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitUntil polls cond every 50 ms until it holds or within passes, and
// returns how long it took, or an error with cond's last word.
func waitUntil(within time.Duration, cond func() error) (time.Duration, error) {
	start := time.Now()
	for {
		err := cond()
		if err == nil {
			return time.Since(start), nil
		}
		if time.Since(start) > within {
			return time.Since(start), err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// confPublicKey returns a wg-quick config's [Interface] PrivateKey's public key,
// as the server lists the device.
func confPublicKey(t testing.TB, conf string) string {
	t.Helper()
	priv := confValues(conf)["Interface.PrivateKey"]
	cmd := exec.Command("wg", "pubkey")
	cmd.Stdin = strings.NewReader(priv + "\n")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("wg pubkey: %v", err)
	}
	return strings.TrimSpace(string(out))
}
