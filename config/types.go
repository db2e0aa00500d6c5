package config

import (
	"fmt"
	"log/slog"
	"strconv"
	"strings"
)

// LogLevel is a log level named in the config: debug, info, warn or error.
type LogLevel string

// Slog returns the matching slog level; unknown names map to info (Validate
// reports them).
func (l LogLevel) Slog() slog.Level {
	switch l {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	default:
		return slog.LevelInfo
	}
}

// TLSMode says where certificates come from.
type TLSMode string

// The TLS modes.
const (
	TLSAuto       TLSMode = "auto"        // ACME for a public IP address, or a DNS name when an email is set; else self-signed
	TLSACME       TLSMode = "acme"        // always ACME
	TLSSelfSigned TLSMode = "self-signed" // a certificate generated once and kept
	TLSFiles      TLSMode = "files"       // cert_file and key_file, reread on SIGHUP
	TLSOff        TLSMode = "off"         // no TLS listeners at all
)

// PortRange is an inclusive range of ports written "min-max".
type PortRange struct {
	Min, Max uint16
}

// UnmarshalText parses "min-max" (or a single port).
func (r *PortRange) UnmarshalText(b []byte) error {
	s := strings.TrimSpace(string(b))
	lo, hi, found := strings.Cut(s, "-")
	if !found {
		hi = lo
	}
	min, err1 := strconv.ParseUint(strings.TrimSpace(lo), 10, 16)
	max, err2 := strconv.ParseUint(strings.TrimSpace(hi), 10, 16)
	if err1 != nil || err2 != nil || min == 0 || min > max {
		return fmt.Errorf("%q is not a port range (want min-max, 1-65535, min <= max)", s)
	}
	r.Min, r.Max = uint16(min), uint16(max)
	return nil
}

// MarshalText writes "min-max".
func (r PortRange) MarshalText() ([]byte, error) {
	return []byte(r.String()), nil
}

// String returns "min-max".
func (r PortRange) String() string {
	return fmt.Sprintf("%d-%d", r.Min, r.Max)
}

// Contains reports whether port lies in the range.
func (r PortRange) Contains(port int) bool {
	return port >= int(r.Min) && port <= int(r.Max)
}

// Secret is a password or shared secret. It prints redacted in logs and
// fmt verbs, so a config dump never leaks it; Reveal returns the value.
type Secret string

// Reveal returns the secret's value.
func (s Secret) Reveal() string { return string(s) }

// String redacts the secret.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "[redacted]"
}

// GoString redacts the secret for %#v.
func (s Secret) GoString() string { return s.String() }

// LogValue redacts the secret in slog output.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

var _ slog.LogValuer = Secret("")
