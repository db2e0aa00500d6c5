package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/tariq-vpn/tariq/internal/testutil"
)

// The lab every end-to-end test of the real binary builds: tariq serving in
// a network namespace of its own, family devices in namespaces of theirs
// running independent clients (upstream wireguard-go, amneziawg-go)
// configured from what tariq exports, and an "internet" host behind the
// server's uplink.
//
//	devices 10.10.N.2 ──────────────────────── 10.10.N.1 server (tariq) 10.10.2.1 ── 10.10.2.2 internet
//	                                                              fd10:2::1 ── fd10:2::2
//	or, with an ISP (labOptions.ISP):
//	devices 10.10.N.2 ── 10.10.N.1 ISP (NAT, a censor) 10.10.1.2 ── 10.10.1.1 server …
//
// Without an ISP each device has a link of its own to the server; the
// first device's is 10.10.1.0/24, which holds the server's public address
// 10.10.1.1 that every device dials. The internet host answers HTTP on :80
// with the address it sees ("you are …"), sinks TCP on :5001 (answering
// "<bytes> <remote>" at EOF), sources TCP on :5002 (sends the number of
// bytes asked for on a line), echoes UDP on :5003, and runs iperf3 servers
// on demand.
//
// With labOptions.ACME the server is a DNS name, labName, with a
// certificate from Pebble (ACME), as a server with a domain is:
//
//	Pebble (in the test process, the host's namespace)
//	  directory  https://127.0.0.1:P/dir, reached from the server's
//	             namespace through a forwarder listening there on 127.0.0.1:P
//	  validation Pebble's DNS answers labName with 127.0.0.1, where
//	             forwarders on its HTTP-01 and TLS-ALPN-01 ports reach the
//	             server's 10.10.1.1:80 and :443 from the ISP's namespace
//	             (the server's own without one): the real challenges,
//	             answered by the daemon as on a VPS
//
// and everything of the lab's that dials the server resolves labName
// itself (labResolve), never through the host's resolver: the devices'
// WireGuard clients, as wg(8) resolves an endpoint's name before it
// configures the device; Chromium, by its host rules; Go clients, by
// lab.dialer.
//
// A test states only what differs: config keys (labOptions.Config), an ISP,
// a domain with ACME, or the server alone (the invite page).

// labServer is the server's public address, which devices dial.
const labServer = "10.10.1.1"

// labName is the server's DNS name in a lab with labOptions.ACME, which
// the lab resolves to labServer (labResolve).
const labName = "tariq.test"

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// labOptions say how a lab differs from the plain one.
type labOptions struct {
	// Config holds config keys by path ("vpn.extra_ports") with YAML
	// values ("[443]"), over the lab's own: server.public_host 10.10.1.1,
	// the data directory, admin socket and interface of the test's own,
	// relay.enabled and web.enabled false.
	Config map[string]string
	// ISP puts a namespace between the devices and the server that
	// masquerades them, as a carrier's NAT does; censors go there.
	ISP bool
	// Isolated is the server namespace alone: no uplink, no internet host,
	// no devices (the invite page's test).
	Isolated bool
	// ServeArgs are added to `tariq serve`'s command line.
	ServeArgs []string
	// ACME makes the server labName, with tls.mode acme and Pebble as its
	// CA (see the top of this file); newLab returns once the daemon serves
	// Pebble's certificate.
	ACME bool
}

// lab is one end-to-end topology with its daemon.
type lab struct {
	// t is the test the lab's helpers report to: root, or one of its
	// subtests (reportTo). What the lab starts lives as long as root.
	t, root               *testing.T
	bin, conf, dir, iface string
	server, inet, isp     *testutil.NetNS
	serveArgs             []string
	daemon                *daemonProc
	subnets               int // device links made so far
	// host is server.public_host: labServer, or labName with ACME.
	host string
	// With ACME: the CA, a pool of its root alone, and the certificate the
	// daemon got from it.
	pebble *testutil.Pebble
	roots  *x509.CertPool
	cert   *x509.Certificate
	// challenges count the connections Pebble's validation made, by
	// challenge.
	challenges map[string]func() int64
}

