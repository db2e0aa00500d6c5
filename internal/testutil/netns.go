package testutil

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// NetNS is a network namespace made for one test (`ip netns add`), with
// its loopback up. When the test ends, every process started in it with
// Start is killed by PID and reaped, then the namespace is deleted, which
// takes its veth ends and TUN devices with it.
//
// Processes run in it (Command, Run, Start) also get private socket
// directories: /var/run/wireguard and /var/run/amneziawg, where
// wireguard-go, amneziawg-go, wg(8) and tariq's UAPI socket live, are
// directories of this namespace's own, bind-mounted in the mount namespace
// `ip netns exec` makes for each process. The paths are fixed in those
// programs and not per network namespace, so without this two tests (or
// two `go test` runs) with an interface of the same name take each other's
// socket. The test reaches them at WireGuardSocket and AmneziaWGSocket.
type NetNS struct {
	// Name is the namespace's name under /run/netns, unique per test.
	Name string

	t      testing.TB
	runDir string     // holds wireguard/ and amneziawg/, mounted over /var/run's
	mu     sync.Mutex // guards procs
	procs  []*exec.Cmd
}

// privateRunDirs are the directories under /var/run whose sockets NetNS
// makes private.
const privateRunDirs = "wireguard amneziawg"

// NewNetNS creates a namespace for t. It needs root and iproute2.
func NewNetNS(t testing.TB) *NetNS {
	t.Helper()
	RequireRoot(t)
	RequireBinary(t, "ip")
	var b [4]byte
	rand.Read(b[:])
	n := &NetNS{Name: "tq-" + hex.EncodeToString(b[:]), t: t}
	// Short, under /tmp: unix socket paths are limited to 107 bytes, and
	// t.TempDir's can be long.
	dir, err := os.MkdirTemp("", "tq-run-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) }) // runs after delete: the processes are gone
	for _, d := range strings.Fields(privateRunDirs) {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	n.runDir = dir
	if out, err := exec.Command("ip", "netns", "add", n.Name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", n.Name, err, out)
	}
	t.Cleanup(n.delete)
	n.Run("ip", "link", "set", "lo", "up")
	// No duplicate address detection on the interfaces to come: an IPv6
	// address (the link-local one every veth gets, too) would otherwise
	// turn from tentative to usable a second or two after the link comes
	// up, which Chromium reports as a network change, failing a page
	// load under way with ERR_NETWORK_CHANGED. Nothing else shares these
	// links. Without IPv6 the keys do not exist, and that is fine.
	n.TryRun("sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")
	return n
}

// Path returns the namespace's bind mount, /run/netns/NAME: open it for a
// file descriptor (nftables.WithNetNSFd, netlink.NewHandleAt).
func (n *NetNS) Path() string { return filepath.Join("/run/netns", n.Name) }

// WireGuardSocket is where the test finds the UAPI socket of interface
// ifname that wireguard-go or tariq, run in this namespace, made as
// /var/run/wireguard/IFNAME.sock.
func (n *NetNS) WireGuardSocket(ifname string) string {
	return filepath.Join(n.runDir, "wireguard", ifname+".sock")
}

// AmneziaWGSocket is AmneziaWG's: amneziawg-go keeps its UAPI sockets in a
// directory of its own, /var/run/amneziawg (amneziawg-go ipc/uapi_unix.go,
// socketDirectory), so wg(8) does not find them.
func (n *NetNS) AmneziaWGSocket(ifname string) string {
	return filepath.Join(n.runDir, "amneziawg", ifname+".sock")
}

// privateRunScript bind-mounts this namespace's directories over
// /var/run's, then execs argv in place (so the PID is argv's own). `ip
// netns exec` has already given the process a mount namespace of its own
// whose mounts do not propagate back to the host (iproute2
// lib/namespace.c, netns_switch: unshare(CLONE_NEWNS), then / rslave).
const privateRunScript = `set -e
for d in ` + privateRunDirs + `; do
	mkdir -p /var/run/$d
	mount --bind "$0/$d" /var/run/$d
done
exec "$@"`

// Command returns an unstarted command running argv inside the namespace
// (`ip netns exec NAME`, with the private socket directories mounted, then
// argv exec'd in place, so the PID is argv's own).
func (n *NetNS) Command(argv ...string) *exec.Cmd {
	args := append([]string{"netns", "exec", n.Name, "sh", "-c", privateRunScript, n.runDir}, argv...)
	return exec.Command("ip", args...)
}

// Run runs argv inside the namespace to completion and returns its
// standard output; it fails the test, quoting stderr, if argv fails.
func (n *NetNS) Run(argv ...string) string {
	n.t.Helper()
	out, err := n.TryRun(argv...)
	if err != nil {
		n.t.Fatalf("in %s: %v", n.Name, err)
	}
	return out
}

// TryRun is Run that returns the failure instead of failing the test.
func (n *NetNS) TryRun(argv ...string) (string, error) {
	cmd := n.Command(argv...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// Start starts argv inside the namespace in the background, its output in
// the test log on failure. The process is killed (SIGKILL, by PID) and
// reaped when the test ends, if it has not exited by then; callers may
// Wait on it themselves first.
func (n *NetNS) Start(argv ...string) *exec.Cmd {
	n.t.Helper()
	cmd := n.Command(argv...)
	var out procOutput
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		n.t.Fatalf("in %s: starting %s: %v", n.Name, strings.Join(argv, " "), err)
	}
	n.mu.Lock()
	n.procs = append(n.procs, cmd)
	n.mu.Unlock()
	n.t.Cleanup(func() {
		if n.t.Failed() {
			n.t.Logf("%s (pid %d) output:\n%s", strings.Join(argv, " "), cmd.Process.Pid, out.String())
		}
	})
	return cmd
}

// Do runs fn on a fresh OS thread that has joined the namespace and
// returns fn's error. Only the network namespace: the thread sees the
// host's /var/run/wireguard, so a UAPI socket opened in fn needs an
// interface name unique to the test. Sockets, TUN devices, netlink and nftables
// connections, and /proc/sys/net files opened by fn belong to the
// namespace, and stay there when used later from other threads. The
// thread is thrown away afterwards, never returned to the Go scheduler.
// Goroutines fn starts run on other threads, in the host's namespace.
func (n *NetNS) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		f, err := os.Open(n.Path())
		if err != nil {
			errc <- err
			return
		}
		err = setns(f)
		f.Close()
		if err != nil {
			errc <- fmt.Errorf("setns %s: %w", n.Name, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

func (n *NetNS) delete() {
	n.mu.Lock()
	procs := n.procs
	n.procs = nil
	n.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		c := procs[i]
		if c.ProcessState == nil {
			c.Process.Kill()
			c.Wait()
		}
	}
	// The kernel tears a namespace's devices down asynchronously; retry
	// briefly if something still holds the mount.
	var out []byte
	var err error
	for range 50 {
		if out, err = exec.Command("ip", "netns", "del", n.Name).CombinedOutput(); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	n.t.Errorf("ip netns del %s: %v: %s", n.Name, err, out)
}

// VethEnd is one end of a veth pair: its namespace, interface name (at
// most 15 bytes) and addresses.
type VethEnd struct {
	NS    *NetNS
	Name  string
	Addrs []netip.Prefix
}

// Veth joins two namespaces with a veth pair, gives each end its
// addresses (IPv6 without duplicate address detection, so they are usable
// at once) and brings both up. The pair goes away with the namespaces.
func Veth(t testing.TB, a, b VethEnd) {
	t.Helper()
	if out, err := exec.Command("ip", "link", "add", a.Name, "netns", a.NS.Name, "type", "veth",
		"peer", "name", b.Name, "netns", b.NS.Name).CombinedOutput(); err != nil {
		t.Fatalf("creating veth %s/%s: %v: %s", a.Name, b.Name, err, out)
	}
	for _, e := range []VethEnd{a, b} {
		for _, p := range e.Addrs {
			args := []string{"ip", "addr", "add", p.String(), "dev", e.Name}
			if p.Addr().Is6() {
				args = append(args, "nodad")
			}
			e.NS.Run(args...)
		}
		e.NS.Run("ip", "link", "set", e.Name, "up")
	}
}

var wgGo struct {
	once sync.Once
	path string
	err  error
}

// BuildWireGuardGo builds upstream wireguard-go (the module's main package,
// at the version go.mod pins) once per test binary and returns the
// binary's path. It is an independent WireGuard client for end-to-end
// tests on hosts without the kernel module.
func BuildWireGuardGo(t testing.TB) string {
	t.Helper()
	goBin := RequireBinary(t, "go")
	wgGo.once.Do(func() {
		// One directory per user, reused across runs: Go's build cache
		// makes the rebuild cheap, and no temporary directory piles up.
		dir := filepath.Join(os.TempDir(), fmt.Sprintf("tariq-test-bin-%d", os.Getuid()))
		if err := os.MkdirAll(dir, 0o700); err != nil {
			wgGo.err = err
			return
		}
		wgGo.path = filepath.Join(dir, "wireguard-go")
		tmp := fmt.Sprintf("%s.%d", wgGo.path, os.Getpid()) // test binaries run in parallel
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, goBin, "build", "-o", tmp, "golang.zx2c4.com/wireguard")
		if out, err := cmd.CombinedOutput(); err != nil {
			wgGo.err = fmt.Errorf("go build golang.zx2c4.com/wireguard: %w: %s", err, out)
			return
		}
		wgGo.err = os.Rename(tmp, wgGo.path)
	})
	if wgGo.err != nil {
		t.Fatal(wgGo.err)
	}
	return wgGo.path
}

// procOutput is a bytes.Buffer safe for a process's stdout and stderr
// writers and a reader.
type procOutput struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *procOutput) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *procOutput) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// WaitListening waits until a process accepts connections on the unix
// socket at path, such as a UAPI socket wireguard-go or amneziawg-go is
// opening. The file appearing is not enough: it exists from bind(2), and
// a connection before listen(2) is refused.
func WaitListening(path string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing listening on %s after %v: %w", path, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
