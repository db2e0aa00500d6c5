package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tariq-vpn/tariq/config"
	"github.com/tariq-vpn/tariq/internal/testutil"
)

var update = flag.Bool("update", false, "rewrite golden files")

// tariq runs the CLI in-process and returns its exit code and output.
func tariq(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), args, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

func TestVersion(t *testing.T) {
	code, out, _ := tariq(t, "version")
	if code != 0 || !strings.HasPrefix(out, "tariq ") {
		t.Errorf("version: %d %q", code, out)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{{"nope"}, {"version", "extra"}, {"serve", "--bogus"}, {"init"}, {"turn", "app", "skype", "--set", "relay.secrets=0123456789abcdef0"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			code, _, errOut := tariq(t, args...)
			if code != exitUsage || !strings.HasPrefix(errOut, "tariq: ") || strings.Count(errOut, "\n") != 1 {
				t.Errorf("exit %d, stderr %q: want exit 2 and one line", code, errOut)
			}
		})
	}
}

func TestInit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "etc", "tariq.yaml")
	code, out, errOut := tariq(t, "init", "--host", "vpn.example.org", "--email", "ops@example.org", "--config", path)
	if code != 0 {
		t.Fatalf("init: %d %s", code, errOut)
	}
	if !strings.Contains(out, "wrote "+path) {
		t.Errorf("stdout %q", out)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("config file mode: %v %v", fi, err)
	}
	l, err := config.Load(config.Options{File: path})
	if err != nil {
		t.Fatalf("written config does not load: %v", err)
	}
	if l.Server.PublicHost != "vpn.example.org" || l.TLS.Email != "ops@example.org" || len(l.Relay.Secrets) != 1 || len(l.Relay.Secrets[0].Reveal()) != 64 {
		t.Errorf("loaded: host %q email %q secrets %d", l.Server.PublicHost, l.TLS.Email, len(l.Relay.Secrets))
	}
	if !l.VPN.Outline.Enabled {
		t.Error("init for a DNS name with --email (an ACME certificate) left vpn.outline off")
	}
	for host, want := range map[string]bool{"203.0.113.7": false, "193.0.14.129": true, "vpn.example.org": false, "10.1.2.3": false} {
		p := filepath.Join(t.TempDir(), "tariq.yaml")
		if code, _, errOut := tariq(t, "init", "--host", host, "--config", p); code != 0 {
			t.Fatalf("init --host %s: %d %s", host, code, errOut)
		}
		l, err := config.Load(config.Options{File: p})
		if err != nil {
			t.Fatalf("init --host %s wrote a config that does not load: %v", host, err)
		}
		if l.VPN.Outline.Enabled != want {
			t.Errorf("init --host %s (no --email): vpn.outline.enabled %v, want %v (a trusted certificate: %[2]v)", host, l.VPN.Outline.Enabled, want)
		}
	}
	first, _ := os.ReadFile(path)
	if code, _, errOut := tariq(t, "init", "--host", "other.example.org", "--config", path); code != exitUsage || !strings.Contains(errOut, "exists") {
		t.Errorf("second init: %d %q, want refusal", code, errOut)
	}
	if again, _ := os.ReadFile(path); !bytes.Equal(first, again) {
		t.Error("refused init changed the file")
	}
	if code, _, _ := tariq(t, "init", "--host", "other.example.org", "--config", path, "--force"); code != 0 {
		t.Error("init --force failed")
	}
	if code, _, errOut := tariq(t, "init", "--host", "https://bad", "--config", path+"2"); code != exitUsage || !strings.Contains(errOut, "--host") {
		t.Errorf("bad host: %d %q", code, errOut)
	}
}