// newLab builds the topology, writes the config, starts the internet
// host's services and the daemon, and waits until it answers.
func newLab(t *testing.T, opts labOptions) *lab {
	t.Helper()
	testutil.RequireRoot(t)
	if !opts.Isolated {
		for _, b := range []string{"wg", "ip", "nft", "busybox", "curl"} {
			testutil.RequireBinary(t, b)
		}
	}
	bin, err := buildTariq()
	if err != nil {
		t.Fatal(err)
	}
	var rnd [3]byte
	rand.Read(rnd[:])
	l := &lab{t: t, root: t, bin: bin, dir: t.TempDir(), iface: "tq" + hex.EncodeToString(rnd[:]), serveArgs: opts.ServeArgs, host: labServer}
	l.server = testutil.NewNetNS(t)
	if !opts.Isolated {
		l.inet = testutil.NewNetNS(t)
		testutil.Veth(t, testutil.VethEnd{NS: l.server, Name: "up0", Addrs: []netip.Prefix{pfx("10.10.2.1/24"), pfx("fd10:2::1/64")}},
			testutil.VethEnd{NS: l.inet, Name: "inet0", Addrs: []netip.Prefix{pfx("10.10.2.2/24"), pfx("fd10:2::2/64")}})
		l.server.Run("ip", "route", "add", "default", "via", "10.10.2.2")
		l.server.Run("ip", "-6", "route", "add", "default", "via", "fd10:2::2")
		l.serveInternet()
	}
	if opts.ISP {
		l.newISP()
	}
	keys := map[string]string{
		"server.public_host":  labServer,
		"server.data_dir":     filepath.Join(l.dir, "data"),
		"server.admin_socket": filepath.Join(l.dir, "admin.sock"),
		"vpn.interface":       l.iface,
		// The lab's internet host has private addresses, which members
		// may not reach by default.
		"vpn.allow_destinations": `[10.10.2.0/24, "fd10:2::/64"]`,
		"relay.enabled":          "false",
		"web.enabled":            "false",
	}
	if opts.ACME {
		l.startPebble()
		l.host = labName
		keys["server.public_host"] = labName
		keys["tls.mode"] = "acme"
		keys["tls.email"] = "admin@" + labName
		keys["tls.acme_ca"] = l.pebble.DirectoryURL
		keys["tls.acme_ca_roots"] = l.pebble.RootsFile
	}
	for k, v := range opts.Config {
		keys[k] = v
	}
	l.conf = filepath.Join(l.dir, "tariq.yaml")
	if err := os.WriteFile(l.conf, []byte(labYAML(keys)), 0o600); err != nil {
		t.Fatal(err)
	}
	l.startDaemon()
	if opts.ACME {
		l.waitACME()
	}
	return l
}

// startPebble starts Pebble and its forwarders (see the top of this file).
func (l *lab) startPebble() {
	t := l.t
	t.Helper()
	l.pebble = testutil.StartPebble(t, testutil.PebbleOptions{})
	listen := func(ns *testutil.NetNS, addr string) net.Listener {
		var ln net.Listener
		do := func() (err error) { ln, err = net.Listen("tcp", addr); return err }
		var err error
		if ns == nil {
			err = do()
		} else {
			err = ns.Do(do)
		}
		if err != nil {
			t.Fatalf("pebble forwarder on %s: %v", addr, err)
		}
		return ln
	}
	// The directory, where the daemon finds it: the same address in the
	// server's namespace.
	u, err := url.Parse(l.pebble.DirectoryURL)
	if err != nil {
		t.Fatal(err)
	}
	testutil.ForwardTCP(t, listen(l.server, u.Host), func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", u.Host)
	})
	// The challenges, to the server's public address from the internet
	// side.
	from := l.server
	if l.isp != nil {
		from = l.isp
	}
	l.challenges = map[string]func() int64{}
	for name, fw := range map[string]struct {
		port int
		to   string
	}{"http-01": {l.pebble.HTTPPort, labServer + ":80"}, "tls-alpn-01": {l.pebble.TLSPort, labServer + ":443"}} {
		to := fw.to
		l.challenges[name] = testutil.ForwardTCP(t, listen(nil, net.JoinHostPort("127.0.0.1", strconv.Itoa(fw.port))), func(ctx context.Context) (c net.Conn, err error) {
			err = from.Do(func() error {
				var d net.Dialer
				c, err = d.DialContext(ctx, "tcp", to)
				return err
			})
			return c, err
		})
	}
	l.roots = l.pebble.RootPool()
}

