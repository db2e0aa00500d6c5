// Package admin is the daemon's local API on a unix socket: the server the
// daemon runs, and the client the CLI uses so that `tariq peer add` or
// `tariq status` act on the running daemon at once. The socket is root-only:
// mode 0600 in a 0700 directory, and every connection's peer credentials
// are checked (only root or the daemon's own user get through).
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tariq-vpn/tariq/internal/members"
	"github.com/tariq-vpn/tariq/internal/wgconf"
)

// Backend is what the API exposes; the daemon implements it: members
// management (a members.Local over the daemon's own members), and status.
type Backend interface {
	members.Manager
	Status(ctx context.Context) (*Status, error)
}

// Error is an API error with its HTTP status; a Backend returns one to
// choose the status, and the Client returns one for every non-2xx answer.
type Error struct {
	Code int    `json:"code"`
	Msg  string `json:"error"`
}

func (e *Error) Error() string { return e.Msg }

// Errorf returns an *Error with code and a formatted message.
func Errorf(code int, format string, args ...any) *Error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// Server serves Backend on a unix socket.
type Server struct {
	path    string
	backend Backend
	log     *slog.Logger
	ln      net.Listener
	srv     *http.Server
}

// NewServer builds the server for the socket at path; it opens nothing.
func NewServer(path string, b Backend, log *slog.Logger) *Server {
	s := &Server{path: path, backend: b, log: log}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", s.status)
	mux.HandleFunc("GET /v1/peers", s.devices)
	mux.HandleFunc("POST /v1/peers", s.add)
	mux.HandleFunc("GET /v1/peers/{name}", s.show)
	mux.HandleFunc("DELETE /v1/peers/{name}", s.remove)
	mux.HandleFunc("POST /v1/peers/{name}/enable", s.setEnabled(true))
	mux.HandleFunc("POST /v1/peers/{name}/disable", s.setEnabled(false))
	mux.HandleFunc("GET /v1/members", s.members)
	mux.HandleFunc("POST /v1/members/{name}/limits", s.setLimits)
	mux.HandleFunc("POST /v1/invites", s.createInvite)
	mux.HandleFunc("GET /v1/members/{name}/outline", s.outlineKey)
	s.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ConnContext:       s.checkPeer,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	return s
}

// Open creates the socket: its directory 0700, the socket 0600. A stale
// socket left by a crash is replaced; one a live daemon answers on is not.
func (s *Server) Open(ctx context.Context) error {
	if err := os.MkdirAll(filepath.Dir(s.path), 0o700); err != nil {
		return fmt.Errorf("admin: creating socket directory: %w", err)
	}
	if c, err := net.DialTimeout("unix", s.path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("admin: %s: another tariq is already running", s.path)
	}
	os.Remove(s.path)
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "unix", s.path)
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	if err := os.Chmod(s.path, 0o600); err != nil {
		ln.Close()
		return fmt.Errorf("admin: %w", err)
	}
	s.ln = ln
	return nil
}

// Serve answers requests until ctx is done.
func (s *Server) Serve(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	select {
	case <-ctx.Done():
		return nil
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("admin: %w", err)
	}
}

// Close stops the server and removes the socket.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s.srv.Shutdown(ctx)
	if s.ln != nil {
		os.Remove(s.path)
	}
	return nil
}

type ctxKey struct{}

func (s *Server) checkPeer(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, ctxKey{}, peerAllowed(c))
}

