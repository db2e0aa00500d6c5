package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pion/turn/v5"

	"github.com/tariq-vpn/tariq/config"
	"github.com/tariq-vpn/tariq/internal/admin"
	"github.com/tariq-vpn/tariq/internal/certs"
	"github.com/tariq-vpn/tariq/internal/testutil"
)

// syncBuffer is a bytes.Buffer safe for the logger and the test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// loopbackYAML is a config on loopback with kernel-chosen ports, the VPN off.
func loopbackYAML(dir, extra string) string {
	return fmt.Sprintf(`server:
  public_host: 127.0.0.1
  data_dir: %[1]s/data
  admin_socket: %[1]s/admin.sock
  metrics_listen: 127.0.0.1:0
vpn:
  enabled: false
web:
  listen: ["127.0.0.1:0"]
relay:
  listen_udp: ["127.0.0.1:0"]
  listen_tcp: ["127.0.0.1:0"]
  listen_tls: ["127.0.0.1:0"]
  relay_bind: 127.0.0.1
  allow_peers: [127.0.0.1/32]
%[2]s`, dir, extra)
}

type running struct {
	d      *Daemon
	file   string
	logs   *syncBuffer
	hup    chan os.Signal
	cancel context.CancelFunc
	done   chan error
}

// startDaemon runs the daemon on loopbackYAML with extra appended; adjust
// changes the Options Run gets.
func startDaemon(t *testing.T, extra string, adjust ...func(*Options)) *running {
	t.Helper()
	dir := t.TempDir()
	file := filepath.Join(dir, "tariq.yaml")
	if err := os.WriteFile(file, []byte(loopbackYAML(dir, extra)), 0o600); err != nil {
		t.Fatal(err)
	}
	r, _ := runDaemon(t, file, nil, adjust...)
	return r
}

// runDaemon runs the daemon in-process on the config file, with certsDeps
// adjusting the certificate source and adjust the other Options, and
// returns once it is ready; it stops when t ends. It fails t if Run does
// not reach Ready within 10 s.
func runDaemon(t *testing.T, file string, certsDeps func(*certs.Deps), adjust ...func(*Options)) (*running, time.Duration) {
	t.Helper()
	load := func() (*config.Loaded, error) { return config.Load(config.Options{File: file}) }
	l, err := load()
	if err != nil {
		t.Fatal(err)
	}
	r := &running{file: file, logs: &syncBuffer{}, hup: make(chan os.Signal, 1), done: make(chan error, 1)}
	ready := make(chan *Daemon, 1)
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	start := time.Now()
	opts := Options{
		Config: l, Load: load, Reload: r.hup, Version: "test", CertsDeps: certsDeps,
		Logger: slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Ready:  func(d *Daemon) { ready <- d },
	}
	for _, f := range adjust {
		f(&opts)
	}
	go func() { r.done <- Run(ctx, opts) }()
	select {
	case r.d = <-ready:
	case err := <-r.done:
		t.Fatalf("daemon exited at start: %v\n%s", err, r.logs)
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatalf("daemon not ready after 10s\n%s", r.logs)
	}
	took := time.Since(start)
	t.Cleanup(func() {
		r.stop(t)
		if t.Failed() {
			t.Logf("daemon log:\n%s", r.logs)
		}
	})
	return r, took
}

func (r *running) stop(t *testing.T) {
	r.cancel()
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("Run returned %v on cancel, want nil", err)
		}
	case <-time.After(15 * time.Second):
		t.Error("daemon did not stop within 15s")
	}
	r.done <- nil // later stops return at once
}

func (r *running) reload(t *testing.T, extra string) {
	t.Helper()
	r.reloadFile(t, loopbackYAML(filepath.Dir(r.file), extra))
}

