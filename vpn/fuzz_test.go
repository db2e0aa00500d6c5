package vpn

import (
	"errors"
	"testing"

	"github.com/tariq-vpn/tariq/internal/wgconf"
)

// FuzzParseKey: keys arrive from the CLI (--public-key) and the admin API.
// ParseKey never panics, accepts only what round-trips to the same text,
// and refuses everything else with ErrBadKey.
func FuzzParseKey(f *testing.F) {
	f.Add(wgconf.NewPrivateKey().PublicKey().String())
	f.Add("")
	f.Add("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
	f.Add("abc")
	good := wgconf.NewPrivateKey().PublicKey().String()
	f.Add(good[:20] + "\n" + good[20:43]) // the plain decoder skips newlines
	f.Add(good[:42] + "B=")               // spare bits set: not canonical
	f.Fuzz(func(t *testing.T, s string) {
		k, err := wgconf.ParseKey(s)
		if err != nil {
			if !errors.Is(err, ErrBadKey) {
				t.Fatalf("wgconf.ParseKey(%q): %v is not ErrBadKey", s, err)
			}
			return
		}
		if k.String() != s || k.IsZero() {
			t.Fatalf("wgconf.ParseKey(%q) accepted a key that prints as %q", s, k)
		}
	})
}