func (s *Server) allowed(w http.ResponseWriter, r *http.Request) bool {
	if ok, _ := r.Context().Value(ctxKey{}).(bool); !ok {
		writeErr(w, Errorf(http.StatusForbidden, "admin socket: only root may use it"))
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func writeErr(w http.ResponseWriter, err error) {
	var e *Error
	if !errors.As(err, &e) {
		e = &Error{Code: statusOf(err), Msg: err.Error()}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.Code)
	json.NewEncoder(w).Encode(e)
}

func (s *Server) reply(w http.ResponseWriter, r *http.Request, v any, err error) {
	if err != nil {
		s.log.Debug("admin request failed", "path", r.URL.Path, "err", err)
		writeErr(w, err)
		return
	}
	if v == nil {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	writeJSON(w, v)
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	if !s.allowed(w, r) {
		return
	}
	st, err := s.backend.Status(r.Context())
	s.reply(w, r, st, err)
}

func (s *Server) devices(w http.ResponseWriter, r *http.Request) {
	if !s.allowed(w, r) {
		return
	}
	d, err := s.backend.Devices(r.Context())
	s.reply(w, r, d, err)
}

func (s *Server) members(w http.ResponseWriter, r *http.Request) {
	if !s.allowed(w, r) {
		return
	}
	m, err := s.backend.Members(r.Context())
	s.reply(w, r, m, err)
}

// decode reads a JSON request body into v, or answers 400 and returns false.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeErr(w, Errorf(http.StatusBadRequest, "bad request: %v", err))
		return false
	}
	return true
}

func (s *Server) add(w http.ResponseWriter, r *http.Request) {
	var req members.AddRequest
	if !s.allowed(w, r) || !decode(w, r, &req) {
		return
	}
	dc, err := s.backend.Add(r.Context(), req)
	s.reply(w, r, dc, err)
}

func (s *Server) show(w http.ResponseWriter, r *http.Request) {
	if !s.allowed(w, r) {
		return
	}
	dc, err := s.backend.Show(r.Context(), r.PathValue("name"))
	s.reply(w, r, dc, err)
}

func (s *Server) remove(w http.ResponseWriter, r *http.Request) {
	if !s.allowed(w, r) {
		return
	}
	s.reply(w, r, nil, s.backend.Remove(r.Context(), r.PathValue("name")))
}

func (s *Server) setEnabled(enabled bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.allowed(w, r) {
			return
		}
		s.reply(w, r, nil, s.backend.SetEnabled(r.Context(), r.PathValue("name"), enabled))
	}
}

func (s *Server) setLimits(w http.ResponseWriter, r *http.Request) {
	var c members.LimitsChange
	if !s.allowed(w, r) || !decode(w, r, &c) {
		return
	}
	m, err := s.backend.SetLimits(r.Context(), r.PathValue("name"), c)
	s.reply(w, r, m, err)
}

// InviteRequest asks for a one-time link to a device's settings.
type InviteRequest struct {
	Peer string        `json:"peer"`
	TTL  time.Duration `json:"ttl"`
}

func (s *Server) createInvite(w http.ResponseWriter, r *http.Request) {
	var req InviteRequest
	if !s.allowed(w, r) || !decode(w, r, &req) {
		return
	}
	inv, err := s.backend.CreateInvite(r.Context(), req.Peer, req.TTL)
	s.reply(w, r, inv, err)
}

func (s *Server) outlineKey(w http.ResponseWriter, r *http.Request) {
	if !s.allowed(w, r) {
		return
	}
	k, err := s.backend.OutlineKey(r.Context(), r.PathValue("name"))
	s.reply(w, r, k, err)
}

// statusOf gives the members model's sentinel errors their HTTP status.
func statusOf(err error) int {
	switch {
	case errors.Is(err, members.ErrPeerNotFound):
		return http.StatusNotFound
	case errors.Is(err, members.ErrPeerExists), errors.Is(err, members.ErrKeyInUse), errors.Is(err, members.ErrPoolExhausted):
		return http.StatusConflict
	case errors.Is(err, members.ErrBadName), errors.Is(err, members.ErrBadInvite), errors.Is(err, members.ErrBadPort),
		errors.Is(err, members.ErrObfuscationOff), errors.Is(err, members.ErrBadLimit), errors.Is(err, wgconf.ErrBadKey):
		return http.StatusBadRequest
	case errors.Is(err, members.ErrOutlineOff), errors.Is(err, members.ErrUntrustedCert):
		return http.StatusConflict
	}
	return http.StatusInternalServerError
}

// trimName is used by the client to build paths.
func trimName(name string) string { return strings.TrimSpace(name) }
