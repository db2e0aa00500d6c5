package store

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/tariq-vpn/tariq/config"
)

// The TURN REST secrets (coturn's use-auth-secret): relay.secrets in the
// config file come first, as they always did (the first signs, all
// verify); then the ones kept in the state, which every node shares with
// the etcd store. Those rotate in two phases, with `tariq turn secret`:
//
//  1. add: a new secret verifies everywhere (and goes into the apps'
//     configs, which sign with it);
//  2. sign: tariq's own credentials (`tariq turn credentials`, the invite
//     page's check) are signed with it;
//  3. retire: the old one stops verifying.
//
// Each is known by its ID, the first 8 hex digits of its SHA-256, so that
// lists and commands never show the secret itself.

// RESTSecret is a REST secret added with `tariq turn secret add`.
type RESTSecret struct {
	Secret    Secret    `json:"secret"`
	CreatedAt time.Time `json:"created_at"`
}

// SecretID is the ID of a REST secret: the first 8 hex digits of its
// SHA-256.
func SecretID(s Secret) string {
	sum := sha256.Sum256([]byte(s.Reveal()))
	return hex.EncodeToString(sum[:4])
}

// Where a REST secret comes from (SecretInfo.Source).
const (
	SourceConfig    = "config"    // relay.secrets
	SourceGenerated = "generated" // generated on first use (RelayState.Secret)
	SourceAdded     = "added"     // tariq turn secret add (RelayState.Secrets)
)

// SecretInfo is one REST secret as `tariq turn secret list` shows it.
type SecretInfo struct {
	ID     string `json:"id"`
	Source string `json:"source"`
	// Signing says tariq signs its credentials with it; every listed
	// secret verifies.
	Signing   bool      `json:"signing"`
	CreatedAt time.Time `json:"created_at,omitzero"`
	Secret    Secret    `json:"-"`
}

// ErrSecretNotFound is a secret ID that names no secret.
var ErrSecretNotFound = errors.New("no such REST secret")

// stored lists the REST secrets kept in st, the signing one first.
func (st *State) stored() []SecretInfo {
	var out []SecretInfo
	if st.Relay.Secret != "" {
		out = append(out, SecretInfo{ID: SecretID(st.Relay.Secret), Source: SourceGenerated, Secret: st.Relay.Secret,
			Signing: st.Relay.Signing == ""})
	}
	for _, s := range st.Relay.Secrets {
		id := SecretID(s.Secret)
		out = append(out, SecretInfo{ID: id, Source: SourceAdded, Secret: s.Secret, CreatedAt: s.CreatedAt, Signing: st.Relay.Signing == id})
	}
	slices.SortStableFunc(out, func(a, b SecretInfo) int {
		switch {
		case a.Signing == b.Signing:
			return 0
		case a.Signing:
			return -1
		}
		return 1
	})
	return out
}

// RESTSecrets lists every REST secret in force with cfg and st: the
// config file's first (the first of them signing), then the stored ones,
// the signing one first (it signs only when the config file has none).
func RESTSecrets(cfg *config.Config, st *State) []SecretInfo {
	var out []SecretInfo
	for i, s := range cfg.Relay.Secrets {
		out = append(out, SecretInfo{ID: SecretID(s), Source: SourceConfig, Secret: s, Signing: i == 0})
	}
	for _, s := range st.stored() {
		s.Signing = s.Signing && len(cfg.Relay.Secrets) == 0
		out = append(out, s)
	}
	return out
}

// StoredSecrets returns the REST secrets kept in st, the signing one
// first: what the relay verifies after relay.secrets.
func StoredSecrets(st *State) []config.Secret {
	var out []config.Secret
	for _, s := range st.stored() {
		out = append(out, s.Secret)
	}
	return out
}

// AddSecret generates a REST secret and keeps it in st, verifying but not
// signing (unless no stored secret signs: then it does, as soon as
// relay.secrets is empty), and returns it.
func (st *State) AddSecret(now time.Time) SecretInfo {
	s := RESTSecret{Secret: NewSecret(32), CreatedAt: now.UTC().Truncate(time.Second)}
	id := SecretID(s.Secret)
	signer := st.stored()
	st.Relay.Secrets = append(st.Relay.Secrets, s)
	info := SecretInfo{ID: id, Source: SourceAdded, Secret: s.Secret, CreatedAt: s.CreatedAt}
	if len(signer) == 0 || !signer[0].Signing {
		st.Relay.Signing, info.Signing = id, true
	}
	return info
}

// find returns the stored secret whose ID is id.
func (st *State) findSecret(id string) (SecretInfo, error) {
	for _, s := range st.stored() {
		if s.ID == id {
			return s, nil
		}
	}
	return SecretInfo{}, fmt.Errorf("%w with ID %q in the state (tariq turn secret list shows them)", ErrSecretNotFound, id)
}

// SignWith makes the stored secret id the one that signs.
func (st *State) SignWith(id string) error {
	s, err := st.findSecret(id)
	if err != nil {
		return err
	}
	if s.Source == SourceGenerated {
		st.Relay.Signing = ""
	} else {
		st.Relay.Signing = id
	}
	return nil
}

// RetireSecret removes the stored secret id: credentials it signed stop
// verifying. The signing secret cannot go (sign with another first).
func (st *State) RetireSecret(id string) error {
	s, err := st.findSecret(id)
	if err != nil {
		return err
	}
	if s.Signing {
		return fmt.Errorf("REST secret %s signs tariq's credentials: sign with another first (tariq turn secret sign ID)", id)
	}
	if s.Source == SourceGenerated {
		st.Relay.Secret = ""
		return nil
	}
	st.Relay.Secrets = slices.DeleteFunc(st.Relay.Secrets, func(r RESTSecret) bool { return SecretID(r.Secret) == id })
	return nil
}

// SigningSecret returns the REST secret that signs tariq's credentials:
// the first of relay.secrets, else the stored signing one, generating and
// keeping one on first use. It writes only when there is none, so that it
// works from the last state seen while a remote backend is away.
func SigningSecret(cfg *config.Config, b Backend) (Secret, error) {
	if len(cfg.Relay.Secrets) > 0 {
		return cfg.Relay.Secrets[0], nil
	}
	return RelaySecret(b)
}

// RelaySecret returns the stored secret that signs, generating and
// keeping one on first use (writing only then).
func RelaySecret(b Backend) (Secret, error) {
	st, err := b.Load()
	if err != nil {
		return "", err
	}
	if s := st.stored(); len(s) > 0 && s[0].Signing {
		return s[0].Secret, nil
	}
	st, err = b.Update(func(st *State) error {
		if s := st.stored(); len(s) > 0 && s[0].Signing {
			return nil
		}
		// None signs: the generated secret does, made now if missing.
		if st.Relay.Secret == "" {
			st.Relay.Secret = NewSecret(32)
		}
		st.Relay.Signing = ""
		return nil
	})
	if err != nil {
		return "", err
	}
	return st.stored()[0].Secret, nil
}