func TestCheckPrintsEveryProblem(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(path, []byte("relay:\n  relay_ports: 70000-1\n  max_allocations: 0\nserver:\n  log_level: loud\n  typo: 1\n"), 0o600)
	code, _, errOut := tariq(t, "check", "--config", path)
	if code != exitUsage {
		t.Errorf("exit %d, want %d", code, exitUsage)
	}
	for _, want := range []string{
		`tariq: relay.relay_ports: "70000-1" is not a port range`,
		"tariq: relay.max_allocations: 0 must be at least 1",
		`tariq: server.log_level: "loud" is not one of debug, info, warn, error`,
		"tariq: server.typo: unknown key",
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
}

func TestCheckHost(t *testing.T) {
	dir := t.TempDir()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	args := []string{"check", "--data-dir", dir + "/data", "--admin-socket", dir + "/admin.sock",
		"--set", "vpn.enabled=false", "--set", "server.public_host=127.0.0.1",
		"--set", "relay.listen_udp=127.0.0.1:0", "--set", "relay.listen_tcp=" + busy.Addr().String(),
		"--set", "relay.listen_tls=127.0.0.1:0", "--set", "web.listen=127.0.0.1:0", "--set", "server.metrics_listen="}
	code, out, _ := tariq(t, args...)
	if code != exitFailure || !strings.Contains(out, "FAIL  relay.listen_tcp") || !strings.Contains(out, "address already in use") {
		t.Errorf("busy port: exit %d\n%s", code, out)
	}
	busy.Close()
	if code, out, _ := tariq(t, args...); code != 0 {
		t.Errorf("free ports: exit %d\n%s", code, out)
	}
}

const testSecret = "0123456789abcdef0123456789abcdef"

func TestTurnCredentials(t *testing.T) {
	dir := t.TempDir()
	base := []string{"--data-dir", dir, "--set", "server.public_host=turn.example.org", "--set", "relay.secrets=" + testSecret}
	code, out, errOut := tariq(t, append([]string{"turn", "credentials", "--ttl", "1h", "--user", "@alice:example.org", "--json"}, base...)...)
	if code != 0 {
		t.Fatalf("%d %s", code, errOut)
	}
	var c struct {
		Username, Password string
		TTL                int
		URIs               []string
	}
	if err := json.Unmarshal([]byte(out), &c); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	ts, id, _ := strings.Cut(c.Username, ":")
	exp, _ := strconv.ParseInt(ts, 10, 64)
	if d := time.Until(time.Unix(exp, 0)); d < 59*time.Minute || d > time.Hour+time.Second {
		t.Errorf("expiry %v from now, want 1h", d)
	}
	if id != "@alice:example.org" || c.TTL != 3600 {
		t.Errorf("id %q ttl %d", id, c.TTL)
	}
	// coturn's formula, computed independently of relay.RESTPassword.
	testutil.RequireBinary(t, "openssl")
	want, err := exec.Command("sh", "-c", fmt.Sprintf("printf %%s '%s' | openssl dgst -sha1 -hmac '%s' -binary | base64", c.Username, testSecret)).Output()
	if err != nil {
		t.Fatalf("openssl: %v", err)
	}
	if c.Password != strings.TrimSpace(string(want)) {
		t.Errorf("password %q, want %q", c.Password, want)
	}
	if len(c.URIs) != 4 || c.URIs[0] != "turn:turn.example.org:3478?transport=udp" || c.URIs[3] != "turns:turn.example.org:443?transport=tcp" {
		t.Errorf("uris %v", c.URIs)
	}

	// Without relay.secrets the generated secret is created once and kept.
	gen := []string{"turn", "credentials", "--data-dir", dir, "--set", "server.public_host=turn.example.org"}
	_, first, _ := tariq(t, gen...)
	if _, err := os.Stat(filepath.Join(dir, "state.json")); err != nil {
		t.Fatalf("no state after minting with a generated secret: %v", err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "state.json")); fi.Mode().Perm() != 0o600 {
		t.Errorf("state.json mode %v", fi.Mode().Perm())
	}
	if !strings.Contains(first, "password: ") {
		t.Errorf("text output %q", first)
	}
}

func TestTurnApp(t *testing.T) {
	for _, app := range []string{"synapse", "nextcloud", "jitsi", "galene", "livekit"} {
		t.Run(app, func(t *testing.T) {
			code, out, errOut := tariq(t, "turn", "app", app, "--data-dir", t.TempDir(),
				"--set", "server.public_host=turn.example.org", "--set", "relay.secrets="+testSecret)
			if code != 0 {
				t.Fatalf("%d %s", code, errOut)
			}
			golden := filepath.Join("testdata", "app-"+app+".golden")
			if *update {
				os.WriteFile(golden, []byte(out), 0o644)
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(string(want), out); diff != "" {
				t.Errorf("(-want +got; -update to accept):\n%s", diff)
			}
		})
	}
}

// buildTariq compiles the binary once for the subprocess tests, in a
// directory of this test process's own (TestMain removes it).
var buildTariq = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "tariq-bin-")
	if err != nil {
		return "", err
	}
	builtDir.Store(&dir)
	if err := os.Chmod(dir, 0o755); err != nil { // tests run it as other users too
		return "", err
	}
	bin := filepath.Join(dir, "tariq")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

func loopbackArgs(dir string) []string {
	return []string{"--data-dir", dir + "/data", "--admin-socket", dir + "/admin.sock",
		"--set", "vpn.enabled=false", "--set", "server.public_host=127.0.0.1", "--set", "server.metrics_listen=127.0.0.1:0",
		"--set", "relay.listen_udp=127.0.0.1:0", "--set", "relay.listen_tcp=127.0.0.1:0",
		"--set", "relay.listen_tls=127.0.0.1:0", "--set", "web.listen=127.0.0.1:0"}
}

// TestServeBinary runs the real binary: it starts, answers `tariq status`,
// and exits 0 on SIGTERM; a port in use is one line and exit 1.
func TestServeBinary(t *testing.T) {
	bin, err := buildTariq()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(bin, append([]string{"serve"}, loopbackArgs(dir)...)...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	deadline := time.Now().Add(15 * time.Second)
	for {
		code, out, _ := tariq(t, append([]string{"status"}, loopbackArgs(dir)...)...)
		if code == 0 && strings.Contains(out, "Relay") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon not answering status:\n%s", stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("exit after SIGTERM: %v\n%s", err, stderr.String())
	}
	// The next step names this binary (not on $PATH) and serve's paths, so
	// it reaches this daemon as printed.
	next := bin + " --data-dir " + dir + "/data --admin-socket " + dir + "/admin.sock turn credentials"
	if !strings.Contains(stdout.String(), "turn:127.0.0.1:") || !strings.Contains(stdout.String(), "Try it: "+next+" ") {
		t.Errorf("start-up summary lacks the TURN URIs and next step %q:\n%s", next, stdout.String())
	}
	if code, _, errOut := tariq(t, append([]string{"status"}, loopbackArgs(dir)...)...); code != exitFailure || !strings.Contains(errOut, "not running") {
		t.Errorf("status with the daemon gone: %d %q", code, errOut)
	}

	busy, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	args := append([]string{"serve"}, loopbackArgs(t.TempDir())...)
	args = append(args, "--set", "relay.listen_udp="+busy.LocalAddr().String())
	var errOut bytes.Buffer
	fail := exec.Command(bin, args...)
	fail.Stderr = &errOut
	err = fail.Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != exitFailure {
		t.Errorf("port in use: %v, want exit 1", err)
	}
	want := "tariq: relay: listen udp " + busy.LocalAddr().String() + ": bind: address already in use\n"
	if !strings.HasSuffix(errOut.String(), want) || strings.Count(errOut.String(), "address already in use") != 1 {
		t.Errorf("stderr:\n%s\nwant it to end with %q, once", errOut.String(), want)
	}
}
