package store

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/tariq-vpn/tariq/config"
)

// TestSecretRotation walks the two-phase rotation on the file store: the
// generated secret signs; an added one verifies without signing; sign
// switches; the old one retires, never the one signing; relay.secrets come
// first and sign while set.
func TestSecretRotation(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "data"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{}
	old, err := SigningSecret(cfg, s)
	if err != nil || old == "" {
		t.Fatalf("first signing secret: %q, %v", old, err)
	}
	var added SecretInfo
	st, err := s.Update(func(st *State) error { added = st.AddSecret(time.Now()); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if added.Signing || len(StoredSecrets(st)) != 2 || StoredSecrets(st)[0] != old {
		t.Fatalf("after add: added %+v, stored %d, signing first %v", added, len(StoredSecrets(st)), StoredSecrets(st)[0] == old)
	}
	if sec, _ := SigningSecret(cfg, s); sec != old {
		t.Fatal("adding a secret switched signing")
	}
	if _, err := s.Update(func(st *State) error { return st.RetireSecret(SecretID(old)) }); err == nil {
		t.Fatal("retired the secret that signs")
	}
	if _, err := s.Update(func(st *State) error { return st.SignWith(added.ID) }); err != nil {
		t.Fatal(err)
	}
	if sec, _ := SigningSecret(cfg, s); sec != added.Secret {
		t.Fatal("sign did not switch")
	}
	st, err = s.Update(func(st *State) error { return st.RetireSecret(SecretID(old)) })
	if err != nil {
		t.Fatal(err)
	}
	if got := StoredSecrets(st); len(got) != 1 || got[0] != added.Secret || st.Relay.Secret != "" {
		t.Fatalf("after retire: %d stored, generated %q", len(got), st.Relay.Secret)
	}
	if _, err := s.Update(func(st *State) error { return st.RetireSecret("0000000") }); err == nil {
		t.Fatal("retired an unknown ID")
	}
	// Reloaded from the file, as the next process sees it (format 5).
	st, err = s.Load()
	if err != nil || st.Version != 5 || len(StoredSecrets(st)) != 1 {
		t.Fatalf("reloaded: %v, %+v", err, st)
	}
	cfg.Relay.Secrets = []config.Secret{"config-secret-0123456789abcdef"}
	list := RESTSecrets(cfg, st)
	if len(list) != 2 || list[0].Source != SourceConfig || !list[0].Signing || list[1].Signing || list[1].ID != added.ID {
		t.Fatalf("list with relay.secrets: %+v", list)
	}
	if sec, _ := SigningSecret(cfg, s); sec != cfg.Relay.Secrets[0] {
		t.Fatal("relay.secrets does not sign first")
	}
}

// TestAddWithNoSigner: a secret added where none is stored (relay.secrets
// in use) is the one that signs once relay.secrets is emptied, rather than
// a new one being generated then.
func TestAddWithNoSigner(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "data"))
	if err != nil {
		t.Fatal(err)
	}
	var added SecretInfo
	if _, err := s.Update(func(st *State) error { added = st.AddSecret(time.Now()); return nil }); err != nil {
		t.Fatal(err)
	}
	if sec, err := SigningSecret(&config.Config{}, s); err != nil || sec != added.Secret {
		t.Fatalf("signing: %v", err)
	}
	st, _ := s.Load()
	if st.Relay.Secret != "" {
		t.Error("a secret was generated although one was added")
	}
}
