package outline

import (
	"context"
	"crypto/rand"
	"io"
	"net/netip"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/time/rate"

	"github.com/tariq-vpn/tariq/internal/testutil"
)

func denyAll(netip.Addr) (bool, string) { return false, "test" }

func TestNewChecksConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		deps Deps
	}{
		{"no policy", Config{}, Deps{}},
		{"negative timeout", Config{AuthTimeout: -1}, Deps{Allow: denyAll}},
		{"replay history too large", Config{ReplayHistory: 20001}, Deps{Allow: denyAll}},
	} {
		if _, err := New(tc.cfg, tc.deps); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
}

func TestSetKeysRefusesBadSets(t *testing.T) {
	s, err := New(Config{}, Deps{Allow: denyAll})
	if err != nil {
		t.Fatal(err)
	}
	good := []Key{{"alice", "a-secret"}, {"bob", "b-secret"}}
	if err := s.SetKeys(good); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		keys []Key
	}{
		{"no member", []Key{{"", "x"}}},
		{"no secret", []Key{{"carol", ""}}},
		{"a member twice", []Key{{"carol", "x"}, {"carol", "y"}}},
		{"a secret twice", []Key{{"carol", "x"}, {"dave", "x"}}},
	} {
		if err := s.SetKeys(tc.keys); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.ids) != 2 || s.entries["alice"] == nil || s.entries["bob"] == nil {
		t.Errorf("a refused set changed the keys: %v", s.ids)
	}
}

// TestSetKeysKeepsUnchangedEntries checks that a member whose secret did
// not change keeps its cipher entry (and so its open connections) across
// updates, and that a new secret gets a new entry.
func TestSetKeysKeepsUnchangedEntries(t *testing.T) {
	s, err := New(Config{}, Deps{Allow: denyAll})
	if err != nil {
		t.Fatal(err)
	}
	s.SetKeys([]Key{{"alice", "a1"}, {"bob", "b1"}})
	a, b := s.entries["alice"].ce.ID, s.entries["bob"].ce.ID
	s.SetKeys([]Key{{"alice", "a1"}, {"bob", "b2"}, {"carol", "c1"}})
	if s.entries["alice"].ce.ID != a {
		t.Error("alice's unchanged secret got a new entry")
	}
	if s.entries["bob"].ce.ID == b {
		t.Error("bob's new secret kept the old entry")
	}
	if s.ids[b] != "" {
		t.Error("bob's old entry is still in the list")
	}
}

// TestRateLimitOnFakeClock checks the shaping arithmetic on synctest's
// clock: a megabyte at 100 kB/s takes what the bucket allows, a change of
// rate applies to a wait in progress' next step, and no rate means no wait.
func TestRateLimitOnFakeClock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a := &account{inLim: rate.NewLimiter(rate.Inf, 0), outLim: rate.NewLimiter(rate.Inf, 0)}
		setRate(a, 100_000)
		burst := a.outLim.Burst()
		if burst != 25_000 {
			t.Fatalf("burst %d, want a quarter second's worth", burst)
		}
		start := time.Now()
		if err := waitN(context.Background(), a.outLim, 1_000_000); err != nil {
			t.Fatal(err)
		}
		got := time.Since(start)
		lo := time.Duration(float64(1_000_000-burst) / 100_000 * float64(time.Second))
		if got < lo || got > 10*time.Second {
			t.Errorf("1 MB at 100 kB/s took %v, want from %v to 10s", got, lo)
		}

		setRate(a, 0)
		start = time.Now()
		waitN(context.Background(), a.outLim, 10_000_000)
		if d := time.Since(start); d != 0 {
			t.Errorf("no rate: waited %v", d)
		}

		// A cut (the session's context) ends a wait.
		setRate(a, 1000)
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { errc <- waitN(ctx, a.inLim, 1_000_000) }()
		time.Sleep(time.Minute)
		cancel()
		if err := <-errc; err == nil {
			t.Error("a cancelled wait returned no error")
		}
	})
}

