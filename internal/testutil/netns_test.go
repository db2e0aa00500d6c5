package testutil

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestNetNS: two namespaces joined by a veth pair reach each other over
// IPv4 and IPv6 and nothing else; Do runs code inside one; processes
// started inside are killed and the namespaces deleted when the test ends.
func TestNetNS(t *testing.T) {
	RequireRoot(t)
	busybox := RequireBinary(t, "busybox")
	var names []string
	var pid int
	t.Run("inside", func(t *testing.T) {
		a, b := NewNetNS(t), NewNetNS(t)
		names = []string{a.Name, b.Name}
		Veth(t, VethEnd{a, "va", []netip.Prefix{netip.MustParsePrefix("192.0.2.1/24"), netip.MustParsePrefix("2001:db8::1/64")}},
			VethEnd{b, "vb", []netip.Prefix{netip.MustParsePrefix("192.0.2.2/24"), netip.MustParsePrefix("2001:db8::2/64")}})
		a.Run(busybox, "ping", "-c", "2", "-W", "2", "-w", "6", "192.0.2.2")
		a.Run(busybox, "ping", "-c", "2", "-W", "2", "-w", "6", "2001:db8::2")
		if _, err := a.TryRun(busybox, "ping", "-c", "1", "-W", "1", "-w", "1", "192.0.2.99"); err == nil {
			t.Error("ping to an address nobody has succeeded")
		}
		// The host does not see the namespaces' interfaces.
		if _, err := net.InterfaceByName("va"); err == nil {
			t.Error("veth end va is in the host namespace")
		}
		// Do: a listener opened inside is reachable from the other namespace.
		var ln net.Listener
		if err := a.Do(func() (err error) {
			ln, err = net.Listen("tcp", "192.0.2.1:0")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			if c, err := ln.Accept(); err == nil {
				c.Write([]byte("hi from a\n"))
				c.Close()
			}
		}()
		port := ln.Addr().(*net.TCPAddr).Port
		if out := b.Run(busybox, "nc", "192.0.2.1", itoa(port)); out != "hi from a\n" {
			t.Errorf("nc from b got %q", out)
		}
		if err := a.Do(func() error { return errors.New("boom") }); err == nil || err.Error() != "boom" {
			t.Errorf("Do lost fn's error: %v", err)
		}
		cmd := a.Start("sleep", "1000")
		pid = cmd.Process.Pid
	})
	if pid == 0 {
		t.Fatal("subtest did not start its process")
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("process %d started in the namespace outlived the test: %v", pid, err)
	}
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, n := range names {
		if strings.Contains(string(out), n) {
			t.Errorf("namespace %s outlived the test", n)
		}
		if _, err := os.Stat("/run/netns/" + n); err == nil {
			t.Errorf("/run/netns/%s outlived the test", n)
		}
	}
}

// TestNetNSPrivateRunDirs: two namespaces each run wireguard-go for an
// interface of the same name, and each one's wg(8) reaches its own: the
// UAPI socket directories (/var/run/wireguard, /var/run/amneziawg) are the
// namespace's own, found by the test at WireGuardSocket and
// AmneziaWGSocket, and the host's are untouched.
func TestNetNSPrivateRunDirs(t *testing.T) {
	RequireRoot(t)
	RequireBinary(t, "wg")
	wgGo := BuildWireGuardGo(t)
	const ifname = "wgsame"
	a, b := NewNetNS(t), NewNetNS(t)
	hostSock := "/var/run/wireguard/" + ifname + ".sock"
	_, hostErr := os.Stat(hostSock)
	keys := map[*NetNS]string{}
	for _, n := range []*NetNS{a, b} {
		n.Start(wgGo, "-f", ifname)
		if err := WaitListening(n.WireGuardSocket(ifname), 10*time.Second); err != nil {
			t.Fatalf("wireguard-go in %s: %v", n.Name, err)
		}
		key := filepath.Join(t.TempDir(), "key")
		os.WriteFile(key, []byte(strings.TrimSpace(n.Run("wg", "genkey"))+"\n"), 0o600)
		n.Run("wg", "set", ifname, "private-key", key)
		keys[n] = strings.TrimSpace(n.Run("sh", "-c", "wg pubkey < "+key))
	}
	if keys[a] == keys[b] {
		t.Fatal("both namespaces generated the same key")
	}
	for _, n := range []*NetNS{a, b} {
		if got := strings.TrimSpace(n.Run("wg", "show", ifname, "public-key")); got != keys[n] {
			t.Errorf("wg show in %s reached another wireguard-go: public key %s, want %s", n.Name, got, keys[n])
		}
		n.Run("sh", "-c", "echo "+n.Name+" > /var/run/amneziawg/probe.sock")
		if got, _ := os.ReadFile(n.AmneziaWGSocket("probe")); strings.TrimSpace(string(got)) != n.Name {
			t.Errorf("/var/run/amneziawg in %s is not AmneziaWGSocket's directory: %q", n.Name, got)
		}
	}
	if _, err := os.Stat(hostSock); (err == nil) != (hostErr == nil) {
		t.Errorf("the host's %s changed: %v, before %v", hostSock, err, hostErr)
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []*NetNS{a, b} {
		if strings.Contains(string(mounts), n.runDir) {
			t.Errorf("%s's directories are mounted on the host:\n%s", n.Name, mounts)
		}
	}
}

func TestBuildWireGuardGo(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary")
	}
	p := BuildWireGuardGo(t)
	out, err := exec.Command(p, "--version").Output()
	if err != nil || !strings.Contains(string(out), "wireguard-go v") {
		t.Fatalf("%s --version: %v: %s", p, err, out)
	}
	if BuildWireGuardGo(t) != p {
		t.Error("built twice")
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
