package etcdstore_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tariq-vpn/tariq/config"
	"github.com/tariq-vpn/tariq/internal/etcdstore"
	"github.com/tariq-vpn/tariq/internal/members"
	"github.com/tariq-vpn/tariq/internal/store"
	"github.com/tariq-vpn/tariq/internal/testutil"
)

// testPrefix is a prefix of its own per test, so tests may share a
// cluster and never see each other's keys.
func testPrefix(t *testing.T) string {
	return "/tariq-test/" + strings.NewReplacer("/", "-", " ", "-").Replace(t.Name())
}

// open opens a store on the cluster's endpoints for node, its cache in a
// data directory of its own (returned).
func open(t *testing.T, endpoints []string, prefix, node string) (*etcdstore.Store, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	s := openIn(t, endpoints, prefix, node, dir)
	return s, dir
}

func openIn(t *testing.T, endpoints []string, prefix, node, dir string) *etcdstore.Store {
	t.Helper()
	return openWith(t, etcdstore.Options{Endpoints: endpoints, Prefix: prefix, Node: node, DataDir: dir, Timeout: 3 * time.Second})
}

func openWith(t *testing.T, opts etcdstore.Options) *etcdstore.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	opts.Resync = time.Second
	s, err := etcdstore.Open(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// testConfig is a node's config: the defaults with a public host and
// the HTTPS page on (for invite links).
func testConfig(t *testing.T) *config.Config {
	cfg := config.Default()
	cfg.Server.DataDir = t.TempDir()
	cfg.Server.PublicHost = "vpn.example.com"
	return cfg
}

func service(t *testing.T, st store.Backend, cfg *config.Config) *members.Service {
	t.Helper()
	s, err := members.New(members.Deps{Store: st, Config: func() *config.Config { return cfg }})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestConcurrentAdds: 50 `peer add`s at once, split across two nodes'
// members models on one prefix, all succeed with 50 distinct IPv4 and
// IPv6 addresses, one server identity, and both nodes see all 50.
func TestConcurrentAdds(t *testing.T) {
	c := testutil.Etcd(t, 1)
	prefix := testPrefix(t)
	a, _ := open(t, c.Endpoints(), prefix, "a")
	b, _ := open(t, c.Endpoints(), prefix, "b")
	cfg := testConfig(t)
	sa, sb := service(t, a, cfg), service(t, b, cfg)
	const n = 50
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		s := sa
		if i%2 == 1 {
			s = sb
		}
		wg.Go(func() {
			if _, err := s.Add(members.AddRequest{Name: fmt.Sprintf("dev%02d", i)}); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for _, s := range []*etcdstore.Store{a, b} {
		testutil.WaitFor(t, 5*time.Second, "both nodes see 50 devices", func() bool {
			st, _ := s.Load()
			return len(st.Peers) == n
		})
		st, _ := s.Load()
		v4, v6 := map[netip.Addr]string{}, map[netip.Addr]string{}
		for _, p := range st.Peers {
			if o, dup := v4[p.IPv4]; dup {
				t.Errorf("%s and %s both have %s", o, p.Name, p.IPv4)
			}
			if o, dup := v6[p.IPv6]; dup {
				t.Errorf("%s and %s both have %s", o, p.Name, p.IPv6)
			}
			v4[p.IPv4], v6[p.IPv6] = p.Name, p.Name
		}
		if len(st.Members) != n {
			t.Errorf("%d members, want %d", len(st.Members), n)
		}
	}
	ia, err1 := sa.Identity()
	ib, err2 := sb.Identity()
	if err1 != nil || err2 != nil || ia.PrivateKey != ib.PrivateKey || ia.ULA != ib.ULA || ia.AmneziaWG != ib.AmneziaWG {
		t.Errorf("the nodes have different identities: %v %v", err1, err2)
	}
}

// TestWatch: a change made through one node reaches the other's Watch
// and Load.
func TestWatch(t *testing.T) {
	testutil.LeakCheck(t)
	c := testutil.Etcd(t, 1)
	prefix := testPrefix(t)
	a, _ := open(t, c.Endpoints(), prefix, "a")
	b, _ := open(t, c.Endpoints(), prefix, "b")
	cfg := testConfig(t)
	sa := service(t, a, cfg)
	if _, err := sa.Identity(); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "b sees the identity", func() bool { st, _ := b.Load(); return st.VPN.PrivateKey != "" })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	changed := b.Watch(ctx)
	if _, err := sa.Add(members.AddRequest{Name: "mom"}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	case <-time.After(5 * time.Second):
		t.Fatal("b's watch said nothing of a device added on a")
	}
	if st, _ := b.Load(); st.Peer("mom") == nil {
		t.Fatal("b's state has no mom after its watch fired")
	}
}

// TestInviteOnce: an invite made on one node is redeemed once across
// both, however the two redeem at once.
func TestInviteOnce(t *testing.T) {
	c := testutil.Etcd(t, 1)
	prefix := testPrefix(t)
	a, _ := open(t, c.Endpoints(), prefix, "a")
	b, _ := open(t, c.Endpoints(), prefix, "b")
	cfg := testConfig(t)
	sa, sb := service(t, a, cfg), service(t, b, cfg)
	if _, err := sa.Add(members.AddRequest{Name: "mom"}); err != nil {
		t.Fatal(err)
	}
	for round := range 5 {
		inv, err := sa.CreateInvite("mom", 0)
		if err != nil {
			t.Fatal(err)
		}
		token := inv.URL[strings.LastIndex(inv.URL, "/")+1:]
		var wg sync.WaitGroup
		results := make([]error, 2)
		for i, s := range []*members.Service{sa, sb} {
			wg.Go(func() {
				_, results[i] = s.Redeem(token, nil)
			})
		}
		wg.Wait()
		ok := 0
		for _, err := range results {
			switch {
			case err == nil:
				ok++
			case !errors.Is(err, members.ErrInviteUsed):
				t.Errorf("round %d: %v", round, err)
			}
		}
		if ok != 1 {
			t.Fatalf("round %d: the invite was redeemed %d times: %v", round, ok, results)
		}
	}
}

// TestUsageSums: usage counted on two nodes adds up per member, with no
// write lost when both count at once.
func TestUsageSums(t *testing.T) {
	c := testutil.Etcd(t, 1)
	prefix := testPrefix(t)
	a, _ := open(t, c.Endpoints(), prefix, "a")
	b, _ := open(t, c.Endpoints(), prefix, "b")
	a2, _ := open(t, c.Endpoints(), prefix, "a") // a second process under a's name: still nothing lost
	sa := service(t, a, testConfig(t))
	if _, err := sa.Add(members.AddRequest{Name: "mom"}); err != nil {
		t.Fatal(err)
	}
	month := members.Month(time.Now())
	var wg sync.WaitGroup
	const rounds = 20
	for _, s := range []*etcdstore.Store{a, b, a2} {
		wg.Go(func() {
			for range rounds {
				if err := s.AddUsage([]store.MemberUsage{{Member: "mom", Usage: store.Usage{Month: month, In: 1, Out: 10}}}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	want := store.Usage{Month: month, In: 3 * rounds, Out: 30 * rounds}
	for _, s := range []*etcdstore.Store{a, b} {
		testutil.WaitFor(t, 5*time.Second, fmt.Sprintf("usage %+v on every node", want), func() bool {
			st, _ := s.Load()
			return st.Member("mom") != nil && st.Member("mom").Usage == want
		})
	}
	// Usage never lands in the shared document itself.
	kv, err := c.Get(0, prefix+"/state")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(kv[prefix+"/state"], `"usage"`) {
		t.Errorf("usage written into %s/state: %s", prefix, kv[prefix+"/state"])
	}
	if _, ok := kv[prefix+"/usage/"+month+"/b"]; ok {
		t.Error("Get of the state key returned usage keys")
	}
}

// TestEtcdDown: with etcd stopped, a node keeps serving the state it last
// saw (Load answers at once), a write fails within the timeout with one
// line naming the endpoints, and a node restarted meanwhile serves from
// its cache. Once etcd is back, a change made on one node reaches the
// others, the restarted one included.
func TestEtcdDown(t *testing.T) {
	testutil.LeakCheck(t)
	c := testutil.Etcd(t, 1)
	prefix := testPrefix(t)
	a, _ := open(t, c.Endpoints(), prefix, "a")
	b, dirB := open(t, c.Endpoints(), prefix, "b")
	cfg := testConfig(t)
	sa := service(t, a, cfg)
	if _, err := sa.Add(members.AddRequest{Name: "mom"}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "b sees mom", func() bool { st, _ := b.Load(); return st.Peer("mom") != nil })
	testutil.WaitFor(t, 5*time.Second, "b's cache holds mom", func() bool {
		raw, _ := os.ReadFile(filepath.Join(dirB, etcdstore.CacheFile))
		return strings.Contains(string(raw), `"mom"`)
	})
	if fi, err := os.Stat(filepath.Join(dirB, etcdstore.CacheFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("cache file: %v, %v", fi, err)
	}

	c.Stop()
	start := time.Now()
	st, err := b.Load()
	if err != nil || st.Peer("mom") == nil {
		t.Fatalf("b with etcd down: %v, mom %v", err, st.Peer("mom"))
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Load waited %v on etcd", d)
	}
	sb := service(t, b, cfg)
	_, err = sb.Add(members.AddRequest{Name: "dad"})
	if !errors.Is(err, etcdstore.ErrUnavailable) || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), c.Endpoints()[0]) {
		t.Fatalf("peer add with etcd down: %v", err)
	}
	t.Logf("peer add with etcd down: %v", err)
	if err := b.AddUsage([]store.MemberUsage{{Member: "mom", Usage: store.Usage{Month: members.Month(time.Now()), In: 1}}}); !errors.Is(err, etcdstore.ErrUnavailable) {
		t.Errorf("usage with etcd down: %v", err)
	}
	// b restarts while etcd is away: it serves its cache, identity included.
	b.Close()
	b2 := openIn(t, c.Endpoints(), prefix, "b", dirB)
	st2, err := b2.Load()
	if err != nil || st2.Peer("mom") == nil || st2.VPN.PrivateKey != st.VPN.PrivateKey {
		t.Fatalf("b restarted with etcd down: %v, %+v", err, st2)
	}
	sb2 := service(t, b2, cfg)
	if _, err := sb2.Identity(); err != nil {
		t.Fatalf("identity of a node restarted with etcd down: %v", err)
	}
	if !b2.Down() {
		t.Error("b2 does not say etcd is down")
	}

	c.Start()
	if _, err := sa.Add(members.AddRequest{Name: "dad"}); err != nil {
		t.Fatalf("peer add once etcd is back: %v", err)
	}
	testutil.WaitFor(t, 15*time.Second, "the restarted node converges", func() bool { st, _ := b2.Load(); return st.Peer("dad") != nil })
	if b2.Down() {
		t.Error("b2 still says etcd is down")
	}
	if _, err := sb2.Add(members.AddRequest{Name: "kid"}); err != nil {
		t.Fatalf("peer add on the restarted node: %v", err)
	}
	testutil.WaitFor(t, 5*time.Second, "a sees kid", func() bool { st, _ := a.Load(); return st.Peer("kid") != nil })
}

// TestOpenWithoutEtcdOrCache: a node that never reached etcd has nothing
// to serve, and says so in one line.
func TestOpenWithoutEtcdOrCache(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := etcdstore.Open(ctx, etcdstore.Options{Endpoints: []string{"http://127.0.0.1:1"}, Prefix: "/x", Node: "a", DataDir: dir, Timeout: time.Second})
	if err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "http://127.0.0.1:1") || !strings.Contains(err.Error(), "no cache") {
		t.Fatalf("open: %v", err)
	}
	t.Logf("open: %v", err)
}

// TestStateNotLost: when the state key vanishes (a wiped cluster, a
// wrong prefix after a restore), the nodes keep serving the network they
// had and refuse to write a new identity over it.
func TestStateNotLost(t *testing.T) {
	c := testutil.Etcd(t, 1)
	prefix := testPrefix(t)
	a, dir := open(t, c.Endpoints(), prefix, "a")
	sa := service(t, a, testConfig(t))
	if _, err := sa.Add(members.AddRequest{Name: "mom"}); err != nil {
		t.Fatal(err)
	}
	before, _ := a.Load()
	testutil.WaitFor(t, 5*time.Second, "the cache written", func() bool {
		raw, _ := os.ReadFile(filepath.Join(dir, etcdstore.CacheFile))
		return strings.Contains(string(raw), `"mom"`)
	})
	if _, err := a.Client().Delete(context.Background(), prefix+"/state"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // the watch and a resync
	if st, _ := a.Load(); st.Peer("mom") == nil || st.VPN.PrivateKey != before.VPN.PrivateKey {
		t.Fatal("the node dropped its network when the key vanished")
	}
	_, err := sa.Add(members.AddRequest{Name: "dad"})
	if !errors.Is(err, etcdstore.ErrNoState) {
		t.Fatalf("add over a vanished state: %v", err)
	}
	// Restarted on its data directory, the node still knows it served a
	// network there, from its cache.
	a.Close()
	a2 := openIn(t, c.Endpoints(), prefix, "a", dir)
	if st, _ := a2.Load(); st.Peer("mom") == nil || st.VPN.PrivateKey != before.VPN.PrivateKey {
		t.Fatal("the restarted node dropped its network")
	}
	s2 := service(t, a2, testConfig(t))
	if _, err := s2.Identity(); err != nil {
		t.Fatalf("identity on the restarted node: %v", err)
	}
	if _, err := s2.Add(members.AddRequest{Name: "dad"}); !errors.Is(err, etcdstore.ErrNoState) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("add on the restarted node: %v", err)
	} else {
		t.Logf("add over a vanished state: %v", err)
	}
	kv, _ := c.Get(0, prefix+"/state")
	if len(kv) != 0 {
		t.Fatalf("a state was written over the vanished one: %v", kv)
	}
}

// TestMigrate: a one-server state, usage and certificates go into an empty
// prefix, and are what a node there serves; a prefix holding anything is
// refused, with nothing written.
func TestMigrate(t *testing.T) {
	c := testutil.Etcd(t, 1)
	prefix := testPrefix(t)
	cfg := testConfig(t)
	fs, err := store.Open(cfg.Server.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	one := service(t, fs, cfg)
	if _, err := one.Add(members.AddRequest{Name: "mom"}); err != nil {
		t.Fatal(err)
	}
	month := members.Month(time.Now())
	if err := fs.AddUsage([]store.MemberUsage{{Member: "mom", Usage: store.Usage{Month: month, In: 5, Out: 7}}}); err != nil {
		t.Fatal(err)
	}
	src, _ := fs.Load()
	m, _ := open(t, c.Endpoints(), prefix, "first")
	certs := []etcdstore.CertFile{{Key: "certificates/ca/vpn.example.com/vpn.example.com.crt", Value: []byte("pem")}}
	if err := m.Migrate(context.Background(), src, certs); err != nil {
		t.Fatal(err)
	}
	n, _ := open(t, c.Endpoints(), prefix, "second")
	got, _ := n.Load()
	if got.VPN.PrivateKey != src.VPN.PrivateKey || got.Peer("mom") == nil || got.Peer("mom").IPv4 != src.Peer("mom").IPv4 ||
		got.Member("mom").Usage != (store.Usage{Month: month, In: 5, Out: 7}) {
		t.Fatalf("migrated state: %+v", got)
	}
	if v, err := n.CertStorage().Load(context.Background(), certs[0].Key); err != nil || string(v) != "pem" {
		t.Fatalf("migrated certificate: %q, %v", v, err)
	}
	// Not again, and not into any prefix holding keys.
	before, _ := c.Get(0, prefix+"/")
	err = m.Migrate(context.Background(), src, nil)
	if !errors.Is(err, etcdstore.ErrNotEmpty) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("second migration: %v", err)
	}
	t.Logf("second migration: %v", err)
	other := prefix + "-other"
	if err := c.Put(0, other+"/nodes/x", "{}"); err != nil {
		t.Fatal(err)
	}
	o, _ := open(t, c.Endpoints(), other, "first")
	if err := o.Migrate(context.Background(), src, nil); !errors.Is(err, etcdstore.ErrNotEmpty) {
		t.Fatalf("migration into a prefix with a node key: %v", err)
	}
	if after, _ := c.Get(0, prefix+"/"); len(after) != len(before) {
		t.Errorf("a refused migration wrote: %d keys before, %d after", len(before), len(after))
	}
	if kv, _ := c.Get(0, other+"/state"); len(kv) != 0 {
		t.Errorf("a refused migration wrote %v", kv)
	}
}

// TestNodes: a node's entry shows while it registers and is gone soon
// after it stops.
func TestNodes(t *testing.T) {
	testutil.LeakCheck(t)
	c := testutil.Etcd(t, 1)
	prefix := testPrefix(t)
	a, _ := open(t, c.Endpoints(), prefix, "a")
	b, _ := open(t, c.Endpoints(), prefix, "b")
	started := time.Now().UTC().Truncate(time.Second)
	ctxA, stopA := context.WithCancel(context.Background())
	ctxB, stopB := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		a.Register(ctxA, func() etcdstore.Node {
			return etcdstore.Node{PublicHost: "a.example", Version: "v1", StartedAt: started, Health: "ok"}
		})
	})
	wg.Go(func() {
		b.Register(ctxB, func() etcdstore.Node {
			return etcdstore.Node{PublicHost: "203.0.113.2", Version: "v1", StartedAt: started, Health: "ok"}
		})
	})
	defer wg.Wait()
	defer stopB()
	testutil.WaitFor(t, 5*time.Second, "both nodes listed", func() bool { n, _ := a.Nodes(context.Background()); return len(n) == 2 })
	nodes, _ := b.Nodes(context.Background())
	if nodes[0].Name != "a" || nodes[0].PublicHost != "a.example" || nodes[1].Name != "b" || nodes[1].PublicHost != "203.0.113.2" || !nodes[0].StartedAt.Equal(started) {
		t.Fatalf("nodes: %+v", nodes)
	}
	stopA()
	testutil.WaitFor(t, 5*time.Second, "a gone", func() bool { n, _ := b.Nodes(context.Background()); return len(n) == 1 && n[0].Name == "b" })
}

// recordingPath is a members.Path that keeps what it was told.
type recordingPath struct {
	mu      sync.Mutex
	devices map[string]bool
	applied int
}

func (p *recordingPath) Apply(d members.Desired) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.devices = map[string]bool{}
	for _, dev := range d.Devices {
		p.devices[dev.Name] = true
	}
	p.applied++
	return nil
}
func (p *recordingPath) Usage() map[string]members.Traffic { return nil }
func (p *recordingPath) Live() map[string]members.Live     { return nil }

func (p *recordingPath) has(name string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.devices[name]
}

// TestLiveOnEveryNode: a device added, disabled, enabled or removed on one
// node is on (or off) the other node's path soon after, through the
// watch: the other node's limits loop ticks only once a minute here, so
// the watch alone carries the change.
func TestLiveOnEveryNode(t *testing.T) {
	testutil.LeakCheck(t)
	c := testutil.Etcd(t, 1)
	prefix := testPrefix(t)
	a, _ := open(t, c.Endpoints(), prefix, "a")
	b, _ := open(t, c.Endpoints(), prefix, "b")
	cfg := testConfig(t)
	sa := service(t, a, cfg)
	pb := &recordingPath{}
	sb, err := members.New(members.Deps{Store: b, Config: func() *config.Config { return cfg }, Paths: []members.Path{pb}})
	if err != nil {
		t.Fatal(err)
	}
	if err := sb.Start(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- sb.Serve(ctx, members.Timings{Tick: time.Minute, Flush: time.Minute}) }()
	defer func() { cancel(); <-served }()
	if _, err := sa.Add(members.AddRequest{Name: "dad"}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 2*time.Second, "dad on b's path", func() bool { return pb.has("dad") })
	if _, err := sa.Add(members.AddRequest{Name: "mom"}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 2*time.Second, "mom on b's path", func() bool { return pb.has("mom") })
	if err := sa.SetEnabled("mom", false); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 2*time.Second, "mom off b's path", func() bool { return !pb.has("mom") })
	if !pb.has("dad") {
		t.Fatal("disabling mom took dad off")
	}
	if err := sa.SetEnabled("mom", true); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 2*time.Second, "mom back on b's path", func() bool { return pb.has("mom") })
	if err := sa.Remove("mom"); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 2*time.Second, "mom removed from b's path", func() bool { return !pb.has("mom") })
	if !pb.has("dad") {
		t.Fatal("removing mom took dad off")
	}
}

