package members

import (
	"errors"
	"testing"
	"time"
)

func TestParseLimits(t *testing.T) {
	now := time.Date(2026, 12, 4, 20, 0, 0, 0, time.UTC)
	exp := []struct {
		in   string
		want time.Time
		bad  bool
	}{
		{"none", time.Time{}, false},
		{"20s", now.Add(20 * time.Second), false},
		{"30d", now.AddDate(0, 0, 30), false},
		{"2w", now.AddDate(0, 0, 14), false},
		{"2027-01-31", time.Date(2027, 2, 1, 0, 0, 0, 0, time.UTC), false},
		{"2027-01-31T10:00:00+02:00", time.Date(2027, 1, 31, 8, 0, 0, 0, time.UTC), false},
		{"-5m", time.Time{}, true},
		{"0s", time.Time{}, true},
		{"", time.Time{}, true},
		{"tomorrow", time.Time{}, true},
		{"1e300d", time.Time{}, true},
	}
	for _, c := range exp {
		t.Run("expires "+c.in, func(t *testing.T) {
			got, err := ParseExpires(c.in, now)
			if c.bad {
				if !errors.Is(err, ErrBadLimit) {
					t.Fatalf("ParseExpires(%q) = %v, %v; want ErrBadLimit", c.in, got, err)
				}
				return
			}
			if err != nil || !got.Equal(c.want) {
				t.Fatalf("ParseExpires(%q) = %v, %v; want %v", c.in, got, err, c.want)
			}
		})
	}
	data := []struct {
		in   string
		want uint64
		bad  bool
	}{
		{"none", 0, false},
		{"5GiB", 5 << 30, false},
		{"20MiB", 20 << 20, false},
		{"20mib", 20 << 20, false},
		{"500MB", 500e6, false},
		{"1.5GiB", 3 << 29, false},
		{"1024", 1024, false},
		{"0", 0, true},
		{"-1GiB", 0, true},
		{"5 parsecs", 0, true},
		{"GiB", 0, true},
		{"1e30TiB", 0, true},
	}
	for _, c := range data {
		t.Run("data "+c.in, func(t *testing.T) {
			got, err := ParseDataLimit(c.in)
			if c.bad != (err != nil) || got != c.want {
				t.Fatalf("ParseDataLimit(%q) = %d, %v; want %d (bad %v)", c.in, got, err, c.want, c.bad)
			}
		})
	}
	rates := []struct {
		in   string
		want uint64
		bad  bool
	}{
		{"none", 0, false},
		{"4mbit", 4e6, false},
		{"8Mbit", 8e6, false},
		{"512kbit", 512e3, false},
		{"1gbit", 1e9, false},
		{"4", 0, true},
		{"10kbit", 0, true},
		{"0mbit", 0, true},
		{"fast", 0, true},
	}
	for _, c := range rates {
		t.Run("rate "+c.in, func(t *testing.T) {
			got, err := ParseRate(c.in)
			if c.bad != (err != nil) || got != c.want {
				t.Fatalf("ParseRate(%q) = %d, %v; want %d (bad %v)", c.in, got, err, c.want, c.bad)
			}
		})
	}
}

func TestFormatRoundTrips(t *testing.T) {
	for _, n := range []uint64{20 << 20, 5 << 30, 3 << 29, 1000} {
		if got, err := ParseDataLimit(FormatBytes(n)); err != nil || got != n {
			t.Errorf("ParseDataLimit(FormatBytes(%d) = %q) = %d, %v", n, FormatBytes(n), got, err)
		}
	}
	for _, r := range []uint64{4e6, 8e6, 512e3, 1e9, 1.5e6} {
		if got, err := ParseRate(FormatRate(r)); err != nil || got != r {
			t.Errorf("ParseRate(FormatRate(%d) = %q) = %d, %v", r, FormatRate(r), got, err)
		}
	}
}
