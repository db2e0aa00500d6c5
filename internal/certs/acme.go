package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/certmagic"
)

// acmeTLS1 is the ALPN protocol of the TLS-ALPN-01 challenge (RFC 8737).
const acmeTLS1 = "acme-tls/1"

// acmeManager runs certmagic for server.public_host in acme mode.
//
// What is served (Source.getCertificateACME), for every client whatever its
// SNI (none, an IP address, another name): the newest unexpired certificate
// certmagic holds for the host, else the self-signed fallback. There is one
// public host, so a client that sends no SNI (browsers' TURN over TLS,
// turnutils_uclient) most likely dialled that name and verifies against
// it. Handshakes offering only acme-tls/1 are certmagic's to answer.
//
// Life cycle: Open loads a stored certificate synchronously (local files,
// no CA traffic) and calls ManageAsync, which obtains one in the background
// when none is stored, retrying on certmagic's schedule; certmagic's cache
// renews every 10 minutes' check until close.
type acmeManager struct {
	storage certmagic.Storage // closed last when it is the data directory's (rootStorage)
	log     *slog.Logger
	host    string // an IP address in canonical form (acmeIdentifier)
	ca      string
	profile string // the ACME profile ordered; "" for the CA's default
	now     func() time.Time
	retry   time.Duration // Deps.ACMERetry

	cache *certmagic.Cache
	magic atomic.Pointer[certmagic.Config] // set once in openACME; read by the cache's goroutine

	base   context.Context // canceled by close; parent of every management run
	stop   context.CancelFunc
	failed chan struct{} // a first issuance failed; cap 1; drained by retryLoop
	wg     sync.WaitGroup

	announced atomic.Pointer[string] // hash of the ACME certificate last logged as live

	mu           sync.Mutex // guards the fields below
	manageCancel context.CancelFunc
	lastErr      string
	closed       bool

	stopCache sync.Once // Cache.Stop panics when called twice
}

// caURL returns the ACME directory in use.
func (s *Source) caURL() string {
	if ca := s.cfg.TLS.ACMECA; ca != "" {
		return ca
	}
	return certmagic.LetsEncryptProductionCA
}

