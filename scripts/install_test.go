// Package scripts holds the install scripts and benchmarks; this test runs
// install.sh and uninstall.sh against a scratch root.
package scripts

import (
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tariq-vpn/tariq/config"
	"github.com/tariq-vpn/tariq/internal/testutil"
)

// snapshot lists every path under root with its type, mode, owner and
// content hash (or link target).
func snapshot(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		fi, _ := os.Lstat(p)
		st := fi.Sys().(*syscall.Stat_t)
		line := fmt.Sprintf("%s %v %d:%d", strings.TrimPrefix(p, root), fi.Mode(), st.Uid, st.Gid)
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			line += " -> " + target
		case fi.Mode().IsRegular():
			b, _ := os.ReadFile(p)
			line += fmt.Sprintf(" %x", sha256.Sum256(b))
		}
		out = append(out, line)
		return nil
	})
	sort.Strings(out)
	return out
}

func build(t *testing.T, dir, version string) string {
	t.Helper()
	bin := filepath.Join(dir, "tariq-"+version)
	out, err := exec.Command("go", "build", "-ldflags", "-X main.version="+version, "-o", bin, "../cmd/tariq").CombinedOutput()
	if err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

func script(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command("./"+name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

func TestInstallIdempotentUpgradeUninstall(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireBinary(t, "systemd-sysusers")
	testutil.RequireBinary(t, "systemctl")
	tmp := t.TempDir()
	root := filepath.Join(tmp, "root")
	os.Mkdir(root, 0o755)
	v1, v2 := build(t, tmp, "v1"), build(t, tmp, "v2")

	out := script(t, "install.sh", "--root", root, "--binary", v1, "--host", "vpn.example.org", "--email", "ops@example.org")
	for _, want := range []string{"installed /usr/local/bin/tariq", "created system user tariq", "wrote /etc/tariq/tariq.yaml",
		"udp    51820", "tcp    443", "tariq peer add mom --qr"} {
		if !strings.Contains(out, want) {
			t.Errorf("first run lacks %q:\n%s", want, out)
		}
	}
	first := snapshot(t, root)

	// The config is the one `tariq init` writes, readable by the daemon's group only.
	conf := filepath.Join(root, "etc/tariq/tariq.yaml")
	l, err := config.Load(config.Options{File: conf})
	if err != nil {
		t.Fatalf("installed config: %v", err)
	}
	if l.Server.PublicHost != "vpn.example.org" || l.TLS.Email != "ops@example.org" || len(l.Relay.Secrets) != 1 {
		t.Errorf("config: host %q email %q", l.Server.PublicHost, l.TLS.Email)
	}
	passwd, _ := os.ReadFile(filepath.Join(root, "etc/passwd"))
	if !strings.Contains(string(passwd), "tariq:x:") {
		t.Errorf("no tariq user in passwd:\n%s", passwd)
	}
	fi, _ := os.Stat(conf)
	if fi.Mode().Perm() != 0o640 || fi.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Errorf("config mode %v", fi.Mode())
	}
	if _, err := os.Lstat(filepath.Join(root, "etc/systemd/system/multi-user.target.wants/tariq.service")); err != nil {
		t.Errorf("unit not enabled: %v", err)
	}

	// A second run changes nothing.
	out = script(t, "install.sh", "--root", root, "--binary", v1, "--host", "other.example.org")
	if !strings.Contains(out, "nothing changed") {
		t.Errorf("second run:\n%s", out)
	}
	if diff := cmp.Diff(first, snapshot(t, root)); diff != "" {
		t.Errorf("second run changed the tree (-first +second):\n%s", diff)
	}

	// An upgrade replaces the binary and keeps the config.
	before, _ := os.ReadFile(conf)
	out = script(t, "install.sh", "--root", root, "--binary", v2)
	if !strings.Contains(out, "installed /usr/local/bin/tariq") || strings.Contains(out, "wrote /etc/tariq") {
		t.Errorf("upgrade:\n%s", out)
	}
	if after, _ := os.ReadFile(conf); string(after) != string(before) {
		t.Error("upgrade rewrote the config")
	}
	if v, _ := exec.Command(filepath.Join(root, "usr/local/bin/tariq"), "version").Output(); strings.TrimSpace(string(v)) != "tariq v2" {
		t.Errorf("installed version %q", v)
	}

	// Uninstall keeps config and state; --purge removes them and the user.
	state := filepath.Join(root, "var/lib/tariq")
	os.MkdirAll(state, 0o700)
	os.WriteFile(filepath.Join(state, "state.json"), []byte(`{"version":1}`), 0o600)
	script(t, "uninstall.sh", "--root", root)
	for _, gone := range []string{"usr/local/bin/tariq", "etc/systemd/system/tariq.service", "etc/systemd/system/multi-user.target.wants/tariq.service"} {
		if _, err := os.Lstat(filepath.Join(root, gone)); err == nil {
			t.Errorf("%s survived uninstall", gone)
		}
	}
	for _, kept := range []string{"etc/tariq/tariq.yaml", "var/lib/tariq/state.json"} {
		if _, err := os.Stat(filepath.Join(root, kept)); err != nil {
			t.Errorf("uninstall removed %s: %v", kept, err)
		}
	}
	script(t, "uninstall.sh", "--root", root, "--purge")
	for _, gone := range []string{"etc/tariq", "var/lib/tariq"} {
		if _, err := os.Stat(filepath.Join(root, gone)); err == nil {
			t.Errorf("%s survived --purge", gone)
		}
	}
	if passwd, _ := os.ReadFile(filepath.Join(root, "etc/passwd")); strings.Contains(string(passwd), "tariq:") {
		t.Error("tariq user survived --purge")
	}
}
