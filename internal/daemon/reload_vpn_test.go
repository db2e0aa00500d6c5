package daemon

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tariq-vpn/tariq/config"
	"github.com/tariq-vpn/tariq/internal/admin"
	"github.com/tariq-vpn/tariq/internal/testutil"
)

// TestDaemonReloadKeepsWireGuardPorts: a SIGHUP that changes
// vpn.listen_port, vpn.extra_ports or vpn.obfuscation.listen_port changes
// none of them: every device was given the old ports, so the daemon keeps
// serving those, logs each key as needing a restart, and the config in
// force (exported configs, status, the invite page's checks) keeps naming
// them. A device already connected keeps its tunnel and a new one
// handshakes on the old port; nothing listens on the new one.
//
// The WireGuard endpoint needs a kernel TUN, so the test runs as a process
// of its own in a fresh network namespace (testutil.InNetNS).
func TestDaemonReloadKeepsWireGuardPorts(t *testing.T) {
	testutil.RequireRoot(t)
	if !testutil.InNetNS(t, 60*time.Second) {
		return
	}
	testutil.LeakCheck(t)
	var rnd [3]byte
	rand.Read(rnd[:])
	iface := "tq" + hex.EncodeToString(rnd[:])
	ports := distinctUDPPorts(t, 6)
	dir := t.TempDir()
	yaml := func(listen, extra, obf int) string {
		return fmt.Sprintf(`server:
  public_host: 127.0.0.1
  data_dir: %[1]s/data
  admin_socket: %[1]s/admin.sock
  metrics_listen: ""
tls:
  mode: off
web:
  enabled: false
relay:
  enabled: false
vpn:
  interface: %[2]s
  nat: false
  listen_port: %[3]d
  extra_ports: [%[4]d]
  obfuscation: {enabled: true, listen_port: %[5]d}
`, dir, iface, listen, extra, obf)
	}
	file := writeConfig(t, dir, yaml(ports[0], ports[1], ports[2]))
	r, _ := runDaemon(t, file, nil)
	tunnelAddr := netip.MustParseAddr("10.77.0.1")
	phone := newWGClient(t, r, "phone", fmt.Sprintf("127.0.0.1:%d", ports[0]))
	if !phone.ping(tunnelAddr, 10*time.Second) {
		t.Fatal("no echo reply through the tunnel before the reload")
	}

	pendingWarnings := func() []string {
		t.Helper()
		loaded, err := config.Load(config.Options{File: file})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var warned []string
		for _, f := range Check(ctx, loaded) {
			if f.Severity == Warn && strings.Contains(f.Detail, "takes effect on restart") {
				warned = append(warned, f.What)
			}
		}
		return warned
	}
	if w := pendingWarnings(); len(w) != 0 {
		t.Errorf("check warns of %v with the file the daemon runs", w)
	}

	r.reloadFile(t, yaml(ports[3], ports[4], ports[5]))
	logs := r.logs.String()
	for _, key := range []string{"vpn.listen_port", "vpn.extra_ports", "vpn.obfuscation.listen_port"} {
		if !strings.Contains(logs, key+": changing it needs a restart") {
			t.Errorf("the log does not name %s as needing a restart:\n%s", key, logs)
		}
	}
	if got := r.d.VPN().ListenPort(); got != ports[0] {
		t.Errorf("the device listens on %d after the reload, want %d kept", got, ports[0])
	}
	cfg := r.d.config().VPN
	if cfg.ListenPort != ports[0] || !slices.Equal(cfg.ExtraPorts, []int{ports[1]}) || cfg.Obfuscation.ListenPort != ports[2] {
		t.Errorf("config in force after the reload: listen_port %d, extra_ports %v, obfuscation %d; want the running %d, [%d], %d",
			cfg.ListenPort, cfg.ExtraPorts, cfg.Obfuscation.ListenPort, ports[0], ports[1], ports[2])
	}
	st := adminVPNStatus(t, r)
	if st.ListenPort != ports[0] || !slices.Equal(st.ExtraPorts, []int{ports[1]}) || st.ObfuscationPort != ports[2] {
		t.Errorf("status after the reload: %d %v %d", st.ListenPort, st.ExtraPorts, st.ObfuscationPort)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pc, err := admin.NewClient(r.d.config().Server.AdminSocket).Show(ctx, "phone")
	if err != nil || !strings.Contains(pc.Config, fmt.Sprintf("Endpoint = 127.0.0.1:%d\n", ports[0])) {
		t.Errorf("phone's exported config after the reload (%v):\n%s", err, pc.Config)
	}

	// `tariq check` on the new file says which ports wait for a restart.
	if warned, want := pendingWarnings(), []string{"vpn.listen_port", "vpn.extra_ports", "vpn.obfuscation.listen_port"}; !slices.Equal(warned, want) {
		t.Errorf("check warns of %v, want %v", warned, want)
	}

	if !phone.ping(tunnelAddr, 10*time.Second) {
		t.Error("the connected device lost its tunnel on reload")
	}
	tablet := newWGClient(t, r, "tablet", fmt.Sprintf("127.0.0.1:%d", ports[0]))
	if !tablet.ping(tunnelAddr, 10*time.Second) {
		t.Error("a new device cannot handshake on the old port after the reload")
	}
	for _, p := range ports[3:] {
		c, err := net.ListenPacket("udp", fmt.Sprintf(":%d", p))
		if err != nil {
			t.Errorf("UDP %d, a port only the reloaded file names, is taken: %v", p, err)
			continue
		}
		c.Close()
	}
}

// distinctUDPPorts returns n different UDP ports that were free a moment ago.
func distinctUDPPorts(t *testing.T, n int) []int {
	t.Helper()
	var out []int
	for len(out) < n {
		if p := freeUDPPort(t); !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// adminVPNStatus returns the VPN part of the admin API's status.
func adminVPNStatus(t *testing.T, r *running) *admin.VPNStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := admin.NewClient(r.d.config().Server.AdminSocket).Status(ctx)
	if err != nil || st.VPN == nil {
		t.Fatalf("admin status: %v %+v", err, st)
	}
	return st.VPN
}
