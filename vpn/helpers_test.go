package vpn

import (
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"testing"

	"github.com/tariq-vpn/tariq/config"
	"github.com/tariq-vpn/tariq/internal/store"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

// testConfig is the default config with a temporary data directory, a
// public host, and a unique interface name (the UAPI socket directory is
// shared by the whole host).
func testConfig(t *testing.T) *config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.Server.DataDir = t.TempDir()
	cfg.Server.PublicHost = "vpn.example.com"
	cfg.VPN.Interface = uniqueIface()
	cfg.Relay.Enabled = false
	cfg.Web.Enabled = false
	return cfg
}

func uniqueIface() string {
	var b [4]byte
	rand.Read(b[:])
	return "tqt" + hex.EncodeToString(b[:])
}

func testStore(t *testing.T, cfg *config.Config) *store.Store {
	t.Helper()
	st, err := store.Open(cfg.Server.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// stateBytes returns the state file as written, to prove a failed
// operation wrote nothing.
func stateBytes(t *testing.T, st *store.Store) []byte {
	t.Helper()
	b, err := os.ReadFile(st.Path("state.json"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return b
}

func mustLoad(t *testing.T, st *store.Store) *store.State {
	t.Helper()
	s, err := st.Load()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func addr(s string) netip.Addr  { return netip.MustParseAddr(s) }

// fixedKey is a deterministic key for golden files.
func fixedKey(b byte) Key {
	var k Key
	for i := range k {
		k[i] = b + byte(i)
	}
	return k
}

func stringOf(v any) string { return fmt.Sprintf("%v %+v %#v", v, v, v) }

func execOutput(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}
