package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/tariq-vpn/tariq/internal/admin"
)

// TestStatusCertificate checks the certificate part of `tariq status`: the
// names, the issuer, the expiry to the minute with what is left in days and
// hours (a shortlived certificate for an IP address lives 160 hours), and
// the CA it is renewed from, or for the fallback the CA it waits for and
// the last error.
func TestStatusCertificate(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	const ca = "https://acme-v02.api.letsencrypt.org/directory"
	for _, tc := range []struct {
		name string
		cert admin.CertStatus
		want []string
	}{
		{"ip address", admin.CertStatus{Mode: "acme", Source: "acme", CA: ca, Names: []string{"193.0.14.129"},
			Issuer: "CN=YE1,O=Let's Encrypt,C=US", NotAfter: now.Add(150*time.Hour + 25*time.Minute)},
			[]string{
				"Certificate  from ACME for 193.0.14.129, issued by CN=YE1,O=Let's Encrypt,C=US, expires 2026-05-07 18:25 UTC (in 6d6h)",
				"renewed automatically from " + ca,
			}},
		{"fallback", admin.CertStatus{Mode: "acme", Source: "fallback", CA: ca, Names: []string{"2a00:1450:4001:80e::200e"},
			SelfSigned: true, NotAfter: now.Add(5 * 365 * 24 * time.Hour), ACMEError: "dial tcp: connection refused"},
			[]string{
				"Certificate  self-signed for 2a00:1450:4001:80e::200e until ACME issues one, expires 2031-04-30 12:00 UTC (in 1825d)",
				"still obtaining a certificate from " + ca,
				"last ACME error: dial tcp: connection refused",
			}},
		{"expired", admin.CertStatus{Mode: "files", Source: "files", Names: []string{"vpn.example.org"}, Issuer: "CN=x",
			NotAfter: now.Add(-90 * time.Minute)},
			[]string{"Certificate  from tls.cert_file for vpn.example.org, issued by CN=x, expires 2026-05-01 10:30 UTC (expired 1h30m ago)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cert := tc.cert
			var out bytes.Buffer
			printStatus(&app{stdout: &out}, &admin.Status{Version: "test", PublicHost: cert.Names[0], StartedAt: now, TLS: &cert}, now)
			for _, want := range tc.want {
				if !strings.Contains(out.String(), want) {
					t.Errorf("no %q in\n%s", want, out.String())
				}
			}
			if strings.Contains(out.String(), "renewed automatically") != (cert.Source == "acme") {
				t.Errorf("renewal line for source %s:\n%s", cert.Source, out.String())
			}
		})
	}
}
