package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// TestPeerOutput: `peer add/show --output FILE` (and --png) write the
// config to a file only its owner can read, whatever the umask; an
// existing file or symlink is kept unless --force, and checked before the
// peer is added; --force replaces a symlink instead of writing through it
// and never widens an existing file's mode.
func TestPeerOutput(t *testing.T) {
	old := syscall.Umask(0o022) // the usual umask, under which `> mom.conf` is 0644
	defer syscall.Umask(old)
	dir := t.TempDir()
	conf := filepath.Join(dir, "tariq.yaml")
	if err := os.WriteFile(conf, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	if err := os.Mkdir(out, 0o755); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (int, string, string) {
		t.Helper()
		return tariq(t, append(args, "--config", conf, "--data-dir", dir+"/data", "--admin-socket", dir+"/admin.sock",
			"--set", "server.public_host=vpn.example.org")...)
	}
	mode := func(p string) os.FileMode {
		t.Helper()
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Mode()
	}

	mom := filepath.Join(out, "mom.conf")
	code, stdout, errOut := run("peer", "add", "mom", "--output", mom)
	if code != 0 || stdout != "" || !strings.Contains(errOut, "wrote "+mom) {
		t.Fatalf("peer add --output: exit %d, stdout %q, stderr %q", code, stdout, errOut)
	}
	_, shown, _ := run("peer", "show", "mom")
	if got, _ := os.ReadFile(mom); string(got) != shown || !strings.Contains(shown, "PrivateKey = ") {
		t.Errorf("mom.conf is not what peer show prints:\n%s\nvs\n%s", got, shown)
	}
	if m := mode(mom); m != 0o600 {
		t.Errorf("mom.conf mode %v, want -rw-------", m)
	}
	if leftovers, _ := filepath.Glob(filepath.Join(out, ".*")); len(leftovers) != 0 {
		t.Errorf("temporary files left behind: %v", leftovers)
	}

	// An existing file is kept, and nothing is added for it.
	code, _, errOut = run("peer", "add", "dad", "--output", mom)
	if code != exitUsage || errOut != "tariq: "+mom+" exists; keeping it (use --force to replace it)\n" {
		t.Errorf("existing --output: exit %d, %q", code, errOut)
	}
	if _, list, _ := run("peer", "list"); listed(list, "dad") {
		t.Errorf("dad was added although his config could not be written:\n%s", list)
	}

	// A symlink at FILE, dangling or not, is never written through.
	target := filepath.Join(dir, "elsewhere")
	link := filepath.Join(out, "link.conf")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := run("peer", "show", "mom", "--output", link); code != exitUsage || !strings.Contains(errOut, "exists") {
		t.Errorf("symlink --output: exit %d, %q", code, errOut)
	}
	if _, err := os.Lstat(target); err == nil {
		t.Error("a dangling symlink's target was created")
	}
	os.WriteFile(target, []byte("keep"), 0o644)
	if code, _, errOut := run("peer", "show", "mom", "--output", link, "--force"); code != 0 {
		t.Fatalf("--force over a symlink: exit %d, %q", code, errOut)
	}
	if got, _ := os.ReadFile(target); string(got) != "keep" {
		t.Errorf("the symlink's target was written: %q", got)
	}
	if m := mode(link); !m.IsRegular() || m.Perm() != 0o600 {
		t.Errorf("after --force the symlink is %v, want a regular 0600 file", m)
	}

	// --force narrows a wider file and never widens a narrower one.
	for _, tt := range []struct {
		before, after os.FileMode
	}{{0o644, 0o600}, {0o400, 0o400}, {0o660, 0o600}} {
		p := filepath.Join(out, "mode.conf")
		os.Remove(p)
		os.WriteFile(p, []byte("old"), tt.before)
		os.Chmod(p, tt.before)
		if code, _, errOut := run("peer", "show", "mom", "--output", p, "--force"); code != 0 {
			t.Fatalf("--force over a %v file: exit %d, %q", tt.before, code, errOut)
		}
		if got, _ := os.ReadFile(p); string(got) != shown {
			t.Errorf("--force over a %v file: content %q", tt.before, got)
		}
		if m := mode(p).Perm(); m != tt.after {
			t.Errorf("--force over a %v file left %v, want %v", tt.before, m, tt.after)
		}
	}

	// --png has the same rules: it carries the private key too.
	png := filepath.Join(out, "mom.png")
	if code, _, errOut := run("peer", "show", "mom", "--png", png); code != 0 {
		t.Fatalf("--png: exit %d, %q", code, errOut)
	}
	if b, _ := os.ReadFile(png); !bytes.HasPrefix(b, []byte("\x89PNG")) || mode(png).Perm() != 0o600 {
		t.Errorf("mom.png: mode %v, PNG %v", mode(png), bytes.HasPrefix(b, []byte("\x89PNG")))
	}
	if code, _, errOut := run("peer", "show", "mom", "--png", png); code != exitUsage || !strings.Contains(errOut, "exists") {
		t.Errorf("--png over an existing file: exit %d, %q", code, errOut)
	}
	if code, _, errOut := run("peer", "show", "mom", "--png", out); code != exitUsage || !strings.Contains(errOut, "is a directory") {
		t.Errorf("--png onto a directory: exit %d, %q", code, errOut)
	}
}

// listed reports whether `peer list` output names name in its first
// column. A substring test would not do: the random ULA prefix in the
// address column can spell a name such as "dad".
func listed(list, name string) bool {
	return slices.ContainsFunc(strings.Split(list, "\n"), func(l string) bool {
		return strings.HasPrefix(l, name+" ")
	})
}
