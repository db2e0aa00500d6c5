package wgconf

import (
	"crypto/rand"
	"errors"
	"fmt"
	mrand "math/rand/v2"
)

// AmneziaWG holds AmneziaWG 1.x obfuscation parameters, named as the
// AmneziaWG apps' config files and amneziawg-go's UAPI name them (Jc, Jmin,
// Jmax: junk packets sent before each handshake initiation, and their size
// range; S1, S2: random bytes before the handshake initiation and response;
// H1-H4: the message-type headers replacing WireGuard's 1-4).
type AmneziaWG struct {
	Jc   int    `json:"jc"`
	Jmin int    `json:"jmin"`
	Jmax int    `json:"jmax"`
	S1   int    `json:"s1"`
	S2   int    `json:"s2"`
	H1   uint32 `json:"h1"`
	H2   uint32 `json:"h2"`
	H3   uint32 `json:"h3"`
	H4   uint32 `json:"h4"`
}

// WireGuard's handshake message sizes (wireguard-go device/noise-protocol.go).
const (
	InitSize = 148
	RespSize = 92
)

// AmneziaWG limits, from amneziawg-go v0.2.12 device.go handlePostConfig
// (headers above 4 and distinct; initiation and response sizes differ) and
// kept below a 1280-byte path MTU, so that neither junk nor padded
// handshakes are fragmented (its README warns that Jmax at or above the
// MTU "looks suspicious").
const (
	awgMaxJc   = 128
	awgMaxJunk = 1280
	awgMaxS1   = 1280 - InitSize // 1132
	awgMaxS2   = 1280 - RespSize // 1188
)

// newAmneziaWGFrom draws obfuscation parameters from r: Jc 3-10 junk packets
// of 40-1000 bytes, S1 and S2 of 15-150 bytes (S1+56 != S2, or initiation
// and response would have the same size), and four distinct headers in
// 5..2^31-1 (the range the Amnezia apps draw from: some parse them as
// signed 32-bit numbers).
func newAmneziaWGFrom(r *mrand.Rand) AmneziaWG {
	p := AmneziaWG{Jc: 3 + r.IntN(8)}
	p.Jmin = 40 + r.IntN(60)
	p.Jmax = p.Jmin + 50 + r.IntN(1000-p.Jmin-50+1)
	p.S1 = 15 + r.IntN(136)
	for {
		p.S2 = 15 + r.IntN(136)
		if p.S2 != p.S1+InitSize-RespSize {
			break
		}
	}
	var hs [4]uint32
	for i := 0; i < len(hs); {
		h := 5 + r.Uint32N(1<<31-5)
		dup := false
		for _, o := range hs[:i] {
			dup = dup || o == h
		}
		if !dup {
			hs[i] = h
			i++
		}
	}
	p.H1, p.H2, p.H3, p.H4 = hs[0], hs[1], hs[2], hs[3]
	return p
}

// NewAmneziaWG draws parameters with a fresh random seed.
func NewAmneziaWG() AmneziaWG {
	var seed [32]byte
	rand.Read(seed[:])
	return newAmneziaWGFrom(mrand.New(mrand.NewChaCha8(seed)))
}

// CheckAmneziaWG reports why p cannot be used (a hand-edited state), or nil.
func CheckAmneziaWG(p AmneziaWG) error {
	var errs []error
	if p.Jc < 1 || p.Jc > awgMaxJc {
		errs = append(errs, fmt.Errorf("jc %d is outside 1-%d", p.Jc, awgMaxJc))
	}
	if p.Jmin < 1 || p.Jmin > p.Jmax || p.Jmax > awgMaxJunk {
		errs = append(errs, fmt.Errorf("jmin %d and jmax %d: want 1 <= jmin <= jmax <= %d", p.Jmin, p.Jmax, awgMaxJunk))
	}
	if p.S1 < 0 || p.S1 > awgMaxS1 {
		errs = append(errs, fmt.Errorf("s1 %d is outside 0-%d", p.S1, awgMaxS1))
	}
	if p.S2 < 0 || p.S2 > awgMaxS2 {
		errs = append(errs, fmt.Errorf("s2 %d is outside 0-%d", p.S2, awgMaxS2))
	}
	if InitSize+p.S1 == RespSize+p.S2 {
		errs = append(errs, fmt.Errorf("s1 %d and s2 %d make initiation and response the same size", p.S1, p.S2))
	}
	hs := []uint32{p.H1, p.H2, p.H3, p.H4}
	for i, h := range hs {
		if h <= 4 {
			errs = append(errs, fmt.Errorf("h%d %d must be above 4", i+1, h))
		}
		for j := range i {
			if hs[j] == h {
				errs = append(errs, fmt.Errorf("h%d and h%d are both %d", j+1, i+1, h))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("amneziawg parameters in the state: %w", err)
	}
	return nil
}
