package daemon

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tariq-vpn/tariq/config"
	"github.com/tariq-vpn/tariq/internal/store"
	"github.com/tariq-vpn/tariq/relay"
)

// signingSecret returns the REST secret that signs new credentials: the
// first of relay.secrets, else the stored one that signs (generated now
// if none was yet), in the data directory or in etcd.
func signingSecret(cfg *config.Config) (string, error) {
	if len(cfg.Relay.Secrets) > 0 {
		return cfg.Relay.Secrets[0].Reveal(), nil
	}
	st, err := OpenState(context.Background(), cfg, nil)
	if err != nil {
		return "", err
	}
	defer st.Close()
	s, err := store.SigningSecret(cfg, st)
	if err != nil {
		return "", err
	}
	return s.Reveal(), nil
}

// TURNCredentials mints a REST credential for id (may be empty) valid for
// ttl (0 means relay.credential_ttl), with the URIs to use it on.
func TURNCredentials(cfg *config.Config, id string, ttl time.Duration) (relay.Credentials, []string, error) {
	if !cfg.Relay.Enabled {
		return relay.Credentials{}, nil, errors.New("the relay is disabled (relay.enabled)")
	}
	if ttl == 0 {
		ttl = cfg.Relay.CredentialTTL
	}
	if ttl < time.Second {
		return relay.Credentials{}, nil, fmt.Errorf("--ttl %s is shorter than a second", ttl)
	}
	secret, err := signingSecret(cfg)
	if err != nil {
		return relay.Credentials{}, nil, err
	}
	var uris []string
	for _, e := range relay.Endpoints(cfg, ResolveHost(cfg), cfg.Web.Enabled && cfg.TLS.Mode != config.TLSOff) {
		uris = append(uris, e.URI())
	}
	return relay.MintCredentials(secret, id, ttl, time.Now()), uris, nil
}

// AppSnippet returns the configuration snippet app needs.
func AppSnippet(cfg *config.Config, app string) (string, error) {
	secret, err := signingSecret(cfg)
	if err != nil {
		return "", err
	}
	return relay.AppSnippet(app, relay.Endpoints(cfg, ResolveHost(cfg), cfg.Web.Enabled && cfg.TLS.Mode != config.TLSOff), secret, cfg.Relay.CredentialTTL)
}

// Apps lists the applications AppSnippet knows.
func Apps() []string { return relay.Apps }
