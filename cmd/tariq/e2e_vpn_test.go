package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tariq-vpn/tariq/internal/testutil"
)

// The end-to-end VPN test: three namespaces joined by veth pairs.
//
//	device (wireguard-go client)  --10.10.1.0/24, fd10:1::/64--  server (tariq)  --10.10.2.0/24, fd10:2::/64--  internet (HTTP, TCP sink)
//
// tariq runs in the server namespace with NAT out of its uplink; a second
// device namespace holds another family member's client.

type vpnLab struct {
	t              *testing.T
	bin, conf, dir string
	server, inet   *testutil.NetNS
	daemon         *exec.Cmd
	daemonOut      *bytes.Buffer
	iface          string
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func newVPNLab(t *testing.T) *vpnLab {
	return newVPNLabWith(t, "relay:\n  enabled: false\n")
}

// newVPNLabWith is newVPNLab with extra YAML for the relay section.
func newVPNLabWith(t *testing.T, relayYAML string) *vpnLab {
	testutil.RequireRoot(t)
	for _, b := range []string{"wg", "ip", "nft", "busybox", "curl"} {
		testutil.RequireBinary(t, b)
	}
	bin, err := buildTariq()
	if err != nil {
		t.Fatal(err)
	}
	var rnd [3]byte
	rand.Read(rnd[:])
	l := &vpnLab{t: t, bin: bin, dir: t.TempDir(), iface: "tq" + hex.EncodeToString(rnd[:])}
	l.server, l.inet = testutil.NewNetNS(t), testutil.NewNetNS(t)
	testutil.Veth(t, testutil.VethEnd{NS: l.server, Name: "up0", Addrs: []netip.Prefix{pfx("10.10.2.1/24"), pfx("fd10:2::1/64")}},
		testutil.VethEnd{NS: l.inet, Name: "inet0", Addrs: []netip.Prefix{pfx("10.10.2.2/24"), pfx("fd10:2::2/64")}})
	l.server.Run("ip", "route", "add", "default", "via", "10.10.2.2")
	l.server.Run("ip", "-6", "route", "add", "default", "via", "fd10:2::2")

	l.conf = filepath.Join(l.dir, "tariq.yaml")
	os.WriteFile(l.conf, []byte(fmt.Sprintf(`server:
  public_host: 10.10.1.1
  data_dir: %[1]s/data
  admin_socket: %[1]s/admin.sock
vpn:
  interface: %[2]s
  allow_destinations: [10.10.2.0/24, "fd10:2::/64"]   # the lab's internet host has private addresses
web:
  enabled: false
%[3]s`, l.dir, l.iface, relayYAML)), 0o600)
	l.serveInternet()
	l.startDaemon()
	return l
}

// serveInternet runs, in the internet namespace, an HTTP server that
// answers with the address it sees the request come from, and a TCP sink
// that reads until EOF and answers "<bytes> <remote address>".
func (l *vpnLab) serveInternet() {
	var web, sink net.Listener
	if err := l.inet.Do(func() (err error) {
		if web, err = net.Listen("tcp", ":80"); err != nil {
			return err
		}
		sink, err = net.Listen("tcp", ":5001")
		return err
	}); err != nil {
		l.t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "you are %s\n", r.RemoteAddr)
	})}
	go srv.Serve(web)
	go func() {
		for {
			c, err := sink.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				n, _ := io.Copy(io.Discard, c)
				fmt.Fprintf(c, "%d %s\n", n, c.RemoteAddr())
			}()
		}
	}()
	l.t.Cleanup(func() { srv.Close(); sink.Close() })
}

