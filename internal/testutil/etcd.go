package testutil

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// EtcdVersion is the etcd server the tests run: built from the module
// proxy (testdata/etcd pins it and every dependency, with their sums).
const EtcdVersion = "v3.7.3"

// etcdModule is a module of its own whose main is etcd's: `go install
// go.etcd.io/etcd/server/v3@…` refuses (etcd's go.mod has replace
// directives), a module requiring it builds. The files are named *.txt so
// that the go command does not take testdata/etcd for a nested module.
//
//go:embed testdata/etcd/main.go.txt testdata/etcd/go.mod.txt testdata/etcd/go.sum.txt
var etcdModule embed.FS

var etcdBin struct {
	once sync.Once
	path string
	err  error
}

// BuildEtcd builds the etcd server (EtcdVersion) once per user and
// returns the binary's path. The binary is kept in the per-user test
// binary directory under a name that changes with the pinned module, so
// later runs reuse it without building; a build takes a minute or so on a
// loaded machine, and test binaries building at once (go test ./... runs
// packages in parallel) take turns on a lock, the later ones reusing the
// first one's binary.
func BuildEtcd(t testing.TB) string {
	t.Helper()
	goBin := RequireBinary(t, "go")
	etcdBin.once.Do(func() { etcdBin.path, etcdBin.err = buildEtcd(goBin) })
	if etcdBin.err != nil {
		t.Fatal(etcdBin.err)
	}
	return etcdBin.path
}

func buildEtcd(goBin string) (string, error) {
	files := map[string][]byte{}
	sum := sha256.New()
	for _, name := range []string{"main.go", "go.mod", "go.sum"} {
		b, err := etcdModule.ReadFile("testdata/etcd/" + name + ".txt")
		if err != nil {
			return "", err
		}
		files[name] = b
		fmt.Fprintf(sum, "%s %d\n", name, len(b))
		sum.Write(b)
	}
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("tariq-test-bin-%d", os.Getuid()))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "etcd-"+EtcdVersion+"-"+hex.EncodeToString(sum.Sum(nil))[:12])
	lock, err := os.OpenFile(bin+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := lockFile(lock); err != nil {
		return "", fmt.Errorf("locking %s: %w", lock.Name(), err)
	}
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	src, err := os.MkdirTemp("", "tariq-etcd-build-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(src)
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(src, name), b, 0o600); err != nil {
			return "", err
		}
	}
	tmp := fmt.Sprintf("%s.%d", bin, os.Getpid())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, "build", "-trimpath", "-o", tmp, ".")
	cmd.Dir = src
	// The module's own go.mod and go.sum decide, whatever the caller's
	// environment says: no workspace, no vendor directory, no edits.
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=readonly -buildvcs=false", "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("building etcd %s from the module proxy: %w: %s", EtcdVersion, err, out)
	}
	if err := os.Rename(tmp, bin); err != nil {
		return "", err
	}
	return bin, nil
}

// EtcdOptions describe a cluster for NewEtcd.
type EtcdOptions struct {
	// Members is the cluster's size. With NS set it must be len(NS) or 0.
	Members int
	// NS, when set, runs member i inside NS[i], listening on Addrs[i]
	// (an address the test has put on one of the namespace's interfaces)
	// on etcd's usual ports, 2379 for clients and 2380 for peers. Unset,
	// the members run in the test's own namespace, each on an address of
	// its own in 127.0.0.0/8 (every one of them is loopback's on Linux),
	// on a random port outside the ephemeral range, so two test runs at
	// once never meet.
	NS    []*NetNS
	Addrs []netip.Addr
	// TLS makes the client URLs https, with etcd requiring a client
	// certificate signed by the cluster's test CA (--client-cert-auth):
	// ClientTLS gives the files a client needs. Peers talk plain HTTP.
	TLS bool
}

// EtcdTLS is what a client needs for a TLS cluster, as files (tariq's
// server.etcd.ca_file, cert_file, key_file).
type EtcdTLS struct {
	CAFile, CertFile, KeyFile string
}

// Config returns the client's tls.Config for these files.
func (f EtcdTLS) Config() (*tls.Config, error) {
	ca, err := os.ReadFile(f.CAFile)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("no certificate in %s", f.CAFile)
	}
	cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
	if err != nil {
		return nil, err
	}
	return &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// EtcdCluster is an etcd cluster of real etcd processes (BuildEtcd)
