package certs

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// newZapLogger returns a zap logger for certmagic that writes through h.
func newZapLogger(h slog.Handler) *zap.Logger { return zap.New(&slogCore{h: h}) }

// slogCore is a zapcore.Core that feeds certmagic's logs to slog.
//
// Levels: certmagic logs its routine steps (locks, rate limiter, each
// challenge) at Info, so Info becomes Debug; the lifecycle events that
// matter are logged by acmeManager.onEvent instead. Its Error is a failure
// certmagic consumes by retrying while tariq keeps serving, so it becomes
// Warn (degraded but serving), except what onEvent already says: the
// failure itself ("could not get certificate from issuer") and the ACME
// client's retries of single requests become Debug, as does an error that
// is only context.Canceled (shutdown, or a test restarting management).
// "will retry", which says when, stays Warn.
type slogCore struct {
	h     slog.Handler
	attrs []slog.Attr // from With, already converted
}

var _ zapcore.Core = (*slogCore)(nil)

func slogLevel(l zapcore.Level) slog.Level {
	switch {
	case l <= zapcore.InfoLevel:
		return slog.LevelDebug
	case l <= zapcore.ErrorLevel:
		return slog.LevelWarn
	default: // DPanic, Panic, Fatal
		return slog.LevelError
	}
}

func (c *slogCore) Enabled(l zapcore.Level) bool {
	return c.h.Enabled(context.Background(), slogLevel(l))
}

func (c *slogCore) With(fields []zapcore.Field) zapcore.Core {
	return &slogCore{h: c.h, attrs: append(slices.Clip(c.attrs), fieldAttrs(fields)...)}
}

func (c *slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

// demoted reports whether a message says what onEvent already reports.
func demoted(logger, msg string) bool {
	switch msg {
	case "could not get certificate from issuer":
		return true
	case "HTTP request failed; retrying":
		return logger == "acme_client"
	}
	return false
}

func (c *slogCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	level := slogLevel(e.Level)
	name := strings.TrimPrefix(e.LoggerName, ".") // certmagic names the ACME client ".acme_client"
	if demoted(name, e.Message) || onlyCanceled(fields) {
		level = slog.LevelDebug
	}
	ctx := context.Background()
	if !c.h.Enabled(ctx, level) {
		return nil
	}
	t := e.Time
	if t.IsZero() {
		t = time.Now()
	}
	r := slog.NewRecord(t, level, e.Message, 0)
	if name != "" {
		r.AddAttrs(slog.String("logger", name))
	}
	r.AddAttrs(c.attrs...)
	r.AddAttrs(fieldAttrs(fields)...)
	return c.h.Handle(ctx, r)
}

func (c *slogCore) Sync() error { return nil }

// onlyCanceled reports whether fields carry an error and every error is
// a cancellation.
func onlyCanceled(fields []zapcore.Field) bool {
	seen := false
	for _, f := range fields {
		if f.Type != zapcore.ErrorType {
			continue
		}
		err, _ := f.Interface.(error)
		if !errors.Is(err, context.Canceled) {
			return false
		}
		seen = true
	}
	return seen
}

// fieldAttrs converts zap fields to slog attributes in their order. zap's
// "error" key becomes "err", the key tariq logs errors under.
func fieldAttrs(fields []zapcore.Field) []slog.Attr {
	if len(fields) == 0 {
		return nil
	}
	attrs := make([]slog.Attr, 0, len(fields))
	for _, f := range fields {
		if f.Type == zapcore.ErrorType {
			key := f.Key
			if key == "error" {
				key = "err"
			}
			if err, ok := f.Interface.(error); ok && err != nil {
				attrs = append(attrs, slog.String(key, err.Error()))
			}
			continue
		}
		enc := zapcore.NewMapObjectEncoder()
		f.AddTo(enc) // one key, none for a skipped field, several for an inline object
		for _, k := range slices.Sorted(maps.Keys(enc.Fields)) {
			attrs = append(attrs, slog.Any(k, enc.Fields[k]))
		}
	}
	return attrs
}