// openACME starts certmagic; the fallback is already loaded.
func (s *Source) openACME(ctx context.Context) error {
	var roots *x509.CertPool
	if f := s.cfg.TLS.ACMECARoots; f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("reading tls.acme_ca_roots: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(b) {
			return fmt.Errorf("tls.acme_ca_roots: no PEM certificate in %s", f)
		}
	}
	var storage certmagic.Storage = s.deps.Storage
	if storage == nil {
		rs, err := openRootStorage(s.cfg.Server.DataDir)
		if err != nil {
			return fmt.Errorf("opening ACME storage: %w", err)
		}
		storage = rs
	}
	host, isIP := acmeIdentifier(s.cfg.Server.PublicHost)
	m := &acmeManager{
		storage: storage,
		log:     s.log,
		host:    host,
		ca:      s.caURL(),
		profile: acmeProfile(s.cfg, isIP),
		now:     s.now,
		retry:   s.deps.ACMERetry,
		failed:  make(chan struct{}, 1),
	}
	zl := newZapLogger(s.log.Handler())
	m.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert:   func(certmagic.Certificate) (*certmagic.Config, error) { return m.magic.Load(), nil },
		RenewCheckInterval: s.deps.ACMERenewCheck, // 0: certmagic's 10 minutes
		Logger:             zl,
	})
	var ratio float64 // 0: certmagic's default, a third of the lifetime left
	if isIP {
		ratio = ipRenewalWindowRatio
	}
	magic := certmagic.New(m.cache, certmagic.Config{
		Storage:            storage,
		Logger:             zl,
		OnEvent:            m.onEvent,
		RenewalWindowRatio: ratio,
		ShouldEmitFunc:     func(event string) bool { return event != "tls_get_certificate" },
	})
	// No email is needed: ManageAsync never prompts, and an account
	// without a contact is valid (RFC 8555 7.3; certmagic stores it as
	// "default"). An IP address needs none in auto mode.
	magic.Issuers = []certmagic.Issuer{certmagic.NewACMEIssuer(magic, certmagic.ACMEIssuer{
		CA:                      m.ca,
		TrustedRoots:            roots,
		Email:                   s.cfg.TLS.Email,
		Agreed:                  true,
		Profile:                 m.profile,
		DisableHTTPChallenge:    s.deps.ACMEDisableHTTP01,
		DisableTLSALPNChallenge: s.deps.ACMEDisableTLSALPN01,
		ListenHost:              s.deps.ACMEListenHost,
		AltHTTPPort:             s.deps.ACMEHTTPPort,
		AltTLSALPNPort:          s.deps.ACMETLSALPNPort,
		Logger:                  zl,
	})}
	m.magic.Store(magic)
	m.base, m.stop = context.WithCancel(context.WithoutCancel(ctx))
	s.acme.Store(m) // from here Close stops the cache; nothing above fails

	// A stored certificate is live when Open returns. One due for renewal
	// is served while certmagic renews it now rather than at the cache's
	// first check, 10 minutes on.
	switch c, err := magic.CacheManagedCertificate(ctx, m.host); {
	case err == nil && c.NeedsRenewal(magic):
		m.wg.Go(func() {
			if err := m.cache.RenewManagedCertificates(m.base); err != nil {
				m.log.Warn("renewing the stored certificate", "err", err)
			}
		})
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		// certmagic will not overwrite what it cannot read: say so, and serve the fallback
		m.setError(err.Error())
		s.log.Warn("loading the stored ACME certificate; serving the self-signed fallback", "err", err)
	}
	if !m.announce() {
		fb := s.cert.Load()
		s.log.Info("serving the self-signed certificate until the ACME one is obtained",
			"source", SourceFallback, "names", []string{m.host}, "issuer", fb.Leaf.Issuer.String(),
			"not_after", fb.Leaf.NotAfter.Format(time.RFC3339), "ca", m.ca)
	}
	return nil
}

// start begins obtaining and renewing: Source.Serve calls it once every
// listener of the daemon is bound, so certmagic's TLS-ALPN-01 solver finds
// the HTTPS port taken (and answered by our TLSConfig) rather than binding
// it first and making the web listener fail with "address in use".
func (m *acmeManager) start() error {
	if err := m.manage(); err != nil {
		return err
	}
	if m.retry > 0 {
		m.wg.Go(m.retryLoop)
	}
	return nil
}

// manage (re)starts certmagic's management of the host under a fresh
// context, canceling the previous run (and so its retry wait).
func (m *acmeManager) manage() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	if m.manageCancel != nil {
		m.manageCancel()
	}
	ctx, cancel := context.WithCancel(m.base)
	m.manageCancel = cancel
	if err := m.magic.Load().ManageAsync(ctx, []string{m.host}); err != nil {
		return fmt.Errorf("managing a certificate for %s: %w", m.host, err)
	}
	return nil
}

