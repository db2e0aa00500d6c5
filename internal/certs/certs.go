// Package certs hands out the daemon's TLS certificate according to
// tls.mode: a self-signed one generated once and kept, a pair of files
// reread on reload, or (see acme.go) one obtained and renewed through ACME
// by certmagic, with the self-signed one served until it arrives.
package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/certmagic"

	"github.com/tariq-vpn/tariq/config"
)

// Deps is what the certificate source uses but does not create.
//
// The ACME fields are seams for tests, which run the CA and its validation
// on loopback; their zero values are what production uses.
type Deps struct {
	Logger *slog.Logger
	Now    func() time.Time

	// Storage is where ACME's account, certificates and locks live when
	// several nodes share them (internal/etcdstore), so that one node
	// orders and the others reuse its certificate; nil means the data
	// directory's certmagic/ (one server). It is not closed here.
	Storage certmagic.Storage

	// ACMEListenHost is the address certmagic's own challenge servers bind;
	// empty means every interface.
	ACMEListenHost string
	// ACMEHTTPPort is the port the HTTP-01 solver binds; 0 means 80.
	ACMEHTTPPort int
	// ACMETLSALPNPort is the port the TLS-ALPN-01 solver binds, or finds
	// taken by a listener serving TLSConfig (which then answers the
	// challenge); 0 means 443.
	ACMETLSALPNPort int
	// ACMEDisableHTTP01 and ACMEDisableTLSALPN01 turn one challenge off,
	// so a test can force the other.
	ACMEDisableHTTP01    bool
	ACMEDisableTLSALPN01 bool
	// ACMERetry, when positive, restarts certmagic's management this long
	// after a failed first issuance instead of waiting for certmagic's own
	// retry schedule (1 min, 2 min, 2 min, 5 min, … up to 30 days), so a
	// test sees the CA come up without waiting minutes.
	ACMERetry time.Duration
	// ACMERenewCheck, when positive, is how often certmagic's cache checks
	// whether the certificate is due for renewal, instead of every 10
	// minutes, so a test sees a certificate of seconds renewed.
	ACMERenewCheck time.Duration
	// PublicIP reports whether a CA certifies an IP address, which decides
	// whether tls.mode auto asks one for a certificate for an IP
	// server.public_host; nil means config.IsPublicIP. Tests treat
	// loopback as public, to get certificates from a Pebble on loopback.
	PublicIP func(netip.Addr) bool
}

// ProfileShortlived is the ACME profile ordered for an IP address unless
// tls.acme_profile names another: the only one in which Let's Encrypt
// issues IP-address certificates (160 hours; letsencrypt.org/docs/profiles).
const ProfileShortlived = "shortlived"

// ipRenewalWindowRatio is the share of its lifetime an IP certificate has
// left when it is renewed: half, 80 of a shortlived certificate's 160
// hours, rather than certmagic's default third (53 hours), so that days of
// CA or network trouble pass before it expires. An ACME Renewal Info
// window the CA suggests (RFC 9773) that starts earlier wins.
const ipRenewalWindowRatio = 0.5

// Where the served certificate comes from (Info.Source).
const (
	SourceSelfSigned = "self-signed" // tls.mode self-signed
	SourceFiles      = "files"       // tls.mode files
	SourceACME       = "acme"        // tls.mode acme: the certificate certmagic obtained
	SourceFallback   = "fallback"    // tls.mode acme, none obtained yet: the self-signed one
)

// Info describes the certificate being served.
type Info struct {
	Mode       config.TLSMode `json:"mode"`
	Source     string         `json:"source"` // one of the Source… constants; "" when TLS is off
	Names      []string       `json:"names"`
	Issuer     string         `json:"issuer"`
	NotAfter   time.Time      `json:"not_after"`
	SelfSigned bool           `json:"self_signed"`
	SPKIHash   string         `json:"spki_sha256"`
	// CA is the ACME directory in acme mode.
	CA string `json:"acme_ca,omitempty"`
	// ACMEError is the last failure to obtain or renew, cleared by success.
	ACMEError string `json:"acme_error,omitempty"`
}

