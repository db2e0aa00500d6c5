package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/turn/v5"
)

// TestClusterMembers: three nodes share one network through etcd. A member
// added on one node connects through another with the config they were
// given; a removal on one node cuts them on another within 2 s, without
// touching anyone else; concurrent adds on two nodes never share an
// address; TURN credentials minted on one node allocate on another; an
// invite revealed on one node is used up on every node.
func TestClusterMembers(t *testing.T) {
	c := newClusterLab(t, clusterOptions{Nodes: 3})
	a, b, cn := c.node("a"), c.node("b"), c.node("c")

	// Every node sees every node live.
	for _, n := range c.nodes {
		list := n.cli("node", "list")
		for _, o := range c.nodes {
			if !regexp.MustCompile(`(?m)^` + o.name + `\s+` + regexp.QuoteMeta(clusterHost) + `\s.*\bok$`).MatchString(list) {
				t.Fatalf("%s: node list does not show %s live and healthy:\n%s", n.name, o.name, list)
			}
		}
	}

	// The same config from every node: the same server key, address and
	// endpoint name, whichever node is asked.
	momConf := a.cli("peer", "add", "mom")
	for _, n := range c.nodes {
		if _, err := waitUntil(2*time.Second, func() error {
			got, err := n.run("peer", "show", "mom")
			if err == nil && got != momConf {
				return fmt.Errorf("a different config:\n%s\nwant, as node-a printed it:\n%s", got, momConf)
			}
			return err
		}); err != nil {
			t.Fatalf("%s: peer show mom: %v", n.name, err)
		}
	}
	mom := c.newDevice("mom", b)
	mom.conf = momConf
	mom.up()
	if err := reachVia(mom, b, 20*time.Second); err != nil {
		t.Fatalf("mom, added on node-a, through node-b: %v", err)
	}
	// The DNS change: the name now leads to node-a; the app reconnects
	// with the same config.
	pointAt(mom, a)
	mom.down()
	mom.up()
	if err := reachVia(mom, a, 20*time.Second); err != nil {
		t.Fatalf("mom after the name moved to node-a: %v", err)
	}

	// dad, added on node-c and connected through node-a too, must not
	// notice mom's removal.
	dad := c.newDevice("dad", a)
	dad.conf = cn.cli("peer", "add", "dad")
	dad.up()
	if err := reachVia(dad, a, 20*time.Second); err != nil {
		t.Fatalf("dad, added on node-c, through node-a: %v", err)
	}

	// Removed on node-b, mom is off node-a's WireGuard device within 2 s
	// of the command, and her tunnel through node-a carries nothing more.
	momKey := confPublicKey(t, momConf)
	start := time.Now()
	b.cli("peer", "remove", "mom")
	took, err := waitUntil(2*time.Second, func() error {
		peers, err := a.wgPeers()
		if err == nil && peers[momKey] {
			return fmt.Errorf("still on node-a's device")
		}
		return err
	})
	if err != nil {
		t.Fatalf("mom removed on node-b: %v after %v", err, took)
	}
	t.Logf("mom removed on node-b: off node-a's device %v after the command started", time.Since(start).Round(time.Millisecond))
	if body, err := mom.fetch("http://" + clusterInternet + "/"); err == nil {
		t.Fatalf("mom, removed, still gets through node-a: %q", body)
	}
	if err := reachVia(dad, a, 5*time.Second); err != nil {
		t.Fatalf("dad after mom's removal: %v", err)
	}
	for _, n := range []*clusterNode{b, cn} {
		if peers, err := n.wgPeers(); err != nil || peers[momKey] {
			t.Fatalf("%s: mom still on the device (%v)", n.name, err)
		}
	}

	// 50 adds at once, half on node-a, half on node-b: 50 configs with 50
	// addresses of their own, and every node ends up with all 50 devices,
	// at the addresses their configs say.
	const kids = 50
	confs := make([]string, kids)
	errs := make([]error, kids)
	var wg sync.WaitGroup
	for i := range kids {
		n := []*clusterNode{a, b}[i%2]
		wg.Go(func() { confs[i], errs[i] = n.run("peer", "add", fmt.Sprintf("kid%02d", i)) })
	}
	wg.Wait()
	v4, v6 := map[string]string{}, map[string]string{}
	for _, used := range []string{dad.conf} {
		addrs := strings.Split(confValues(used)["Interface.Address"], ",")
		v4[strings.TrimSpace(addrs[0])], v6[strings.TrimSpace(addrs[1])] = "dad", "dad"
	}
	keys := map[string]string{}
	for i, conf := range confs {
		name := fmt.Sprintf("kid%02d", i)
		if errs[i] != nil {
			t.Fatalf("%s: %v", name, errs[i])
		}
		addrs := strings.Split(confValues(conf)["Interface.Address"], ",")
		if len(addrs) != 2 {
			t.Fatalf("%s: addresses %q", name, addrs)
		}
		a4, a6 := strings.TrimSpace(addrs[0]), strings.TrimSpace(addrs[1])
		if other, dup := v4[a4]; dup {
			t.Errorf("%s and %s both got %s", name, other, a4)
		}
		if other, dup := v6[a6]; dup {
			t.Errorf("%s and %s both got %s", name, other, a6)
		}
		v4[a4], v6[a6] = name, name
		keys[confPublicKey(t, conf)] = name
	}
	if t.Failed() {
		t.FailNow()
	}
	for _, n := range c.nodes {
		took, err := waitUntil(5*time.Second, func() error {
			peers, err := n.wgPeers()
			if err != nil {
				return err
			}
			for k, name := range keys {
				if !peers[k] {
					return fmt.Errorf("%s is not on the device", name)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s after 50 concurrent adds: %v (after %v)", n.name, err, took)
		}
		listed := peerListIPv4(t, n.cli("peer", "list"))
		for i, conf := range confs {
			name := fmt.Sprintf("kid%02d", i)
			want, _, _ := strings.Cut(strings.Split(confValues(conf)["Interface.Address"], ",")[0], "/")
			if listed[name] != want {
				t.Errorf("%s lists %s at %q; its config says %s", n.name, name, listed[name], want)
			}
		}
	}

	// TURN: credentials minted on node-a allocate on node-b, and the
	// allocation relays to the peer and back.
	var creds struct{ Username, Password string }
	if err := json.Unmarshal([]byte(a.cli("turn", "credentials", "--json")), &creds); err != nil {
		t.Fatal(err)
	}
	caller := c.newDevice("caller", b) // no tunnel: a TURN client on the internet
	alloc := turnAllocate(t, caller, b, creds.Username, creds.Password)
	if err := alloc.echo(5 * time.Second); err != nil {
		t.Fatalf("credentials from node-a on node-b's relay: %v", err)
	}

	// An invite made and revealed on node-a is used up on node-b (and on
	// node-c); of two reveals racing on node-a and node-b, exactly one
	// gets the settings.
	link := strings.TrimSpace(a.cli("peer", "add", "aunt", "--invite"))
	if !strings.HasPrefix(link, "https://"+clusterHost+"/join/") {
		t.Fatalf("peer add --invite printed %q", link)
	}
	code, body, err := c.reveal(caller, a, link)
	if want := a.cli("peer", "show", "aunt"); err != nil || code != http.StatusOK || revealedConf(body) != want {
		t.Fatalf("revealing aunt's invite on node-a: %d %v, the page's download %q, want %q", code, err, revealedConf(body), want)
	}
	for _, n := range []*clusterNode{b, cn} {
		if code, body, err := c.reveal(caller, n, link); err != nil || code != http.StatusGone || strings.Contains(body, "data:text") {
			t.Fatalf("aunt's invite, revealed on node-a, on %s: %d %v\n%.400s", n.name, code, err, body)
		}
	}
	link = strings.TrimSpace(b.cli("peer", "add", "uncle", "--invite"))
	codes := make([]int, 2)
	for i, n := range []*clusterNode{a, b} {
		wg.Go(func() {
			var err error
			if codes[i], _, err = c.reveal(caller, n, link); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if !(codes[0] == http.StatusOK && codes[1] == http.StatusGone || codes[0] == http.StatusGone && codes[1] == http.StatusOK) {
		t.Fatalf("uncle's invite revealed on node-a and node-b at once: %v, want one 200 and one 410", codes)
	}
}

// revealedConf returns the config a revealed invite page offers for
// download (its data:text/plain;…;base64 link), or "".
func revealedConf(page string) string {
	m := regexp.MustCompile(`"(data:text/plain[^"]*;base64,[A-Za-z0-9+/=]+)"`).FindStringSubmatch(page)
	if m == nil {
		return ""
	}
	return dataURLText(m[1])
}

// peerListIPv4 reads `tariq peer list`'s device table: name → IPv4.
func peerListIPv4(t *testing.T, out string) map[string]string {
	t.Helper()
	got := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			break // the members' table follows a blank line
		}
		if f[0] == "NAME" || len(f) < 3 {
			continue
		}
		got[f[0]] = f[2]
	}
	return got
}

// reveal presses the invite page's "Show my settings" on node n for link,
// from device d's namespace, and returns the status and the page.
func (c *clusterLab) reveal(d *device, n *clusterNode, link string) (int, string, error) {
	req, _ := http.NewRequest("POST", link, strings.NewReader("form=&port="))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "https://"+clusterHost)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	resp, err := c.https(d.ns, n).Do(req)
	if err != nil {
		return 0, "", fmt.Errorf("POST %s on %s: %w", link, n.name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, "", fmt.Errorf("POST %s on %s: %w", link, n.name, err)
	}
	return resp.StatusCode, string(b), nil
}

// turnAllocation is a pion TURN client's allocation on a node, made from a
// device's namespace.
type turnAllocation struct {
	client  *turn.Client
	relayed net.PacketConn
	echoes  int
}

// turnAllocate allocates on node n's relay (UDP 3478) from d's namespace
// with the given REST credentials; the allocation goes when t ends.
func turnAllocate(t *testing.T, d *device, n *clusterNode, user, pass string) *turnAllocation {
	t.Helper()
	var conn net.PacketConn
	if err := d.ns.Do(func() (err error) {
		conn, err = net.ListenPacket("udp4", "0.0.0.0:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	server := n.addr + ":3478"
	cl, err := turn.NewClient(&turn.ClientConfig{STUNServerAddr: server, TURNServerAddr: server,
		Conn: conn, Username: user, Password: pass, Realm: clusterHost})
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.Listen(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	relayed, err := cl.Allocate()
	if err != nil {
		t.Fatalf("allocating on %s's relay: %v", n.name, err)
	}
	t.Cleanup(func() { relayed.Close() })
	return &turnAllocation{client: cl, relayed: relayed}
}

// echo sends a datagram through the allocation to the internet host's
// echo and waits for it to come back, resending every half second.
func (al *turnAllocation) echo(within time.Duration) error {
	peer, err := net.ResolveUDPAddr("udp4", clusterEcho)
	if err != nil {
		return err
	}
	al.echoes++
	msg := fmt.Sprintf("echo %d", al.echoes)
	buf := make([]byte, 256)
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if _, err := al.relayed.WriteTo([]byte(msg), peer); err != nil {
			return fmt.Errorf("sending through the allocation: %w", err)
		}
		al.relayed.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		for {
			k, _, err := al.relayed.ReadFrom(buf)
			if err != nil {
				break
			}
			if string(buf[:k]) == msg {
				return nil
			}
		}
	}
	return fmt.Errorf("nothing came back through the allocation within %v", within)
}

// TestClusterFaults plays what a deployment meets. One etcd member killed
// (the leader): the cluster keeps quorum and nothing changes. All of etcd
// stopped: tunnels and allocations keep flowing, `peer add` fails with one
// line and adds nothing, and a node restarted now still serves its members
// from its cache. etcd back: a change made then reaches every node, the
// restarted one too. A node killed (-9) in the middle of `peer add`: the
// member is on every node, complete, or on none.
func TestClusterFaults(t *testing.T) {
	c := newClusterLab(t, clusterOptions{Nodes: 3})
	a, b, cn := c.node("a"), c.node("b"), c.node("c")

	dad := c.newDevice("dad", a)
	dad.conf = b.cli("peer", "add", "dad")
	dad.up()
	if err := reachVia(dad, a, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	var creds struct{ Username, Password string }
	if err := json.Unmarshal([]byte(b.cli("turn", "credentials", "--json")), &creds); err != nil {
		t.Fatal(err)
	}
	caller := c.newDevice("caller", cn)
	alloc := turnAllocate(t, caller, cn, creds.Username, creds.Password)
	if err := alloc.echo(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	// flowing checks dad's tunnel through node-a and the allocation on
	// node-c.
	flowing := func(when string) {
		t.Helper()
		if err := reachVia(dad, a, 5*time.Second); err != nil {
			t.Fatalf("%s: %v", when, err)
		}
		if err := alloc.echo(5 * time.Second); err != nil {
			t.Fatalf("%s: the allocation on node-c: %v", when, err)
		}
	}
	// everywhere waits until the device of conf is on every node's
	// WireGuard device.
	everywhere := func(what, conf string, within time.Duration, nodes ...*clusterNode) {
		t.Helper()
		key := confPublicKey(t, conf)
		for _, n := range nodes {
			took, err := waitUntil(within, func() error {
				peers, err := n.wgPeers()
				if err == nil && !peers[key] {
					return fmt.Errorf("not on the device")
				}
				return err
			})
			if err != nil {
				t.Fatalf("%s on %s: %v after %v", what, n.name, err, took)
			}
		}
	}

	// One member down, the leader: the other two elect another and
	// nothing changes for the nodes.
	leader, err := c.etcd.Leader(0)
	if err != nil {
		t.Fatal(err)
	}
	c.etcd.Kill(leader)
	grandma, err := b.run("peer", "add", "grandma")
	if err != nil {
		t.Fatalf("etcd member %d (the leader) killed: %v", leader, err)
	}
	everywhere("grandma, added on node-b with etcd member "+fmt.Sprint(leader)+" down", grandma, 2*time.Second, a, cn)
	flowing("one etcd member down")
	c.etcd.Start()

	// All of etcd down.
	c.etcd.Stop()
	flowing("etcd down")
	if err := turnAllocate(t, caller, b, creds.Username, creds.Password).echo(5 * time.Second); err != nil {
		t.Fatalf("etcd down: a new allocation on node-b with credentials minted before: %v", err)
	}
	_, err = a.run("peer", "add", "ghost")
	var cerr *cliError
	if !errors.As(err, &cerr) {
		t.Fatalf("etcd down: peer add on node-a: %v, want a failure", err)
	}
	if line := strings.TrimSpace(cerr.stderr); strings.Count(line, "\n") != 0 || !strings.Contains(line, "etcd") {
		t.Fatalf("etcd down: peer add says %q, want one line naming etcd", cerr.stderr)
	}
	t.Logf("etcd down: peer add says %q", strings.TrimSpace(cerr.stderr))
	// node-a restarted now comes up from its cache and serves dad and
	// grandma. dad's client still holds session keys the new process does
	// not know: it starts a new handshake once it has heard nothing for
	// keepalive + rekey timeouts (about 15 s).
	a.stop()
	a.start()
	everywhere("dad, node-a restarted while etcd is down", dad.conf, 5*time.Second, a)
	everywhere("grandma, node-a restarted while etcd is down", grandma, 5*time.Second, a)
	if err := reachVia(dad, a, 45*time.Second); err != nil {
		t.Fatalf("etcd down, node-a restarted: %v", err)
	}

	// etcd back: a change made now on any node reaches every other node,
	// node-a too, whose process has never seen etcd. Each node adds one
	// device: every node's writes and watch are back. A node's client has
	// been retrying all along; once etcd answers, its next attempt must
	// come within seconds, however long etcd was away (here about a
	// minute), or the operator's first commands fail.
	c.etcd.Start()
	var late string
	for _, n := range []*clusterNode{cn, a, b} {
		name := "late-" + strings.TrimPrefix(n.name, "node-")
		var conf string
		took, err := waitUntil(10*time.Second, func() (err error) {
			conf, err = n.run("peer", "add", name)
			return err
		})
		if err != nil {
			t.Fatalf("etcd back: peer add on %s: %v after %v", n.name, err, took)
		}
		t.Logf("etcd back: peer add %s on %s went through %v after etcd was healthy", name, n.name, took.Round(time.Millisecond))
		var others []*clusterNode
		for _, o := range c.nodes {
			if o != n {
				others = append(others, o)
			}
		}
		everywhere(name+", added once etcd was back", conf, 5*time.Second, others...)
		if late == "" {
			late = conf
		}
	}
	for _, n := range c.nodes {
		if listed := peerListIPv4(t, n.cli("peer", "list")); listed["ghost"] != "" {
			t.Fatalf("%s lists ghost, whose peer add failed while etcd was down", n.name)
		}
	}
	lateDev := c.newDevice("late", a)
	lateDev.conf = late
	lateDev.up()
	if err := reachVia(lateDev, a, 20*time.Second); err != nil {
		t.Fatalf("late, added on node-c once etcd was back, through node-a: %v", err)
	}
	flowing("etcd back")

	// kill -9 node-b while it adds a device, at several moments: whatever
	// the CLI saw, the device is then on every node with the same config
	// and on every node's WireGuard device, or nowhere.
	added := 0
	// The CLI process takes some 20-40 ms to reach the daemon here: the
	// kills land before, during and after the request.
	for i, delay := range []time.Duration{0, 10 * time.Millisecond, 15 * time.Millisecond, 20 * time.Millisecond,
		25 * time.Millisecond, 30 * time.Millisecond, 40 * time.Millisecond, 250 * time.Millisecond} {
		name := fmt.Sprintf("half%d", i)
		res := make(chan error, 1)
		go func() { _, err := b.run("peer", "add", name); res <- err }()
		time.Sleep(delay)
		b.kill()
		cliErr := <-res
		b.start()
		var shown []string
		for _, n := range c.nodes {
			out, err := n.run("peer", "show", name)
			switch {
			case err == nil:
				shown = append(shown, out)
			case !strings.Contains(err.Error(), name):
				t.Fatalf("%s: peer show %s: %v", n.name, name, err)
			}
		}
		t.Logf("node-b killed %v into peer add %s: the CLI said %v; %d of 3 nodes show it", delay, name, cliErr, len(shown))
		switch {
		case len(shown) == 0 && cliErr == nil:
			t.Fatalf("peer add %s succeeded, but no node has it", name)
		case len(shown) == 0:
			continue
		case len(shown) != len(c.nodes):
			// A node that has not heard yet: give the watch its 2 s.
			time.Sleep(2 * time.Second)
			shown = shown[:0]
			for _, n := range c.nodes {
				if out, err := n.run("peer", "show", name); err == nil {
					shown = append(shown, out)
				}
			}
			if len(shown) != len(c.nodes) {
				for _, n := range c.nodes {
					out, err := n.run("peer", "show", name)
					peers, _ := n.wgPeers()
					list, _ := n.run("peer", "list")
					t.Logf("%s: peer show %s: %v %.60q; wg %d peers; list:\n%s", n.name, name, err, out, len(peers), list)
				}
				t.Fatalf("%s is on %d of %d nodes", name, len(shown), len(c.nodes))
			}
		}
		for _, s := range shown[1:] {
			if s != shown[0] {
				t.Fatalf("the nodes show %s differently:\n%s\n%s", name, shown[0], s)
			}
		}
		everywhere(name, shown[0], 2*time.Second, c.nodes...)
		if added++; added == 1 { // one of them, end to end through a node that did not add it
			d := c.newDevice(name, cn)
			d.conf = shown[0]
			d.up()
			if err := reachVia(d, cn, 20*time.Second); err != nil {
				t.Fatalf("%s, added as node-b was killed, through node-c: %v", name, err)
			}
		}
	}
	if added == 0 {
		t.Logf("node-b never lived long enough to add a device: only the nothing-anywhere outcome was seen")
	}
	flowing("after node-b's deaths")
}

// TestClusterMigrate: a one-server network grows into several nodes.
// `tariq store migrate --to etcd` copies the server's state into an empty
// prefix of an etcd cluster that wants TLS client certificates, refusing
// to copy twice; the server comes back as the first node and a second node
// joins; a member's device keeps the config it had, now through the second
// node, and an invite made before the move opens there. A node whose client
// certificate the cluster does not trust hears so from `tariq check`, in
// one line.
func TestClusterMigrate(t *testing.T) {
	c := newClusterLab(t, clusterOptions{Nodes: 2, TLS: true, NoStart: true})
	a, b := c.node("a"), c.node("b")
	etcdKeys := map[string]string{}
	oneServer := map[string]string{"server.store": "file"}
	for k, v := range a.keys {
		if strings.HasPrefix(k, "server.etcd.") {
			etcdKeys[k] = v
			oneServer[k] = ""
		}
	}
	etcdKeys["server.store"] = "etcd"
	a.configure(oneServer)
	a.start()
	mom := c.newDevice("mom", a)
	mom.conf = a.cli("peer", "add", "mom")
	mom.up()
	if err := reachVia(mom, a, 20*time.Second); err != nil {
		t.Fatalf("one server: %v", err)
	}
	link := strings.TrimSpace(a.cli("peer", "add", "aunt", "--invite"))

	a.stop()
	a.configure(etcdKeys)
	t.Logf("store migrate: %s", strings.TrimSpace(a.cli("store", "migrate", "--to", "etcd")))
	if out, err := a.run("store", "migrate", "--to", "etcd"); err == nil {
		t.Fatalf("a second migration into the same prefix: %q, want a refusal", out)
	}
	a.start()
	b.start()
	if got := b.cli("peer", "show", "mom"); got != mom.conf {
		t.Fatalf("node-b shows mom as\n%s\nwant, as the one server gave it:\n%s", got, mom.conf)
	}
	pointAt(mom, b)
	mom.down()
	mom.up()
	if err := reachVia(mom, b, 20*time.Second); err != nil {
		t.Fatalf("mom's config from the one server, through node-b: %v", err)
	}
	caller := c.newDevice("caller", b)
	code, body, err := c.reveal(caller, b, link)
	if want := b.cli("peer", "show", "aunt"); err != nil || code != http.StatusOK || revealedConf(body) != want {
		t.Fatalf("aunt's invite from before the move, on node-b: %d %v, the page's download %q, want %q", code, err, revealedConf(body), want)
	}

	bad := c.etcd.UntrustedClientTLS()
	b.configure(map[string]string{"server.etcd.cert_file": bad.CertFile, "server.etcd.key_file": bad.KeyFile})
	out, err := b.run("check")
	if err == nil {
		t.Fatalf("check with an untrusted client certificate passed:\n%s", out)
	}
	var lines []string
	for _, line := range strings.Split(out+"\n"+err.(*cliError).stderr, "\n") {
		if strings.Contains(line, "etcd") {
			lines = append(lines, line)
		}
	}
	if len(lines) != 1 || !strings.Contains(lines[0], "certificate") && !strings.Contains(lines[0], "TLS") {
		t.Fatalf("check with an untrusted client certificate: %q, want one line about etcd and the certificate\n%s\n%v", lines, out, err)
	}
	t.Logf("check with an untrusted client certificate: %s", lines[0])
}
