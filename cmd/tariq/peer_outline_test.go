package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestPeerOutline: with no daemon running, `peer add NAME --outline` and
// `peer show NAME --outline` print the member's Outline key, one line,
// ssconf://<public host>/<token>#<member>, the same for any device of
// theirs, or its QR code with --qr; with a certificate the Outline app
// refuses (tls.mode resolving to self-signed), they say so in one line,
// exit non-zero and add nothing; with the path off they name the key.
func TestPeerOutline(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "tariq.yaml")
	if err := os.WriteFile(conf, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"--config", conf, "--data-dir", dir + "/data", "--admin-socket", dir + "/admin.sock",
		"--set", "vpn.outline.enabled=true"}
	run := func(host string, args ...string) (int, string, string) {
		t.Helper()
		return tariq(t, append(append(args, base...), "--set", "server.public_host="+host)...)
	}
	const public = "193.0.14.129" // a public IP address: tls.mode auto gets a trusted certificate
	keyRe := regexp.MustCompile(`^ssconf://193\.0\.14\.129/[A-Z2-7]{26}#mom\n$`)

	code, key, errOut := run(public, "peer", "add", "mom", "--outline")
	if code != 0 || !keyRe.MatchString(key) {
		t.Fatalf("peer add mom --outline: exit %d, stdout %q, stderr %q", code, key, errOut)
	}
	if code, out, errOut := run(public, "peer", "show", "mom", "--outline"); code != 0 || out != key {
		t.Errorf("peer show mom --outline: exit %d, %q (stderr %q), want %q", code, out, errOut, key)
	}
	if code, _, errOut := run(public, "peer", "add", "mom-laptop", "--member", "mom"); code != 0 {
		t.Fatalf("peer add mom-laptop: %d %s", code, errOut)
	}
	if code, out, _ := run(public, "peer", "show", "mom-laptop", "--outline"); code != 0 || out != key {
		t.Errorf("peer show mom-laptop --outline: exit %d, %q, want mom's key %q", code, out, key)
	}
	if code, out, _ := run(public, "peer", "show", "mom", "--outline", "--qr"); code != 0 || !strings.Contains(out, "█") || strings.Contains(out, "ssconf") {
		t.Errorf("peer show mom --outline --qr: exit %d\n%s", code, out)
	}
	if code, out, _ := run(public, "peer", "show", "mom"); code != 0 || !strings.Contains(out, "[Interface]") {
		t.Errorf("peer show mom without --outline: exit %d\n%s", code, out)
	}
	if code, _, errOut := run(public, "peer", "show", "mom", "--outline", "--invite"); code != exitUsage || !strings.Contains(errOut, "--outline and --invite") {
		t.Errorf("--outline --invite: exit %d, %q", code, errOut)
	}
	// Every device disabled: the key is printed, and said to be off.
	run(public, "peer", "disable", "mom")
	run(public, "peer", "disable", "mom-laptop")
	if code, out, errOut := run(public, "peer", "show", "mom", "--outline"); code != 0 || out != key || !strings.Contains(errOut, "off while every device of theirs is disabled") {
		t.Errorf("the key of a member with every device disabled: exit %d, %q, stderr %q", code, out, errOut)
	}

	// A certificate the app refuses: one line, non-zero, nothing added.
	for _, host := range []string{"10.0.0.7", "vpn.example.org"} { // self-signed: a private address; a name without tls.email
		code, out, errOut := run(host, "peer", "show", "mom", "--outline")
		if code == 0 || out != "" || !strings.Contains(errOut, "publicly trusted certificate") || !strings.Contains(errOut, "self-signed") ||
			strings.Count(errOut, "\n") != 1 {
			t.Errorf("peer show --outline for %s (self-signed): exit %d, stdout %q, stderr %q; want one line and no key", host, code, out, errOut)
		}
		if code, out, _ := run(host, "peer", "add", "dad", "--outline"); code == 0 || out != "" {
			t.Errorf("peer add dad --outline for %s (self-signed): exit %d, stdout %q", host, code, out)
		}
		if _, out, _ := run(host, "peer", "list"); listed(out, "dad") {
			t.Errorf("peer add --outline with a self-signed certificate added dad anyway:\n%s", out)
		}
	}
	if code, _, errOut := tariq(t, append(base[:6], "--set", "server.public_host="+public, "peer", "show", "mom", "--outline")...); code == 0 ||
		!strings.Contains(errOut, "vpn.outline.enabled") {
		t.Errorf("--outline with the path off: exit %d, %q", code, errOut)
	}
}

// TestCheckOutline: tariq check says whether the Outline app will trust
// the certificate the configuration gets.
func TestCheckOutline(t *testing.T) {
	dir := t.TempDir()
	for host, want := range map[string]string{
		"10.0.0.7":     "warn  vpn.outline.enabled     no Outline key will work: the Outline app needs a publicly trusted certificate",
		"193.0.14.129": "ok    vpn.outline.enabled     the certificate will be one the Outline app trusts (tls.mode acme)",
	} {
		_, out, _ := tariq(t, "check", "--data-dir", dir+"/data", "--admin-socket", dir+"/admin.sock", "--set", "vpn.outline.enabled=true",
			"--set", "server.public_host="+host, "--set", "relay.enabled=false", "--set", "web.listen=127.0.0.1:0", "--set", "server.metrics_listen=")
		if !strings.Contains(strings.Join(strings.Fields(out), " "), strings.Join(strings.Fields(want), " ")) {
			t.Errorf("check for %s lacks %q:\n%s", host, want, out)
		}
	}
}