// waitACME waits until the daemon serves a certificate for labName that
// a client trusting Pebble's root alone accepts, on labServer:443 from the
// internet side, and keeps it.
func (l *lab) waitACME() {
	t := l.t
	t.Helper()
	start := time.Now()
	dial := l.dialer(l.server)
	if l.isp != nil {
		dial = l.dialer(l.isp)
	}
	var err error
	// About half a second; certmagic retries a failed first issuance a
	// minute later, which the deadline leaves room for.
	for deadline := start.Add(90 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var c net.Conn
		if c, err = dial(ctx, "tcp", labName+":443"); err == nil {
			tc := tls.Client(c, &tls.Config{ServerName: labName, RootCAs: l.roots, NextProtos: []string{"http/1.1"}})
			if err = tc.HandshakeContext(ctx); err == nil {
				l.cert = tc.ConnectionState().PeerCertificates[0]
			}
			tc.Close()
		}
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no certificate from Pebble for %s within 90 s: %v\n%s", labName, err, l.daemon.out)
		}
	}
	// Pebble validated a real challenge: its validation authority
	// connected to the server.
	var validated []string
	for _, name := range slices.Sorted(maps.Keys(l.challenges)) {
		if n := l.challenges[name](); n > 0 {
			validated = append(validated, fmt.Sprintf("%s (%d connections)", name, n))
		}
	}
	if len(validated) == 0 {
		t.Fatalf("a certificate from Pebble, but its validation authority never connected to the server")
	}
	t.Logf("certificate from Pebble for %s in %s, validated over %s", labName, time.Since(start).Round(100*time.Millisecond),
		strings.Join(validated, ", "))
}

// dialer dials from ns, resolving labName as the lab's own DNS would.
func (l *lab) dialer(ns *testutil.NetNS) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (c net.Conn, err error) {
		addr = labResolve(addr)
		err = ns.Do(func() error {
			var d net.Dialer
			c, err = d.DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
}

// labResolve turns labName:port into labServer:port; any other host:port
// stays as it is.
func labResolve(hostPort string) string {
	if host, port, err := net.SplitHostPort(hostPort); err == nil && host == labName {
		return net.JoinHostPort(labServer, port)
	}
	return hostPort
}

// labYAML writes keys, by dotted path, as nested YAML.
func labYAML(keys map[string]string) string {
	paths := make([][]string, 0, len(keys))
	for k := range keys {
		paths = append(paths, strings.Split(k, "."))
	}
	slices.SortFunc(paths, slices.Compare)
	var b strings.Builder
	var prev []string
	for _, p := range paths {
		common := 0
		for common < len(prev)-1 && common < len(p)-1 && prev[common] == p[common] {
			common++
		}
		for i := common; i < len(p)-1; i++ {
			fmt.Fprintf(&b, "%s%s:\n", strings.Repeat("  ", i), p[i])
		}
		fmt.Fprintf(&b, "%s%s: %s\n", strings.Repeat("  ", len(p)-1), p[len(p)-1], keys[strings.Join(p, ".")])
		prev = p
	}
	return b.String()
}

// newISP puts the ISP namespace in front of the server: 10.10.1.2 to the
// server's 10.10.1.1, masquerading what it forwards there.
func (l *lab) newISP() {
	t := l.t
	l.isp = testutil.NewNetNS(t)
	testutil.Veth(t, testutil.VethEnd{NS: l.isp, Name: "srv0", Addrs: []netip.Prefix{pfx("10.10.1.2/24")}},
		testutil.VethEnd{NS: l.server, Name: "isp0", Addrs: []netip.Prefix{pfx(labServer + "/24")}})
	if err := l.isp.Do(func() error { return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644) }); err != nil {
		t.Fatal(err)
	}
	cmd := l.isp.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(`table ip isp_nat {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "srv0" masquerade
	}
}
`)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ISP NAT: %v: %s", err, out)
	}
	l.subnets = 2 // 10.10.1.0/24 is the ISP's link to the server
}

