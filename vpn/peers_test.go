package vpn

import (
	"bytes"
	"encoding/base64"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tariq-vpn/tariq/internal/store"
	"github.com/tariq-vpn/tariq/internal/testutil"
)

func TestParseKey(t *testing.T) {
	good := NewPrivateKey().PublicKey().String()
	tests := []struct {
		name, in string
		ok       bool
	}{
		{"valid", good, true},
		{"empty", "", false},
		{"not base64", "not a key at all, not a key at all, not a k=", false},
		{"31 bytes", base64.StdEncoding.EncodeToString(make([]byte, 31)), false},
		{"33 bytes", base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 33)), false},
		{"all zeros", base64.StdEncoding.EncodeToString(make([]byte, 32)), false},
		{"url-safe alphabet", base64.URLEncoding.EncodeToString(bytes.Repeat([]byte{0xfb, 0xff, 0xbf}, 11)[:32]), false},
		{"no padding", strings.TrimRight(good, "="), false},
		{"trailing space", good + " ", false},
		{"hex", NewPrivateKey().Hex(), false},
		{"embedded newline", good[:20] + "\n" + good[20:43], false},
		{"trailing newline", good + "\n", false},
		{"spare bits set", good[:42] + "B=", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := ParseKey(tt.in)
			if tt.ok {
				if err != nil || k.String() != tt.in {
					t.Errorf("ParseKey(%q) = %v, %v", tt.in, k, err)
				}
				return
			}
			if !errors.Is(err, ErrBadKey) {
				t.Errorf("ParseKey(%q): got %v, want ErrBadKey", tt.in, err)
			}
		})
	}
}

// TestKeysMatchWG checks key generation and derivation against wg(8): wg
// derives the same public key from our private key, and we derive the
// same from wg's.
func TestKeysMatchWG(t *testing.T) {
	wg := testutil.RequireBinary(t, "wg")
	pubkey := func(priv string) string {
		t.Helper()
		cmd := exec.Command(wg, "pubkey")
		cmd.Stdin = strings.NewReader(priv + "\n")
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("wg pubkey: %v", err)
		}
		return strings.TrimSpace(string(out))
	}
	for range 5 {
		priv := NewPrivateKey()
		if got, want := priv.PublicKey().String(), pubkey(priv.String()); got != want {
			t.Errorf("public key of our key: got %s, wg says %s", got, want)
		}
		out, err := exec.Command(wg, "genkey").Output()
		if err != nil {
			t.Fatal(err)
		}
		theirs, err := ParseKey(strings.TrimSpace(string(out)))
		if err != nil {
			t.Fatalf("parsing wg genkey output: %v", err)
		}
		if got, want := theirs.PublicKey().String(), pubkey(theirs.String()); got != want {
			t.Errorf("public key of wg's key: got %s, wg says %s", got, want)
		}
	}
	// Clamped as RFC 7748 and wg genkey do.
	k := NewPrivateKey()
	if k[0]&7 != 0 || k[31]&0x80 != 0 || k[31]&0x40 == 0 {
		t.Errorf("private key not clamped: %x", k)
	}
}

func TestValidateName(t *testing.T) {
	good := []string{"mom", "Mom-Phone_2.0", "a", "7", strings.Repeat("x", 32), "dad.laptop"}
	bad := []string{"", strings.Repeat("x", 33), "a b", "../x", "..", ".hidden", "-rf", "_x", "émile",
		"a/b", "a\x00b", "mom\n", "tab\t", "a:b", "a*"}
	for _, n := range good {
		if err := ValidateName(n); err != nil {
			t.Errorf("ValidateName(%q) = %v, want nil", n, err)
		}
	}
	for _, n := range bad {
		if err := ValidateName(n); !errors.Is(err, ErrBadName) {
			t.Errorf("ValidateName(%q) = %v, want ErrBadName", n, err)
		}
	}
}