// retryLoop restarts management m.retry after each failed first issuance,
// unless a certificate is live by then (Deps.ACMERetry).
func (m *acmeManager) retryLoop() {
	for {
		select {
		case <-m.base.Done():
			return
		case <-m.failed:
		}
		t := time.NewTimer(m.retry)
		select {
		case <-m.base.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if _, ok := m.live(); ok {
			continue
		}
		m.log.Debug("retrying certificate management early (Deps.ACMERetry)", "after", m.retry)
		if err := m.manage(); err != nil {
			m.log.Warn("restarting certificate management", "err", err)
		}
	}
}

// live returns the newest unexpired certificate certmagic holds for the host.
func (m *acmeManager) live() (certmagic.Certificate, bool) {
	var best certmagic.Certificate
	now := m.now()
	for _, c := range m.cache.AllMatchingCertificates(m.host) {
		if c.Leaf == nil || !now.Before(c.Leaf.NotAfter) {
			continue
		}
		if best.Leaf == nil || c.Leaf.NotAfter.After(best.Leaf.NotAfter) {
			best = c
		}
	}
	return best, best.Leaf != nil
}

// announce logs the live ACME certificate once each time it changes (first
// load, issuance, renewal) and reports whether one is live.
func (m *acmeManager) announce() bool {
	c, ok := m.live()
	if !ok {
		return false
	}
	h := c.Hash()
	if old := m.announced.Load(); old != nil && *old == h {
		return true
	}
	if old := m.announced.Swap(&h); old != nil && *old == h {
		return true // a concurrent announce won
	}
	m.log.Info("certificate live", "source", SourceACME, "names", c.Names, "issuer", c.Leaf.Issuer.String(),
		"not_after", c.Leaf.NotAfter.Format(time.RFC3339), "ca", m.ca)
	return true
}

// onEvent logs certmagic's lifecycle events; it runs synchronously inside
// certmagic, so it only logs and signals.
func (m *acmeManager) onEvent(ctx context.Context, event string, data map[string]any) error {
	renewal, _ := data["renewal"].(bool)
	id, _ := data["identifier"].(string)
	switch event {
	case "cert_obtaining":
		if renewal {
			m.log.Info("renewing certificate", "identifier", id, "ca", m.ca, "profile", m.profile)
		} else {
			m.log.Info("obtaining certificate", "identifier", id, "ca", m.ca, "profile", m.profile)
		}
	case "cert_obtained":
		m.setError("")
		msg := "certificate obtained"
		if renewal {
			msg = "certificate renewed"
		}
		m.log.Info(msg, "identifier", id, "issuer", data["issuer"])
	case "cert_failed":
		err, _ := data["error"].(error)
		if errors.Is(err, context.Canceled) {
			m.log.Debug("certificate operation canceled", "identifier", id, "renewal", renewal)
			return nil
		}
		if err == nil {
			err = errors.New("unknown error")
		}
		m.setError(err.Error())
		if renewal {
			m.log.Warn("renewing certificate failed; serving the current one while certmagic retries", "identifier", id, "err", err)
			return nil
		}
		m.log.Warn("obtaining certificate failed; serving the self-signed fallback while certmagic retries", "identifier", id, "ca", m.ca, "err", err)
		if m.retry > 0 {
			select {
			case m.failed <- struct{}{}:
			default:
			}
		}
	case "cached_managed_cert":
		m.announce()
	case "cert_ocsp_revoked":
		m.log.Warn("certificate revoked; certmagic renews it", "identifier", id)
	}
	return nil
}

func (m *acmeManager) setError(s string) {
	m.mu.Lock()
	m.lastErr = s
	m.mu.Unlock()
}

func (m *acmeManager) lastError() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lastErr
}

// close stops management and the cache's maintenance; idempotent.
func (m *acmeManager) close() {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	if m.stop != nil {
		m.stop()
	}
	m.wg.Wait()
	m.stopCache.Do(func() {
		m.cache.Stop()
		if rs, ok := m.storage.(*rootStorage); ok {
			rs.Close()
		}
	})
}

// getCertificateACME is TLSConfig's GetCertificate in acme mode.
func (s *Source) getCertificateACME(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if m := s.acme.Load(); m != nil {
		if len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == acmeTLS1 {
			return m.magic.Load().GetCertificate(hello)
		}
		if c, ok := m.live(); ok {
			if h := m.announced.Load(); h == nil || *h != c.Hash() {
				m.announce() // a renewal replaced it in the cache
			}
			return &c.Certificate, nil
		}
	}
	if c := s.cert.Load(); c != nil {
		return c, nil
	}
	return nil, errors.New("no certificate")
}
