package main

import (
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tariq-vpn/tariq/internal/testutil"
	"github.com/tariq-vpn/tariq/relay"
)

// cliNode is the global flags of one node's CLI: its own data directory
// and admin socket (no daemon), any --set given.
func cliNode(t *testing.T, sets ...string) []string {
	t.Helper()
	args := []string{"--data-dir", t.TempDir() + "/data", "--admin-socket", t.TempDir() + "/admin.sock"}
	for _, s := range sets {
		args = append(args, "--set", s)
	}
	return args
}

// oneLine fails unless stderr is exactly one "tariq: " line (after the
// no-daemon notice) containing every want.
func oneLine(t *testing.T, what, stderr string, want ...string) {
	t.Helper()
	e := withoutNotice(stderr)
	if !strings.HasPrefix(e, "tariq: ") || strings.Count(e, "\n") != 1 {
		t.Errorf("%s: stderr %q, want one line", what, stderr)
	}
	for _, w := range want {
		if !strings.Contains(e, w) {
			t.Errorf("%s: stderr %q lacks %q", what, stderr, w)
		}
	}
}

// TestTurnSecretCLI walks the two-phase rotation of the REST secrets with
// the file store: add (verifies, does not sign), sign, retire; the one
// signing is never retired; credentials follow the signing one.
func TestTurnSecretCLI(t *testing.T) {
	node := cliNode(t)
	run := func(args ...string) (int, string, string) { return tariq(t, append(args, node...)...) }
	code, out, errOut := run("turn", "credentials")
	if code != 0 {
		t.Fatalf("turn credentials: %d %s", code, errOut)
	}
	user, pass := field(out, "username"), field(out, "password")
	code, out, _ = run("turn", "secret", "list")
	rows := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(rows) != 2 || !strings.Contains(rows[1], "generated") || !strings.Contains(rows[1], "signs") {
		t.Fatalf("list: %d\n%s", code, out)
	}
	oldID := strings.Fields(rows[1])[0]
	code, out, errOut = run("turn", "secret", "add")
	newSecret := strings.TrimSpace(out)
	if code != 0 || !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(newSecret) {
		t.Fatalf("add: %d %q %s", code, out, errOut)
	}
	newID := regexp.MustCompile(`secret ([0-9a-f]{8}) added`).FindStringSubmatch(errOut)
	if newID == nil {
		t.Fatalf("add said %q", errOut)
	}
	if relay.RESTPassword(newSecret, user) == pass {
		t.Fatal("the credential minted before was signed with the new secret")
	}
	code, _, errOut = run("turn", "secret", "retire", oldID)
	if code != 1 {
		t.Fatalf("retired the signing secret: %d", code)
	}
	oneLine(t, "retire the signing secret", errOut, oldID, "sign with another first")
	if code, _, errOut := run("turn", "secret", "sign", newID[1]); code != 0 {
		t.Fatalf("sign: %d %s", code, errOut)
	}
	_, out, _ = run("turn", "credentials")
	if relay.RESTPassword(newSecret, field(out, "username")) != field(out, "password") {
		t.Fatal("credentials are not signed with the new secret after sign")
	}
	if code, _, errOut := run("turn", "secret", "retire", oldID); code != 0 {
		t.Fatalf("retire: %d %s", code, errOut)
	}
	_, out, _ = run("turn", "secret", "list")
	if rows := strings.Split(strings.TrimSpace(out), "\n"); len(rows) != 2 || !strings.HasPrefix(rows[1], newID[1]) {
		t.Fatalf("list after retire:\n%s", out)
	}
	code, _, errOut = run("turn", "secret", "retire", "deadbeef")
	if code != 1 {
		t.Fatalf("retire of an unknown ID: %d", code)
	}
	oneLine(t, "retire of an unknown ID", errOut, "deadbeef")
}