// Source serves the current certificate to every TLS listener through
// GetCertificate, so a renewal or reload takes effect on the next handshake.
type Source struct {
	cfg  *config.Config
	mode config.TLSMode // the resolved mode: auto becomes acme or self-signed
	deps Deps
	log  *slog.Logger
	now  func() time.Time

	// cert is the certificate served in self-signed and files modes, and
	// the fallback served in acme mode until certmagic has one.
	cert atomic.Pointer[tls.Certificate]
	mu   sync.Mutex // serialises loads

	acme atomic.Pointer[acmeManager] // acme mode, from Open
}

// New resolves tls.mode and builds the source; it reads and writes nothing.
func New(cfg *config.Config, deps Deps) (*Source, error) {
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	if deps.PublicIP == nil {
		deps.PublicIP = config.IsPublicIP
	}
	s := &Source{cfg: cfg, deps: deps, log: deps.Logger, now: deps.Now, mode: resolveMode(cfg, deps.PublicIP)}
	if s.mode == config.TLSACME {
		// config.Validate says the same (with config.IsPublicIP).
		host := cfg.Server.PublicHost
		if a, err := netip.ParseAddr(host); err == nil {
			if !deps.PublicIP(a) {
				return nil, fmt.Errorf("certs: %w", &config.FieldError{Key: "server.public_host",
					Msg: fmt.Sprintf("%s is not a public IP address, and no public CA certifies another (tls.mode acme)", host)})
			}
			return s, nil
		}
		if cfg.TLS.Email == "" {
			return nil, fmt.Errorf("certs: %w", &config.FieldError{Key: "tls.email", Msg: "is required when tls.mode is acme for a DNS name (the CA's account contact)"})
		}
		if !config.IsDNSName(host) {
			return nil, fmt.Errorf("certs: %w", &config.FieldError{Key: "server.public_host", Msg: "must be a DNS name or a public IP address when tls.mode is acme"})
		}
	}
	return s, nil
}

// ResolveMode returns the mode tls.mode stands for. auto is acme when
// server.public_host is a public IP address (config.IsPublicIP: one a CA
// certifies, RFC 8738), or a DNS name that is not internal (localhost,
// .local, .internal, .home.arpa) with tls.email set; else self-signed.
func ResolveMode(cfg *config.Config) config.TLSMode {
	return resolveMode(cfg, config.IsPublicIP)
}

// resolveMode is ResolveMode with public deciding which IP addresses a CA
// certifies (Deps.PublicIP).
func resolveMode(cfg *config.Config, public func(netip.Addr) bool) config.TLSMode {
	if cfg.TLS.Mode != config.TLSAuto {
		return cfg.TLS.Mode
	}
	host := cfg.Server.PublicHost
	if a, err := netip.ParseAddr(host); err == nil {
		if public(a) {
			return config.TLSACME
		}
		return config.TLSSelfSigned
	}
	if config.IsDNSName(host) && !certmagic.SubjectIsInternal(host) && cfg.TLS.Email != "" {
		return config.TLSACME
	}
	return config.TLSSelfSigned
}

// acmeIdentifier returns the name certmagic manages, server.public_host,
// with an IP address in its canonical form (unmapped, no zone), which is
// how certmagic names a certificate's IP addresses; and whether it is one.
func acmeIdentifier(host string) (id string, isIP bool) {
	if a, err := netip.ParseAddr(host); err == nil {
		return a.Unmap().WithZone("").String(), true
	}
	return host, false
}

// acmeProfile returns the ACME profile to order: tls.acme_profile, else
// shortlived for an IP address, else none (the CA's default).
func acmeProfile(cfg *config.Config, isIP bool) string {
	if p := cfg.TLS.ACMEProfile; p != "" {
		return p
	}
	if isIP {
		return ProfileShortlived
	}
	return ""
}

// Mode returns the resolved mode.
func (s *Source) Mode() config.TLSMode { return s.mode }

