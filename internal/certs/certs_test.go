package certs_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tariq-vpn/tariq/config"
	"github.com/tariq-vpn/tariq/internal/certs"
)

// writePair writes a self-signed certificate for name and its key.
func writePair(t *testing.T, certFile, keyFile, name string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestFilesReload checks that files mode serves the pair and rereads it on
// Reload (SIGHUP), without ACME's acme-tls/1.
func TestFilesReload(t *testing.T) {
	dir := t.TempDir()
	cfg := config.Default()
	cfg.Server.PublicHost = "vpn.example.com"
	cfg.Server.DataDir = dir
	cfg.TLS.Mode = config.TLSFiles
	cfg.TLS.CertFile, cfg.TLS.KeyFile = filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	writePair(t, cfg.TLS.CertFile, cfg.TLS.KeyFile, "one.example.com")

	src, err := certs.New(cfg, certs.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if err := src.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	if info := src.Info(); info.Source != certs.SourceFiles || info.Names[0] != "one.example.com" {
		t.Errorf("Info %+v", info)
	}
	if p := src.TLSConfig("stun.turn").NextProtos; len(p) != 1 {
		t.Errorf("NextProtos %q, want only stun.turn outside acme mode", p)
	}
	writePair(t, cfg.TLS.CertFile, cfg.TLS.KeyFile, "two.example.com")
	if err := src.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	c, err := src.TLSConfig().GetCertificate(nil)
	if err != nil || !bytes.Equal(c.Certificate[0], src.Certificate().Certificate[0]) || src.Info().Names[0] != "two.example.com" {
		t.Errorf("after Reload: %v, names %v", err, src.Info().Names)
	}
}
