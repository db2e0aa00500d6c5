// Package systemd holds tariq's unit file; this test measures its hardening.
package systemd

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/tariq-vpn/tariq/internal/testutil"
)

// TestUnitExposure requires `systemd-analyze security --offline=yes` to rate
// the unit 2.0 or lower (Debian's coturn.service scores 9.0,
// wg-quick@.service 9.6).
func TestUnitExposure(t *testing.T) {
	sa := testutil.RequireBinary(t, "systemd-analyze")
	out, err := exec.Command(sa, "security", "--offline=yes", "--no-pager", "tariq.service").CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`Overall exposure level for tariq.service: ([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no exposure level in:\n%s", out)
	}
	score, _ := strconv.ParseFloat(string(m[1]), 64)
	t.Logf("exposure %.1f", score)
	if score > 2.0 {
		t.Errorf("exposure %.1f, want 2.0 or lower:\n%s", score, out)
	}
}

// TestUnitVerify runs `systemd-analyze verify` on the unit with ExecStart
// pointing at a real tariq binary.
func TestUnitVerify(t *testing.T) {
	sa := testutil.RequireBinary(t, "systemd-analyze")
	dir := t.TempDir()
	bin := filepath.Join(dir, "tariq")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/tariq").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	unit, err := os.ReadFile("tariq.service")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.ReplaceAll(string(unit), "/usr/local/bin/tariq", bin)
	if text == string(unit) {
		t.Fatal("ExecStart does not name /usr/local/bin/tariq")
	}
	path := filepath.Join(dir, "tariq.service")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(sa, "verify", "--man=no", path).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	for _, want := range []string{"Type=notify", "ExecReload=/bin/kill -HUP $MAINPID", "Restart=on-failure",
		"CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_BIND_SERVICE", "NoNewPrivileges=yes", "ProtectSystem=strict",
		"DeviceAllow=/dev/net/tun rw", "DevicePolicy=closed", "RestrictAddressFamilies=", "SystemCallFilter=@system-service",
		"StateDirectory=tariq", "RuntimeDirectory=tariq", "ConfigurationDirectory=tariq"} {
		if !strings.Contains(text, want) {
			t.Errorf("unit lacks %q", want)
		}
	}
}