// Open loads (or generates) the certificate. In acme mode it loads the
// self-signed fallback and a stored ACME certificate, if any, and sets up
// certmagic; Serve starts it obtaining one in the background. Neither waits
// for the CA.
func (s *Source) Open(ctx context.Context) error {
	if err := s.load(); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	if s.mode == config.TLSACME {
		if err := s.openACME(ctx); err != nil {
			return fmt.Errorf("certs: %w", err)
		}
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
	case config.TLSSelfSigned, config.TLSACME:
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
	if s.mode == config.TLSACME {
		return nil // openACME says what is live
	}
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

// Serve starts ACME management (in acme mode) and blocks until ctx is done.
// certmagic's cache then checks renewals every 10 minutes until Close.
func (s *Source) Serve(ctx context.Context) error {
	if m := s.acme.Load(); m != nil {
		if err := m.start(); err != nil {
			return err
		}
	}
	<-ctx.Done()
	return nil
}

// Reload rereads the files in files mode; a change of mode, or in acme
// mode of the host, email, CA or profile, needs a restart.
func (s *Source) Reload(cfg *config.Config) error {
	if resolveMode(cfg, s.deps.PublicIP) != s.mode {
		return &config.FieldError{Key: "tls.mode", Msg: "changing it needs a restart"}
	}
	switch s.mode {
	case config.TLSACME:
		var refused []error
		for _, k := range []struct{ key, old, new string }{
			{"server.public_host", s.cfg.Server.PublicHost, cfg.Server.PublicHost},
			{"tls.email", s.cfg.TLS.Email, cfg.TLS.Email},
			{"tls.acme_ca", s.cfg.TLS.ACMECA, cfg.TLS.ACMECA},
			{"tls.acme_ca_roots", s.cfg.TLS.ACMECARoots, cfg.TLS.ACMECARoots},
			{"tls.acme_profile", s.cfg.TLS.ACMEProfile, cfg.TLS.ACMEProfile},
		} {
			if k.old != k.new {
				refused = append(refused, &config.FieldError{Key: k.key, Msg: "changing it needs a restart"})
			}
		}
		return errors.Join(refused...)
	case config.TLSFiles:
		s.cfg = cfg
		return s.load()
	}
	return nil
}

// Close stops certmagic in acme mode. It is idempotent and safe after a
// partial Open.
func (s *Source) Close() error {
	if m := s.acme.Load(); m != nil {
		m.close()
	}
	return nil
}

// Certificate returns the certificate being served, or nil when TLS is off.
// In acme mode it is the ACME certificate once certmagic has one, else the
// self-signed fallback.
func (s *Source) Certificate() *tls.Certificate {
	if m := s.acme.Load(); m != nil {
		if c, ok := m.live(); ok {
			return &c.Certificate
		}
	}
	return s.cert.Load()
}

// TLSConfig returns a server config that serves the current certificate and
// offers protos by ALPN. Clients that send no ALPN still connect. In acme
// mode it also offers acme-tls/1 and answers TLS-ALPN-01 challenges (RFC
// 8737), so a listener on the challenge port (443) lets certmagic validate
// through it.
func (s *Source) TLSConfig(protos ...string) *tls.Config {
	if s.mode == config.TLSACME {
		return &tls.Config{
			MinVersion:     tls.VersionTLS12,
			NextProtos:     append(slices.Clip(protos), acmeTLS1),
			GetCertificate: s.getCertificateACME,
		}
	}
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
	switch s.mode {
	case config.TLSSelfSigned:
		info.Source = SourceSelfSigned
	case config.TLSFiles:
		info.Source = SourceFiles
	case config.TLSACME:
		info.Source = SourceFallback
		info.CA = s.caURL()
		if m := s.acme.Load(); m != nil {
			info.ACMEError = m.lastError()
			if c, ok := m.live(); ok {
				info.Source = SourceACME
				fillInfo(&info, &c.Certificate)
				return info
			}
		}
	}
	fillInfo(&info, s.cert.Load())
	return info
}

// fillInfo describes c in info; c may be nil.
func fillInfo(info *Info, c *tls.Certificate) {
	if c == nil {
		return
	}
	leaf := c.Leaf
	if leaf == nil && len(c.Certificate) > 0 {
		leaf, _ = x509.ParseCertificate(c.Certificate[0])
	}
	if leaf == nil {
		return
	}
	info.Names = append(info.Names, leaf.DNSNames...)
	for _, ip := range leaf.IPAddresses {
		info.Names = append(info.Names, ip.String())
	}
	info.Issuer = leaf.Issuer.String()
	info.NotAfter = leaf.NotAfter
	info.SelfSigned = leaf.CheckSignatureFrom(leaf) == nil
	info.SPKIHash = SPKIHash(leaf)
}