// field returns the value of "name: value" in out.
func field(out, name string) string {
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(l, name+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// checkLine returns `tariq check`'s line for what.
func checkLine(out, what string) string {
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 1 && f[1] == what {
			return l
		}
	}
	return ""
}

// TestEtcdCLI: a one-server state migrates into an empty etcd prefix (and
// never into one holding keys); the CLI of another node then sees and
// changes the same network; check says in one line what is right or wrong
// with the cluster; node list answers; with etcd stopped a peer add fails
// in one line naming the endpoint.
func TestEtcdCLI(t *testing.T) {
	c := testutil.Etcd(t, 1)
	ep := c.Endpoints()[0]
	prefix := "/tariq-cli"
	etcd := []string{"server.store=etcd", "server.etcd.endpoints=" + ep, "server.etcd.prefix=" + prefix}
	first := cliNode(t, "server.public_host=vpn.example.com")
	if code, _, errOut := tariq(t, append([]string{"peer", "add", "mom"}, first...)...); code != 0 {
		t.Fatalf("peer add on one server: %s", errOut)
	}
	migrate := append([]string{"store", "migrate", "--to", "etcd"}, first...)
	for _, s := range etcd {
		migrate = append(migrate, "--set", s)
	}
	code, out, errOut := tariq(t, migrate...)
	if code != 0 || !strings.Contains(out, "copied 1 member, 1 device") {
		t.Fatalf("migrate: %d %s %s", code, out, errOut)
	}
	code, _, errOut = tariq(t, migrate...)
	if code != 1 {
		t.Fatalf("second migrate: %d", code)
	}
	oneLine(t, "second migrate", errOut, prefix, "not empty")

	second := cliNode(t, append(etcd, "server.public_host=vpn2.example.com", "server.node_name=second")...)
	code, out, errOut = tariq(t, append([]string{"peer", "list"}, second...)...)
	if code != 0 || !strings.Contains(out, "mom") {
		t.Fatalf("peer list on the second node: %d %s %s", code, out, errOut)
	}
	if code, _, errOut := tariq(t, append([]string{"peer", "add", "dad"}, second...)...); code != 0 {
		t.Fatalf("peer add on the second node: %s", errOut)
	}
	kv, err := c.Get(0, prefix+"/state")
	if err != nil || !strings.Contains(kv[prefix+"/state"], `"dad"`) {
		t.Fatalf("dad not in etcd: %v", err)
	}
	_, out, _ = tariq(t, append([]string{"check"}, second...)...)
	if l := checkLine(out, "server.etcd"); !strings.HasPrefix(l, "ok") || !strings.Contains(l, "node second") ||
		!strings.Contains(l, "tariq's state (2 members, 2 devices)") {
		t.Errorf("check: %q\n%s", l, out)
	}
	code, out, errOut = tariq(t, append([]string{"node", "list"}, second...)...)
	if code != 0 || !strings.Contains(out, "no node is live") {
		t.Errorf("node list: %d %q %s", code, out, errOut)
	}
	code, _, errOut = tariq(t, append([]string{"node", "list"}, cliNode(t)...)...)
	if code != 1 {
		t.Errorf("node list on one server: %d", code)
	}
	oneLine(t, "node list on one server", errOut, "server.store is file")
	if code, _, errOut := tariq(t, append([]string{"turn", "secret", "add"}, second...)...); code != 0 {
		t.Fatalf("secret add: %s", errOut)
	}
	_, out, _ = tariq(t, append([]string{"turn", "secret", "list"}, cliNode(t, etcd...)...)...)
	// The first stored secret signs: the migrated state had none.
	if rows := strings.Split(strings.TrimSpace(out), "\n"); len(rows) != 2 || !strings.Contains(rows[1], "added  signs") {
		t.Errorf("another node's secret list:\n%s", out)
	}

	// What check says of a wrong prefix and of no etcd at all.
	if err := c.Put(0, "/someone-else/config", "x"); err != nil {
		t.Fatal(err)
	}
	_, out, _ = tariq(t, append([]string{"check"}, cliNode(t, "server.store=etcd", "server.etcd.endpoints="+ep, "server.etcd.prefix=/someone-else")...)...)
	if l := checkLine(out, "server.etcd"); !strings.HasPrefix(l, "FAIL") || !strings.Contains(l, "no tariq state") {
		t.Errorf("check of a foreign prefix: %q", l)
	}
	_, out, _ = tariq(t, append([]string{"check"}, cliNode(t, "server.store=etcd", "server.etcd.endpoints=http://127.0.0.1:1")...)...)
	if l := checkLine(out, "server.etcd"); !strings.HasPrefix(l, "FAIL") || !strings.Contains(l, "unreachable") || !strings.Contains(l, "127.0.0.1:1") {
		t.Errorf("check of no etcd: %q", l)
	}

	c.Stop()
	code, _, errOut = tariq(t, append([]string{"peer", "add", "kid"}, second...)...)
	if code != 1 {
		t.Fatalf("peer add with etcd down: %d", code)
	}
	oneLine(t, "peer add with etcd down", errOut, ep, "unreachable")
	t.Logf("peer add with etcd down: %s", withoutNotice(errOut))
}

// TestEtcdCheckTLS: check reaches a cluster that wants client
// certificates with the node's, and says in one line when the CA or the
// client certificate is wrong.
func TestEtcdCheckTLS(t *testing.T) {
	c := testutil.NewEtcd(t, testutil.EtcdOptions{Members: 1, TLS: true})
	ep := c.Endpoints()[0]
	good, bad := c.ClientTLS(), c.UntrustedClientTLS()
	check := func(files ...string) string {
		sets := []string{"server.store=etcd", "server.etcd.endpoints=" + ep}
		sets = append(sets, files...)
		_, out, _ := tariq(t, append([]string{"check"}, cliNode(t, sets...)...)...)
		return checkLine(out, "server.etcd")
	}
	if l := check("server.etcd.ca_file="+good.CAFile, "server.etcd.cert_file="+good.CertFile, "server.etcd.key_file="+good.KeyFile); !strings.HasPrefix(l, "ok") || !strings.Contains(l, "is empty") {
		t.Errorf("check with the node's certificate: %q", l)
	}
	if l := check("server.etcd.ca_file="+bad.CAFile, "server.etcd.cert_file="+bad.CertFile, "server.etcd.key_file="+bad.KeyFile); !strings.HasPrefix(l, "FAIL") || !strings.Contains(l, "client certificate") {
		t.Errorf("check with an untrusted client certificate: %q", l)
	}
	if l := check("server.etcd.cert_file="+good.CertFile, "server.etcd.key_file="+good.KeyFile); !strings.HasPrefix(l, "FAIL") || !strings.Contains(l, "TLS handshake") {
		t.Errorf("check without the cluster's CA: %q", l)
	}
}

// TestEtcdCheckAuth: with etcd's authentication on, a node whose client
// certificate names no etcd user is refused, and check says so in one
// line.
func TestEtcdCheckAuth(t *testing.T) {
	c := testutil.NewEtcd(t, testutil.EtcdOptions{Members: 1, TLS: true})
	ep := c.Endpoints()[0]
	files := c.ClientTLS()
	tc, err := files.Config()
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}, Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	for _, call := range []struct{ path, body string }{
		{"/v3/auth/user/add", `{"name":"root","password":"` + strings.Repeat("x", 16) + `"}`},
		{"/v3/auth/user/grant", `{"user":"root","role":"root"}`},
		{"/v3/auth/enable", `{}`},
	} {
		resp, err := client.Post(ep+call.path, "application/json", strings.NewReader(call.body))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %s %s", call.path, resp.Status, b)
		}
	}
	_, out, _ := tariq(t, append([]string{"check"}, cliNode(t, "server.store=etcd", "server.etcd.endpoints="+ep,
		"server.etcd.ca_file="+files.CAFile, "server.etcd.cert_file="+files.CertFile, "server.etcd.key_file="+files.KeyFile)...)...)
	t.Logf("check: %s", checkLine(out, "server.etcd"))
	if l := checkLine(out, "server.etcd"); !strings.HasPrefix(l, "FAIL") || !strings.Contains(l, "refused this node's credentials") {
		t.Errorf("check with a certificate naming no etcd user: %q", l)
	}
}
