package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tariq-vpn/tariq/config"
)

// testServerKey is a server WireGuard private key for states built by hand:
// a state with peers always has one.
const testServerKey = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="

func TestUpdateAndReload(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(filepath.Join(dir, "data"))
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(s.Dir()); fi.Mode().Perm() != 0o700 {
		t.Errorf("data dir mode %v", fi.Mode().Perm())
	}
	sec, err := s.RelaySecret()
	if err != nil || len(sec) != 64 {
		t.Fatalf("secret %d chars, %v", len(sec), err)
	}
	again, _ := s.RelaySecret()
	if again != sec {
		t.Error("secret regenerated")
	}
	fi, err := os.Stat(s.Path(stateFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file mode: %v %v", fi, err)
	}
	// A failing update writes nothing.
	before, _ := os.ReadFile(s.Path(stateFile))
	boom := errors.New("boom")
	if _, err := s.Update(func(st *State) error { st.Relay.Secret = "x"; return boom }); !errors.Is(err, boom) {
		t.Fatalf("update error %v", err)
	}
	if after, _ := os.ReadFile(s.Path(stateFile)); string(after) != string(before) {
		t.Error("failed update changed the file")
	}
	// No temporary files are left behind.
	entries, _ := os.ReadDir(s.Dir())
	for _, e := range entries {
		if e.Name() != stateFile && e.Name() != lockFile {
			t.Errorf("stray file %s", e.Name())
		}
	}
}

func TestNewerStateRefused(t *testing.T) {
	s, _ := Open(t.TempDir())
	os.WriteFile(s.Path(stateFile), []byte(`{"version": 99}`), 0o600)
	if _, err := s.Load(); !errors.Is(err, ErrNewerState) {
		t.Errorf("got %v, want ErrNewerState", err)
	}
}

func TestSecretNeverInJSONLogs(t *testing.T) {
	st := State{Relay: RelayState{Secret: "abcdef"}}
	if s := config.Secret("abcdef").String(); s == "abcdef" {
		t.Error("secret prints")
	}
	b, _ := json.Marshal(st)
	if !json.Valid(b) {
		t.Error("invalid JSON")
	}
}

// TestCrashSafety kills writers with SIGKILL at random points while they
// update the state; afterwards the file always parses and holds a complete
// state (the old or the new one), never a torn one.
func TestCrashSafety(t *testing.T) {
	if os.Getenv("TARIQ_STORE_WRITER") != "" {
		s, err := Open(os.Getenv("TARIQ_STORE_WRITER"))
		if err != nil {
			os.Exit(2)
		}
		for i := 0; ; i++ {
			s.Update(func(st *State) error {
				st.VPN.PrivateKey = testServerKey
				st.Peers = append(st.Peers, Peer{Name: "p" + strconv.Itoa(i), PublicKey: "k", PresharedKey: "psk"})
				st.Relay.Secret = config.Secret("secret-" + strconv.Itoa(len(st.Peers)))
				return nil
			})
		}
	}
	dir := t.TempDir()
	for round := range 20 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashSafety$")
		cmd.Env = append(os.Environ(), "TARIQ_STORE_WRITER="+dir)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(20+round*7) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		s, _ := Open(dir)
		st, err := s.Load()
		if err != nil {
			t.Fatalf("round %d: state unreadable after kill -9: %v", round, err)
		}
		// Secret and peers are written together: a torn state would disagree.
		if want := "secret-" + strconv.Itoa(len(st.Peers)); len(st.Peers) > 0 && st.Relay.Secret.Reveal() != want {
			t.Fatalf("round %d: %d peers but secret %q", round, len(st.Peers), st.Relay.Secret.Reveal())
		}
	}
	s, _ := Open(dir)
	if st, _ := s.Load(); len(st.Peers) == 0 {
		t.Fatal("the writers never completed an update: the test proved nothing")
	} else {
		t.Logf("%d updates survived 20 kills", len(st.Peers))
	}
}