// TestMemberKilled: on a three-member cluster, killing one member (the
// leader, the worst case) changes nothing a node does: writes and the
// watch go on through the other two.
func TestMemberKilled(t *testing.T) {
	testutil.LeakCheck(t)
	c := testutil.Etcd(t, 3)
	prefix := testPrefix(t)
	// The test cluster's election timeout is 2 s (a loaded machine): the
	// writes below may wait out an election.
	a := openWith(t, etcdstore.Options{Endpoints: c.Endpoints(), Prefix: prefix, Node: "a", Timeout: 15 * time.Second})
	b := openWith(t, etcdstore.Options{Endpoints: c.Endpoints(), Prefix: prefix, Node: "b", Timeout: 15 * time.Second})
	cfg := testConfig(t)
	sa, sb := service(t, a, cfg), service(t, b, cfg)
	if _, err := sa.Add(members.AddRequest{Name: "mom"}); err != nil {
		t.Fatal(err)
	}
	leader, err := c.Leader(0)
	if err != nil {
		t.Fatal(err)
	}
	c.Kill(leader)
	for i, s := range []*members.Service{sb, sa} {
		if _, err := s.Add(members.AddRequest{Name: fmt.Sprintf("dev%d", i)}); err != nil {
			t.Fatalf("add with one member of three killed: %v", err)
		}
	}
	for _, s := range []*etcdstore.Store{a, b} {
		testutil.WaitFor(t, 10*time.Second, "both nodes see both devices", func() bool {
			st, _ := s.Load()
			return st.Peer("dev0") != nil && st.Peer("dev1") != nil
		})
		if s.Down() {
			t.Error("a node says etcd is down with two members of three up")
		}
	}
}
