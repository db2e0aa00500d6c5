package vpn

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/tariq-vpn/tariq/internal/wgconf"
)

type recorded struct {
	level slog.Level
	msg   string
	attrs map[string]string
}

type recorder struct {
	mu    sync.Mutex
	level slog.Level
	recs  []recorded
}

func (r *recorder) Enabled(_ context.Context, l slog.Level) bool { return l >= r.level }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	a := map[string]string{}
	rec.Attrs(func(at slog.Attr) bool { a[at.Key] = at.Value.String(); return true })
	r.mu.Lock()
	r.recs = append(r.recs, recorded{rec.Level, rec.Message, a})
	r.mu.Unlock()
	return nil
}
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *recorder) WithGroup(string) slog.Handler      { return r }

func TestWGLog(t *testing.T) {
	momKey := wgconf.NewPrivateKey().PublicKey()
	strangerKey := wgconf.NewPrivateKey().PublicKey()
	peerf := func(k Key) string { return "peer(" + k.Short() + ")" }
	tests := []struct {
		name     string
		verbose  bool // Verbosef, else Errorf
		format   string
		args     []any
		want     bool
		level    slog.Level
		msg      string
		peerAttr string
	}{
		{"routine chatter dropped", true, "Routine: decryption worker %d - started", []any{3}, false, 0, "", ""},
		{"per-peer routine dropped", true, "%v - Routine: sequential sender - stopped", []any{peerf(momKey)}, false, 0, "", ""},
		{"handshake at debug with name", true, "%v - Received handshake initiation", []any{peerf(momKey)}, true, slog.LevelDebug, "received handshake initiation", "mom"},
		{"unknown peer keeps its short key", true, "%v - Sending keepalive packet", []any{peerf(strangerKey)}, true, slog.LevelDebug, "sending keepalive packet", strangerKey.Short()},
		{"acronym kept", true, "UAPI: Updating listen port", nil, true, slog.LevelDebug, "UAPI: Updating listen port", ""},
		{"ipc error returned elsewhere", false, "%v", []any{"IPC error -22: invalid UAPI device key: foo"}, true, slog.LevelDebug, "IPC error -22: invalid UAPI device key: foo", ""},
		{"one peer's send failure", false, "%v - Failed to send handshake initiation: %v", []any{peerf(momKey), "no known endpoint for peer"}, true, slog.LevelDebug, "failed to send handshake initiation: no known endpoint for peer", "mom"},
		{"device trouble is a warning", false, "Failed to write packets to TUN device: %v", []any{"input/output error"}, true, slog.LevelWarn, "failed to write packets to TUN device: input/output error", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{level: slog.LevelDebug}
			l := newWGLog(slog.New(rec))
			l.setNames(map[Key]string{momKey: "mom"})
			dl := l.deviceLogger()
			if tt.verbose {
				dl.Verbosef(tt.format, tt.args...)
			} else {
				dl.Errorf(tt.format, tt.args...)
			}
			if !tt.want {
				if len(rec.recs) != 0 {
					t.Fatalf("logged %+v, want nothing", rec.recs)
				}
				return
			}
			if len(rec.recs) != 1 {
				t.Fatalf("logged %d records", len(rec.recs))
			}
			r := rec.recs[0]
			if r.level != tt.level || r.msg != tt.msg || r.attrs["peer"] != tt.peerAttr {
				t.Errorf("got %v %q peer=%q, want %v %q peer=%q", r.level, r.msg, r.attrs["peer"], tt.level, tt.msg, tt.peerAttr)
			}
		})
	}
	// At info, Verbosef lines never reach the handler.
	rec := &recorder{level: slog.LevelInfo}
	newWGLog(slog.New(rec)).deviceLogger().Verbosef("%v - Received handshake response", peerf(momKey))
	if len(rec.recs) != 0 {
		t.Errorf("debug line logged at info: %+v", rec.recs)
	}
	if s := momKey.Short(); !strings.Contains(s, "…") || len(s) != len("AbCd…wxYz") {
		t.Errorf("short key %q not in wireguard-go's form", s)
	}
}