// TestReadsFormat1 loads a state written by the first format (a fixture
// kept in testdata) and checks nothing is lost; the next write upgrades it.
func TestReadsFormat1(t *testing.T) {
	b, err := os.ReadFile("testdata/state-v1.json")
	if err != nil {
		t.Fatal(err)
	}
	s, _ := Open(t.TempDir())
	os.WriteFile(s.Path(stateFile), b, 0o600)
	st, err := s.Load()
	if err != nil {
		t.Fatalf("format 1 does not load: %v", err)
	}
	mom, dad := st.Peer("mom"), st.Peer("dad-laptop")
	switch {
	case st.Relay.Secret.Reveal() != "3f6c1d0e9b8a7f6e5d4c3b2a19081726354433221100ffeeddccbbaa99887766",
		st.VPN.PrivateKey.Reveal() != "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=",
		st.VPN.ULA.String() != "fd12:3456:789a::/64", len(st.VPN.Retired) != 2, st.VPN.AmneziaWG != nil:
		t.Errorf("server state: %+v", st.VPN)
	case mom == nil || dad == nil || len(st.Peers) != 2:
		t.Fatalf("peers: %+v", st.Peers)
	case mom.IPv4.String() != "10.77.0.2" || mom.PrivateKey == "" || mom.Port != 0 || mom.Obfuscated || mom.Disabled:
		t.Errorf("mom: %+v", mom)
	case !dad.Disabled || dad.PrivateKey != "" || dad.IPv6.String() != "fd12:3456:789a::4":
		t.Errorf("dad-laptop: %+v", dad)
	case len(st.Invites) != 1 || st.Invites[0].Peer != "mom":
		t.Errorf("invites: %+v", st.Invites)
	}
	if _, err := s.Update(func(st *State) error { st.Peer("dad-laptop").Disabled = false; return nil }); err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(s.Path(stateFile))
	var head struct{ Version int }
	json.Unmarshal(after, &head)
	if head.Version != Version {
		t.Errorf("rewritten state has version %d, want %d", head.Version, Version)
	}
}

// TestInviteSwitchedAtOptional: Invite.SwitchedAt (and the confirmation's
// fields of Reachability) are written only once set, so a state with no
// switch is exactly what the format-2 binary before them writes; once set
// they survive a write and a read.
func TestInviteSwitchedAtOptional(t *testing.T) {
	used := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	st := State{Version: Version, VPN: VPNState{PrivateKey: testServerKey}, Invites: []Invite{{Hash: "h", Peer: "mom", CreatedAt: used, Expires: used, UsedAt: used}},
		Peers: []Peer{{Name: "mom", Reach: &Reachability{CheckedAt: used, Verdict: "wireguard"}}}}
	b, _ := json.Marshal(st)
	for _, k := range []string{"switched_at", "confirmed", "switched_from"} {
		if containsKey(b, k) {
			t.Errorf("unset %s written: %s", k, b)
		}
	}
	s, _ := Open(t.TempDir())
	if _, err := s.Update(func(s *State) error {
		*s = st
		s.Invites[0].SwitchedAt = used.Add(time.Minute)
		s.Peers[0].Reach.Confirmed, s.Peers[0].Reach.SwitchedFrom = "no-handshake", "wireguard"
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load()
	if err != nil || !got.Invites[0].SwitchedAt.Equal(used.Add(time.Minute)) || got.Peers[0].Reach.Confirmed != "no-handshake" ||
		got.Peers[0].Reach.SwitchedFrom != "wireguard" {
		t.Errorf("read back: %+v %+v %v", got.Invites, got.Peers[0].Reach, err)
	}
}

func containsKey(b []byte, key string) bool {
	var walk func(any) bool
	walk = func(v any) bool {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if k == key || walk(x) {
					return true
				}
			}
		case []any:
			for _, x := range v {
				if walk(x) {
					return true
				}
			}
		}
		return false
	}
	var v any
	json.Unmarshal(b, &v)
	return walk(v)
}

// TestOutlineOptional: a member's Outline key and the server's Outline
// material are written only once generated, so a state without them is
// what format 3 wrote; once set they survive a write and a read, and
// print redacted.
func TestOutlineOptional(t *testing.T) {
	st := State{Version: Version, VPN: VPNState{PrivateKey: testServerKey}, Members: []Member{{Name: "mom"}}}
	b, _ := json.Marshal(st)
	for _, k := range []string{"outline", "prefix", "token"} {
		if containsKey(b, k) {
			t.Errorf("unset %s written: %s", k, b)
		}
	}
	s, _ := Open(t.TempDir())
	if _, err := s.Update(func(s *State) error {
		*s = st
		s.Members[0].Outline = &OutlineAccess{Secret: "the-secret", Token: "the-token"}
		s.Outline = OutlineState{Prefix: "the-prefix", Retired: []string{"ab"}}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load()
	if err != nil || got.Members[0].Outline == nil || got.Members[0].Outline.Secret.Reveal() != "the-secret" ||
		got.Members[0].Outline.Token.Reveal() != "the-token" || got.Outline.Prefix.Reveal() != "the-prefix" || len(got.Outline.Retired) != 1 {
		t.Fatalf("read back: %+v %+v %v", got.Members, got.Outline, err)
	}
	if s := fmt.Sprintf("%v %+v", *got.Members[0].Outline, got.Outline); strings.Contains(s, "the-") {
		t.Errorf("Outline material printed: %s", s)
	}
}
