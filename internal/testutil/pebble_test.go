package testutil

import (
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