// reloadFile writes body as the config file, sends SIGHUP and waits until
// the daemon has reloaded or rejected it.
func (r *running) reloadFile(t *testing.T, body string) {
	t.Helper()
	if err := os.WriteFile(r.file, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	before := strings.Count(r.logs.String(), "configuration reloaded") + strings.Count(r.logs.String(), "config rejected")
	r.hup <- syscall.SIGHUP
	deadline := time.Now().Add(5 * time.Second)
	for strings.Count(r.logs.String(), "configuration reloaded")+strings.Count(r.logs.String(), "config rejected") == before {
		if time.Now().After(deadline) {
			t.Fatalf("reload not finished:\n%s", r.logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (r *running) allocate(t *testing.T, user, pass string) (net.PacketConn, error) {
	t.Helper()
	udp, _, _ := r.d.Relay().Addrs()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return r.allocateAs(t, conn, udp[0].String(), user, pass)
}

// allocateAs allocates as user through pc to the relay's listener at server
// (UDP, or a TCP or TLS stream wrapped in turn.NewSTUNConn); the client,
// pc and the allocation are closed when the test ends.
func (r *running) allocateAs(t *testing.T, pc net.PacketConn, server, user, pass string) (net.PacketConn, error) {
	t.Helper()
	c, err := turn.NewClient(&turn.ClientConfig{STUNServerAddr: server, TURNServerAddr: server, Conn: pc,
		Username: user, Password: pass, Realm: r.d.Relay().Realm()})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); pc.Close() })
	relayed, err := c.Allocate()
	if err == nil {
		t.Cleanup(func() { relayed.Close() })
	}
	return relayed, err
}

// relayOnce sends a datagram to peer through the allocation and waits for
// the echo. The payload is longer than 4 bytes on purpose: pion's stream
// framing (STUNConn, used by its client and server alike) waits for a 9th
// byte before it parses any frame, so over TCP/TLS an 8-byte ChannelData
// frame (payload of 4 bytes or less) sits until the next frame arrives.
func relayOnce(relayed net.PacketConn, peer net.Addr) error {
	const msg = "ping through tariq"
	if _, err := relayed.WriteTo([]byte(msg), peer); err != nil {
		return err
	}
	relayed.SetReadDeadline(time.Now().Add(3 * time.Second))
	b := make([]byte, 64)
	n, _, err := relayed.ReadFrom(b)
	if err != nil {
		return err
	}
	if string(b[:n]) != msg {
		return fmt.Errorf("echo %q", b[:n])
	}
	return nil
}

func TestDaemonServesAndStops(t *testing.T) {
	testutil.LeakCheck(t)
	r := startDaemon(t, "  users: {alice: wonderland}\n")
	relayed, err := r.allocate(t, "alice", "wonderland")
	if err != nil {
		t.Fatalf("allocate: %v\n%s", err, r.logs)
	}
	if err := relayOnce(relayed, testutil.UDPEchoOn(t, "127.0.0.1:0").LocalAddr()); err != nil {
		t.Fatal(err)
	}
	st, err := admin.NewClient(r.d.config().Server.AdminSocket).Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Relay == nil || st.Relay.Allocations != 1 || st.Relay.ByUser["alice"] != 1 || st.TLS == nil || !st.TLS.SelfSigned {
		t.Errorf("status = %+v relay=%+v tls=%+v", st, st.Relay, st.TLS)
	}
	if fi, err := os.Stat(r.d.config().Server.AdminSocket); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("admin socket mode: %v %v", fi.Mode(), err)
	}
	r.stop(t)
	if _, err := os.Stat(r.d.config().Server.AdminSocket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("admin socket left behind: %v", err)
	}
	if err := relayOnce(relayed, testutil.UDPEchoOn(t, "127.0.0.1:0").LocalAddr()); err == nil {
		t.Error("allocation still relays after the daemon stopped")
	}
}

func TestDaemonReload(t *testing.T) {
	r := startDaemon(t, "  users: {alice: wonderland}\n")
	peer := testutil.UDPEchoOn(t, "127.0.0.1:0").LocalAddr()
	live, err := r.allocate(t, "alice", "wonderland")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.allocate(t, "bob", "builder"); err == nil {
		t.Fatal("bob allocated before being added")
	}

	// Adding bob takes effect at once; alice's live allocation keeps
	// relaying, new permissions included.
	if err := relayOnce(live, peer); err != nil {
		t.Fatal(err)
	}
	r.reload(t, "  users: {alice: wonderland, bob: builder}\n")
	if _, err := r.allocate(t, "bob", "builder"); err != nil {
		t.Fatalf("bob after reload: %v\n%s", err, r.logs)
	}
	if err := relayOnce(live, peer); err != nil {
		t.Errorf("live allocation dropped by reload: %v", err)
	}
	if err := relayOnce(live, testutil.UDPEchoOn(t, "127.0.0.1:0").LocalAddr()); err != nil {
		t.Errorf("live allocation cannot add a permission after reload: %v", err)
	}

	// Removing alice revokes her: no new allocation; what she has relays on
	// until its permissions and lifetime run out.
	r.reload(t, "  users: {bob: builder}\n")
	if _, err := r.allocate(t, "alice", "wonderland"); err == nil {
		t.Error("alice allocated after being removed")
	}
	if err := relayOnce(live, peer); err != nil {
		t.Errorf("existing permission cut by reload: %v", err)
	}

	// A bad file is refused whole, every problem logged, the old config kept.
	r.reload(t, "  users: {carol: \"\"}\n  relay_ports: 9-1\n  bogus: 1\n")
	logs := r.logs.String()
	for _, want := range []string{"relay.relay_ports", "relay.bogus: unknown key", `relay.users: user \"carol\" has an empty password`} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
	if _, err := r.allocate(t, "bob", "builder"); err != nil {
		t.Errorf("bob after a rejected reload: %v", err)
	}

	// A key that needs a restart is named; the rest applies.
	r.reload(t, "  users: {dave: d}\n  relay_ports: 50000-50100\n")
	if !strings.Contains(r.logs.String(), "relay.relay_ports: changing it needs a restart") {
		t.Errorf("restart-only key not named:\n%s", r.logs)
	}
	if _, err := r.allocate(t, "dave", "d"); err != nil {
		t.Errorf("dave after a partly applied reload: %v", err)
	}
}

func TestDaemonStartFailureNamesCause(t *testing.T) {
	busy, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	dir := t.TempDir()
	file := filepath.Join(dir, "tariq.yaml")
	yaml := strings.Replace(loopbackYAML(dir, ""), `listen_udp: ["127.0.0.1:0"]`, fmt.Sprintf("listen_udp: [%q]", busy.LocalAddr()), 1)
	os.WriteFile(file, []byte(yaml), 0o600)
	l, err := config.Load(config.Options{File: file})
	if err != nil {
		t.Fatal(err)
	}
	err = Run(context.Background(), Options{Config: l})
	want := "relay: listen udp " + busy.LocalAddr().String() + ": bind: address already in use"
	if err == nil || err.Error() != want {
		t.Fatalf("got %v, want %q", err, want)
	}
	// Nothing opened before the failure is left listening.
	if _, err := os.Stat(filepath.Join(dir, "admin.sock")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("admin socket exists after a failed start: %v", err)
	}
}

// TestRestartOnlyKeys: keys no subsystem reloads are named, not ignored.
func TestRestartOnlyKeys(t *testing.T) {
	r := startDaemon(t, "")
	next := *r.d.config()
	next.Web.Listen = []string{"127.0.0.1:0", "127.0.0.2:0"}
	next.Server.MetricsListen = "127.0.0.1:1"
	next.VPN.Enabled = true // not running: switching it on needs a restart
	var keys []string
	for _, e := range r.d.restartOnly(&next) {
		keys = append(keys, e.(*config.FieldError).Key)
	}
	want := []string{"server.metrics_listen", "web.listen", "vpn.enabled"}
	if !slices.Equal(keys, want) {
		t.Errorf("restart-only keys %v, want %v", keys, want)
	}
	// The config in force keeps what runs.
	if running := r.d.config(); !slices.Equal(next.Web.Listen, running.Web.Listen) ||
		next.Server.MetricsListen != running.Server.MetricsListen || next.VPN.Enabled {
		t.Errorf("restart-only keys not kept at their running values: web.listen %v, metrics_listen %q, vpn.enabled %v",
			next.Web.Listen, next.Server.MetricsListen, next.VPN.Enabled)
	}
	if got := r.d.restartOnly(r.d.config()); len(got) != 0 {
		t.Errorf("unchanged config: %v", got)
	}
}
