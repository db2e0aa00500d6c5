package testutil

import (
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"
)

// TestPebble checks the harness itself: the reserved port is closed until
// Start, the directory and the management API answer over HTTPS trusted
// through RootsFile, the root is a CA, and Stop closes the port again.
func TestPebble(t *testing.T) {
	LeakCheck(t, PebbleLeakOptions()...)
	p := NewPebble(t, PebbleOptions{})
	addr := strings.TrimSuffix(strings.TrimPrefix(p.DirectoryURL, "https://"), "/dir")
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatalf("%s accepts before Start", addr)
	}

	p.Start()
	b, err := p.get(p.DirectoryURL)
	if err != nil || !strings.Contains(string(b), `"newOrder"`) {
		t.Fatalf("directory: %v %s", err, b)
	}
	if root := p.Root(); !root.IsCA || root.CheckSignatureFrom(root) != nil {
		t.Errorf("root %s is not a self-signed CA", root.Subject)
	}
	if p.Requests() == 0 || p.Orders() != 0 {
		t.Errorf("requests %d, orders %d; want some and none", p.Requests(), p.Orders())
	}

	p.Stop()
	p.Stop()
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Errorf("%s still accepts after Stop", addr)
	}
}

// TestPebbleProfiles checks that the directory offers the profiles asked
// for (draft-aaron-acme-profiles: meta.profiles), and Lifetime.
func TestPebbleProfiles(t *testing.T) {
	LeakCheck(t, PebbleLeakOptions()...)
	p := StartPebble(t, PebbleOptions{Profiles: map[string]time.Duration{"default": 90 * 24 * time.Hour, "shortlived": 160 * time.Hour}})
	b, err := p.get(p.DirectoryURL)
	if err != nil {
		t.Fatal(err)
	}
	var dir struct {
		Meta struct{ Profiles map[string]string } `json:"meta"`
	}
	if err := json.Unmarshal(b, &dir); err != nil {
		t.Fatal(err)
	}
	if _, ok := dir.Meta.Profiles["shortlived"]; !ok || len(dir.Meta.Profiles) != 2 {
		t.Errorf("directory profiles %v, want default and shortlived", dir.Meta.Profiles)
	}
	if got := p.Lifetime("shortlived"); got != 160*time.Hour-time.Second {
		t.Errorf("Lifetime(shortlived) = %v", got)
	}
	if got := p.Lifetime("nope"); got != 0 {
		t.Errorf("Lifetime(nope) = %v, want 0", got)
	}
}