// started for one test, each member with a data directory of its own
// under the test's temporary directory. Members can be killed, stopped
// and started again with their data, to play the faults a deployment
// meets. When the test ends every member still running is killed by PID
// and reaped, before the data directories go.
type EtcdCluster struct {
	t       testing.TB
	bin     string
	dir     string
	token   string
	scheme  string
	tls     EtcdTLS
	other   EtcdTLS
	members []*etcdMember
	initial string // --initial-cluster

	mu    sync.Mutex  // guards each member's proc, and procs
	procs []*etcdProc // every process started, for the log
}

type etcdMember struct {
	name       string
	ns         *NetNS // nil: the test's own namespace
	addr       netip.Addr
	clientPort int
	peerPort   int
	dataDir    string
	proc       *etcdProc // nil when not running
}

type etcdProc struct {
	member string
	cmd    *exec.Cmd
	out    *procOutput
	exited chan struct{} // closed once reaped
}

// Etcd starts a cluster of members on the test's loopback and waits until
// every member is healthy.
func Etcd(t testing.TB, members int) *EtcdCluster {
	t.Helper()
	return NewEtcd(t, EtcdOptions{Members: members})
}

// EtcdIn starts a cluster of len(ns) members, member i inside ns[i]
// listening on addrs[i], and waits until every member is healthy.
func EtcdIn(t testing.TB, ns []*NetNS, addrs []netip.Addr) *EtcdCluster {
	t.Helper()
	return NewEtcd(t, EtcdOptions{NS: ns, Addrs: addrs})
}

// NewEtcd starts the cluster opts describe and waits until every member
// is healthy.
func NewEtcd(t testing.TB, opts EtcdOptions) *EtcdCluster {
	t.Helper()
	n := opts.Members
	if opts.NS != nil {
		if n == 0 {
			n = len(opts.NS)
		}
		if n != len(opts.NS) || n != len(opts.Addrs) {
			t.Fatalf("etcd: %d members, %d namespaces, %d addresses", n, len(opts.NS), len(opts.Addrs))
		}
	}
	if n < 1 {
		t.Fatalf("etcd: %d members", n)
	}
	c := &EtcdCluster{t: t, bin: BuildEtcd(t), dir: t.TempDir(), scheme: "http"}
	var tok [6]byte
	rand.Read(tok[:])
	c.token = "tariq-test-" + hex.EncodeToString(tok[:])
	// Registered after t.TempDir's, so they run before the directories
	// go: the members are killed, then their output logged if t failed.
	t.Cleanup(c.logIfFailed)
	t.Cleanup(c.cleanup)
	if opts.TLS {
		c.scheme = "https"
	}
	var cluster []string
	for i := range n {
		m := &etcdMember{name: fmt.Sprintf("m%d", i), dataDir: filepath.Join(c.dir, fmt.Sprintf("m%d", i))}
		if opts.NS != nil {
			m.ns, m.addr, m.clientPort, m.peerPort = opts.NS[i], opts.Addrs[i], 2379, 2380
		} else {
			m.addr, m.clientPort, m.peerPort = freeLoopbackPair(t)
		}
		c.members = append(c.members, m)
		cluster = append(cluster, m.name+"="+m.peerURL())
	}
	c.initial = strings.Join(cluster, ",")
	if opts.TLS {
		c.makeCerts()
	}
	for i := range c.members {
		c.start(i)
	}
	c.waitHealthy()
	return c
}

// freeLoopbackPair picks a random address in 127.0.0.0/8 and a port p
// below the ephemeral range such that p and p+1 are free on it.
func freeLoopbackPair(t testing.TB) (netip.Addr, int, int) {
	t.Helper()
	for range 100 {
		a := netip.AddrFrom4([4]byte{127, byte(1 + mrand.IntN(254)), byte(mrand.IntN(256)), byte(1 + mrand.IntN(254))})
		p := 10000 + 2*mrand.IntN(10000)
		ok := true
		for _, port := range []int{p, p + 1} {
			l, err := net.Listen("tcp", netip.AddrPortFrom(a, uint16(port)).String())
			if err != nil {
				ok = false
				break
			}
			l.Close()
		}
		if ok {
			return a, p, p + 1
		}
	}
	t.Fatal("etcd: no free loopback address and port pair")
	return netip.Addr{}, 0, 0
}

