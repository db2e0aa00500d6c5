package relay

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/pion/logging"
)

// pionLogs adapts pion's LoggerFactory to slog. pion logs per packet at
// Debug and per client mistake at Info/Warn/Error ("permission denied",
// "TLS handshake failed"); those are one client's problem, not the
// operator's, so everything below Error lands at Debug, and Error at Warn
// (coredns plugin.md: log where the error is consumed, once).
type pionLogs struct{ log *slog.Logger }

var _ logging.LoggerFactory = pionLogs{}

func (f pionLogs) NewLogger(scope string) logging.LeveledLogger {
	return pionLogger{log: f.log.With("pion", scope)}
}

type pionLogger struct{ log *slog.Logger }

var _ logging.LeveledLogger = pionLogger{}

func (l pionLogger) emit(level slog.Level, msg string) {
	l.log.Log(context.Background(), level, strings.TrimSpace(msg))
}

func (l pionLogger) logf(level slog.Level, format string, args ...any) {
	if !l.log.Enabled(context.Background(), level) {
		return
	}
	l.emit(level, fmt.Sprintf(format, args...))
}

func (l pionLogger) errLevel(msg string) slog.Level {
	switch {
	case strings.Contains(msg, "handshake"):
		return slog.LevelDebug // a client that cannot finish TLS is not a server fault
	case strings.Contains(msg, "broken pipe"), strings.Contains(msg, "connection reset by peer"):
		// A write to a TCP or TLS client that has hung up: pion's "Failed to
		// close conn" (the TLS close_notify) and "Failed to send ChannelData"
		// as every browser ends a call over TURN-TCP/TLS. Routine, not a fault.
		return slog.LevelDebug
	}
	return slog.LevelWarn
}

func (l pionLogger) Trace(msg string)                  {}
func (l pionLogger) Tracef(format string, args ...any) {}
func (l pionLogger) Debug(msg string)                  { l.logf(slog.LevelDebug, "%s", msg) }
func (l pionLogger) Debugf(format string, args ...any) { l.logf(slog.LevelDebug, format, args...) }
func (l pionLogger) Info(msg string)                   { l.logf(slog.LevelDebug, "%s", msg) }
func (l pionLogger) Infof(format string, args ...any)  { l.logf(slog.LevelDebug, format, args...) }
func (l pionLogger) Warn(msg string)                   { l.logf(slog.LevelDebug, "%s", msg) }
func (l pionLogger) Warnf(format string, args ...any)  { l.logf(slog.LevelDebug, format, args...) }
func (l pionLogger) Error(msg string)                  { l.logf(l.errLevel(msg), "%s", msg) }
func (l pionLogger) Errorf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	l.logf(l.errLevel(msg), "%s", msg)
}
