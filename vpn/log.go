package vpn

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"unicode"
	"unicode/utf8"

	"golang.zx2c4.com/wireguard/device"
)

// wgLog adapts wireguard-go's printf-style device.Logger to slog, the way
// tailscale's wgengine/wglog does:
//
//   - "Routine: … started/stopped" lines are dropped; there are dozens per
//     device start and stop and they say nothing to an operator.
//   - Verbosef lines (handshakes, keepalives, UAPI changes) go to Debug.
//   - Errorf lines go to Warn: the device keeps serving everyone else.
//     Those that are one peer's network trouble (a send to a roaming phone
//     that failed) or an error wireguard-go also returns to the caller
//     ("IPC error …", which AddPeer or wg(8) already reports) go to Debug,
//     so an error is logged once, where it is consumed.
//   - wireguard-go's "peer(AbCd…wxYz) - " prefix becomes a peer=NAME
//     attribute when the key belongs to a known peer.
//
// wireguard-go prints only abbreviated public keys, never private keys or
// PSKs.
type wgLog struct {
	log   *slog.Logger
	names atomic.Pointer[map[string]string] // short key ("AbCd…wxYz") → peer name
}

func newWGLog(log *slog.Logger) *wgLog {
	l := &wgLog{log: log}
	l.names.Store(&map[string]string{})
	return l
}

// setNames replaces the short-key → name map from pub → name.
func (l *wgLog) setNames(byKey map[Key]string) {
	m := make(map[string]string, len(byKey))
	for k, n := range byKey {
		m[k.Short()] = n
	}
	l.names.Store(&m)
}

// deviceLogger returns the device.Logger to hand to device.NewDevice.
func (l *wgLog) deviceLogger() *device.Logger {
	return &device.Logger{
		Verbosef: func(format string, args ...any) { l.emit(slog.LevelDebug, format, args) },
		Errorf:   func(format string, args ...any) { l.emit(slog.LevelWarn, format, args) },
	}
}

// quietErrors are Errorf lines that are one peer's trouble or are returned
// to the caller as well; they go to Debug.
var quietErrors = []string{
	"IPC error",
	"Failed to send handshake initiation",
	"Failed to send handshake response",
	"Failed to send data packets",
	"invalid UAPI operation",
}

func (l *wgLog) emit(level slog.Level, format string, args []any) {
	if strings.HasPrefix(format, "Routine:") || strings.Contains(format, "- Routine:") {
		return
	}
	ctx := context.Background()
	if !l.log.Enabled(ctx, slog.LevelDebug) && level == slog.LevelDebug {
		return // skip the Sprintf: Verbosef runs on handshake paths
	}
	msg := fmt.Sprintf(format, args...)
	if level == slog.LevelWarn {
		for _, q := range quietErrors {
			if strings.Contains(msg, q) {
				level = slog.LevelDebug
				break
			}
		}
	}
	if !l.log.Enabled(ctx, level) {
		return
	}
	var attrs []slog.Attr
	if rest, ok := strings.CutPrefix(msg, "peer("); ok {
		if short, after, ok := strings.Cut(rest, ") - "); ok {
			peer := short
			if n, ok := (*l.names.Load())[short]; ok {
				peer = n
			}
			attrs = append(attrs, slog.String("peer", peer))
			msg = after
		}
	}
	l.log.LogAttrs(ctx, level, lowerFirst(msg), attrs...)
}

// lowerFirst lower-cases a message's first letter ("Sending keepalive
// packet" → "sending keepalive packet") unless it starts an acronym
// ("UAPI: …", "MTU updated").
func lowerFirst(s string) string {
	r, n := utf8.DecodeRuneInString(s)
	if n == 0 || !unicode.IsUpper(r) {
		return s
	}
	if r2, _ := utf8.DecodeRuneInString(s[n:]); unicode.IsUpper(r2) {
		return s
	}
	return string(unicode.ToLower(r)) + s[n:]
}
