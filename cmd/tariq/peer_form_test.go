package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPeerForms: with no daemon running, `peer add` and `peer show` give a
// device its port (--port, one of vpn.extra_ports) or the AmneziaWG form
// (--obfuscated), say so on stderr, and refuse a port tariq does not
// listen on, or both at once.
func TestPeerForms(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "tariq.yaml") // never /etc/tariq/tariq.yaml, which other tests may write
	if err := os.WriteFile(conf, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"--config", conf, "--data-dir", dir + "/data", "--admin-socket", dir + "/admin.sock",
		"--set", "server.public_host=vpn.example.org", "--set", "vpn.extra_ports=443",
		"--set", "vpn.obfuscation.enabled=true"}
	run := func(args ...string) (int, string, string) {
		t.Helper()
		return tariq(t, append(args, base...)...)
	}
	code, awg, errOut := run("peer", "add", "mom", "--obfuscated")
	if code != 0 || !strings.Contains(awg, "\nJc = ") || !strings.Contains(awg, "\nH4 = ") ||
		!strings.Contains(awg, "Endpoint = vpn.example.org:51821\n") || !strings.Contains(errOut, "AmneziaWG") {
		t.Fatalf("peer add --obfuscated: exit %d\n%s\nstderr: %s", code, awg, errOut)
	}
	if code, out, errOut := run("peer", "show", "mom"); code != 0 || out != awg || !strings.Contains(errOut, "AmneziaWG") {
		t.Errorf("peer show: exit %d, stderr %q, same config %v", code, errOut, out == awg)
	}
	code, out, errOut := run("peer", "add", "dad", "--port", "443")
	if code != 0 || strings.Contains(out, "\nJc = ") || !strings.Contains(out, "Endpoint = vpn.example.org:443\n") || !strings.Contains(errOut, "UDP port 443") {
		t.Errorf("peer add --port 443: exit %d\n%s\nstderr: %s", code, out, errOut)
	}
	code, out, errOut = run("peer", "add", "kid")
	if code != 0 || !strings.Contains(out, "Endpoint = vpn.example.org:51820\n") || strings.Contains(errOut, "UDP port") {
		t.Errorf("peer add: exit %d\n%s\nstderr: %s", code, out, errOut)
	}
	for _, bad := range [][]string{{"--port", "444"}, {"--port", "443", "--obfuscated"}} {
		if code, _, errOut := run(append([]string{"peer", "add", "x"}, bad...)...); code == 0 || !strings.Contains(errOut, "is not a WireGuard port of this server") {
			t.Errorf("peer add %v: exit %d, %q", bad, code, errOut)
		}
	}
	if code, _, errOut := tariq(t, "peer", "add", "x", "--obfuscated", "--config", conf, "--data-dir", dir+"/data", "--admin-socket", dir+"/admin.sock",
		"--set", "server.public_host=vpn.example.org"); code == 0 || !strings.Contains(errOut, "vpn.obfuscation.enabled") {
		t.Errorf("--obfuscated with obfuscation off: exit %d, %q", code, errOut)
	}
}
