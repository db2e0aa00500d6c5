package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tariq-vpn/tariq/internal/testutil"
)

// nobody is the unprivileged user the tests run the binary as.
const nobody = 65534

// asNobody runs the built binary as uid/gid 65534 with HOME set to a
// directory of its own, and returns its exit code and output.
func asNobody(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	bin, err := buildTariq()
	if err != nil {
		t.Fatal(err)
	}
	home := filepath.Join(openDir(t), "home")
	if err := os.Mkdir(home, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(home, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // a serve that starts is a failure, not a hang
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = home
	cmd.Env = []string{"HOME=" + home, "PATH=/usr/bin:/bin"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, out.String(), errb.String()
}

// openDir returns a directory anyone may enter (t.TempDir's parent is
// 0700), removed when t ends.
func openDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "tariq-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// rootOnlyDir returns a directory only root can enter, as the daemon's
// are (/var/lib/tariq 0700, the config 0600).
func rootOnlyDir(t *testing.T) string {
	dir := filepath.Join(openDir(t), "root-only")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestNonRootAdvice: a user other than root who runs serve or status
// against root's files or socket is told, in one line, what to do (run as
// root or the service user, or use paths of their own), not only the
// system call that failed.
func TestNonRootAdvice(t *testing.T) {
	testutil.RequireRoot(t)
	secret := rootOnlyDir(t)
	conf := filepath.Join(secret, "tariq.yaml")
	if err := os.WriteFile(conf, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	open := openDir(t)
	readable := filepath.Join(open, "tariq.yaml")
	if err := os.WriteFile(readable, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	mine := filepath.Join(open, "mine") // nobody's own
	if err := os.Mkdir(mine, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(mine, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(secret, "admin.sock")
	ln, err := net.Listen("unix", sock) // a daemon's socket, as root's
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	loopback := []string{"--set", "vpn.enabled=false", "--set", "server.public_host=127.0.0.1", "--set", "server.metrics_listen=",
		"--set", "relay.listen_udp=127.0.0.1:0", "--set", "relay.listen_tcp=127.0.0.1:0",
		"--set", "relay.listen_tls=127.0.0.1:0", "--set", "web.listen=127.0.0.1:0"}

	for _, tt := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"status, root's config", []string{"status", "--config", conf}, exitUsage,
			"tariq: config " + conf + ": permission denied; run tariq status as root or as the service user (sudo -u tariq tariq status), or give --config a file you can read\n"},
		{"serve, root's config", []string{"serve", "--config", conf}, exitUsage,
			"tariq: config " + conf + ": permission denied; run tariq serve as root or as the service user (systemctl start tariq), or give --config a file you can read\n"},
		{"status, root's socket", []string{"status", "--config", readable, "--admin-socket", sock}, exitFailure,
			"tariq: admin socket " + sock + ": permission denied; run tariq status as root or as the service user (sudo -u tariq tariq status), or give --admin-socket the socket of a daemon you run\n"},
		{"serve, root's data dir", append([]string{"serve", "--config", readable, "--data-dir", filepath.Join(secret, "data"), "--admin-socket", filepath.Join(mine, "c.sock")}, loopback...), exitFailure,
			"permission denied; run tariq serve as root or as the service user (systemctl start tariq), or give --data-dir and --admin-socket paths you own\n"},
		{"serve, port 443", append([]string{"serve", "--config", readable, "--data-dir", filepath.Join(mine, "data"), "--admin-socket", filepath.Join(mine, "a.sock")},
			append(loopback, "--set", "web.listen=127.0.0.1:443")...), exitFailure,
			"tariq: web: listen tcp 127.0.0.1:443: bind: permission denied; ports below 1024 need root or CAP_NET_BIND_SERVICE: run tariq serve as root or as the service user (systemctl start tariq), or choose ports above 1023 (web.listen, relay.listen_udp, relay.listen_tcp, relay.listen_tls)\n"},
		{"serve, the TUN device", append([]string{"serve", "--config", readable, "--data-dir", filepath.Join(mine, "data2"), "--admin-socket", filepath.Join(mine, "b.sock")},
			append(loopback, "--set", "vpn.enabled=true")...), exitFailure,
			"tariq: vpn: opening TUN tariq0: permission denied (run as root, or with CAP_NET_ADMIN as the systemd unit does)\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if strings.Contains(tt.name, "port 443") {
				b, err := os.ReadFile("/proc/sys/net/ipv4/ip_unprivileged_port_start")
				if n, _ := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n <= 443 {
					t.Skipf("this host lets any user bind port 443 (net.ipv4.ip_unprivileged_port_start=%d)", n)
				}
			}
			code, _, errOut := asNobody(t, tt.args...)
			if code != tt.code || !strings.HasSuffix(errOut, tt.want) || strings.Count(errOut, "tariq: ") != 1 || strings.Contains(errOut, "dial unix") {
				t.Errorf("exit %d, stderr:\n%s\nwant exit %d and one line ending %q", code, errOut, tt.code, tt.want)
			}
		})
	}
}
