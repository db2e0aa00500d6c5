package relay

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tariq-vpn/tariq/config"
)

// TestStoredSecretsLive: the REST secrets kept in the state store verify
// after relay.secrets; SecretsChanged takes up one added, switched or
// retired elsewhere (another node). A retired secret is refused at once,
// on the next request of an allocation made with it too (every TURN
// request is signed): which is why rotation retires a secret only once
// the credentials it signed have expired.
func TestStoredSecretsLive(t *testing.T) {
	const cfgSecret, stored1, stored2 = testSecret, "stored-secret-one-0123456789abcdef", "stored-secret-two-0123456789abcdef"
	var mu sync.Mutex
	stored := []config.Secret{stored1}
	fail := false
	var generate []bool
	secrets := func(gen bool) ([]config.Secret, error) {
		mu.Lock()
		defer mu.Unlock()
		generate = append(generate, gen)
		if fail {
			return nil, errors.New("store unreadable")
		}
		return append([]config.Secret(nil), stored...), nil
	}
	cfg := testConfig(t)
	r := startRelay(t, cfg, Deps{Secrets: secrets})
	peer := echoPeer(t)
	allocate := func(secret string) error {
		cred := MintCredentials(secret, "@alice:example.org", time.Hour, time.Now())
		relayed, err := r.client(t, "udp", cred.Username, cred.Password).Allocate()
		if err == nil {
			relayed.Close()
		}
		return err
	}
	for _, s := range []string{cfgSecret, stored1} {
		if err := allocate(s); err != nil {
			t.Fatalf("allocate with %s: %v", s[:6], err)
		}
	}
	if err := allocate(stored2); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("allocate with a secret not yet added: %v", err)
	}
	// Added elsewhere: verifies once taken up.
	cred1 := MintCredentials(stored1, "@bob:example.org", time.Hour, time.Now())
	held, err := r.client(t, "udp", cred1.Username, cred1.Password).Allocate()
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	mu.Lock()
	stored = []config.Secret{stored2, stored1}
	mu.Unlock()
	if err := r.SecretsChanged(); err != nil {
		t.Fatal(err)
	}
	if err := allocate(stored2); err != nil {
		t.Fatalf("allocate with the added secret: %v", err)
	}
	// stored1 retired: refused from now on, the allocation made with it
	// keeps relaying; relay.secrets still verify.
	mu.Lock()
	stored = []config.Secret{stored2}
	mu.Unlock()
	if err := r.SecretsChanged(); err != nil {
		t.Fatal(err)
	}
	if err := allocate(stored1); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("allocate with a retired secret: %v", err)
	}
	if err := allocate(cfgSecret); err != nil {
		t.Fatalf("allocate with relay.secrets after the change: %v", err)
	}
	if _, err := held.WriteTo([]byte("x"), peer.LocalAddr()); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("a request of an allocation made with the retired secret: %v, want 401", err)
	}
	// A store that cannot be read keeps the secrets in force.
	mu.Lock()
	fail = true
	mu.Unlock()
	if err := r.SecretsChanged(); err == nil {
		t.Error("SecretsChanged hid the store's error")
	}
	if err := allocate(stored2); err != nil {
		t.Fatalf("allocate after a failed reread: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, g := range generate {
		if g {
			t.Error("asked to generate a secret although relay.secrets has one")
		}
	}
}
