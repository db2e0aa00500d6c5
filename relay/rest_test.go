package relay

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

// restVectorSecret signs the vectors below. Every expected password was
// computed outside Go, with coturn's use-auth-secret formula
// base64(HMAC-SHA1(secret, username)), by
//
//	printf '%s' "$USERNAME" | openssl dgst -sha1 -hmac "$SECRET" -binary | base64
//
// and checked against python3's hmac.new(secret, username, hashlib.sha1).
const restVectorSecret = "ff1b1e0c0a8f4f4e9b8f5d8a6c2e7d3b"

func TestRESTPasswordVectors(t *testing.T) {
	for _, tc := range []struct {
		name, username, want string
	}{
		{"expiry only (Jitsi turncredentials)", "1735689600", "BJcU23M0Yp6slTRzzuch2uQXx+E="},
		{"expiry and id", "1735689600:bob", "lW9xruROg50ODK5nL4G37joAAQc="},
		{"matrix id (Synapse)", "1735689600:@alice:example.org", "mVIcZAS1ZuVAfBBrq2yxWYRzwsI="},
		{"random id (Nextcloud Talk)", "1735689601:nc-0123456789abcdef", "dR9RLV5Str30Zm12iQRg9oxNnaM="},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := RESTPassword(restVectorSecret, tc.username); got != tc.want {
				t.Errorf("RESTPassword(%q) = %q, want %q", tc.username, got, tc.want)
			}
		})
	}
}

func TestParseRESTUsername(t *testing.T) {
	for _, tc := range []struct {
		name, username string
		ok             bool
		expiry         int64
		id             string
	}{
		{"expiry only", "1735689600", true, 1735689600, ""},
		{"expiry and id", "1735689600:bob", true, 1735689600, "bob"},
		{"matrix id kept whole", "1735689600:@alice:example.org", true, 1735689600, "@alice:example.org"},
		{"id with many colons", "1735689600:a:b:c:", true, 1735689600, "a:b:c:"},
		{"empty id", "1735689600:", true, 1735689600, ""},
		{"twelve digits", "999999999999:x", true, 999999999999, "x"},
		{"leading zeros", "0001:x", true, 1, "x"},
		{"zero", "0", true, 0, ""},

		{"letters", "abc:1", false, 0, ""},
		{"empty timestamp", ":x", false, 0, ""},
		{"empty", "", false, 0, ""},
		{"only a colon", ":", false, 0, ""},
		{"thirteen digits", "1735689600000:x", false, 0, ""},
		{"int64 overflow", "99999999999999999999:x", false, 0, ""},
		{"negative", "-5:x", false, 0, ""},
		{"plus sign", "+5:x", false, 0, ""},
		{"space", " 1735689600:x", false, 0, ""},
		{"hex", "0x10:x", false, 0, ""},
		{"fraction", "1735689600.5:x", false, 0, ""},
		{"arabic-indic digits", "١٧٣٥٦٨٩٦٠٠:x", false, 0, ""},
		{"fullwidth digits", "１７３５:x", false, 0, ""},
		{"static user name", "alice", false, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			exp, id, ok := ParseRESTUsername(tc.username)
			if ok != tc.ok {
				t.Fatalf("ParseRESTUsername(%q) ok = %v, want %v", tc.username, ok, tc.ok)
			}
			if !ok {
				if !exp.IsZero() || id != "" {
					t.Errorf("refused username returned expiry %v, id %q", exp, id)
				}
				return
			}
			if exp.Unix() != tc.expiry || id != tc.id {
				t.Errorf("ParseRESTUsername(%q) = (%d, %q), want (%d, %q)", tc.username, exp.Unix(), id, tc.expiry, tc.id)
			}
		})
	}
}

func TestMintCredentials(t *testing.T) {
	// Half a second past 2025-01-01T00:00:00Z: the expiry must round down
	// to a whole second, as the username carries whole seconds.
	now := time.Unix(1735689600, 500_000_000)
	for _, tc := range []struct {
		name     string
		id       string
		ttl      time.Duration
		username string
		password string // from openssl, see restVectorSecret
		ttlField int
	}{
		{"day with id", "bob", 24 * time.Hour, "1735776000:bob", "0KydO9M/XTxQA7xW5BWAV0+3Xv0=", 86400},
		{"day with matrix id", "@alice:example.org", 24 * time.Hour, "1735776000:@alice:example.org", "uaDOhglnIxU5JuFttftigfW5Mmw=", 86400},
		{"fractional ttl, no id", "", 1500 * time.Millisecond, "1735689602", "ximIW/9VU4q+RadFe5UD2yHuZPo=", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := MintCredentials(restVectorSecret, tc.id, tc.ttl, now)
			if c.Username != tc.username || c.Password != tc.password || c.TTL != tc.ttlField {
				t.Fatalf("MintCredentials = {%q %q ttl %d}, want {%q %q ttl %d}",
					c.Username, c.Password, c.TTL, tc.username, tc.password, tc.ttlField)
			}
			exp, id, ok := ParseRESTUsername(c.Username)
			if !ok || id != tc.id || !exp.Equal(c.Expires) {
				t.Errorf("ParseRESTUsername(%q) = (%v, %q, %v), want (%v, %q, true)", c.Username, exp, id, ok, c.Expires, tc.id)
			}
			if c.Expires.Nanosecond() != 0 || c.Expires.After(now.Add(tc.ttl)) || now.Add(tc.ttl).Sub(c.Expires) >= time.Second {
				t.Errorf("Expires = %v, want now+ttl (%v) truncated to the second", c.Expires, now.Add(tc.ttl))
			}
		})
	}
}

// FuzzParseRESTUsername checks that the username parser never panics, splits
// on the first colon only and accepts nothing but up to twelve ASCII digits
// before it.
func FuzzParseRESTUsername(f *testing.F) {
	for _, s := range []string{"", ":", "1735689600", "1735689600:@alice:example.org", "-5:x",
		"1735689600000:x", "abc:1", "٣:x", "0:", "99999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, username string) {
		exp, id, ok := ParseRESTUsername(username)
		ts, rest, _ := strings.Cut(username, ":")
		digits := ts != "" && len(ts) <= 12 && strings.Trim(ts, "0123456789") == ""
		if ok != digits {
			t.Fatalf("ParseRESTUsername(%q) ok = %v, want %v", username, ok, digits)
		}
		if !ok {
			return
		}
		if id != rest {
			t.Fatalf("ParseRESTUsername(%q) id = %q, want %q", username, id, rest)
		}
		if n, _ := strconv.ParseInt(ts, 10, 64); exp.Unix() != n {
			t.Fatalf("ParseRESTUsername(%q) expiry = %d, want %d", username, exp.Unix(), n)
		}
	})
}