func (m *etcdMember) peerURL() string {
	return "http://" + netip.AddrPortFrom(m.addr, uint16(m.peerPort)).String()
}

func (c *EtcdCluster) clientURL(m *etcdMember) string {
	return c.scheme + "://" + netip.AddrPortFrom(m.addr, uint16(m.clientPort)).String()
}

// Endpoints returns every member's client URL (http://ADDR:PORT, or
// https:// for a TLS cluster), the stopped ones too.
func (c *EtcdCluster) Endpoints() []string {
	var eps []string
	for _, m := range c.members {
		eps = append(eps, c.clientURL(m))
	}
	return eps
}

// ClientTLS returns the CA and a client certificate the cluster accepts;
// zero unless the cluster was started with TLS.
func (c *EtcdCluster) ClientTLS() EtcdTLS { return c.tls }

// UntrustedClientTLS returns the cluster's CA and a client certificate
// from another CA, which a TLS cluster refuses; zero unless TLS.
func (c *EtcdCluster) UntrustedClientTLS() EtcdTLS { return c.other }

// Len is the cluster's size.
func (c *EtcdCluster) Len() int { return len(c.members) }

// Running reports whether member i's process is running.
func (c *EtcdCluster) Running(i int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.members[i].proc != nil
}

func (c *EtcdCluster) start(i int) {
	c.t.Helper()
	m := c.members[i]
	argv := []string{c.bin,
		"--name", m.name,
		"--data-dir", m.dataDir,
		"--listen-client-urls", c.clientURL(m),
		"--advertise-client-urls", c.clientURL(m),
		"--listen-peer-urls", m.peerURL(),
		"--initial-advertise-peer-urls", m.peerURL(),
		"--initial-cluster", c.initial,
		"--initial-cluster-token", c.token,
		"--initial-cluster-state", "new", // ignored once the data directory exists
		"--log-level", "warn",
		// Tests share two cores with others: a leader that misses a few
		// heartbeats under load is not lost.
		"--heartbeat-interval", "200",
		"--election-timeout", "2000",
	}
	if c.scheme == "https" {
		argv = append(argv,
			"--cert-file", filepath.Join(c.dir, m.name+".pem"),
			"--key-file", filepath.Join(c.dir, m.name+"-key.pem"),
			"--trusted-ca-file", c.tls.CAFile,
			"--client-cert-auth")
	}
	var cmd *exec.Cmd
	if m.ns != nil {
		cmd = m.ns.Command(argv...) // ip netns exec execs in place: the PID is etcd's
	} else {
		cmd = exec.Command(argv[0], argv[1:]...)
	}
	p := &etcdProc{member: m.name, cmd: cmd, out: &procOutput{}, exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	c.mu.Lock()
	defer c.mu.Unlock()
	if m.proc != nil {
		return
	}
	if err := cmd.Start(); err != nil {
		c.t.Fatalf("etcd member %s: %v", m.name, err)
	}
	go func() {
		cmd.Wait()
		close(p.exited)
	}()
	m.proc = p
	c.procs = append(c.procs, p)
}

// Kill sends SIGKILL to member i and reaps it; its data stays for Start.
func (c *EtcdCluster) Kill(i int) {
	c.t.Helper()
	c.halt(i, syscall.SIGKILL, true)
}

// Stop stops every running member (SIGTERM, SIGKILL after ten seconds);
// their data stays for Start.
func (c *EtcdCluster) Stop() {
	c.t.Helper()
	var wg sync.WaitGroup
	for i := range c.members {
		wg.Go(func() { c.halt(i, syscall.SIGTERM, true) })
	}
	wg.Wait()
}

func (c *EtcdCluster) halt(i int, sig syscall.Signal, log bool) {
	c.mu.Lock()
	m := c.members[i]
	p := m.proc
	m.proc = nil
	c.mu.Unlock()
	if p == nil {
		return
	}
	if log {
		c.t.Logf("etcd: %s member %s (pid %d)", map[syscall.Signal]string{syscall.SIGKILL: "killing", syscall.SIGTERM: "stopping"}[sig], m.name, p.cmd.Process.Pid)
	}
	p.cmd.Process.Signal(sig)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.exited
	}
}

