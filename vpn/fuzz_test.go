package vpn

import (
	"errors"
	"testing"
)

// FuzzParseKey: keys arrive from the CLI (--public-key) and the admin API.
// ParseKey never panics, accepts only what round-trips to the same text,
// and refuses everything else with ErrBadKey.
func FuzzParseKey(f *testing.F) {
	f.Add(NewPrivateKey().PublicKey().String())
	f.Add("")
	f.Add("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
	f.Add("abc")
	good := NewPrivateKey().PublicKey().String()
	f.Add(good[:20] + "\n" + good[20:43]) // the plain decoder skips newlines
	f.Add(good[:42] + "B=")               // spare bits set: not canonical
	f.Fuzz(func(t *testing.T, s string) {
		k, err := ParseKey(s)
		if err != nil {
			if !errors.Is(err, ErrBadKey) {
				t.Fatalf("ParseKey(%q): %v is not ErrBadKey", s, err)
			}
			return
		}
		if k.String() != s || k.IsZero() {
			t.Fatalf("ParseKey(%q) accepted a key that prints as %q", s, k)
		}
	})
}

// FuzzValidateName: names end up in file names and metric labels.
func FuzzValidateName(f *testing.F) {
	for _, s := range []string{"mom", "../x", "", "a.b-c_d", "-x", "é"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if ValidateName(s) != nil {
			return
		}
		if len(s) == 0 || len(s) > MaxNameLen || s[0] == '.' || s[0] == '-' || s[0] == '_' {
			t.Fatalf("accepted %q", s)
		}
		for _, c := range []byte(s) {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
				t.Fatalf("accepted %q with byte %q", s, c)
			}
		}
	})
}
