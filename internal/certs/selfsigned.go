package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/netip"
	"os"
	"slices"
	"time"

	"github.com/tariq-vpn/tariq/internal/store"
)

const (
	selfSignedValidity = 5 * 365 * 24 * time.Hour
	renewBefore        = 30 * 24 * time.Hour
)

// The self-signed pair lives in the data directory's tls/ subdirectory.
const (
	selfSignedDir  = "tls"
	selfSignedCert = "self-signed.crt"
	selfSignedKey  = "self-signed.key"
)

// loadOrCreateSelfSigned returns the kept self-signed certificate for host,
// generating (and keeping) a new one when there is none, when it does not
// name host, or when it expires within 30 days. Its files are opened
// without following links (store.Dir), and temporary files a kill -9 left
// there (holding a private key) are removed first: only the daemon, which
// holds the data directory (store.Claim), writes them.
func loadOrCreateSelfSigned(dataDir, host string, now time.Time) (cert *tls.Certificate, created bool, err error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, false, err
	}
	top, err := store.OpenDir(dataDir)
	if err != nil {
		return nil, false, err
	}
	defer top.Close()
	dir, err := top.Sub(selfSignedDir)
	if err != nil {
		return nil, false, err
	}
	defer dir.Close()
	if _, err := dir.RemoveTemp(); err != nil {
		return nil, false, err
	}
	certPEM, err := dir.ReadFile(selfSignedCert)
	var keyPEM []byte
	if err == nil {
		keyPEM, err = dir.ReadFile(selfSignedKey)
	}
	switch {
	case err == nil:
		c, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, false, fmt.Errorf("loading self-signed certificate: %w", err)
		}
		if leaf := c.Leaf; leaf != nil && now.Add(renewBefore).Before(leaf.NotAfter) && names(leaf, host) {
			return &c, false, nil
		}
	case !errors.Is(err, fs.ErrNotExist):
		return nil, false, fmt.Errorf("loading self-signed certificate: %w", err)
	}
	certPEM, keyPEM, err = generateSelfSigned(host, now)
	if err != nil {
		return nil, false, err
	}
	if err := dir.WriteFile(selfSignedKey, keyPEM, 0o600); err != nil {
		return nil, false, fmt.Errorf("writing self-signed key: %w", err)
	}
	if err := dir.WriteFile(selfSignedCert, certPEM, 0o600); err != nil {
		return nil, false, fmt.Errorf("writing self-signed certificate: %w", err)
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, false, err
	}
	return &c, true, nil
}

func names(leaf *x509.Certificate, host string) bool {
	if a, err := netip.ParseAddr(host); err == nil {
		return slices.ContainsFunc(leaf.IPAddresses, func(ip net.IP) bool {
			b, _ := netip.AddrFromSlice(ip)
			return b.Unmap() == a.Unmap()
		})
	}
	return leaf.VerifyHostname(host) == nil
}

// generateSelfSigned makes an ECDSA P-256 certificate for host (an IP
// address or DNS name) that is its own CA, so clients can pin it.
func generateSelfSigned(host string, now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: host, Organization: []string{"tariq self-signed"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(selfSignedValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	if a, err := netip.ParseAddr(host); err == nil {
		tmpl.IPAddresses = append(tmpl.IPAddresses, a.AsSlice())
	} else {
		tmpl.DNSNames = append(tmpl.DNSNames, host)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), nil
}

// SPKIHash returns the base64 SHA-256 of cert's SubjectPublicKeyInfo: the
// pin browsers accept (Chromium --ignore-certificate-errors-spki-list).
func SPKIHash(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}
