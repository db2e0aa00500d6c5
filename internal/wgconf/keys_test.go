package wgconf

import (
	"bytes"
	"encoding/base64"
	"errors"
	"os/exec"
	"strings"
	"testing"

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
