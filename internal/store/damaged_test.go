package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// v1Without returns the format-1 fixture with the JSON paths in drop
// (object keys, "." separated) removed.
func v1Without(t *testing.T, drop ...string) string {
	t.Helper()
	b, err := os.ReadFile("testdata/state-v1.json")
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	for _, p := range drop {
		m := raw
		keys := strings.Split(p, ".")
		for _, k := range keys[:len(keys)-1] {
			m = m[k].(map[string]any)
		}
		delete(m, keys[len(keys)-1])
	}
	out, err := json.MarshalIndent(raw, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// TestDamagedStateRefused: only a missing state file means "first start".
// A file that exists but is not what tariq writes (empty, null, {}, a bare
// version, truncated, or lacking material that everything else in it was
// generated with) is refused with one line naming the file and what is
// wrong, by reads and by every kind of write, and is left byte-identical:
// never replaced by a fresh identity with new keys and secrets.
func TestDamagedStateRefused(t *testing.T) {
	fixture, err := os.ReadFile("testdata/state-v1.json")
	if err != nil {
		t.Fatal(err)
	}
	const key = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
	for _, tc := range []struct{ name, state, want string }{
		{"empty file", "", "is not valid JSON"},
		{"whitespace", " \n", "is not valid JSON"},
		{"truncated", string(fixture[:len(fixture)/2]), "is not valid JSON"},
		{"null", "null", "is not a JSON object"},
		{"array", "[]", "is not a JSON object"},
		{"empty object", "{}", "has no version"},
		{"version zero", `{"version":0,"relay":{"secret":"ab"}}`, "has no version"},
		{"version as text", `{"version":"2","relay":{"secret":"ab"}}`, "is not tariq's state"},
		{"bare version", `{"version":2}`, "holds neither"},
		{"empty sections", `{"version":2,"relay":{},"vpn":{},"peers":[]}`, "holds neither"},
		{"peers but no server key", v1Without(t, "vpn.private_key"), "has peers but no server WireGuard private key"},
		{"peers but empty server key", strings.Replace(string(fixture), key, "", 1), "has peers but no server WireGuard private key"},
		{"obfuscation parameters but no server key",
			`{"version":2,"relay":{"secret":"ab"},"vpn":{"amneziawg":{"jc":4,"jmin":40,"jmax":70,"s1":20,"s2":30,"h1":5,"h2":6,"h3":7,"h4":8}}}`,
			"has obfuscation parameters but no server WireGuard private key"},
		{"ULA but no server key", `{"version":2,"relay":{"secret":"ab"},"vpn":{"ula":"fd00:1:2:3::/64"}}`, "has an IPv6 ULA but no server WireGuard private key"},
		{"invites but no server key", v1Without(t, "vpn", "peers"), "has invites but no server WireGuard private key"},
		{"Outline prefix but no server key", `{"version":4,"relay":{"secret":"ab"},"outline":{"prefix":"ABCDEFGH"}}`,
			"has Outline material but no server WireGuard private key"},
		{"bad server key", `{"version":2,"vpn":{"private_key":"bm90IGEga2V5"}}`, "has a server WireGuard private key that is not 32 bytes of base64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Open(filepath.Join(t.TempDir(), "data"))
			if err != nil {
				t.Fatal(err)
			}
			path := s.Path(stateFile)
			if err := os.WriteFile(path, []byte(tc.state), 0o600); err != nil {
				t.Fatal(err)
			}
			check := func(op string, err error) {
				t.Helper()
				switch {
				case err == nil:
					t.Errorf("%s accepted the state", op)
				case !errors.Is(err, ErrBadState):
					t.Errorf("%s: %v, want ErrBadState", op, err)
				case !strings.Contains(err.Error(), "state file "+path+" ") || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n"):
					t.Errorf("%s: %q, want one line naming %s and saying %q", op, err, path, tc.want)
				}
			}
			_, err = s.Load()
			check("Load", err)
			_, err = s.RelaySecret()
			check("RelaySecret", err)
			_, err = s.Update(func(st *State) error { st.Relay.Secret = "fresh"; return nil })
			check("Update", err)
			if got, _ := os.ReadFile(path); !bytes.Equal(got, []byte(tc.state)) {
				t.Errorf("the refused state was rewritten:\n%s", got)
			}
		})
	}
}

// TestFirstStateForms: what tariq legitimately writes before its first
// start, or on a server without the VPN, loads: a REST secret alone (`tariq
// turn credentials` before `tariq serve`), and the format-1 fixture.
func TestFirstStateForms(t *testing.T) {
	for _, state := range []string{
		`{"version":2,"relay":{"secret":"ab"}}`,
		`{"version":1,"relay":{"secret":"ab"},"peers":null}`,
		`{"version":2,"vpn":{"private_key":"yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="}}`,
		v1Without(t, "relay"),
	} {
		s, err := Open(filepath.Join(t.TempDir(), "data"))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(s.Path(stateFile), []byte(state), 0o600)
		if _, err := s.Load(); err != nil {
			t.Errorf("%s: %v", state, err)
		}
		if _, err := s.RelaySecret(); err != nil {
			t.Errorf("%s: %v", state, err)
		}
	}
	// A missing file is a first start.
	s, _ := Open(filepath.Join(t.TempDir(), "data"))
	if st, err := s.Load(); err != nil || st.Version != Version {
		t.Errorf("no state file: %+v %v", st, err)
	}
}

// TestUpdateNeverWritesWhatLoadRefuses: a change that would leave a state
// that Load refuses (peers without the server key) is not written, so
// every state tariq writes is one it reads back.
func TestUpdateNeverWritesWhatLoadRefuses(t *testing.T) {
	s, _ := Open(filepath.Join(t.TempDir(), "data"))
	_, err := s.Update(func(st *State) error {
		st.Peers = append(st.Peers, Peer{Name: "mom", PublicKey: "k", PresharedKey: "psk"})
		return nil
	})
	if !errors.Is(err, ErrBadState) {
		t.Errorf("got %v, want ErrBadState", err)
	}
	if _, err := os.Stat(s.Path(stateFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state written: %v", err)
	}
}
