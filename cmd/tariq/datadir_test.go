package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/tariq-vpn/tariq/internal/testutil"
)

// serviceUID plays the service user (systemd User=tariq) that owns the
// data directory in the symlink tests: nobody, an account no test runs as.
const serviceUID = 65534

// asServiceUser runs argv as serviceUID, as the daemon's user would.
func asServiceUser(t *testing.T, argv ...string) {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: serviceUID, Gid: serviceUID}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v as uid %d: %v\n%s", argv, serviceUID, err, out)
	}
}

// withoutNotice drops the line a peer change prints when no daemon runs,
// leaving the error.
func withoutNotice(stderr string) string {
	var out strings.Builder
	for _, l := range strings.SplitAfter(stderr, "\n") {
		if !strings.HasPrefix(l, "tariq: no daemon is running") {
			out.WriteString(l)
		}
	}
	return out.String()
}

// TestRootCLIRefusesPlantedLinks: the service user, who owns the data
// directory, plants links under the names tariq uses, pointing at a file
// only root may touch; root then runs the CLI commands that edit the state
// with no daemon running. None of them may hand the file over (owner), change
// its mode or content, or read it as the state: each fails with one line
// naming the link. A link planted under a temporary file's name is never
// written through, and the next start removes it.
func TestRootCLIRefusesPlantedLinks(t *testing.T) {
	testutil.RequireRoot(t)
	ln := testutil.RequireBinary(t, "ln")
	content := []byte(`{"version":2,"relay":{"secret":"root-only"}}` + "\n")
	intact := func(t *testing.T, secret string) {
		t.Helper()
		fi, err := os.Stat(secret)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(secret)
		st := fi.Sys().(*syscall.Stat_t)
		if st.Uid != 0 || st.Gid != 0 || fi.Mode() != 0o600 || !bytes.Equal(b, content) {
			t.Errorf("root's file changed: %v uid %d gid %d %q", fi.Mode(), st.Uid, st.Gid, b)
		}
	}
	commands := map[string][]string{
		"turn credentials": {"turn", "credentials"},
		"peer add":         {"peer", "add", "mom"},
		"peer list":        {"peer", "list"},
	}
	for _, planted := range []string{"state.lock", "state.json", ".state.json.tmp-1"} {
		for name, args := range commands {
			t.Run(planted+" "+name, func(t *testing.T) {
				// A directory nobody can reach and use, as /var/lib/tariq is
				// for the service user; t.TempDir and its parent are root's.
				base := t.TempDir()
				for _, d := range []string{filepath.Dir(base), base} {
					if err := os.Chmod(d, 0o711); err != nil {
						t.Fatal(err)
					}
				}
				data := filepath.Join(base, "data")
				if err := os.Mkdir(data, 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.Chown(data, serviceUID, serviceUID); err != nil {
					t.Fatal(err)
				}
				secret := filepath.Join(t.TempDir(), "shadow")
				if err := os.WriteFile(secret, content, 0o600); err != nil {
					t.Fatal(err)
				}
				link := filepath.Join(data, planted)
				asServiceUser(t, ln, "-s", secret, link)
				args := append(args, "--data-dir", data, "--admin-socket", filepath.Join(base, "admin.sock"),
					"--set", "server.public_host=127.0.0.1")
				code, _, errOut := tariq(t, args...)
				intact(t, secret)
				if strings.HasPrefix(planted, ".") {
					// The temporary name is random: the write goes elsewhere.
					if code != 0 {
						t.Errorf("exit %d: %s", code, errOut)
					}
					if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
						t.Errorf("the planted link was replaced: %v %v", fi, err)
					}
					return
				}
				want := link + " is a symbolic link"
				if errOut = withoutNotice(errOut); code != exitFailure || !strings.Contains(errOut, want) || strings.Count(errOut, "\n") != 1 {
					t.Errorf("exit %d, stderr %q: want 1 and one line with %q", code, errOut, want)
				}
			})
		}
	}
}

// TestCLIRefusesDamagedState: the CLI commands that read or edit the state
// with no daemon running refuse a state file that exists but is not one
// tariq wrote, with one line naming it, and leave it byte-identical.
func TestCLIRefusesDamagedState(t *testing.T) {
	fixture, err := os.ReadFile("../../internal/store/testdata/state-v1.json")
	if err != nil {
		t.Fatal(err)
	}
	noKey := strings.Replace(string(fixture), `"private_key": "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=",`, "", 1)
	for _, state := range []string{"{}", "null", `{"version":2}`, string(fixture[:len(fixture)/2]), noKey} {
		for _, args := range [][]string{{"turn", "credentials"}, {"turn", "app", "synapse"}, {"peer", "add", "dad"}, {"peer", "list"}, {"peer", "show", "mom"}} {
			dir := t.TempDir()
			data := filepath.Join(dir, "data")
			os.Mkdir(data, 0o700)
			path := filepath.Join(data, "state.json")
			os.WriteFile(path, []byte(state), 0o600)
			args := append(args, "--data-dir", data, "--admin-socket", filepath.Join(dir, "admin.sock"), "--set", "server.public_host=127.0.0.1")
			code, _, errOut := tariq(t, args...)
			if errOut = withoutNotice(errOut); code != exitFailure || !strings.HasPrefix(errOut, "tariq: ") || !strings.Contains(errOut, "state file "+path+" ") ||
				strings.Count(errOut, "\n") != 1 {
				t.Errorf("%v on %.20q: exit %d, stderr %q: want 1 and one line naming %s", args[:len(args)-6], state, code, errOut, path)
			}
			if got, _ := os.ReadFile(path); string(got) != state {
				t.Errorf("%v on %.20q rewrote the state:\n%s", args[:len(args)-6], state, got)
			}
		}
	}
}

// TestCheckUnsafeDataDir: `tariq check` reports a data directory the
// daemon would refuse, with the fix.
func TestCheckUnsafeDataDir(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(data, 0o770); err != nil {
		t.Fatal(err)
	}
	code, out, _ := tariq(t, "check", "--data-dir", data, "--admin-socket", filepath.Join(dir, "admin.sock"),
		"--set", "vpn.enabled=false", "--set", "web.enabled=false", "--set", "server.metrics_listen=",
		"--set", "relay.listen_udp=127.0.0.1:0", "--set", "relay.listen_tcp=127.0.0.1:0", "--set", "relay.listen_tls=127.0.0.1:0",
		"--set", "server.public_host=127.0.0.1")
	want := regexp.MustCompile(`FAIL +server\.data_dir +data directory ` + regexp.QuoteMeta(data+" is writable by group: chmod 700 "+data) + "\n")
	if code != exitFailure || !want.MatchString(out) {
		t.Errorf("exit %d, want 1 and %q:\n%s", code, want, out)
	}
}