// serveInternet runs the internet host's HTTP server, TCP sink and TCP
// source.
func (l *lab) serveInternet() {
	var web, sink, source net.Listener
	var echo net.PacketConn
	if err := l.inet.Do(func() (err error) {
		if web, err = net.Listen("tcp", ":80"); err != nil {
			return err
		}
		if sink, err = net.Listen("tcp", ":5001"); err != nil {
			return err
		}
		if echo, err = net.ListenPacket("udp", ":5003"); err != nil {
			return err
		}
		source, err = net.Listen("tcp", ":5002")
		return err
	}); err != nil {
		l.t.Fatal(err)
	}
	go testutil.UDPEcho(echo)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "you are %s\n", r.RemoteAddr)
	})}
	go srv.Serve(web)
	serve := func(ln net.Listener, handle func(c net.Conn)) {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(2 * time.Minute))
				handle(c)
			}()
		}
	}
	go serve(sink, func(c net.Conn) {
		n, _ := io.Copy(io.Discard, c)
		fmt.Fprintf(c, "%d %s\n", n, c.RemoteAddr())
	})
	go serve(source, func(c net.Conn) {
		line, err := bufio.NewReader(io.LimitReader(c, 32)).ReadString('\n')
		n, err2 := strconv.ParseInt(strings.TrimSpace(line), 10, 64)
		if err != nil || err2 != nil || n < 0 || n > 1<<30 {
			return
		}
		io.CopyN(c, zeros{}, n)
	})
	l.root.Cleanup(func() { srv.Close(); sink.Close(); source.Close(); echo.Close() })
}

// zeros reads as endless zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// iperfServer starts `iperf3 -s` on port in the internet namespace and
// returns once it listens.
func (l *lab) iperfServer(port int) {
	t := l.t
	t.Helper()
	testutil.RequireBinary(t, "iperf3")
	l.inet.Start("iperf3", "-s", "-p", strconv.Itoa(port))
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if out, _ := l.inet.TryRun("ss", "-Htln", "sport", "=", ":"+strconv.Itoa(port)); strings.Contains(out, "LISTEN") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("iperf3 -s -p %d is not listening", port)
		}
	}
}

// daemonProc is one run of `tariq serve`.
type daemonProc struct {
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan struct{} // closed once it exited
	err  error         // how it exited, once done
}

