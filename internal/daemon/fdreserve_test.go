package daemon

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"

	"github.com/tariq-vpn/tariq/internal/admin"
	"github.com/tariq-vpn/tariq/internal/testutil"
)

// TestStreamFloodLeavesDescriptors: under a low open-file limit, a flood of
// TURN stream connections from many sources (each sends one Binding request
// and holds on) over the TCP, TLS and shared HTTPS ports takes no more than
// its share of descriptors: the admin socket answers, a UDP allocation
// relays and the page loads. The flood's client ends live in this process
// too, so it must stay well inside the limit on both sides.
//
// It runs in a process of its own (testutil.InNetNS), whose limit it lowers.
func TestStreamFloodLeavesDescriptors(t *testing.T) {
	if !testutil.InNetNS(t, 90*time.Second) {
		return
	}
	const limit = 1000
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: limit, Max: limit}); err != nil {
		t.Fatalf("lowering the open-file limit: %v", err)
	}
	testutil.LeakCheck(t)
	r := startDaemon(t, "  users: {alice: wonderland}\n")
	pool := selfSignedPool(t, r)
	_, tcp, tlsAddrs := r.d.Relay().Addrs()
	targets := []struct {
		addr string
		tls  bool
	}{{tcp[0].String(), false}, {tlsAddrs[0].String(), true}, {r.d.WebAddrs()[0].String(), true}}

	var mu sync.Mutex
	var held []net.Conn
	t.Cleanup(func() {
		for _, c := range held {
			c.Close()
		}
	})
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	const sources, perSource = 40, 24 // 960 connections: more than the limit allows
	for src := range sources {
		for i := range perSource {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				target := targets[i%len(targets)]
				d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 2, byte(src+1))}, Timeout: 5 * time.Second}
				var c net.Conn
				var err error
				if target.tls {
					c, err = tls.DialWithDialer(d, "tcp", target.addr, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", NextProtos: []string{"stun.turn"}})
				} else {
					c, err = d.Dial("tcp", target.addr)
				}
				if err != nil {
					return
				}
				if !bindingServed(c) {
					c.Close()
					return
				}
				mu.Lock()
				held = append(held, c)
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	t.Logf("the flood holds %d of %d connections", len(held), sources*perSource)
	if open := r.d.Relay().Stats().Streams.Load(); open > limit/4 {
		t.Errorf("%d stream connections open under an open-file limit of %d, want at most a quarter", open, limit)
	}

	t.Run("admin socket", func(t *testing.T) {
		if _, err := admin.NewClient(r.d.config().Server.AdminSocket).Status(context.Background()); err != nil {
			t.Fatalf("status: %v", err)
		}
	})
	t.Run("udp allocation", func(t *testing.T) {
		relayed, err := r.allocate(t, "alice", "wonderland")
		if err != nil {
			t.Fatalf("allocate: %v", err)
		}
		if err := relayOnce(relayed, testutil.UDPEchoOn(t, "127.0.0.1:0").LocalAddr()); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("page", func(t *testing.T) {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get("https://" + r.d.WebAddrs()[0].String() + "/")
		if err != nil {
			t.Fatalf("GET: %v", err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("GET: %s", resp.Status)
		}
	})
}

// bindingServed sends a Binding request on a TURN stream and reports
// whether the relay answered it within 2 s.
func bindingServed(c net.Conn) bool {
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	c.SetDeadline(time.Now().Add(2 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write(req.Raw); err != nil {
		return false
	}
	framer := turn.NewSTUNConn(c)
	buf := make([]byte, 2048)
	for {
		n, _, err := framer.ReadFrom(buf)
		if err != nil {
			return false
		}
		resp := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
		if resp.Decode() == nil && resp.TransactionID == req.TransactionID {
			return resp.Type == stun.BindingSuccess
		}
	}
}
