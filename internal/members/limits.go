package members

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Limits are what a member may use, across all their devices and paths.
// Zero values mean no limit.
type Limits struct {
	// Expires is when the member's devices stop working.
	Expires time.Time `json:"expires,omitzero"`
	// DataLimit is the bytes, both directions together, a member may pass
	// per calendar month (UTC).
	DataLimit uint64 `json:"data_limit,omitempty"`
	// Rate caps each direction, in bits per second, for the member's
	// devices together.
	Rate uint64 `json:"rate,omitempty"`
}

// LimitsChange is a change to a member's limits: nil fields stay as they
// are; a set field replaces the limit, its zero value lifting it.
type LimitsChange struct {
	Expires   *time.Time `json:"expires,omitempty"`
	DataLimit *uint64    `json:"data_limit,omitempty"`
	Rate      *uint64    `json:"rate,omitempty"`
}

// Empty reports whether c changes nothing.
func (c LimitsChange) Empty() bool { return c.Expires == nil && c.DataLimit == nil && c.Rate == nil }

// Apply returns l with c applied.
func (c LimitsChange) Apply(l Limits) Limits {
	if c.Expires != nil {
		l.Expires = *c.Expires
	}
	if c.DataLimit != nil {
		l.DataLimit = *c.DataLimit
	}
	if c.Rate != nil {
		l.Rate = *c.Rate
	}
	return l
}

// ErrBadLimit marks a limit that does not parse.
var ErrBadLimit = errors.New("bad limit")

// ParseExpires reads --expires: "none", an RFC 3339 time, a date
// (2026-12-31: the member works through that day, UTC, and expires as the
// next one begins), or a duration from now ("720h", "30d", "2w").
func ParseExpires(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return time.Time{}, fmt.Errorf("%w: --expires is empty (a date, a time, a duration like 30d, or none)", ErrBadLimit)
	case strings.EqualFold(s, "none"), strings.EqualFold(s, "never"):
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t.UTC(), nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t.UTC().AddDate(0, 0, 1), nil
	}
	d, err := parseLongDuration(s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: --expires %q: want a date (2027-01-31), an RFC 3339 time, a duration from now (30d, 12h) or none", ErrBadLimit, s)
	}
	if d <= 0 {
		return time.Time{}, fmt.Errorf("%w: --expires %q: a duration from now must be positive", ErrBadLimit, s)
	}
	return now.Add(d).UTC().Truncate(time.Second), nil
}

// parseLongDuration is time.ParseDuration with days (d) and weeks (w).
func parseLongDuration(s string) (time.Duration, error) {
	for _, u := range []struct {
		suffix string
		unit   time.Duration
	}{{"d", 24 * time.Hour}, {"w", 7 * 24 * time.Hour}} {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			v, err := strconv.ParseFloat(n, 64)
			if err != nil || math.IsInf(v, 0) || math.IsNaN(v) || v*float64(u.unit) > math.MaxInt64 {
				return 0, errors.New("bad duration")
			}
			return time.Duration(v * float64(u.unit)), nil
		}
	}
	return time.ParseDuration(s)
}

var byteUnits = map[string]float64{
	"": 1, "b": 1,
	"kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
	"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40,
	"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
}

// ParseDataLimit reads --data-limit: "none", or a size like 5GiB, 500MB
// or 20MiB (IEC units are powers of 1024, SI units of 1000; a bare number
// is bytes).
func ParseDataLimit(s string) (uint64, error) {
	v, unit, err := splitQuantity(s, "--data-limit")
	if err != nil || v == 0 && unit == "none" {
		return 0, err
	}
	mul, ok := byteUnits[strings.ToLower(unit)]
	if !ok {
		return 0, fmt.Errorf("%w: --data-limit %q: unknown unit %q (use MiB, GiB, MB, GB or none)", ErrBadLimit, s, unit)
	}
	return checkedQuantity(v*mul, s, "--data-limit")
}

var rateUnits = map[string]float64{
	"bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9,
	"bps": 1, "kbps": 1e3, "mbps": 1e6, "gbps": 1e9,
	"kibit": 1 << 10, "mibit": 1 << 20, "gibit": 1 << 30,
}

// ParseRate reads --rate: "none", or bits per second as tc(8) writes
// them: 4mbit, 512kbit, 1gbit (also kbps/mbps, bits per second).
func ParseRate(s string) (uint64, error) {
	v, unit, err := splitQuantity(s, "--rate")
	if err != nil || v == 0 && unit == "none" {
		return 0, err
	}
	mul, ok := rateUnits[strings.ToLower(unit)]
	if !ok {
		return 0, fmt.Errorf("%w: --rate %q: unknown unit %q (use kbit, mbit or gbit, or none)", ErrBadLimit, s, unit)
	}
	r, err := checkedQuantity(v*mul, s, "--rate")
	if err == nil && r < 64_000 {
		return 0, fmt.Errorf("%w: --rate %q is below 64kbit, too slow for even one call", ErrBadLimit, s)
	}
	return r, err
}

func splitQuantity(s, flag string) (float64, string, error) {
	s = strings.TrimSpace(s)
	if strings.EqualFold(s, "none") {
		return 0, "none", nil
	}
	i := strings.IndexFunc(s, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	if i < 0 {
		i = len(s)
	}
	v, err := strconv.ParseFloat(s[:i], 64)
	if err != nil || i == 0 {
		return 0, "", fmt.Errorf("%w: %s %q: want a number with a unit, or none", ErrBadLimit, flag, s)
	}
	return v, strings.TrimSpace(s[i:]), nil
}

func checkedQuantity(v float64, s, flag string) (uint64, error) {
	switch {
	case math.IsInf(v, 0) || math.IsNaN(v) || v >= math.MaxUint64/2:
		return 0, fmt.Errorf("%w: %s %q is too large", ErrBadLimit, flag, s)
	case v < 1:
		return 0, fmt.Errorf("%w: %s %q must be more than zero (or none to lift it)", ErrBadLimit, flag, s)
	}
	return uint64(v), nil
}

// FormatBytes writes n in IEC units, as --data-limit reads it.
func FormatBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 3; m /= unit {
		div *= unit
		exp++
	}
	v := float64(n) / float64(div)
	s := strconv.FormatFloat(v, 'f', 1, 64)
	s = strings.TrimSuffix(s, ".0")
	return s + []string{"KiB", "MiB", "GiB", "TiB"}[exp]
}

// FormatRate writes bits per second as --rate reads them.
func FormatRate(bps uint64) string {
	for _, u := range []struct {
		name string
		div  uint64
	}{{"gbit", 1e9}, {"mbit", 1e6}, {"kbit", 1e3}} {
		if bps >= u.div {
			s := strconv.FormatFloat(float64(bps)/float64(u.div), 'f', 1, 64)
			return strings.TrimSuffix(s, ".0") + u.name
		}
	}
	return fmt.Sprintf("%dbit", bps)
}

// Month names the calendar month (UTC) usage counts toward: 2026-12.
func Month(t time.Time) string { return t.UTC().Format("2006-01") }
