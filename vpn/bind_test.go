package vpn

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tariq-vpn/tariq/internal/wgconf"

	"github.com/pion/stun/v4"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/tariq-vpn/tariq/config"
	"github.com/tariq-vpn/tariq/internal/members"
	"github.com/tariq-vpn/tariq/internal/testutil"
)

// awgFromConf reads the AmneziaWG keys of an exported config.
func awgFromConf(t *testing.T, c map[string]string) wgconf.AmneziaWG {
	t.Helper()
	n := func(k string) uint64 {
		v, err := strconv.ParseUint(c["Interface."+k], 10, 32)
		if err != nil {
			t.Fatalf("%s = %q: %v", k, c["Interface."+k], err)
		}
		return v
	}
	return wgconf.AmneziaWG{
		Jc: int(n("Jc")), Jmin: int(n("Jmin")), Jmax: int(n("Jmax")), S1: int(n("S1")), S2: int(n("S2")),
		H1: uint32(n("H1")), H2: uint32(n("H2")), H3: uint32(n("H3")), H4: uint32(n("H4")),
	}
}

// newAWGClient is a wireguard-go client configured from an exported
// AmneziaWG config, over a bind that speaks AmneziaWG with the config's
// parameters: tariq's own translator, on the client side.
func newAWGClient(t *testing.T, h *hub, conf string) *testClient {
	t.Helper()
	c := parseWGQuick(t, conf)
	priv, err := wgconf.ParseKey(c["Interface.PrivateKey"])
	if err != nil {
		t.Fatal(err)
	}
	srv, err := wgconf.ParseKey(c["Peer.PublicKey"])
	if err != nil {
		t.Fatal(err)
	}
	a := newAWG(awgFromConf(t, c), priv.PublicKey(), []Key{srv})
	b := newBind([]*socket{{key: "client", awg: a, inner: h.bind()}}, testLogger(t))
	return newClientOn(t, b, conf, nil)
}

// endpointOf returns the server endpoint a client device talks to now
// (wireguard-go moves it to wherever the server's packets come from).
func (c *testClient) endpointOf(t *testing.T) string {
	t.Helper()
	dump, err := c.dev.IpcGet()
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(dump) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "endpoint="); ok {
			return v
		}
	}
	return ""
}