// Start starts again, with their data, every member that Kill or Stop
// took down, and waits until every member is healthy.
func (c *EtcdCluster) Start() {
	c.t.Helper()
	for i := range c.members {
		c.start(i)
	}
	c.waitHealthy()
}

func (c *EtcdCluster) cleanup() {
	for i := range c.members {
		c.halt(i, syscall.SIGKILL, false)
	}
}

func (c *EtcdCluster) logIfFailed() {
	if !c.t.Failed() {
		return
	}
	for _, p := range c.procs {
		c.t.Logf("etcd member %s (pid %d) output:\n%s", p.member, p.cmd.Process.Pid, p.out.String())
	}
}

// waitHealthy waits until every running member answers /health with
// health true (it has a leader and serves a linearizable read).
func (c *EtcdCluster) waitHealthy() {
	c.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for i, m := range c.members {
		if !c.Running(i) {
			continue
		}
		for {
			err := c.Health(i)
			if err == nil {
				break
			}
			c.mu.Lock()
			p := m.proc
			c.mu.Unlock()
			if p != nil {
				select {
				case <-p.exited:
					c.t.Fatalf("etcd member %s exited: %s", m.name, p.out.String())
				default:
				}
			}
			if time.Now().After(deadline) {
				c.t.Fatalf("etcd member %s not healthy: %v", m.name, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// Health asks member i's /health: nil when it has a leader and serves.
func (c *EtcdCluster) Health(i int) error {
	var h struct {
		Health string `json:"health"`
		Reason string `json:"reason"`
	}
	if err := c.call(i, http.MethodGet, "/health", nil, &h); err != nil {
		return err
	}
	if h.Health != "true" {
		return fmt.Errorf("etcd member m%d unhealthy: %s", i, h.Reason)
	}
	return nil
}

// Leader returns the index of the member that member i sees as leader.
func (c *EtcdCluster) Leader(i int) (int, error) {
	var st struct {
		Header struct {
			MemberID string `json:"member_id"`
		} `json:"header"`
		Leader string `json:"leader"`
	}
	if err := c.call(i, http.MethodPost, "/v3/maintenance/status", strings.NewReader("{}"), &st); err != nil {
		return -1, err
	}
	var members struct {
		Members []struct {
			ID   string `json:"ID"`
			Name string `json:"name"`
		} `json:"members"`
	}
	if err := c.call(i, http.MethodPost, "/v3/cluster/member/list", strings.NewReader("{}"), &members); err != nil {
		return -1, err
	}
	for _, m := range members.Members {
		if m.ID == st.Leader {
			for j, mm := range c.members {
				if mm.name == m.Name {
					return j, nil
				}
			}
		}
	}
	return -1, fmt.Errorf("etcd member m%d knows no leader", i)
}

// Put writes key=value through member i (etcd's JSON gateway), for a
// test that seeds or inspects the store without a client of its own.
func (c *EtcdCluster) Put(i int, key, value string) error {
	body, _ := json.Marshal(map[string]string{
		"key":   base64.StdEncoding.EncodeToString([]byte(key)),
		"value": base64.StdEncoding.EncodeToString([]byte(value)),
	})
	var resp struct {
		Header struct {
			Revision string `json:"revision"`
		} `json:"header"`
	}
	if err := c.call(i, http.MethodPost, "/v3/kv/put", strings.NewReader(string(body)), &resp); err != nil {
		return err
	}
	if resp.Header.Revision == "" {
		return fmt.Errorf("etcd member m%d: put %s: no revision in the answer", i, key)
	}
	return nil
}

// Get reads the keys under prefix through member i (a linearizable read,
// so it needs a quorum), as key to value.
func (c *EtcdCluster) Get(i int, prefix string) (map[string]string, error) {
	key, end := []byte(prefix), []byte(prefix)
	if prefix == "" {
		key, end = []byte{0}, []byte{0} // every key
	} else {
		end[len(end)-1]++
	}
	body, _ := json.Marshal(map[string]string{
		"key":       base64.StdEncoding.EncodeToString(key),
		"range_end": base64.StdEncoding.EncodeToString(end),
	})
	var resp struct {
		Kvs []struct {
			Key   []byte `json:"key"`
			Value []byte `json:"value"`
		} `json:"kvs"`
		Error string `json:"error"`
	}
	if err := c.call(i, http.MethodPost, "/v3/kv/range", strings.NewReader(string(body)), &resp); err != nil {
		return nil, err
	}
	if resp.Error != "" {
		return nil, fmt.Errorf("etcd member m%d: range %s: %s", i, prefix, resp.Error)
	}
	kv := map[string]string{}
	for _, x := range resp.Kvs {
		kv[string(x.Key)] = string(x.Value)
	}
	return kv, nil
}

// call sends one request to member i's client URL (from inside its
// namespace, if it has one) and decodes the JSON answer into v.
func (c *EtcdCluster) call(i int, method, path string, body io.Reader, v any) error {
	m := c.members[i]
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	if m.ns != nil {
		tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			var conn net.Conn
			err := m.ns.Do(func() error {
				var err error
				conn, err = (&net.Dialer{Timeout: 2 * time.Second}).DialContext(ctx, network, addr)
				return err
			})
			return conn, err
		}
	}
	if c.scheme == "https" {
		cfg, err := c.tls.Config()
		if err != nil {
			return err
		}
		tr.TLSClientConfig = cfg
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, c.clientURL(m)+path, body)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK && path != "/health" { // /health says why in its body
		return fmt.Errorf("etcd member %s %s: %s: %s", m.name, path, resp.Status, strings.TrimSpace(string(b)))
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("etcd member %s %s: %s: %w", m.name, path, strings.TrimSpace(string(b)), err)
	}
	return nil
}

// makeCerts writes a test CA, a server certificate per member and two
// client certificates, one from the CA and one from a CA etcd does not
// trust.
func (c *EtcdCluster) makeCerts() {
	c.t.Helper()
	ca, caKey := c.newCA("tariq test etcd CA")
	other, otherKey := c.newCA("tariq test untrusted CA")
	c.tls = EtcdTLS{CAFile: filepath.Join(c.dir, "ca.pem"), CertFile: filepath.Join(c.dir, "client.pem"), KeyFile: filepath.Join(c.dir, "client-key.pem")}
	c.other = EtcdTLS{CAFile: c.tls.CAFile, CertFile: filepath.Join(c.dir, "untrusted.pem"), KeyFile: filepath.Join(c.dir, "untrusted-key.pem")}
	c.writePEM(c.tls.CAFile, "CERTIFICATE", ca.Raw)
	client := &x509.Certificate{Subject: pkix.Name{CommonName: "tariq"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	c.issue(client, ca, caKey, c.tls.CertFile, c.tls.KeyFile)
	c.issue(client, other, otherKey, c.other.CertFile, c.other.KeyFile)
	for _, m := range c.members {
		srv := &x509.Certificate{
			Subject:     pkix.Name{CommonName: m.name},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
			IPAddresses: []net.IP{m.addr.AsSlice(), net.IPv4(127, 0, 0, 1)},
			DNSNames:    []string{"localhost"},
		}
		c.issue(srv, ca, caKey, filepath.Join(c.dir, m.name+".pem"), filepath.Join(c.dir, m.name+"-key.pem"))
	}
}

func (c *EtcdCluster) newCA(name string) (*x509.Certificate, *ecdsa.PrivateKey) {
	c.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		c.t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		c.t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		c.t.Fatal(err)
	}
	return cert, key
}

func (c *EtcdCluster) issue(tmpl, ca *x509.Certificate, caKey *ecdsa.PrivateKey, certFile, keyFile string) {
	c.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		c.t.Fatal(err)
	}
	t := *tmpl
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	t.SerialNumber = serial
	t.NotBefore, t.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour)
	t.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, &t, ca, &key.PublicKey, caKey)
	if err != nil {
		c.t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		c.t.Fatal(err)
	}
	c.writePEM(certFile, "CERTIFICATE", der)
	c.writePEM(keyFile, "PRIVATE KEY", keyDER)
}

func (c *EtcdCluster) writePEM(path, typ string, der []byte) {
	c.t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		c.t.Fatal(err)
	}
}
