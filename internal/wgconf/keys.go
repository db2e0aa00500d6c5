// Package wgconf holds what the WireGuard endpoint and the members model
// share about WireGuard itself: keys, the AmneziaWG 1.x obfuscation
// parameters, the client configs tariq hands out (wg-quick text, the
// AmneziaWG form, QR codes), and the set of ports the server listens on.
// It imports nothing of tariq's but config.
package wgconf

import (
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
)

// KeyLen is the length of WireGuard keys: Curve25519 keys and preshared keys.
const KeyLen = 32

// ErrBadKey means a WireGuard key is not 32 bytes of standard base64 (or is
// unusable, like all zeros or the server's own key).
var ErrBadKey = errors.New("must be 32 bytes base64")

// badKeyError is ErrBadKey with a reason of its own for a well-formed key
// that is still unusable, so the message says one thing, not two.
type badKeyError string

func (e badKeyError) Error() string        { return string(e) }
func (e badKeyError) Is(target error) bool { return target == ErrBadKey }

var (
	errZeroKey error = badKeyError("is all zeros, never a real key")
	// ErrServerKey is a device key equal to the server's own.
	ErrServerKey error = badKeyError("is the server's own key")
)

// Key is a WireGuard key: a Curve25519 private or public key, or a
// preshared key. Its text form is standard base64 (wg(8), wg-quick); the
// UAPI wants hex. Key does not redact itself: keep private keys and PSKs in
// config.Secret, which does.
type Key [KeyLen]byte

// ParseKey parses a base64 WireGuard key (44 characters, standard
// encoding, canonical). An all-zero key is refused: it is never a real key.
func ParseKey(s string) (Key, error) {
	var k Key
	// Strict and exact length: one text per key, so a key compares equal to
	// its stored form (the plain decoder skips newlines and ignores the
	// last character's spare bits).
	if len(s) != base64.StdEncoding.EncodedLen(KeyLen) {
		return k, ErrBadKey
	}
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil || len(b) != KeyLen {
		return k, ErrBadKey
	}
	copy(k[:], b)
	if k.IsZero() {
		return k, errZeroKey
	}
	return k, nil
}

// NewPrivateKey returns a fresh Curve25519 private key, clamped as
// `wg genkey` does (RFC 7748 section 5).
func NewPrivateKey() Key {
	var k Key
	rand.Read(k[:])
	k[0] &= 248
	k[31] = (k[31] & 127) | 64
	return k
}

// NewPresharedKey returns 32 random bytes, as `wg genpsk` does.
func NewPresharedKey() Key {
	var k Key
	rand.Read(k[:])
	return k
}

// PublicKey returns the Curve25519 public key of the private key k.
func (k Key) PublicKey() Key {
	priv, err := ecdh.X25519().NewPrivateKey(k[:])
	if err != nil {
		// Only a wrong length fails, and k has the right one.
		panic(fmt.Sprintf("wgconf: x25519: %v", err))
	}
	var pub Key
	copy(pub[:], priv.PublicKey().Bytes())
	return pub
}

// IsZero reports whether k is all zeros.
func (k Key) IsZero() bool { return k == Key{} }

// String returns k in base64, the form wg(8) and wg-quick use.
func (k Key) String() string { return base64.StdEncoding.EncodeToString(k[:]) }

// Hex returns k in hex, the form the UAPI uses.
func (k Key) Hex() string { return hex.EncodeToString(k[:]) }

// Short returns the abbreviation wireguard-go prints in its logs
// ("peer(AbCd…wxYz)"), so a log adapter can map it back to a name.
func (k Key) Short() string {
	s := k.String()
	return s[0:4] + "…" + s[39:43]
}
