package main

import (
	"bufio"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tariq-vpn/tariq/internal/testutil"
)

// lockedBuffer is a strings.Builder a process's output and the test share.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// readmeBlock returns the lines of the first ```sh block after the README
// line containing marker, without comments and blank lines.
func readmeBlock(t *testing.T, marker string) []string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	found, in := false, false
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case !found:
			found = strings.Contains(line, marker)
		case !in && line == "```sh":
			in = true
		case in && line == "```":
			return out
		case in:
			if cmd, _, _ := strings.Cut(line, "#"); strings.TrimSpace(cmd) != "" {
				out = append(out, strings.TrimSpace(cmd))
			}
		}
	}
	t.Fatalf("README.md has no sh block after %q", marker)
	return nil
}

// TestREADMETryIt: the README's first steps work as written, in a fresh
// network namespace with the built binary on $PATH as `tariq`: its
// `tariq serve` on defaults comes up, every line of "try it" exits 0
// (`peer add mom --output mom.conf` leaving a 0600 file with the private
// key), and so does every command the daemon's start-up summary suggests.
// Only the data directory, admin socket and config file are moved, through
// the environment, so the lines run unchanged.
func TestREADMETryIt(t *testing.T) {
	testutil.RequireRoot(t)
	bin, err := buildTariq()
	if err != nil {
		t.Fatal(err)
	}
	setup, try := readmeBlock(t, "from a checkout, build"), readmeBlock(t, "try it:")
	if len(setup) != 2 || !strings.HasPrefix(setup[0], "go build -o ") || setup[1] != "tariq serve" {
		t.Fatalf("the README's set-up block changed: %q", setup)
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "empty.yaml") // not /etc/tariq/tariq.yaml, which may exist here
	if err := os.WriteFile(conf, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TARIQ_CONFIG", conf)
	t.Setenv("TARIQ_SERVER_DATA_DIR", filepath.Join(dir, "data"))
	t.Setenv("TARIQ_SERVER_ADMIN_SOCKET", filepath.Join(dir, "admin.sock"))
	t.Setenv("PATH", filepath.Dir(bin)+string(os.PathListSeparator)+os.Getenv("PATH"))

	ns := testutil.NewNetNS(t)
	// A default route, as a VPS has: the defaults masquerade out of it.
	up := testutil.NewNetNS(t)
	testutil.Veth(t, testutil.VethEnd{NS: ns, Name: "eth0", Addrs: []netip.Prefix{pfx("192.0.2.10/24")}},
		testutil.VethEnd{NS: up, Name: "eth0", Addrs: []netip.Prefix{pfx("192.0.2.1/24")}})
	ns.Run("ip", "route", "add", "default", "via", "192.0.2.1")

	daemon := ns.Command("sh", "-c", "exec "+setup[1])
	var out lockedBuffer
	daemon.Stdout, daemon.Stderr = &out, &out
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		daemon.Process.Signal(syscall.SIGTERM)
		stopped := time.AfterFunc(15*time.Second, func() { daemon.Process.Kill() })
		if err := daemon.Wait(); err != nil {
			t.Errorf("tariq serve on SIGTERM: %v", err)
		}
		stopped.Stop()
		if t.Failed() {
			t.Logf("tariq serve:\n%s", out.String())
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(out.String(), "  Status: ") {
		if time.Now().After(deadline) || daemon.ProcessState != nil {
			t.Fatalf("tariq serve did not come up:\n%s", out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}

	run := func(line string) string {
		t.Helper()
		cmd := ns.Command("sh", "-c", line)
		cmd.Dir = dir
		b, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("%s: %v\n%s", line, err, b)
		}
		return string(b)
	}
	for _, line := range try {
		run(line)
	}
	fi, err := os.Stat(filepath.Join(dir, "mom.conf"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("mom.conf: %v %v, want mode 0600", fi, err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "mom.conf")); !strings.Contains(string(b), "\nPrivateKey = ") {
		t.Errorf("mom.conf holds no config:\n%s", b)
	}

	// The summary's next steps, as printed (its example device is mom too,
	// already added above: add dad with it instead).
	steps := regexp.MustCompile(`(?m)^  (?:Try it|Add a family member's device|Status): (tariq [^(]*?)\s{3}\(`).FindAllStringSubmatch(out.String(), -1)
	if len(steps) != 3 {
		t.Fatalf("the summary suggests %d commands, want 3:\n%s", len(steps), out.String())
	}
	for _, s := range steps {
		run(strings.Replace(s[1], " mom ", " dad ", 1))
	}
}

// TestCommandName: the start-up summary's commands name tariq the way the
// person can run it again: by name when $PATH finds this very binary, as
// `go run ./cmd/tariq` after `go run` (whose binary is deleted on exit),
// else by path, with serve's --config, --data-dir and --admin-socket.
func TestCommandName(t *testing.T) {
	dir := t.TempDir()
	onPath := filepath.Join(dir, "bin", "tariq")
	goRun := filepath.Join(dir, "go-build1234", "b001", "exe", "tariq")
	other := filepath.Join(dir, "my builds", "tariq")
	for _, p := range []string{onPath, goRun, other} {
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	lookPath := func(string) (string, error) { return onPath, nil }
	for _, tt := range []struct {
		exe   string
		flags []string
		want  string
	}{
		{onPath, nil, "tariq"},
		{goRun, nil, "go run ./cmd/tariq"},
		{other, nil, "'" + other + "'"},
		{onPath, []string{"--config", "/etc/tariq/other.yaml", "--data-dir", "/srv/it's"}, `tariq --config /etc/tariq/other.yaml --data-dir '/srv/it'\''s'`},
	} {
		if got := command(tt.exe, lookPath, tt.flags); got != tt.want {
			t.Errorf("command(%s, %q) = %s, want %s", tt.exe, tt.flags, got, tt.want)
		}
	}
}