// startDaemon starts `tariq serve` in the server namespace and waits until
// `tariq status` answers.
func (l *lab) startDaemon() {
	t := l.t
	t.Helper()
	p := &daemonProc{out: &lockedBuffer{}, done: make(chan struct{})}
	p.cmd = l.server.Command(append([]string{l.bin, "serve", "--config", l.conf}, l.serveArgs...)...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	l.daemon = p
	l.root.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
		if l.root.Failed() {
			l.root.Logf("daemon (pid %d) output:\n%s", p.cmd.Process.Pid, p.out)
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		if code, _, _ := tariq(t, "status", "--config", l.conf); code == 0 {
			return
		}
		select {
		case <-p.done:
			t.Fatalf("the daemon exited (%v):\n%s", p.err, p.out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the daemon did not come up:\n%s", p.out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stopDaemon stops the daemon as systemd would (SIGTERM) and wants a clean
// exit within 20 s.
func (l *lab) stopDaemon() {
	t := l.t
	t.Helper()
	p := l.daemon
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
		t.Fatalf("the daemon did not exit within 20 s of SIGTERM:\n%s", p.out)
	}
	if p.err != nil {
		t.Fatalf("daemon exit after SIGTERM: %v\n%s", p.err, p.out)
	}
}

// killDaemon kills the daemon outright (kill -9): no shutdown runs.
func (l *lab) killDaemon() {
	l.daemon.cmd.Process.Kill()
	<-l.daemon.done
}

// cli runs `tariq args… --config <the lab's>` in-process and returns its
// stdout; it fails the test unless it exits 0.
func (l *lab) cli(args ...string) string {
	l.t.Helper()
	code, out, errOut := tariq(l.t, append(args, "--config", l.conf)...)
	if code != 0 {
		l.t.Fatalf("tariq %s: exit %d: %s", strings.Join(args, " "), code, errOut)
	}
	return out
}

// selfSigned returns the daemon's self-signed certificate (tls.mode
// self-signed) and a pool trusting only it.
func (l *lab) selfSigned() (*x509.Certificate, *x509.CertPool) {
	t := l.t
	t.Helper()
	pemBytes, err := os.ReadFile(filepath.Join(l.dir, "data", "tls", "self-signed.crt"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(pemBytes)
	if blk == nil {
		t.Fatal("no PEM in self-signed.crt")
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	return cert, roots
}

// metrics scrapes the daemon's metrics endpoint (server.metrics_listen's
// default, in the server namespace) and parses it.
func (l *lab) metrics() map[string]*dto.MetricFamily {
	t := l.t
	t.Helper()
	text := l.server.Run("curl", "-sS", "--max-time", "5", "http://127.0.0.1:9477/metrics")
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("metrics do not parse: %v", err)
	}
	return fams
}

// metricValue returns the value of the sample of family name whose labels
// include want.
func metricValue(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f, ok := fams[name]
	if !ok {
		return 0, false
	}
	for _, m := range f.GetMetric() {
		match := 0
		for _, lp := range m.GetLabel() {
			if v, ok := want[lp.GetName()]; ok && v == lp.GetValue() {
				match++
			}
		}
		if match != len(want) {
			continue
		}
		if m.Gauge != nil {
			return m.Gauge.GetValue(), true
		}
		return m.Counter.GetValue(), true
	}
	return 0, false
}

// nsClient is an HTTPS client from inside ns that connects to addr from
// the address src (each address has its own rate limit) whatever the URL
// says, and trusts only roots. It does not follow redirects.
func nsClient(t *testing.T, ns *testutil.NetNS, src, addr string, roots *x509.CertPool) *http.Client {
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots},
		DialContext: func(ctx context.Context, _, _ string) (c net.Conn, err error) {
			err = ns.Do(func() error {
				d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
				c, err = d.DialContext(ctx, "tcp", addr)
				return err
			})
			return c, err
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// device is one family member's machine: a namespace on its own link,
// behind the ISP or straight to the server, with wg-quick's policy
// routing in place (everything not marked 51820 looks in table 51820
// first, the main table's specific routes kept), so that a client brought
// up with up takes all its traffic.
type device struct {
	l     *lab
	ns    *testutil.NetNS
	name  string // its peer's name; its interface is wg<name>
	conf  string // the wg-quick config its client runs
	added string // what peer add said on stderr

	client *exec.Cmd // the running client, if up
	sock   string    // its UAPI socket
}

// addDevice adds peer name with `tariq peer add name flags…` and a device
// namespace for it holding the exported config; it brings no client up.
func (l *lab) addDevice(name string, flags ...string) *device {
	l.t.Helper()
	code, out, errOut := tariq(l.t, append([]string{"peer", "add", name, "--config", l.conf}, flags...)...)
	if code != 0 {
		l.t.Fatalf("peer add %s %v: %s", name, flags, errOut)
	}
	d := l.newDevice(name)
	d.conf, d.added = out, errOut
	return d
}

// newDevice makes a device namespace on the next link; its config is the
// caller's to set.
func (l *lab) newDevice(name string) *device {
	t := l.t
	t.Helper()
	if l.inet == nil {
		t.Fatal("an isolated lab has no device links")
	}
	l.subnets++
	gw, addr := fmt.Sprintf("10.10.%d.1", l.subnets), fmt.Sprintf("10.10.%d.2", l.subnets)
	if l.isp == nil && l.subnets == 2 {
		l.subnets++ // the uplink's
		gw, addr = fmt.Sprintf("10.10.%d.1", l.subnets), fmt.Sprintf("10.10.%d.2", l.subnets)
	}
	router := l.server
	if l.isp != nil {
		router = l.isp
	}
	d := &device{l: l, ns: testutil.NewNetNS(l.root), name: name}
	testutil.Veth(t, testutil.VethEnd{NS: d.ns, Name: "eth0", Addrs: []netip.Prefix{pfx(addr + "/24")}},
		testutil.VethEnd{NS: router, Name: "dev" + name, Addrs: []netip.Prefix{pfx(gw + "/24")}})
	d.ns.Run("ip", "route", "add", "default", "via", gw)
	for _, fam := range []string{"-4", "-6"} {
		d.ns.Run("ip", fam, "rule", "add", "not", "fwmark", "51820", "table", "51820")
		d.ns.Run("ip", fam, "rule", "add", "table", "main", "suppress_prefixlength", "0")
	}
	return d
}

func (d *device) ifname() string { return "wg" + d.name }

// amnezia reports whether d's config is the AmneziaWG form.
func (d *device) amnezia() bool { return confValues(d.conf)["Interface.Jc"] != "" }

// up starts a fresh client for d.conf, as wg-quick or awg-quick would:
// upstream wireguard-go given the config by `wg setconf` (the wg-quick
// keys stripped), or amneziawg-go given the set awg(8) sends (wg(8)'s keys
// plus jc, jmin, jmax, s1, s2, h1-h4: amneziawg-go device/uapi.go); then
// its addresses, MTU, and the table 51820 default routes that take all
// traffic. Both clients mark their own packets 51820.
func (d *device) up() {
	t := d.l.t
	t.Helper()
	if d.client != nil {
		t.Fatalf("%s: a client is already up", d.name)
	}
	ifname, amnezia := d.ifname(), d.amnezia()
	bin, sock := testutil.BuildWireGuardGo(t), d.ns.WireGuardSocket(ifname)
	if amnezia {
		bin, sock = testutil.BuildAmneziaWGGo(t), d.ns.AmneziaWGSocket(ifname)
	}
	os.Remove(sock) // a killed client's
	d.client, d.sock = d.ns.Start(bin, "-f", ifname), sock
	if err := testutil.WaitListening(sock, 10*time.Second); err != nil {
		d.down()
		t.Fatalf("%s did not open its UAPI socket: %v", bin, err)
	}
	v := confValues(d.conf)
	if amnezia {
		var set strings.Builder
		fmt.Fprintf(&set, "private_key=%s\nfwmark=51820\n", hexKey(t, v["Interface.PrivateKey"]))
		for _, k := range []string{"Jc", "Jmin", "Jmax", "S1", "S2", "H1", "H2", "H3", "H4"} {
			if v["Interface."+k] == "" {
				t.Fatalf("%s: the exported config lacks %s:\n%s", d.name, k, d.conf)
			}
			fmt.Fprintf(&set, "%s=%s\n", strings.ToLower(k), v["Interface."+k])
		}
		fmt.Fprintf(&set, "replace_peers=true\npublic_key=%s\npreshared_key=%s\nendpoint=%s\npersistent_keepalive_interval=%s\n",
			hexKey(t, v["Peer.PublicKey"]), hexKey(t, v["Peer.PresharedKey"]), labResolve(v["Peer.Endpoint"]), v["Peer.PersistentKeepalive"])
		for _, a := range strings.Split(v["Peer.AllowedIPs"], ",") {
			fmt.Fprintf(&set, "allowed_ip=%s\n", strings.TrimSpace(a))
		}
		testutil.AmneziaWGSet(t, sock, set.String())
	} else {
		stripped := filepath.Join(d.l.dir, d.name+".stripped.conf")
		if err := os.WriteFile(stripped, []byte(resolveEndpoint(wgStrip(d.conf))), 0o600); err != nil {
			t.Fatal(err)
		}
		d.ns.Run("wg", "setconf", ifname, stripped)
		d.ns.Run("wg", "set", ifname, "fwmark", "51820")
	}
	for _, a := range strings.Split(v["Interface.Address"], ",") {
		d.ns.Run("ip", "addr", "add", strings.TrimSpace(a), "dev", ifname)
	}
	d.ns.Run("ip", "link", "set", "mtu", "1420", "up", "dev", ifname)
	d.ns.Run("ip", "-4", "route", "add", "0.0.0.0/0", "dev", ifname, "table", "51820")
	d.ns.Run("ip", "-6", "route", "add", "::/0", "dev", ifname, "table", "51820")
}

// wgStrip removes the wg-quick-only keys (what `wg-quick strip` removes)
// from a config, for `wg setconf`.
func wgStrip(conf string) string {
	var lines []string
	section := ""
	for _, line := range strings.Split(conf, "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "[") {
			section = line
		}
		k, _, _ := strings.Cut(line, "=")
		switch strings.TrimSpace(k) {
		case "Address", "DNS", "MTU", "Table", "PreUp", "PostUp", "PreDown", "PostDown", "SaveConfig":
			if section == "[Interface]" {
				continue
			}
		}
		lines = append(lines, line)
	}
	return strings.Join(lines, "\n") + "\n"
}

// resolveEndpoint resolves labName in a config's Endpoint (labResolve),
// as wg(8) resolves the name itself before it hands the device an
// address: the lab's names are in no resolver the device's namespace can
// reach.
func resolveEndpoint(conf string) string {
	lines := strings.Split(conf, "\n")
	for i, line := range lines {
		if k, v, ok := strings.Cut(line, "="); ok && strings.TrimSpace(k) == "Endpoint" {
			lines[i] = "Endpoint = " + labResolve(strings.TrimSpace(v))
		}
	}
	return strings.Join(lines, "\n")
}

// down stops d's client and waits until its interface, and with it the
// table 51820 routes, is gone: the device's traffic takes the main table
// again.
func (d *device) down() {
	t := d.l.t
	t.Helper()
	if d.client == nil {
		return
	}
	d.client.Process.Kill()
	d.client.Wait()
	os.Remove(d.sock) // killed, it cannot remove it itself
	d.client = nil
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if _, err := d.ns.TryRun("ip", "link", "show", d.ifname()); err != nil {
			return
		}
	}
	t.Errorf("%s outlived its process", d.ifname())
}

// handshake returns the client's latest handshake with the server; zero
// if none. It fails the test if the client does not say.
func (d *device) handshake() time.Time {
	t := d.l.t
	t.Helper()
	var v string
	var ok bool
	if d.amnezia() {
		dump := testutil.AmneziaWGGet(t, d.sock)
		for _, line := range strings.Split(dump, "\n") {
			if s, found := strings.CutPrefix(line, "last_handshake_time_sec="); found {
				v, ok = s, true
			}
		}
	} else {
		_, v, ok = strings.Cut(strings.TrimSpace(d.ns.Run("wg", "show", d.ifname(), "latest-handshakes")), "\t")
	}
	sec, err := strconv.ParseInt(v, 10, 64)
	if !ok || err != nil {
		t.Fatalf("%s: no latest handshake in what its client reports (%q)", d.name, v)
	}
	if sec == 0 {
		return time.Time{}
	}
	return time.Unix(sec, 0)
}

// fetch GETs url from the device (curl, bounded) and returns the body.
func (d *device) fetch(url string) (string, error) {
	return d.ns.TryRun("curl", "-sSg", "--max-time", "5", url)
}

// dial connects to addr over TCP from the device. wireguard-go sends its
// handshake initiation at once and again after 5 s (REKEY_TIMEOUT): 7 s
// covers two.
func (d *device) dial(addr string) (net.Conn, error) {
	var c net.Conn
	err := d.ns.Do(func() (err error) {
		c, err = net.DialTimeout("tcp", addr, 7*time.Second)
		return err
	})
	return c, err
}

// transfer sends n bytes to the internet host's sink from the device,
// within the time given, and returns its answer "<bytes> <remote>".
func (d *device) transfer(addr string, n int, within time.Duration) (string, error) {
	c, err := d.dial(addr)
	if err != nil {
		return "", fmt.Errorf("no connection through the tunnel: %w", err)
	}
	return sinkTransfer(c.(*net.TCPConn), n, within)
}

// sinkTransfer sends n random bytes on c, a connection to the internet
// host's sink, within the time given, half-closes it and returns the
// sink's answer "<bytes> <remote>"; it closes c.
func sinkTransfer(c interface {
	net.Conn
	CloseWrite() error
}, n int, within time.Duration) (string, error) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(within))
	if _, err := io.CopyN(c, rand.Reader, int64(n)); err != nil {
		return "", fmt.Errorf("sending %d bytes: %w", n, err)
	}
	if err := c.CloseWrite(); err != nil {
		return "", fmt.Errorf("half-closing after %d bytes: %w", n, err)
	}
	b, err := io.ReadAll(c)
	return strings.TrimSpace(string(b)), err
}

// download asks the internet host's source for n bytes and reads them; it
// gives up once nothing arrived for stall, or after within in all, and
// returns how many bytes came.
func (d *device) download(n int64, stall, within time.Duration) (int64, error) {
	c, err := d.dial("10.10.2.2:5002")
	if err != nil {
		return 0, fmt.Errorf("no connection through the tunnel: %w", err)
	}
	defer c.Close()
	end := time.Now().Add(within)
	c.SetWriteDeadline(end)
	if _, err := fmt.Fprintf(c, "%d\n", n); err != nil {
		return 0, err
	}
	buf := make([]byte, 64<<10)
	var got int64
	for got < n {
		next := time.Now().Add(stall)
		if next.After(end) {
			next = end
		}
		c.SetReadDeadline(next)
		k, err := c.Read(buf)
		got += int64(k)
		if err != nil {
			return got, err
		}
	}
	return got, nil
}

// mustReach checks the device reaches the server's tunnel address, and the
// internet host over IPv4 and IPv6 through the server's NAT.
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

// mustNotReach checks the device's HTTP request to the internet host
// fails.
func (d *device) mustNotReach(label string) {
	t := d.l.t
	t.Helper()
	if body, err := d.fetch("http://10.10.2.2/"); err == nil {
		t.Fatalf("%s: %s still gets through: %q", label, d.name, body)
	}
}

// confValues reads a wg-quick file into "Section.Key" → value.
func confValues(conf string) map[string]string {
	out := map[string]string{}
	section := ""
	for _, line := range strings.Split(conf, "\n") {
		line, _, _ = strings.Cut(line, "#")
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "[") {
			section = strings.Trim(line, "[]")
			continue
		}
		if k, v, ok := strings.Cut(line, "="); ok {
			out[section+"."+strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return out
}

func hexKey(t *testing.T, b64 string) string {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(b) != 32 {
		t.Fatalf("key %q: %v", b64, err)
	}
	return hex.EncodeToString(b)
}

// reportTo has the lab's helpers (and its devices') report to t, a
// subtest of the lab's test running now, until the returned function puts
// the lab's own test back: a subtest's failure is then its own, and
// `go test -run` reruns it alone. What the helpers start meanwhile (the
// daemon, device namespaces) still lives as long as the lab's own test.
// Subtests of one lab run one at a time.
func (l *lab) reportTo(t *testing.T) (restore func()) {
	parent := l.t
	l.t = t
	return func() { l.t = parent }
}