// TestAddPeerToStoreRefusals: every refusal names what and where, matches
// its sentinel, and leaves the state file byte for byte as it was.
func TestAddPeerToStoreRefusals(t *testing.T) {
	cfg := testConfig(t)
	st := testStore(t, cfg)
	mom, err := AddPeerToStore(st, cfg, AddPeerRequest{Name: "mom"})
	if err != nil {
		t.Fatal(err)
	}
	serverPub, err := ServerPublicKeyFromStore(st, cfg)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		req  AddPeerRequest
		want error
		msg  string
	}{
		{"duplicate name", AddPeerRequest{Name: "mom"}, ErrPeerExists, `peer "mom": already exists`},
		{"bad name", AddPeerRequest{Name: "../etc"}, ErrBadName, `peer name "../etc": must be 1-32 letters, digits, '-', '_' or '.', starting with a letter or digit`},
		{"malformed key", AddPeerRequest{Name: "dad", PublicKey: "abc"}, ErrBadKey, `peer "dad": public key: must be 32 bytes base64`},
		{"key in use", AddPeerRequest{Name: "dad", PublicKey: mom.PublicKey}, ErrKeyInUse, `peer "dad": public key: already in use by peer "mom"`},
		{"server's key", AddPeerRequest{Name: "dad", PublicKey: serverPub}, ErrBadKey, `peer "dad": public key: is the server's own key`},
		{"all-zero key", AddPeerRequest{Name: "dad", PublicKey: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}, ErrBadKey, `peer "dad": public key: is all zeros, never a real key`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := stateBytes(t, st)
			_, err := AddPeerToStore(st, cfg, tt.req)
			if !errors.Is(err, tt.want) || err.Error() != tt.msg {
				t.Errorf("got %v, want %v saying %q", err, tt.want, tt.msg)
			}
			if !bytes.Equal(before, stateBytes(t, st)) {
				t.Error("a refused add changed the state file")
			}
		})
	}
}

func TestStorePeerLifecycle(t *testing.T) {
	cfg := testConfig(t)
	st := testStore(t, cfg)
	start := time.Now().Add(-time.Second)
	mom, err := AddPeerToStore(st, cfg, AddPeerRequest{Name: "mom"})
	if err != nil {
		t.Fatal(err)
	}
	own := NewPrivateKey()
	kid, err := AddPeerToStore(st, cfg, AddPeerRequest{Name: "kid", PublicKey: own.PublicKey().String()})
	if err != nil {
		t.Fatal(err)
	}
	// A generated peer: its private key matches its public key.
	priv, err := ParseKey(mom.PrivateKey.Reveal())
	if err != nil || priv.PublicKey().String() != mom.PublicKey {
		t.Errorf("mom's key pair does not match: %v", err)
	}
	// A peer with its own key: the server holds no private key.
	if kid.PrivateKey != "" || kid.PublicKey != own.PublicKey().String() {
		t.Errorf("kid = %+v, want its own public key and no private key", kid)
	}
	for _, p := range []store.Peer{mom, kid} {
		if err := checkPeer(p); err != nil {
			t.Error(err)
		}
		if p.PresharedKey == mom.PresharedKey && p.Name != "mom" {
			t.Error("two peers share a preshared key")
		}
		if p.CreatedAt.Before(start) {
			t.Errorf("%s: created at %v", p.Name, p.CreatedAt)
		}
	}

	if err := SetPeerEnabledInStore(st, "mom", false); err != nil {
		t.Fatal(err)
	}
	if p, _ := PeerFromStore(st, "mom"); !p.Disabled || p.IPv4 != mom.IPv4 || p.PrivateKey != mom.PrivateKey {
		t.Errorf("disabled mom = %+v, want same keys and addresses, disabled", p)
	}
	if err := SetPeerEnabledInStore(st, "mom", true); err != nil {
		t.Fatal(err)
	}
	if p, _ := PeerFromStore(st, "mom"); p.Disabled {
		t.Error("mom still disabled")
	}
	if err := SetPeerEnabledInStore(st, "nobody", true); !errors.Is(err, ErrPeerNotFound) {
		t.Errorf("enable unknown: got %v", err)
	}
	if err := RemovePeerFromStore(st, "mom"); err != nil {
		t.Fatal(err)
	}
	if err := RemovePeerFromStore(st, "mom"); !errors.Is(err, ErrPeerNotFound) || err.Error() != `peer "mom": no such peer` {
		t.Errorf("remove twice: got %v", err)
	}
	if _, err := PeerFromStore(st, "mom"); !errors.Is(err, ErrPeerNotFound) {
		t.Errorf("removed peer still found: %v", err)
	}

	// The server key is made once and kept.
	k1, err := ServerPublicKeyFromStore(st, cfg)
	if err != nil {
		t.Fatal(err)
	}
	k2, _ := ServerPublicKeyFromStore(st, cfg)
	if k1 != k2 {
		t.Errorf("server key changed: %s, %s", k1, k2)
	}
	// Secrets never reach a formatted state.
	state := mustLoad(t, st)
	for _, s := range []string{state.VPN.PrivateKey.Reveal(), state.Peers[0].PresharedKey.Reveal()} {
		if strings.Contains(strings.Join([]string{stringOf(state), stringOf(state.Peers)}, ""), s) {
			t.Error("a secret shows in fmt output")
		}
	}
}
