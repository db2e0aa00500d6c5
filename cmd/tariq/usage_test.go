package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tariq-vpn/tariq/internal/admin"
)

// TestUnknownSubcommand: a mistyped subcommand, at any level, is a usage
// error (exit 2) in one line that names it and suggests the nearest one,
// never the help text with exit 0.
func TestUnknownSubcommand(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"peer", "ad", "mom"}, `tariq: unknown command "ad" for "tariq peer"; did you mean "add"?` + "\n"},
		{[]string{"peer", "lst"}, `tariq: unknown command "lst" for "tariq peer"; did you mean "list"?` + "\n"},
		{[]string{"turn", "credential"}, `tariq: unknown command "credential" for "tariq turn"; did you mean "credentials"?` + "\n"},
		{[]string{"turn", "zzz"}, `tariq: unknown command "zzz" for "tariq turn"` + "\n"},
		{[]string{"statu"}, `tariq: unknown command "statu" for "tariq"; did you mean "status"?` + "\n"},
		{[]string{"completion", "bassh"}, `tariq: unknown command "bassh" for "tariq completion"; did you mean "bash"?` + "\n"},
		{[]string{"help", "peer", "ad"}, `tariq: unknown command "ad" for "tariq peer"; did you mean "add"?` + "\n"},
		{[]string{"help", "nope"}, `tariq: unknown command "nope" for "tariq"; did you mean "node"?` + "\n"},
		{[]string{"help", "zzz"}, `tariq: unknown command "zzz" for "tariq"` + "\n"},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, out, errOut := tariq(t, tt.args...)
			if code != exitUsage || errOut != tt.want || out != "" {
				t.Errorf("exit %d, stderr %q, stdout %d bytes; want exit 2, %q and nothing on stdout", code, errOut, len(out), tt.want)
			}
		})
	}
	// A group alone, or help on a real command, is still help.
	for _, args := range [][]string{{"peer"}, {"turn"}, {"help", "peer", "add"}, {"peer", "--help"}} {
		if code, out, _ := tariq(t, args...); code != 0 || !strings.Contains(out, "Usage:") {
			t.Errorf("%v: exit %d\n%s", args, code, out)
		}
	}
}

// TestTTLFlag: a zero, negative, sub-second or unparsable --ttl is refused
// as a usage error before anything is minted or stored, never replaced by
// the default; --ttl without --invite is refused rather than ignored.
func TestTTLFlag(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"turn", "credentials", "--ttl", "0"}, `tariq: --ttl 0s: must be at least 1s` + "\n"},
		{[]string{"turn", "credentials", "--ttl", "-1h"}, `tariq: --ttl -1h0m0s: must be at least 1s` + "\n"},
		{[]string{"turn", "credentials", "--ttl", "500ms"}, `tariq: --ttl 500ms: must be at least 1s` + "\n"},
		{[]string{"turn", "credentials", "--ttl", "abc"}, `tariq: invalid argument "abc" for "--ttl" flag: time: invalid duration "abc"` + "\n"},
		{[]string{"peer", "add", "mom", "--invite", "--ttl", "0"}, `tariq: --ttl 0s: must be at least 1s` + "\n"},
		{[]string{"peer", "add", "mom", "--invite", "--ttl", "-72h"}, `tariq: --ttl -72h0m0s: must be at least 1s` + "\n"},
		{[]string{"peer", "show", "mom", "--invite", "--ttl", "0s"}, `tariq: --ttl 0s: must be at least 1s` + "\n"},
		{[]string{"peer", "add", "mom", "--invite", "--ttl", "1d"}, `tariq: invalid argument "1d" for "--ttl" flag: time: unknown unit "d" in duration "1d"` + "\n"},
		{[]string{"peer", "add", "mom", "--ttl", "1h"}, `tariq: --ttl applies only with --invite` + "\n"},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			dir := t.TempDir()
			args := append(tt.args, "--data-dir", dir+"/data", "--admin-socket", dir+"/admin.sock",
				"--set", "server.public_host=vpn.example.org", "--set", "relay.secrets="+testSecret)
			code, out, errOut := tariq(t, args...)
			if code != exitUsage || errOut != tt.want || out != "" {
				t.Errorf("exit %d, stderr %q, stdout %q; want exit 2 and %q", code, errOut, out, tt.want)
			}
			if _, err := os.Stat(filepath.Join(dir, "data")); err == nil {
				t.Error("a refused command touched the data directory")
			}
		})
	}
}

// TestStatusCertificateOnce: the certificate line says "self-signed" once,
// whatever the source.
func TestStatusCertificateOnce(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		name string
		c    admin.CertStatus
		want string
	}{
		{"self-signed", admin.CertStatus{Mode: "self-signed", Source: "self-signed", SelfSigned: true, Issuer: "127.0.0.1"},
			"Certificate self-signed for 127.0.0.1, expires 2031-05-01"},
		{"fallback", admin.CertStatus{Mode: "acme", Source: "fallback", SelfSigned: true, Issuer: "vpn.example.org", CA: "https://ca.test/dir"},
			"Certificate self-signed for vpn.example.org until ACME issues one, expires 2031-05-01"},
		{"acme", admin.CertStatus{Mode: "acme", Source: "acme", Issuer: "R11"},
			"Certificate from ACME for vpn.example.org, issued by R11, expires 2031-05-01"},
		{"files", admin.CertStatus{Mode: "files", Source: "files", Issuer: "Example CA"},
			"Certificate from tls.cert_file for vpn.example.org, issued by Example CA, expires 2031-05-01"},
		{"self-signed file", admin.CertStatus{Mode: "files", Source: "files", SelfSigned: true, Issuer: "vpn.example.org"},
			"Certificate from tls.cert_file for vpn.example.org, self-signed, expires 2031-05-01"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.c
			if c.Names == nil {
				c.Names = []string{"vpn.example.org"}
			}
			if tt.name == "self-signed" {
				c.Names = []string{"127.0.0.1"}
			}
			c.NotAfter = now.AddDate(5, 0, 0)
			var out strings.Builder
			printStatus(&app{stdout: &out}, &admin.Status{Version: "test", PublicHost: "vpn.example.org", StartedAt: now, TLS: &c}, now)
			var line string
			for _, l := range strings.Split(out.String(), "\n") {
				if strings.HasPrefix(l, "Certificate") {
					line = strings.Join(strings.Fields(l), " ")
				}
			}
			if !strings.HasPrefix(line, tt.want) || strings.Count(out.String(), "self-signed") > 1 {
				t.Errorf("certificate line %q, want it to start %q; whole output:\n%s", line, tt.want, out.String())
			}
		})
	}
}
