package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/hex"
	"flag"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tariq-vpn/tariq/internal/admin"
	"github.com/tariq-vpn/tariq/internal/members"
	"github.com/tariq-vpn/tariq/internal/testutil"
)

// The cluster benchmarks (scripts/bench-cluster.sh runs them with
// -benchtime=1x: each builds a lab and measures a fixed number of adds, set
// by these flags, whatever b.N says).
var (
	benchAdds     = flag.Int("cluster.adds", 100, "cluster benchmarks: peer adds measured")
	benchParallel = flag.Int("cluster.parallel", 8, "BenchmarkPeerAddThroughput: adds in flight at once in its parallel run")
)

// BenchmarkClusterAddToHandshake measures, with three nodes on a
// three-member etcd cluster, the time from `tariq peer add` on one node (the
// CLI started) to a completed WireGuard handshake with the new device on
// another node: the add, its write to etcd, the other node's watch and
// apply, and the handshake. The adds go round the nodes (a, b, c), each
// device handshaking with the next node (b, c, a).
//
// The client is upstream wireguard-go driven through its UAPI socket. A
// node that does not know a device yet drops its handshake initiation, and
// wireguard-go would try again only after REKEY_TIMEOUT (5 s); so the probe
// re-creates the peer (a fresh peer initiates at once) every probeEvery
// until a handshake completes, which bounds the error of each sample to
// that interval.
func BenchmarkClusterAddToHandshake(b *testing.B) {
	const probeEvery = 20 * time.Millisecond
	c := newClusterLab(b, clusterOptions{Nodes: 3, Config: map[string]string{"vpn.address": "[10.77.0.1/20]"}})
	cl := newBenchClient(b, c)
	var total, cli, after []time.Duration
	for b.Loop() {
		total, cli, after = total[:0], cli[:0], after[:0]
		for i := range *benchAdds {
			on, to := c.nodes[i%3], c.nodes[(i+1)%3]
			start := time.Now()
			conf, err := on.run("peer", "add", fmt.Sprintf("hs%03d", i))
			if err != nil {
				b.Fatal(err)
			}
			added := time.Now()
			if err := cl.handshake(conf, to, probeEvery, 10*time.Second); err != nil {
				b.Fatalf("hs%03d added on %s, on %s: %v", i, on.name, to.name, err)
			}
			done := time.Now()
			total, cli, after = append(total, done.Sub(start)), append(cli, added.Sub(start)), append(after, done.Sub(added))
		}
	}
	for _, m := range []struct {
		name string
		d    []time.Duration
	}{{"add-to-handshake", total}, {"cli", cli}, {"cli-return-to-handshake", after}} {
		b.ReportMetric(ms(quantile(m.d, 0.5)), m.name+"-p50-ms")
		b.ReportMetric(ms(quantile(m.d, 0.99)), m.name+"-p99-ms")
	}
	b.ReportMetric(float64(len(total)), "adds")
}

// BenchmarkPeerAddThroughput measures peer add throughput with the file
// store (one server) and with etcd (three nodes on a three-member cluster,
// the adds spread over the nodes), one at a time and -cluster.parallel at
// once, two ways: the CLI as an operator runs it (a process inside the
// node's namespace, through the daemon's admin socket), and the admin API
// alone (the daemon's own work: the store's write and the live apply).
func BenchmarkPeerAddThroughput(b *testing.B) {
	ways := []struct {
		name string
		add  func(n *clusterNode, name string) error
	}{
		{"cli", func(n *clusterNode, name string) error { _, err := n.run("peer", "add", name); return err }},
		{"api", func(n *clusterNode, name string) error {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, err := admin.NewClient(filepath.Join(n.dir, "admin.sock")).Add(ctx, members.AddRequest{Name: name})
			return err
		}},
	}
	for _, store := range []string{"file", "etcd"} {
		for _, way := range ways {
			b.Run("store="+store+"/way="+way.name, func(b *testing.B) {
				opts := clusterOptions{Nodes: 3}
				if store == "file" {
					opts = clusterOptions{Nodes: 1, FileStore: true}
				}
				// Room for the adds: a /24 holds 253 devices.
				opts.Config = map[string]string{"vpn.address": "[10.77.0.1/20]"}
				c := newClusterLab(b, opts)
				for b.Loop() {
					seq, par, lat, err := addThroughput(c, way.name, way.add)
					if err != nil {
						b.Fatal(err)
					}
					b.ReportMetric(seq, "adds/s-sequential")
					b.ReportMetric(par, fmt.Sprintf("adds/s-%d-parallel", *benchParallel))
					b.ReportMetric(ms(quantile(lat, 0.5)), "add-p50-ms")
					b.ReportMetric(ms(quantile(lat, 0.99)), "add-p99-ms")
				}
			})
		}
	}
}

