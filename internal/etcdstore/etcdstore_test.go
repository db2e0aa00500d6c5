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
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := etcdstore.Open(ctx, etcdstore.Options{Endpoints: endpoints, Prefix: prefix, Node: node, DataDir: dir,
		Timeout: 3 * time.Second, Resync: time.Second})
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

// waitFor polls cond until it holds, failing after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
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
		waitFor(t, 5*time.Second, "both nodes see 50 devices", func() bool {
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
	c := testutil.Etcd(t, 1)
	prefix := testPrefix(t)
	a, _ := open(t, c.Endpoints(), prefix, "a")
	b, _ := open(t, c.Endpoints(), prefix, "b")
	cfg := testConfig(t)
	sa := service(t, a, cfg)
	if _, err := sa.Identity(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "b sees the identity", func() bool { st, _ := b.Load(); return st.VPN.PrivateKey != "" })
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
		waitFor(t, 5*time.Second, fmt.Sprintf("usage %+v on every node", want), func() bool {
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