// stunProbe sends a STUN Binding request from a fresh port on h to port
// and returns the response and the port it came from.
func stunProbe(t *testing.T, h *hub, port uint16) (resp *stun.Message, from uint16, self uint16) {
	t.Helper()
	b := h.bind()
	fns, self, err := b.Open(0)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	req, err := stun.Build(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Send([][]byte{req.Raw}, hubEndpoint(port)); err != nil {
		t.Fatal(err)
	}
	type got struct {
		b    []byte
		from uint16
	}
	ch := make(chan got, 1)
	go func() {
		bufs, sizes, eps := [][]byte{make([]byte, 1500)}, make([]int, 1), make([]conn.Endpoint, 1)
		if n, err := fns[0](bufs, sizes, eps); err == nil && n == 1 {
			ch <- got{bufs[0][:sizes[0]], uint16(eps[0].(hubEndpoint))}
		}
		close(ch)
	}()
	select {
	case g, ok := <-ch:
		if !ok {
			t.Fatalf("port %d: no STUN answer", port)
		}
		m := &stun.Message{Raw: g.b}
		if err := m.Decode(); err != nil {
			t.Fatalf("port %d: answer does not parse: %v", port, err)
		}
		if m.TransactionID != req.TransactionID {
			t.Fatalf("port %d: answer to another transaction", port)
		}
		return m, g.from, self
	case <-time.After(2 * time.Second):
		b.Close()
		<-ch
		t.Fatalf("port %d: no STUN answer", port)
	}
	return nil, 0, 0
}

// TestServiceMultiPort runs the Service with two extra stock ports and the
// obfuscated port against a wireguard-go client on each stock port and
// one speaking AmneziaWG (through tariq's translator on its side), each
// configured from its exported config. Packets pass both ways; each
// client's packets come back from the port it dialled; the server's view
// names each peer's port and form; clients on the wrong kind of port get
// nothing through; every port answers STUN from itself with the prober's
// address; the obfuscation keys refuse to reload; and after a restart the
// same configs work again.
func TestServiceMultiPort(t *testing.T) {
	testutil.LeakCheck(t)
	h := newHub()
	cfg := testConfig(t)
	cfg.Server.PublicHost = "127.0.0.1"
	cfg.VPN.ExtraPorts = []int{443, 8443}
	cfg.VPN.Obfuscation = config.ObfuscationConfig{Enabled: true, ListenPort: 51821}
	st := testStore(t, cfg)
	ts := startServer(t, cfg, st, h)

	for _, tc := range []struct {
		req  AddPeerRequest
		want error
	}{
		{AddPeerRequest{Name: "p51820"}, nil},
		{AddPeerRequest{Name: "p443", Port: 443}, nil},
		{AddPeerRequest{Name: "p8443", Port: 8443}, nil},
		{AddPeerRequest{Name: "awg", Obfuscated: true}, nil},
		{AddPeerRequest{Name: "explicit", Port: 51820}, nil},
		{AddPeerRequest{Name: "bad", Port: 444}, members.ErrBadPort},
		{AddPeerRequest{Name: "bad", Port: 51821}, members.ErrBadPort},
		{AddPeerRequest{Name: "bad", Port: 443, Obfuscated: true}, members.ErrBadPort},
	} {
		p, err := ts.AddPeer(tc.req)
		if !errors.Is(err, tc.want) {
			t.Fatalf("AddPeer(%+v): %v, want %v", tc.req, err, tc.want)
		}
		if err == nil && (p.Obfuscated != tc.req.Obfuscated || (tc.req.Port != 51820 && p.Port != tc.req.Port) || (tc.req.Port == 51820 && p.Port != 0)) {
			t.Errorf("stored %+v for %+v", p, tc.req)
		}
	}
	if _, err := ts.AddPeer(AddPeerRequest{Name: "bad", Port: 444}); err == nil || !strings.Contains(err.Error(), `peer "bad": port 444 is not a WireGuard port of this server (vpn.listen_port 51820, vpn.extra_ports [443 8443])`) {
		t.Errorf("unknown port: %v", err)
	}

	confs := map[string]string{}
	for _, n := range []string{"p51820", "p443", "p8443", "awg"} {
		conf, err := ts.ClientConfig(n)
		if err != nil {
			t.Fatal(err)
		}
		confs[n] = conf
	}
	wantEndpoint := map[string]string{"p51820": "127.0.0.1:51820", "p443": "127.0.0.1:443", "p8443": "127.0.0.1:8443", "awg": "127.0.0.1:51821"}
	for n, conf := range confs {
		c := parseWGQuick(t, conf)
		if c["Peer.Endpoint"] != wantEndpoint[n] || (n == "awg") != (c["Interface.Jc"] != "") {
			t.Errorf("%s: endpoint %s, Jc %q", n, c["Peer.Endpoint"], c["Interface.Jc"])
		}
	}
	clients := map[string]*testClient{
		"p51820": newClient(t, h, confs["p51820"], nil),
		"p443":   newClient(t, h, confs["p443"], nil),
		"p8443":  newClient(t, h, confs["p8443"], nil),
		"awg":    newAWGClient(t, h, confs["awg"]),
	}

	t.Run("traffic", func(t *testing.T) {
		for n, c := range clients {
			reaches(t, ts, c)
			if got := c.endpointOf(t); got != wantEndpoint[n] {
				t.Errorf("%s: server packets came from %s, want %s (the port it dialled)", n, got, wantEndpoint[n])
			}
		}
	})

	t.Run("status", func(t *testing.T) {
		want := map[string][2]string{"p51820": {"51820", "false"}, "p443": {"443", "false"}, "p8443": {"8443", "false"}, "awg": {"51821", "true"}, "explicit": {"51820", "false"}}
		for _, p := range ts.Devices() {
			if got := [2]string{strconv.Itoa(p.Port), strconv.FormatBool(p.Obfuscated)}; got != want[p.Name] {
				t.Errorf("%s: port %s obfuscated %s, want %v", p.Name, got[0], got[1], want[p.Name])
			}
			if p.Name != "explicit" && p.LastHandshake.IsZero() {
				t.Errorf("%s: no handshake", p.Name)
			}
		}
	})

	t.Run("wrong kind of port", func(t *testing.T) {
		// The stock client's config pointed at the obfuscated port, the
		// AmneziaWG one's at the stock port.
		stockThere := newClient(t, h, strings.Replace(confs["p51820"], "127.0.0.1:51820", "127.0.0.1:51821", 1), nil)
		awgThere := newAWGClient(t, h, strings.Replace(confs["awg"], "127.0.0.1:51821", "127.0.0.1:51820", 1))
		s4 := ts.Addresses()[0].Addr()
		for _, c := range []*testClient{stockThere, awgThere} {
			p := packet(c.v4, s4)
			c.send(t, p)
			if ts.expect(p, time.Second) {
				t.Errorf("%s got through the wrong kind of port", c.v4)
			}
		}
		stockThere.dev.Close()
		awgThere.dev.Close()
	})

	t.Run("stun", func(t *testing.T) {
		for _, port := range []uint16{51820, 443, 8443, 51821} {
			m, from, self := stunProbe(t, h, port)
			var xa stun.XORMappedAddress
			if err := xa.GetFrom(m); err != nil {
				t.Fatalf("port %d: %v", port, err)
			}
			if m.Type != stun.BindingSuccess || from != port || xa.Port != int(self) || !xa.IP.Equal([]byte{127, 0, 0, 1}) {
				t.Errorf("port %d: %s from port %d, mapped %s:%d; want success from %d mapping 127.0.0.1:%d", port, m.Type, from, xa.IP, xa.Port, port, self)
			}
		}
		reaches(t, ts, clients["awg"]) // and the tunnels never noticed
	})

	t.Run("reload", func(t *testing.T) {
		next := *cfg
		next.VPN.ExtraPorts = []int{443}
		next.VPN.Obfuscation = config.ObfuscationConfig{Enabled: false, ListenPort: 51999}
		err := ts.Reload(&next)
		var refused []string
		for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
			var fe *config.FieldError
			if errors.As(e, &fe) && fe.Msg == "changing it needs a restart" {
				refused = append(refused, fe.Key)
			}
		}
		if fmt.Sprint(refused) != "[vpn.extra_ports vpn.obfuscation.enabled vpn.obfuscation.listen_port]" {
			t.Errorf("refused %v (%v)", refused, err)
		}
		reaches(t, ts, clients["p8443"])
		reaches(t, ts, clients["awg"])
		// listen_port needs a restart too: every device dials the port its
		// config names, so all keep reaching the server.
		next = *cfg
		next.VPN.ListenPort = 51830
		if err := ts.Reload(&next); err == nil || err.Error() != "vpn.listen_port: changing it needs a restart" {
			t.Errorf("listen_port changed by reload: %v", err)
		}
		if p := ts.ListenPort(); p != 51820 {
			t.Errorf("listening on %d after the reload, want 51820 kept", p)
		}
		for _, n := range []string{"p8443", "awg"} {
			clients[n].reset(t)
			reaches(t, ts, clients[n])
		}
		// (A config that clashes with itself never gets here: the daemon
		// validates the whole file first, config.Validate.)
	})

	t.Run("restart", func(t *testing.T) {
		before := confs["awg"]
		ts.stop()
		ts = startServer(t, cfg, st, h)
		after, err := ts.ClientConfig("awg")
		if err != nil || after != before {
			t.Fatalf("config changed across restart:\n%s\n%s (%v)", before, after, err)
		}
		for n, c := range clients {
			c.reset(t)
			reaches(t, ts, c)
			if got := c.endpointOf(t); got != wantEndpoint[n] {
				t.Errorf("%s: server packets came from %s after restart", n, got)
			}
		}
	})
}

