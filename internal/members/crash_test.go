package members

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/tariq-vpn/tariq/config"
	"github.com/tariq-vpn/tariq/internal/store"
	"github.com/tariq-vpn/tariq/internal/wgconf"
)

const crashDirEnv = "TARIQ_MEMBERS_CRASH_HELPER_DIR"

func crashConfig(dir string) *config.Config {
	cfg := config.Default()
	cfg.Server.DataDir = dir
	cfg.VPN.Address = []netip.Prefix{netip.MustParsePrefix("10.99.0.1/16")}
	return cfg
}

// TestCrashHelper is not a test: it is the process TestAddCrashSafety
// kills. It adds peers as fast as it can until killed.
func TestCrashHelper(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		t.Skip("helper process for TestAddCrashSafety")
	}
	cfg := crashConfig(dir)
	st, err := store.Open(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	s, err := New(Deps{Store: st, Config: func() *config.Config { return cfg }})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	for i := 0; ; i++ {
		if _, err := s.Add(AddRequest{Name: fmt.Sprintf("p%d-%d", os.Getpid(), i)}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
	}
}

// TestAddCrashSafety kills (SIGKILL) a process in the middle of adding
// peers, again and again, and checks after each kill that the state file
// parses and every peer in it is complete and unique: kill -9 leaves the
// old state or the new one, never a torn file or a half-made peer.
func TestAddCrashSafety(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	dir := t.TempDir()
	const kills = 25
	last := 0
	grew := 0
	for i := range kills {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelper$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashDirEnv+"="+dir)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Let it get going (process start-up is slow), then kill it at a
		// random moment among its writes.
		waitForGrowth(t, dir, last)
		time.Sleep(time.Duration(rand.IntN(20_000)) * time.Microsecond)
		cmd.Process.Signal(syscall.SIGKILL)
		err := cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("kill %d: helper ended with %v, not by SIGKILL", i, err)
		}
		n := checkCrashState(t, dir)
		if n < last {
			t.Fatalf("kill %d: peers went from %d to %d", i, last, n)
		}
		if n > last {
			grew++
		}
		last = n
	}
	if grew < kills/2 {
		t.Errorf("the helper made progress in only %d of %d runs", grew, kills)
	}
	t.Logf("%d peers after %d kills", last, kills)
}

func waitForGrowth(t *testing.T, dir string, than int) {
	t.Helper()
	st, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if s, err := st.Load(); err == nil && len(s.Peers) > than {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatal("helper added no peer in 10s")
}

// checkCrashState loads the state in dir and checks every peer; it returns
// the number of peers.
func checkCrashState(t *testing.T, dir string) int {
	t.Helper()
	st, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	state, err := st.Load()
	if err != nil {
		t.Fatalf("state does not load after kill -9: %v", err)
	}
	if _, err := identityOf(state); err != nil {
		t.Fatal(err)
	}
	if !state.VPN.ULA.IsValid() {
		t.Fatal("no ULA")
	}
	names := map[string]bool{}
	addrs := map[netip.Addr]bool{}
	keys := map[string]bool{}
	for _, p := range state.Peers {
		if _, err := wgconf.ParseKey(p.PresharedKey.Reveal()); err != nil || p.Member != p.Name || state.Member(p.Member) == nil {
			t.Fatalf("peer %q: PSK %v, member %q (stored: %v)", p.Name, err, p.Member, state.Member(p.Member) != nil)
		}
		priv, err := wgconf.ParseKey(p.PrivateKey.Reveal())
		if err != nil || priv.PublicKey().String() != p.PublicKey {
			t.Fatalf("peer %q: private key missing or not matching", p.Name)
		}
		if p.CreatedAt.IsZero() || !p.IPv6.IsValid() {
			t.Fatalf("peer %q incomplete: %+v", p.Name, p)
		}
		if names[p.Name] || keys[p.PublicKey] || addrs[p.IPv4] || addrs[p.IPv6] {
			t.Fatalf("peer %q duplicates a name, key or address", p.Name)
		}
		names[p.Name], keys[p.PublicKey], addrs[p.IPv4], addrs[p.IPv6] = true, true, true, true
	}
	return len(state.Peers)
}
