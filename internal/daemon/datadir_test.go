package daemon

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tariq-vpn/tariq/config"
	"github.com/tariq-vpn/tariq/internal/admin"
)

// runRefused runs the daemon on file and returns Run's error, failing t if
// the daemon started instead (it is then stopped at once).
func runRefused(t *testing.T, file string) error {
	t.Helper()
	l, err := config.Load(config.Options{File: file})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := false
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{Config: l, Logger: slog.New(slog.DiscardHandler), Ready: func(*Daemon) { started = true; cancel() }})
	}()
	select {
	case err = <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("daemon neither started nor refused within 15s")
	}
	if started {
		t.Errorf("daemon started, want it refused")
	}
	return err
}

// TestDamagedStateRefusedAtStart: a state file that exists but lacks what
// a started server has is refused at start with one line naming it, and
// left byte-identical; the daemon does not start afresh with new keys.
func TestDamagedStateRefusedAtStart(t *testing.T) {
	fixture, err := os.ReadFile("../store/testdata/state-v1.json")
	if err != nil {
		t.Fatal(err)
	}
	noKey := strings.Replace(string(fixture), `"private_key": "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=",`, "", 1)
	for _, tc := range []struct{ name, state, want string }{
		{"empty object", "{}", "has no version"},
		{"null", "null", "is not a JSON object"},
		{"bare version", `{"version":2}`, "holds neither"},
		{"truncated", string(fixture[:len(fixture)/3]), "is not valid JSON"},
		{"peers but no server key", noKey, "has peers but no server WireGuard private key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			file := filepath.Join(dir, "tariq.yaml")
			os.WriteFile(file, []byte(loopbackYAML(dir, "")), 0o600)
			state := filepath.Join(dir, "data", "state.json")
			os.Mkdir(filepath.Dir(state), 0o700)
			if err := os.WriteFile(state, []byte(tc.state), 0o600); err != nil {
				t.Fatal(err)
			}
			err := runRefused(t, file)
			if err == nil || !strings.Contains(err.Error(), "state file "+state+" "+tc.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("got %v, want one line naming %s: %s", err, state, tc.want)
			}
			if got, _ := os.ReadFile(state); !bytes.Equal(got, []byte(tc.state)) {
				t.Errorf("the refused state was rewritten:\n%s", got)
			}
		})
	}
}

// TestLeftoverTempFilesRemovedAtStart: a kill -9 mid-write leaves a
// temporary file holding private keys; the next start removes it (and a
// link planted under such a name, without touching what it points at).
func TestLeftoverTempFilesRemovedAtStart(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "tariq.yaml")
	os.WriteFile(file, []byte(loopbackYAML(dir, "")), 0o600)
	data := filepath.Join(dir, "data")
	os.MkdirAll(filepath.Join(data, "tls"), 0o700)
	canary := filepath.Join(dir, "canary")
	os.WriteFile(canary, []byte("canary"), 0o600)
	leftovers := []string{
		filepath.Join(data, ".state.json.tmp-123456"),
		filepath.Join(data, "tls", ".self-signed.key.tmp-654321"),
	}
	for _, p := range leftovers {
		if err := os.WriteFile(p, []byte(`{"vpn":{"private_key":"secret"}}`), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	link := filepath.Join(data, ".state.json.tmp-777")
	if err := os.Symlink(canary, link); err != nil {
		t.Fatal(err)
	}
	leftovers = append(leftovers, link)
	r, _ := runDaemon(t, file, nil)
	for _, p := range leftovers {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s survived the start", p)
		}
	}
	if b, err := os.ReadFile(canary); err != nil || string(b) != "canary" {
		t.Errorf("canary: %q %v", b, err)
	}
	if !admin.NewClient(r.d.config().Server.AdminSocket).Running(context.Background()) {
		t.Error("daemon not serving")
	}
}

// TestSecondDaemonRefused: a second daemon on the same data directory (with
// its own admin socket and ports) is refused with one line naming the
// directory and the first daemon's pid; the first keeps serving.
func TestSecondDaemonRefused(t *testing.T) {
	first := startDaemon(t, "")
	dir := filepath.Dir(first.file)
	data := first.d.config().Server.DataDir
	second := filepath.Join(t.TempDir(), "second.yaml")
	yaml := strings.Replace(loopbackYAML(dir, ""), dir+"/admin.sock", filepath.Dir(second)+"/admin.sock", 1)
	if err := os.WriteFile(second, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	err := runRefused(t, second)
	want := fmt.Sprintf("data directory %s is in use by another tariq serve (pid %d)", data, os.Getpid())
	if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
		t.Errorf("second daemon: %v, want one line with %q", err, want)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(second), "admin.sock")); err == nil {
		t.Error("the refused daemon left an admin socket")
	}
	c := admin.NewClient(first.d.config().Server.AdminSocket)
	if _, err := c.Status(context.Background()); err != nil {
		t.Errorf("first daemon after the refusal: %v", err)
	}
	sec, err := first.d.store.RelaySecret()
	if err != nil || sec == "" {
		t.Errorf("first daemon's store: %v", err)
	}
	// Once the first stops, the directory is free again.
	first.stop(t)
	r2, _ := runDaemon(t, second, nil)
	if _, err := admin.NewClient(r2.d.config().Server.AdminSocket).Status(context.Background()); err != nil {
		t.Errorf("daemon after the first stopped: %v", err)
	}
}
