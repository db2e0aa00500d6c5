package ownaddr

import (
	"log/slog"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/tariq-vpn/tariq/internal/testutil"
)

// TestHostFollowsNamespace: a Host opened in a namespace lists and follows
// that namespace's addresses, whichever thread asks, and tells of an
// address added or removed there at once.
func TestHostFollowsNamespace(t *testing.T) {
	testutil.LeakCheck(t)
	ns := testutil.NewNetNS(t)
	ns.Run("ip", "link", "add", "tqa0", "type", "veth", "peer", "name", "tqb0")
	ns.Run("ip", "addr", "add", "198.20.0.1/24", "dev", "tqa0")
	ns.Run("ip", "link", "set", "tqa0", "up")

	var h *Host
	if err := ns.Do(func() (err error) { h, err = Open(); return err }); err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	has := func(a netip.Addr) bool {
		t.Helper()
		got, err := h.List() // from this goroutine, in the host's namespace
		if err != nil {
			t.Fatal(err)
		}
		return slices.Contains(got, a)
	}
	for _, a := range []string{"198.20.0.1", "127.0.0.1", "::1"} {
		if !has(netip.MustParseAddr(a)) {
			t.Errorf("List lacks %s", a)
		}
	}

	changed := make(chan struct{}, 1)
	if err := h.Watch(slog.New(slog.DiscardHandler), func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := h.Watch(slog.New(slog.DiscardHandler), func() {}); err == nil {
		t.Error("a second Watch was accepted")
	}
	added := netip.MustParseAddr("198.20.0.7")
	if has(added) {
		t.Fatal("the address is there before it is added")
	}
	for _, step := range []struct {
		args []string
		want bool
	}{
		{[]string{"ip", "addr", "add", "198.20.0.7/32", "dev", "tqa0"}, true},
		{[]string{"ip", "addr", "del", "198.20.0.7/32", "dev", "tqa0"}, false},
	} {
		select {
		case <-changed: // an event from before this step
		default:
		}
		ns.Run(step.args...)
		select {
		case <-changed:
		case <-time.After(5 * time.Second):
			t.Fatalf("no change reported within 5s of %v", step.args)
		}
		if has(added) != step.want {
			t.Fatalf("after %v: List has %v: %v, want %v", step.args, added, !step.want, step.want)
		}
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