// TestRateCap moves data through two of alice's streams at once under
// her cap: her bytes each way stay within the bucket's burst plus the
// rate times the time taken, whatever the machine's speed (load only
// makes the transfer slower). Bob, uncapped, shares the port meanwhile.
func TestRateCap(t *testing.T) {
	testutil.LeakCheck(t)
	h := newHarness(t, Config{})
	h.setKeys(map[string]string{"alice": NewSecret(), "bob": NewSecret()})
	const capRate = 256 << 10
	h.svc.SetLimits(map[string]Limits{"alice": {Rate: capRate}})
	echo := testutil.TCPEcho(t, "127.0.0.1:0")
	alice, bob := h.memberClient("alice"), h.memberClient("bob")

	const size = 384 << 10
	transfer := func(c *outlineClient) error {
		conn, err := c.stream.DialStream(context.Background(), echo.String())
		if err != nil {
			return err
		}
		defer conn.Close()
		data := make([]byte, size)
		rand.Read(data)
		errc := make(chan error, 1)
		go func() { _, err := conn.Write(data); errc <- err }()
		conn.SetReadDeadline(time.Now().Add(60 * time.Second))
		if _, err := io.ReadFull(conn, make([]byte, size)); err != nil {
			return err
		}
		return <-errc
	}
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for _, c := range []*outlineClient{alice, alice, bob} {
		wg.Add(1)
		go func() { defer wg.Done(); errs <- transfer(c) }()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	u := h.svc.Usage()["alice"]
	burst := float64(max(capRate/4, minBurst))
	// In is counted as read, before the wait for it: one read per
	// stream may be ahead of the bucket.
	slack := 2 * float64(32<<10)
	bound := burst + capRate*elapsed.Seconds() + slack
	t.Logf("alice moved %d in, %d out in %v (bound %.0f)", u.In, u.Out, elapsed, bound)
	for dir, n := range map[string]uint64{"in": u.In, "out": u.Out} {
		if n < 2*size {
			t.Errorf("alice's %s bytes %d: less than she sent", dir, n)
		}
		if float64(n) > bound {
			t.Errorf("alice's %s bytes %d in %v exceed her cap: burst %.0f + %d/s", dir, n, elapsed, burst, capRate)
		}
	}
}

// TestAuthenticationWithALeftKeyIsCut covers the race between a handshake
// and a removal: the upstream searched a snapshot of the cipher list that
// still held the member's entry, and reports it after SetKeys took it
// out. The session must be cut, not booked under the member.
func TestAuthenticationWithALeftKeyIsCut(t *testing.T) {
	s, err := New(Config{}, Deps{Allow: denyAll})
	if err != nil {
		t.Fatal(err)
	}
	s.SetKeys([]Key{{"alice", "a1"}})
	id := s.entries["alice"].ce.ID
	s.SetKeys(nil)
	ctx, cancel := context.WithCancel(context.Background())
	sess := &session{proto: protoTCP, ctx: ctx, cancel: cancel}
	s.sessions[sess] = struct{}{}
	s.authenticate(sess, id)
	if ctx.Err() == nil {
		t.Error("a session that authenticated with a removed key was not cut")
	}
	if sess.acct != nil || s.Status()["alice"].Total != 0 {
		t.Error("the session was booked under the removed member")
	}
	if s.Cuts()["removed"] != 1 {
		t.Errorf("cuts %v, want one for removed", s.Cuts())
	}
}

// TestUsageOutlivesTheKey checks that a member's counters stay (and only
// grow) when its key leaves and comes back.
func TestUsageOutlivesTheKey(t *testing.T) {
	s, err := New(Config{}, Deps{Allow: denyAll})
	if err != nil {
		t.Fatal(err)
	}
	s.SetKeys([]Key{{"alice", "a1"}})
	s.accounts["alice"].in.Add(100)
	s.SetKeys(nil)
	s.SetKeys([]Key{{"alice", "a2"}})
	s.accounts["alice"].out.Add(7)
	if got := s.Usage()["alice"]; got != (Traffic{In: 100, Out: 7}) {
		t.Errorf("alice's usage %+v, want in 100, out 7", got)
	}
}
