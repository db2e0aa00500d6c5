// Package certs hands out the daemon's TLS certificate according to
// tls.mode: a self-signed one generated once and kept, a pair of files
// reread on reload, or (see acme.go) one obtained and renewed through ACME.
package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tariq-vpn/tariq/config"
)

// Deps is what the certificate source uses but does not create.
type Deps struct {
	Logger *slog.Logger
	Now    func() time.Time
}

// Info describes the certificate being served.
type Info struct {
	Mode       config.TLSMode `json:"mode"`
	Names      []string       `json:"names"`
	Issuer     string         `json:"issuer"`
	NotAfter   time.Time      `json:"not_after"`
	SelfSigned bool           `json:"self_signed"`
	SPKIHash   string         `json:"spki_sha256"`
}

// Source serves the current certificate to every TLS listener through
// GetCertificate, so a renewal or reload takes effect on the next handshake.
type Source struct {
	cfg  *config.Config
	mode config.TLSMode // the resolved mode: auto becomes acme or self-signed
	log  *slog.Logger
	now  func() time.Time

	cert atomic.Pointer[tls.Certificate]
	mu   sync.Mutex // serialises loads
}

// New resolves tls.mode and builds the source; it reads and writes nothing.
func New(cfg *config.Config, deps Deps) (*Source, error) {
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	s := &Source{cfg: cfg, log: deps.Logger, now: deps.Now, mode: ResolveMode(cfg)}
	if s.mode == config.TLSACME {
		return nil, errors.New("certs: tls.mode acme is not available yet; use self-signed or files")
	}
	return s, nil
}

// ResolveMode returns the mode tls.mode stands for: auto is acme when
// server.public_host is a DNS name and tls.email is set, else self-signed.
func ResolveMode(cfg *config.Config) config.TLSMode {
	m := cfg.TLS.Mode
	if m == config.TLSAuto {
		if config.IsDNSName(cfg.Server.PublicHost) && cfg.TLS.Email != "" {
			return config.TLSACME
		}
		return config.TLSSelfSigned
	}
	return m
}

// Mode returns the resolved mode.
func (s *Source) Mode() config.TLSMode { return s.mode }

// Open loads (or generates) the certificate.
func (s *Source) Open(ctx context.Context) error {
	if err := s.load(); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	return nil
}

func (s *Source) load() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var cert *tls.Certificate
	switch s.mode {
	case config.TLSOff:
		return nil
	case config.TLSSelfSigned:
		c, created, err := loadOrCreateSelfSigned(s.cfg.Server.DataDir, s.host(), s.now())
		if err != nil {
			return err
		}
		if created {
			s.log.Info("self-signed certificate created", "host", s.host(), "not_after", c.Leaf.NotAfter.Format(time.DateOnly))
		}
		cert = c
	case config.TLSFiles:
		c, err := tls.LoadX509KeyPair(s.cfg.TLS.CertFile, s.cfg.TLS.KeyFile)
		if err != nil {
			return fmt.Errorf("loading tls.cert_file and tls.key_file: %w", err)
		}
		cert = &c
	}
	s.cert.Store(cert)
	info := s.Info()
	s.log.Info("certificate loaded", "mode", string(s.mode), "names", info.Names, "not_after", info.NotAfter.Format(time.RFC3339))
	return nil
}

func (s *Source) host() string {
	if h := s.cfg.Server.PublicHost; h != "" {
		return h
	}
	return "localhost"
}

// Serve blocks until ctx is done.
func (s *Source) Serve(ctx context.Context) error {
	<-ctx.Done()
	return nil
}

// Reload rereads the files in files mode; a change of mode needs a restart.
func (s *Source) Reload(cfg *config.Config) error {
	if ResolveMode(cfg) != s.mode {
		return &config.FieldError{Key: "tls.mode", Msg: "changing it needs a restart"}
	}
	if s.mode != config.TLSFiles {
		return nil
	}
	s.cfg = cfg
	return s.load()
}

// Close releases nothing yet; it exists for the subsystem shape.
func (s *Source) Close() error { return nil }

// Certificate returns the certificate being served, or nil when TLS is off.
func (s *Source) Certificate() *tls.Certificate { return s.cert.Load() }

// TLSConfig returns a server config that serves the current certificate and
// offers protos by ALPN. Clients that send no ALPN still connect.
func (s *Source) TLSConfig(protos ...string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: protos,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			if c := s.cert.Load(); c != nil {
				return c, nil
			}
			return nil, errors.New("no certificate")
		},
	}
}

// Info describes the certificate being served.
func (s *Source) Info() Info {
	info := Info{Mode: s.mode}
	c := s.cert.Load()
	if c == nil {
		return info
	}
	leaf := c.Leaf
	if leaf == nil && len(c.Certificate) > 0 {
		leaf, _ = x509.ParseCertificate(c.Certificate[0])
	}
	if leaf == nil {
		return info
	}
	info.Names = append(info.Names, leaf.DNSNames...)
	for _, ip := range leaf.IPAddresses {
		info.Names = append(info.Names, ip.String())
	}
	info.Issuer = leaf.Issuer.String()
	info.NotAfter = leaf.NotAfter
	info.SelfSigned = leaf.CheckSignatureFrom(leaf) == nil
	info.SPKIHash = SPKIHash(leaf)
	return info
}
