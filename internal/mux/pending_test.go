package mux

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tariq-vpn/tariq/internal/source"
)

// fakeConn is a pending connection's socket that only records Close.
type fakeConn struct {
	net.Conn
	name string
}

func key(s string) netip.Prefix { return source.Key(netip.MustParseAddr(s)) }

// TestPendingSetAdmit walks the admission rules of Limits step by step,
// on a clock of its own: per source, the reserve, cutting the heaviest
// source's oldest, pressure, and the hand-over of a connection cut
// meanwhile.
func TestPendingSetAdmit(t *testing.T) {
	lim := Limits{MaxPending: 8, PerSource: 3, Reserve: 2, Busy: 6, BusyTimeout: time.Second}.withDefaults()
	s := newPendingSet(lim)
	now := time.Unix(1_000_000, 0)
	conns := map[string]*pendingConn{}
	// admit admits name from src at now and returns what was cut (by name)
	// and why it was refused.
	admit := func(name, src string) (cut []string, busy bool, refused string) {
		t.Helper()
		a := s.admit(key(src), &fakeConn{name: name}, now)
		for _, p := range a.cut {
			cut = append(cut, p.conn.(*fakeConn).name)
		}
		if a.p != nil {
			conns[name] = a.p
		}
		return cut, a.busy, a.reason
	}
	type step struct {
		name, src string
		cut       []string
		busy      bool
		refused   string
	}
	run := func(steps ...step) {
		t.Helper()
		for _, st := range steps {
			cut, busy, refused := admit(st.name, st.src)
			if diff := cmp.Diff(st.cut, cut); diff != "" || busy != st.busy || refused != st.refused {
				t.Fatalf("%s from %s: cut %v busy %v refused %q; want cut %v busy %v refused %q", st.name, st.src, cut, busy, refused, st.cut, st.busy, st.refused)
			}
		}
	}

	run(
		step{name: "a1", src: "192.0.2.1"},
		step{name: "a2", src: "192.0.2.1"},
		step{name: "a3", src: "::ffff:192.0.2.1"}, // the same source, mapped
		step{name: "a4", src: "192.0.2.1", refused: "too many from this source"},
		step{name: "b1", src: "2001:db8:1::1"},
		step{name: "b2", src: "2001:db8:1::2"}, // the same /64
		step{name: "b3", src: "2001:db8:1::3"},
		step{name: "b4", src: "2001:db8:1:0:ffff::4", refused: "too many from this source"},
	)
	// 6 pending: the reserve (the last 2 of 8) is only for sources with
	// nothing pending.
	run(
		step{name: "c1", src: "192.0.2.3", busy: true},
		step{name: "d1", src: "192.0.2.4", busy: true},
	)
	// Full. A new source cuts the oldest connection of a source with the
	// most pending (a and b have 3 each: a1 is the oldest of those); c,
	// with 1, may cut from them too, but not from d, which has as many.
	run(
		step{name: "e1", src: "192.0.2.5", cut: []string{"a1"}, busy: true},
		step{name: "c2", src: "192.0.2.3", cut: []string{"b1"}, busy: true},
		step{name: "c3", src: "192.0.2.3", refused: "too many pending"}, // c has 2, as many as a and b now
	)
	if s.done(conns["a1"]) || s.done(conns["b1"]) {
		t.Fatal("a cut connection was handed over")
	}
	if !s.done(conns["e1"]) || s.done(conns["e1"]) {
		t.Fatal("done: want true once, then false")
	}
	if s.len() != 7 {
		t.Fatalf("%d pending, want 7", s.len())
	}

	// Under pressure (7 >= Busy), connections pending longer than
	// BusyTimeout are cut when the next one arrives.
	now = now.Add(lim.BusyTimeout)
	run(step{name: "f1", src: "192.0.2.6", cut: []string{"a2", "a3", "b2", "b3", "c1", "d1", "c2"}})
	if s.len() != 1 {
		t.Fatalf("%d pending, want 1", s.len())
	}

	left := s.close()
	if len(left) != 1 || left[0] != conns["f1"] || s.len() != 0 {
		t.Fatalf("close returned %d, %d left", len(left), s.len())
	}
	run(step{name: "g1", src: "192.0.2.7", refused: "closing"})
}

// TestLimitsDefaults: zero fields take the defaults, scaled down for a
// small cap, and fields that do not fit together are clamped.
func TestLimitsDefaults(t *testing.T) {
	d := DefaultLimits()
	for _, tc := range []struct {
		name string
		in   Limits
		want Limits
	}{
		{"zero", Limits{}, d},
		{"small cap", Limits{MaxPending: 64}, Limits{MaxPending: 64, PerSource: 32, Reserve: 8, Busy: 32,
			HandshakeTimeout: d.HandshakeTimeout, SniffTimeout: d.SniffTimeout, BusyTimeout: d.BusyTimeout}},
		{"tiny cap", Limits{MaxPending: 1}, Limits{MaxPending: 1, PerSource: 1, Reserve: 0, Busy: 1,
			HandshakeTimeout: d.HandshakeTimeout, SniffTimeout: d.SniffTimeout, BusyTimeout: d.BusyTimeout}},
		{"clamped", Limits{MaxPending: 10, PerSource: 50, Reserve: 20, Busy: 30, HandshakeTimeout: time.Second, SniffTimeout: 2 * time.Second, BusyTimeout: 3 * time.Second},
			Limits{MaxPending: 10, PerSource: 1, Reserve: 9, Busy: 10, HandshakeTimeout: time.Second, SniffTimeout: 2 * time.Second, BusyTimeout: 3 * time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, tc.in.withDefaults()); diff != "" {
				t.Errorf("withDefaults (-want +got):\n%s", diff)
			}
		})
	}
}