func (l *vpnLab) startDaemon() {
	l.daemonOut = &bytes.Buffer{}
	cmd := l.server.Command(l.bin, "serve", "--config", l.conf)
	cmd.Stdout, cmd.Stderr = l.daemonOut, l.daemonOut
	if err := cmd.Start(); err != nil {
		l.t.Fatal(err)
	}
	l.daemon = cmd
	l.t.Cleanup(func() {
		if l.daemon == cmd && cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
		if l.t.Failed() {
			l.t.Logf("daemon output:\n%s", l.daemonOut)
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		if code, _, _ := tariq(l.t, "status", "--config", l.conf); code == 0 {
			return
		}
		if cmd.ProcessState != nil || time.Now().After(deadline) {
			l.t.Fatalf("daemon did not come up:\n%s", l.daemonOut)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (l *vpnLab) stopDaemon() {
	l.daemon.Process.Signal(syscall.SIGTERM)
	if err := l.daemon.Wait(); err != nil {
		l.t.Fatalf("daemon exit: %v\n%s", err, l.daemonOut)
	}
}

// device is one family member's machine: a namespace on the server's
// network running upstream wireguard-go, configured from tariq's export.
type device struct {
	l    *vpnLab
	ns   *testutil.NetNS
	name string // peer name
	conf string // the exported wg-quick config
}

// addDevice adds peer name with the CLI and brings up a device namespace
// on subnet 10.10.<net>.0/24 behind the server, which dials the server's
// public address 10.10.1.1 with the exported config.
func (l *vpnLab) addDevice(name string, subnet int) *device {
	code, out, errOut := tariq(l.t, "peer", "add", name, "--config", l.conf)
	if code != 0 {
		l.t.Fatalf("peer add %s: %s", name, errOut)
	}
	d := &device{l: l, ns: testutil.NewNetNS(l.t), name: name, conf: out}
	srvAddr, devAddr := fmt.Sprintf("10.10.%d.1", subnet), fmt.Sprintf("10.10.%d.2", subnet)
	testutil.Veth(l.t, testutil.VethEnd{NS: d.ns, Name: "eth0", Addrs: []netip.Prefix{pfx(devAddr + "/24")}},
		testutil.VethEnd{NS: l.server, Name: "dev" + name, Addrs: []netip.Prefix{pfx(srvAddr + "/24")}})
	d.ns.Run("ip", "route", "add", "default", "via", srvAddr)
	d.up()
	return d
}

// up brings wireguard-go up the way wg-quick would: strip the wg-quick
// keys, `wg setconf`, addresses, MTU, and policy routing for 0.0.0.0/0 and
// ::/0 (fwmark 51820, table 51820, suppress_prefixlength 0).
func (d *device) up() {
	t := d.l.t
	wgGo := testutil.BuildWireGuardGo(t)
	ifname := "wg" + d.name
	sock := d.ns.WireGuardSocket(ifname)
	os.Remove(sock)
	d.ns.Start(wgGo, "-f", ifname)
	if err := testutil.WaitListening(sock, 10*time.Second); err != nil {
		t.Fatalf("wireguard-go did not open its UAPI socket: %v", err)
	}
	stripped := filepath.Join(d.l.dir, d.name+".stripped.conf")
	var ifaceLines, addrs []string
	section := ""
	for _, line := range strings.Split(d.conf, "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "[") {
			section = line
		}
		k, v, _ := strings.Cut(line, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if section == "[Interface]" && (k == "Address" || k == "DNS" || k == "MTU") {
			if k == "Address" {
				addrs = strings.Split(v, ",")
			}
			continue // wg-quick-only keys (what `wg-quick strip` removes)
		}
		ifaceLines = append(ifaceLines, line)
	}
	os.WriteFile(stripped, []byte(strings.Join(ifaceLines, "\n")+"\n"), 0o600)
	d.ns.Run("wg", "setconf", ifname, stripped)
	d.ns.Run("wg", "set", ifname, "fwmark", "51820")
	d.routeAll(ifname, addrs)
}

// routeAll gives ifname its addresses and MTU and sends everything through
// it the way wg-quick does for 0.0.0.0/0 and ::/0: a table 51820 default
// route, taken by every packet not marked 51820 (the tunnel's own), with
// the main table's more specific routes kept (suppress_prefixlength 0).
func (d *device) routeAll(ifname string, addrs []string) {
	for _, a := range addrs {
		d.ns.Run("ip", "addr", "add", strings.TrimSpace(a), "dev", ifname)
	}
	d.ns.Run("ip", "link", "set", "mtu", "1420", "up", "dev", ifname)
	for _, fam := range []string{"-4", "-6"} {
		def := "0.0.0.0/0"
		if fam == "-6" {
			def = "::/0"
		}
		d.ns.Run("ip", fam, "route", "add", def, "dev", ifname, "table", "51820")
		d.ns.Run("ip", fam, "rule", "add", "not", "fwmark", "51820", "table", "51820")
		d.ns.Run("ip", fam, "rule", "add", "table", "main", "suppress_prefixlength", "0")
	}
}

// fetch GETs url from the device (curl, bounded) and returns the body.
func (d *device) fetch(url string) (string, error) {
	return d.ns.TryRun("curl", "-sSg", "--max-time", "5", url)
}

// transfer sends n bytes to the internet host's sink over TCP from the
// device and returns its answer "<bytes> <remote>".
func (d *device) transfer(addr string, n int) (string, error) {
	var c net.Conn
	if err := d.ns.Do(func() (err error) {
		c, err = net.DialTimeout("tcp", addr, 5*time.Second)
		return err
	}); err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.CopyN(c, rand.Reader, int64(n)); err != nil {
		return "", err
	}
	c.(*net.TCPConn).CloseWrite()
	b, err := io.ReadAll(c)
	return strings.TrimSpace(string(b)), err
}

func (d *device) mustReach(label string) {
	t := d.l.t
	t.Helper()
	// After a server restart the client still holds session keys the new
	// process does not know; WireGuard clients start a new handshake once
	// they have heard nothing for keepalive + rekey timeouts (about 15 s).
	start := time.Now()
	for {
		_, err := d.ns.TryRun("busybox", "ping", "-c", "1", "-W", "2", "-w", "3", "10.77.0.1")
		if err == nil {
			break
		}
		if time.Since(start) > 45*time.Second {
			t.Fatalf("%s: %s cannot ping the server's tunnel address: %v", label, d.name, err)
		}
	}
	if waited := time.Since(start); waited > 5*time.Second {
		t.Logf("%s: %s got through after %s", label, d.name, waited.Round(time.Second))
	}
	body, err := d.fetch("http://10.10.2.2/")
	if err != nil || !strings.Contains(body, "you are 10.10.2.1:") {
		t.Fatalf("%s: %s HTTP over IPv4: %q %v (want the server's uplink address as source)", label, d.name, body, err)
	}
	body, err = d.fetch("http://[fd10:2::2]/")
	if err != nil || !strings.Contains(body, "you are [fd10:2::1]:") {
		t.Fatalf("%s: %s HTTP over IPv6: %q %v", label, d.name, body, err)
	}
}

func (d *device) mustNotReach(label string) {
	t := d.l.t
	t.Helper()
	if body, err := d.fetch("http://10.10.2.2/"); err == nil {
		t.Fatalf("%s: %s still gets through: %q", label, d.name, body)
	}
}

func TestVPNEndToEnd(t *testing.T) {
	l := newVPNLab(t)
	phone := l.addDevice("phone", 1)
	tablet := l.addDevice("tablet", 3)

	phone.mustReach("first connection")
	tablet.mustReach("first connection")

	// A TCP transfer through the tunnel, NATed out of the uplink.
	const size = 8 << 20
	for _, addr := range []string{"10.10.2.2:5001", "[fd10:2::2]:5001"} {
		got, err := phone.transfer(addr, size)
		want := fmt.Sprintf("%d ", size)
		if err != nil || !strings.HasPrefix(got, want) || !(strings.Contains(got, "10.10.2.1:") || strings.Contains(got, "[fd10:2::1]:")) {
			t.Fatalf("TCP transfer to %s: %q %v", addr, got, err)
		}
	}

	// The handshake is visible on both sides: wg on the device, tariq
	// status (and `wg show` through tariq's UAPI socket) on the server.
	if hs := phone.ns.Run("wg", "show", "wgphone", "latest-handshakes"); strings.HasSuffix(strings.TrimSpace(hs), "\t0") {
		t.Errorf("device reports no handshake: %q", hs)
	}
	if out := l.server.Run("wg", "show", l.iface); !strings.Contains(out, "latest handshake") || !strings.Contains(out, "listening port: 51820") {
		t.Errorf("wg show %s on the server:\n%s", l.iface, out)
	}
	_, status, _ := tariq(t, "status", "--config", l.conf)
	if !strings.Contains(status, "phone") || strings.Contains(statusLine(status, "phone"), "never") {
		t.Errorf("status does not show phone's handshake:\n%s", status)
	}

	// A restart brings back the same key, peers and addresses: the
	// devices get through again with their configs unchanged.
	l.stopDaemon()
	if out := l.server.Run("nft", "list", "tables"); strings.Contains(out, "tariq") {
		t.Errorf("nft table left after stop:\n%s", out)
	}
	l.startDaemon()
	phone.mustReach("after restart")
	tablet.mustReach("after restart")

	// Removing one peer cuts it off at once; the other keeps flowing.
	if code, _, errOut := tariq(t, "peer", "remove", "phone", "--config", l.conf); code != 0 {
		t.Fatalf("peer remove: %s", errOut)
	}
	phone.mustNotReach("after remove")
	tablet.mustReach("after removing phone")

	// And it stays removed across a restart.
	l.stopDaemon()
	l.startDaemon()
	phone.mustNotReach("removed, after restart")
	tablet.mustReach("after the second restart")
}

// statusLine returns the line of status output about peer.
func statusLine(status, peer string) string {
	for _, line := range strings.Split(status, "\n") {
		if strings.HasPrefix(line, peer+" ") {
			return line
		}
	}
	return ""
}
