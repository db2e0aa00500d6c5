package certs

import (
	"crypto/tls"
	"crypto/x509"
	"net/netip"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"

	"github.com/tariq-vpn/tariq/config"
)

// TestRenewalWindow checks when certmagic, as configured here, considers a
// certificate due: an IP address's 160-hour certificate with half its
// lifetime left (so days of CA trouble pass before it expires), a DNS
// name's 90-day one with a third left (certmagic's default). No CA is
// involved: Open only loads the (absent) stored certificate, and the
// certificates carry no ACME Renewal Info.
func TestRenewalWindow(t *testing.T) {
	for _, tc := range []struct {
		host     string
		lifetime time.Duration
		left     time.Duration
		due      bool
	}{
		{"127.0.0.1", 160 * time.Hour, 81 * time.Hour, false},
		{"127.0.0.1", 160 * time.Hour, 79 * time.Hour, true},
		{"::1", 160 * time.Hour, 79 * time.Hour, true},
		{"relay.test", 90 * 24 * time.Hour, 31 * 24 * time.Hour, false},
		{"relay.test", 90 * 24 * time.Hour, 29 * 24 * time.Hour, true},
	} {
		cfg := config.Default()
		cfg.Server.PublicHost = tc.host
		cfg.Server.DataDir = t.TempDir()
		cfg.TLS.Email = "admin@relay.test"
		cfg.TLS.ACMECA = "https://127.0.0.1:1/dir" // never contacted: Serve is not called
		s, err := New(cfg, Deps{PublicIP: func(a netip.Addr) bool { return a.IsLoopback() }})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Open(t.Context()); err != nil {
			t.Fatal(err)
		}
		m := s.acme.Load()
		now := time.Now()
		leaf := &x509.Certificate{NotBefore: now.Add(tc.left - tc.lifetime), NotAfter: now.Add(tc.left)}
		if got := (certmagic.Certificate{Certificate: tls.Certificate{Leaf: leaf}}).NeedsRenewal(m.magic.Load()); got != tc.due {
			t.Errorf("%s, %v certificate with %v left: due %v, want %v", tc.host, tc.lifetime, tc.left, got, tc.due)
		}
		s.Close()
	}
}
