package certs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"go.uber.org/zap"
)

// TestZapToSlog checks the level mapping and field conversion of the core
// that carries certmagic's logs.
func TestZapToSlog(t *testing.T) {
	var buf bytes.Buffer
	h := slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug, ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}})
	zl := newZapLogger(h).Named("obtain").With(zap.String("identifier", "relay.test"))
	for _, tc := range []struct {
		name string
		log  func()
		want string
	}{
		{"info is debug", func() { zl.Info("acquiring lock") }, `level=DEBUG msg="acquiring lock" logger=obtain identifier=relay.test`},
		{"error is warn, err key", func() { zl.Error("will retry", zap.Error(errors.New("boom")), zap.Int("attempt", 1)) },
			`level=WARN msg="will retry" logger=obtain identifier=relay.test err=boom attempt=1`},
		{"canceled is debug", func() { zl.Error("job failed", zap.Error(fmt.Errorf("x: %w", context.Canceled))) },
			`level=DEBUG msg="job failed"`},
		{"said by onEvent", func() { zl.Error("could not get certificate from issuer", zap.Error(errors.New("refused"))) },
			`level=DEBUG msg="could not get certificate from issuer"`},
		{"ACME client name", func() { newZapLogger(h).Named(".acme_client").Warn("HTTP request failed; retrying") },
			`level=DEBUG msg="HTTP request failed; retrying" logger=acme_client`},
		{"warn stays", func() { zl.Warn("stapling OCSP") }, `level=WARN msg="stapling OCSP"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			buf.Reset()
			tc.log()
			if !strings.HasPrefix(buf.String(), tc.want) {
				t.Errorf("got  %s\nwant %s…", strings.TrimSpace(buf.String()), tc.want)
			}
		})
	}

	buf.Reset()
	quiet := newZapLogger(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	quiet.Info("routine")
	quiet.Error("job failed", zap.Error(context.Canceled))
	if buf.Len() != 0 {
		t.Errorf("at level info, wrote %q", buf.String())
	}
}