// TestOldStateKeepsWorking: a state written before ports and obfuscation
// existed (no obfuscation parameters, peers without port or form) opens;
// its peers are stock peers on vpn.listen_port; the parameters are then
// generated once and kept.
func TestOldStateKeepsWorking(t *testing.T) {
	testutil.LeakCheck(t)
	cfg := testConfig(t)
	cfg.Server.PublicHost = "127.0.0.1"
	st := testStore(t, cfg)
	if _, err := newMembers(t, cfg, st, nil).Add(AddPeerRequest{Name: "mom"}); err != nil {
		t.Fatal(err)
	}
	path := st.Path("state.json")
	old, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if err := json.Unmarshal(old, &raw); err != nil {
		t.Fatal(err)
	}
	delete(raw["vpn"].(map[string]any), "amneziawg")
	if old, err = json.Marshal(raw); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(old, []byte("amneziawg")) || bytes.Contains(old, []byte(`"port"`)) || bytes.Contains(old, []byte("obfuscated")) {
		t.Fatalf("test state still has new fields:\n%s", old)
	}
	if err := os.WriteFile(path, old, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.VPN.Obfuscation.Enabled = true
	h := newHub()
	ts := startServer(t, cfg, st, h)
	conf, err := ts.ClientConfig("mom")
	if err != nil {
		t.Fatal(err)
	}
	c := parseWGQuick(t, conf)
	if c["Peer.Endpoint"] != "127.0.0.1:51820" || c["Interface.Jc"] != "" {
		t.Errorf("old peer's config: %v", c)
	}
	reaches(t, ts, newClient(t, h, conf, nil))
	params := mustLoad(t, st).VPN.AmneziaWG
	if params == nil || wgconf.CheckAmneziaWG(*params) != nil {
		t.Fatalf("parameters not generated: %+v", params)
	}
	ts.stop()
	ts = startServer(t, cfg, st, h)
	if again := mustLoad(t, st).VPN.AmneziaWG; *again != *params {
		t.Errorf("parameters changed on the second start: %+v → %+v", params, again)
	}
	p, err := ts.AddPeer(AddPeerRequest{Name: "dad", Obfuscated: true})
	if err != nil {
		t.Fatal(err)
	}
	conf, _ = ts.ClientConfig(p.Name)
	if got := awgFromConf(t, parseWGQuick(t, conf)); got != *params {
		t.Errorf("exported %+v, stored %+v", got, *params)
	}
}

// TestServicePortErrors: a port already taken fails Open naming the port
// and its key, and closes what it had opened. (Clashing ports in the
// config are config.Validate's to refuse.)
func TestServicePortErrors(t *testing.T) {
	testutil.LeakCheck(t)
	cfg := testConfig(t)
	st := testStore(t, cfg)
	h := newHub()
	for _, port := range []uint16{443, 51821} {
		busy := h.bind()
		if _, _, err := busy.Open(port); err != nil {
			t.Fatal(err)
		}
		c := *cfg
		c.VPN.ExtraPorts = []int{443}
		c.VPN.Obfuscation = config.ObfuscationConfig{Enabled: true, ListenPort: 51821}
		s, err := New(&c, Deps{Identity: identity(t, cfg, st), TUN: tuntest.NewChannelTUN().TUN(), NewBind: h.bind, DisableUAPI: true})
		if err != nil {
			t.Fatal(err)
		}
		key := map[uint16]string{443: "vpn.extra_ports", 51821: "vpn.obfuscation.listen_port"}[port]
		err = s.Open(context.Background())
		want := fmt.Sprintf("vpn: listening on UDP port %d (%s): ", port, key)
		if err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("Open with port %d taken: %v, want %q…", port, err, want)
		}
		if err := s.Close(); err != nil {
			t.Error(err)
		}
		busy.Close()
		h.mu.Lock()
		open := len(h.ports)
		h.mu.Unlock()
		if open != 0 {
			t.Errorf("%d hub ports still open after the failed Open", open)
		}
	}
}