// addThroughput makes -cluster.adds devices one at a time, then as many
// again -cluster.parallel at once, round the nodes, and returns both rates
// and the one-at-a-time latencies. The network starts empty: every add
// rewrites the state, so its cost grows with the network.
func addThroughput(c *clusterLab, prefix string, add func(*clusterNode, string) error) (seq, par float64, lat []time.Duration, err error) {
	n := *benchAdds
	start := time.Now()
	for i := range n {
		t0 := time.Now()
		if err := add(c.nodes[i%len(c.nodes)], fmt.Sprintf("%s-s%03d", prefix, i)); err != nil {
			return 0, 0, nil, err
		}
		lat = append(lat, time.Since(t0))
	}
	seq = float64(n) / time.Since(start).Seconds()
	next := make(chan int, n)
	for i := range n {
		next <- i
	}
	close(next)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	start = time.Now()
	for range *benchParallel {
		wg.Go(func() {
			for i := range next {
				if err := add(c.nodes[i%len(c.nodes)], fmt.Sprintf("%s-p%03d", prefix, i)); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	par = float64(n) / time.Since(start).Seconds()
	close(errs)
	return seq, par, lat, <-errs
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// quantile returns the q-quantile of d (nearest rank).
func quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.5) - 1
	return s[max(0, min(i, len(s)-1))]
}

// benchClient is upstream wireguard-go in a namespace on the internet,
// given one device's keys at a time through its UAPI socket.
type benchClient struct {
	tb   testing.TB
	sock string
	ping *net.UDPConn // to the server's tunnel address: what starts a handshake
}

const benchIface = "wgbench"

func newBenchClient(tb testing.TB, c *clusterLab) *benchClient {
	tb.Helper()
	ns := c.newLink()
	cl := &benchClient{tb: tb, sock: ns.WireGuardSocket(benchIface)}
	ns.Start(testutil.BuildWireGuardGo(tb), "-f", benchIface)
	if err := testutil.WaitListening(cl.sock, 10*time.Second); err != nil {
		tb.Fatal(err)
	}
	// The handshake is all that is measured: any tunnel address will do,
	// and the server's tunnel address is the one peer route.
	ns.Run("ip", "addr", "add", "10.77.0.254/32", "dev", benchIface)
	ns.Run("ip", "link", "set", benchIface, "up")
	ns.Run("ip", "route", "add", "10.77.0.1/32", "dev", benchIface)
	if err := ns.Do(func() (err error) {
		cl.ping, err = net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.IPv4(10, 77, 0, 1), Port: 9})
		return err
	}); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cl.ping.Close() })
	return cl
}

// handshake takes conf's keys and, every probeEvery, a fresh peer for the
// server at node n, sending a datagram into the tunnel, until a handshake
// completes or within passes.
func (cl *benchClient) handshake(conf string, n *clusterNode, probeEvery, within time.Duration) error {
	v := confValues(conf)
	priv, err := uapiKey(v["Interface.PrivateKey"])
	if err != nil {
		return err
	}
	pub, err := uapiKey(v["Peer.PublicKey"])
	if err != nil {
		return err
	}
	psk, err := uapiKey(v["Peer.PresharedKey"])
	if err != nil {
		return err
	}
	fresh := fmt.Sprintf("private_key=%s\nreplace_peers=true\npublic_key=%s\npreshared_key=%s\nendpoint=%s:51820\nreplace_allowed_ips=true\nallowed_ip=10.77.0.1/32\n",
		priv, pub, psk, n.addr)
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if err := cl.uapi("set=1\n" + fresh); err != nil {
			return err
		}
		cl.ping.Write([]byte("x"))
		for probe := time.Now().Add(probeEvery); time.Now().Before(probe); time.Sleep(2 * time.Millisecond) {
			if ok, err := cl.handshaken(); err != nil || ok {
				return err
			}
		}
	}
	return fmt.Errorf("no handshake within %v", within)
}

// handshaken reports whether the client's peer has completed a handshake.
func (cl *benchClient) handshaken() (bool, error) {
	c, err := net.DialTimeout("unix", cl.sock, time.Second)
	if err != nil {
		return false, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	fmt.Fprint(c, "get=1\n\n")
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			break
		}
		if v, ok := strings.CutPrefix(line, "last_handshake_time_sec="); ok && v != "0" {
			return true, nil
		}
	}
	return false, sc.Err()
}

// uapi sends one UAPI operation and wants errno=0.
func (cl *benchClient) uapi(op string) error {
	c, err := net.DialTimeout("unix", cl.sock, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := fmt.Fprintf(c, "%s\n", op); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(line) != "errno=0" {
		return fmt.Errorf("wireguard-go refused the configuration: %s", strings.TrimSpace(line))
	}
	return nil
}

// uapiKey turns a config's base64 key into UAPI's hex.
func uapiKey(b64 string) (string, error) {
	b, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(b) != 32 {
		return "", fmt.Errorf("key %q: %v", b64, err)
	}
	return hex.EncodeToString(b), nil
}
