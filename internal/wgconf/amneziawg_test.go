package wgconf

import (
	mrand "math/rand/v2"
	"strings"
	"testing"
)

// TestAmneziaWGParams: parameters drawn from many seeds are all within
// amneziawg-go's constraints and tariq's ranges, and CheckAmneziaWG
// refuses each way of breaking them.
func TestAmneziaWGParams(t *testing.T) {
	seen := map[uint32]bool{}
	for seed := range uint64(20000) {
		p := newAmneziaWGFrom(mrand.New(mrand.NewPCG(seed, seed*7919)))
		if err := CheckAmneziaWG(p); err != nil {
			t.Fatalf("seed %d: %+v: %v", seed, p, err)
		}
		switch {
		case p.Jc < 3 || p.Jc > 10:
			t.Fatalf("seed %d: Jc %d outside 3-10", seed, p.Jc)
		case p.Jmin < 40 || p.Jmin >= p.Jmax || p.Jmax > 1000:
			t.Fatalf("seed %d: Jmin %d Jmax %d", seed, p.Jmin, p.Jmax)
		case p.S1 < 15 || p.S1 > 150 || p.S2 < 15 || p.S2 > 150 || p.S1+56 == p.S2:
			t.Fatalf("seed %d: S1 %d S2 %d", seed, p.S1, p.S2)
		}
		hs := []uint32{p.H1, p.H2, p.H3, p.H4}
		for i, h := range hs {
			if h <= 4 || h >= 1<<31 {
				t.Fatalf("seed %d: H%d = %d outside 5..2^31-1", seed, i+1, h)
			}
			for _, o := range hs[:i] {
				if o == h {
					t.Fatalf("seed %d: headers repeat: %v", seed, hs)
				}
			}
			seen[h] = true
		}
	}
	if len(seen) < 70000 {
		t.Errorf("only %d distinct headers in 80000 draws: not random", len(seen))
	}
	a, b := NewAmneziaWG(), NewAmneziaWG()
	if a == b {
		t.Error("two random draws are equal")
	}

	good := goldenAWG()
	for _, tc := range []struct {
		name string
		edit func(*AmneziaWG)
		want string
	}{
		{"jc zero", func(p *AmneziaWG) { p.Jc = 0 }, "jc 0 is outside 1-128"},
		{"jc too many", func(p *AmneziaWG) { p.Jc = 129 }, "jc 129 is outside 1-128"},
		{"jmin above jmax", func(p *AmneziaWG) { p.Jmin, p.Jmax = 100, 99 }, "want 1 <= jmin <= jmax <= 1280"},
		{"jmax above mtu", func(p *AmneziaWG) { p.Jmax = 1281 }, "want 1 <= jmin <= jmax <= 1280"},
		{"s1 too big", func(p *AmneziaWG) { p.S1 = 1133 }, "s1 1133 is outside 0-1132"},
		{"s2 too big", func(p *AmneziaWG) { p.S2 = 1189 }, "s2 1189 is outside 0-1188"},
		{"same sizes", func(p *AmneziaWG) { p.S1, p.S2 = 10, 66 }, "make initiation and response the same size"},
		{"stock header", func(p *AmneziaWG) { p.H3 = 3 }, "h3 3 must be above 4"},
		{"repeated header", func(p *AmneziaWG) { p.H4 = p.H1 }, "h1 and h4 are both"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := good
			tc.edit(&p)
			if err := CheckAmneziaWG(p); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want %q", err, tc.want)
			}
		})
	}
	if err := CheckAmneziaWG(good); err != nil {
		t.Errorf("golden parameters: %v", err)
	}
}
