package testutil

import (
	"crypto/tls"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// TestEtcdFaults drives a three-member cluster through the faults the
// lab plays: the leader killed (the other two keep quorum and the data),
// every member stopped (nothing answers), every member started again
// with its data.
func TestEtcdFaults(t *testing.T) {
	c := Etcd(t, 3)
	if len(c.Endpoints()) != 3 {
		t.Fatalf("endpoints %v", c.Endpoints())
	}
	for _, ep := range c.Endpoints() {
		if !strings.HasPrefix(ep, "http://127.") {
			t.Fatalf("endpoint %s is not on loopback", ep)
		}
	}
	if err := c.Put(0, "/t/a", "1"); err != nil {
		t.Fatal(err)
	}
	leader, err := c.Leader(1)
	if err != nil {
		t.Fatal(err)
	}
	c.Kill(leader)
	if c.Running(leader) {
		t.Fatal("a killed member still runs")
	}
	other := (leader + 1) % 3
	waitFor(t, "a write with one member down", func() error { return c.Put(other, "/t/b", "2") })
	waitFor(t, "a read with one member down", func() error {
		kv, err := c.Get((leader+2)%3, "/t/")
		if err == nil && (kv["/t/a"] != "1" || kv["/t/b"] != "2") {
			t.Fatalf("after the leader's death the cluster holds %v", kv)
		}
		return err
	})

	c.Stop()
	for i := range 3 {
		if err := c.Health(i); err == nil {
			t.Fatalf("member %d answers after Stop", i)
		}
	}
	c.Start()
	for i := range 3 {
		kv, err := c.Get(i, "/t/")
		if err != nil {
			t.Fatal(err)
		}
		if len(kv) != 2 || kv["/t/a"] != "1" || kv["/t/b"] != "2" {
			t.Fatalf("member %d after restart holds %v", i, kv)
		}
	}
}

// TestEtcdTLS: a TLS cluster serves a client with the certificate
// ClientTLS names, and refuses one without a certificate or with one from
// another CA.
func TestEtcdTLS(t *testing.T) {
	c := NewEtcd(t, EtcdOptions{Members: 1, TLS: true})
	if !strings.HasPrefix(c.Endpoints()[0], "https://") {
		t.Fatalf("endpoint %s", c.Endpoints()[0])
	}
	if err := c.Put(0, "/tls", "yes"); err != nil { // with ClientTLS
		t.Fatal(err)
	}
	good, err := c.ClientTLS().Config()
	if err != nil {
		t.Fatal(err)
	}
	bad, err := c.UntrustedClientTLS().Config()
	if err != nil {
		t.Fatal(err)
	}
	none := &tls.Config{RootCAs: good.RootCAs}
	for name, cfg := range map[string]*tls.Config{"trusted": good, "untrusted": bad, "none": none} {
		cl := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 5 * time.Second}
		resp, err := cl.Post(c.Endpoints()[0]+"/v3/kv/range", "application/json", strings.NewReader(`{"key":"L3Rscw=="}`))
		if resp != nil {
			resp.Body.Close()
		}
		switch ok := err == nil && resp.StatusCode == http.StatusOK; {
		case name == "trusted" && !ok:
			t.Errorf("%s client certificate refused: %v", name, err)
		case name != "trusted" && ok:
			t.Errorf("%s client certificate accepted", name)
		}
	}
}

// TestEtcdIn runs the members inside namespaces joined by a bridge, as
// the lab does, and reaches them from the namespaces.
func TestEtcdIn(t *testing.T) {
	sw := NewNetNS(t)
	sw.Run("ip", "link", "add", "br0", "type", "bridge")
	sw.Run("ip", "link", "set", "br0", "up")
	var nss []*NetNS
	var addrs []netip.Addr
	for i := range 3 {
		ns := NewNetNS(t)
		a := netip.AddrFrom4([4]byte{10, 20, 0, byte(i + 1)})
		Veth(t, VethEnd{NS: ns, Name: "eth0", Addrs: []netip.Prefix{netip.PrefixFrom(a, 24)}},
			VethEnd{NS: sw, Name: fmt.Sprintf("m%d", i)})
		sw.Run("ip", "link", "set", fmt.Sprintf("m%d", i), "master", "br0")
		nss, addrs = append(nss, ns), append(addrs, a)
	}
	c := EtcdIn(t, nss, addrs)
	if got, want := c.Endpoints()[2], "http://10.20.0.3:2379"; got != want {
		t.Fatalf("endpoint %s, want %s", got, want)
	}
	if err := c.Put(0, "/ns", "1"); err != nil {
		t.Fatal(err)
	}
	c.Kill(0)
	waitFor(t, "a read with member 0 down", func() error { // member 0 may have led: an election first
		kv, err := c.Get(2, "/ns")
		if err == nil && kv["/ns"] != "1" {
			t.Fatalf("member 2 holds %v", kv)
		}
		return err
	})
	c.Start()
	if err := c.Health(0); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
