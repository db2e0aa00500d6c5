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
)

// Peers is peer management, which the CLI gets from the running daemon
// (Client) or, with no daemon running, from the store directly.
type Peers interface {
	Peers(ctx context.Context) ([]PeerStatus, error)
	AddPeer(ctx context.Context, req AddPeerRequest) (*PeerConfig, error)
	PeerConfig(ctx context.Context, name string) (*PeerConfig, error)
	RemovePeer(ctx context.Context, name string) error
	SetPeerEnabled(ctx context.Context, name string, enabled bool) error
	CreateInvite(ctx context.Context, req InviteRequest) (*Invite, error)
}

// Backend is what the API exposes; the daemon implements it.
type Backend interface {
	Peers
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
	mux.HandleFunc("GET /v1/peers", s.peers)
	mux.HandleFunc("POST /v1/peers", s.addPeer)
	mux.HandleFunc("GET /v1/peers/{name}", s.peerConfig)
	mux.HandleFunc("DELETE /v1/peers/{name}", s.removePeer)
	mux.HandleFunc("POST /v1/peers/{name}/enable", s.setEnabled(true))
	mux.HandleFunc("POST /v1/peers/{name}/disable", s.setEnabled(false))
	mux.HandleFunc("POST /v1/invites", s.createInvite)
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
		e = &Error{Code: http.StatusInternalServerError, Msg: err.Error()}
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

func (s *Server) peers(w http.ResponseWriter, r *http.Request) {
	if !s.allowed(w, r) {
		return
	}
	p, err := s.backend.Peers(r.Context())
	s.reply(w, r, p, err)
}

func (s *Server) addPeer(w http.ResponseWriter, r *http.Request) {
	if !s.allowed(w, r) {
		return
	}
	var req AddPeerRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&req); err != nil {
		writeErr(w, Errorf(http.StatusBadRequest, "bad request: %v", err))
		return
	}
	pc, err := s.backend.AddPeer(r.Context(), req)
	s.reply(w, r, pc, err)
}

func (s *Server) peerConfig(w http.ResponseWriter, r *http.Request) {
	if !s.allowed(w, r) {
		return
	}
	pc, err := s.backend.PeerConfig(r.Context(), r.PathValue("name"))
	s.reply(w, r, pc, err)
}

func (s *Server) removePeer(w http.ResponseWriter, r *http.Request) {
	if !s.allowed(w, r) {
		return
	}
	s.reply(w, r, nil, s.backend.RemovePeer(r.Context(), r.PathValue("name")))
}

func (s *Server) setEnabled(enabled bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.allowed(w, r) {
			return
		}
		s.reply(w, r, nil, s.backend.SetPeerEnabled(r.Context(), r.PathValue("name"), enabled))
	}
}

func (s *Server) createInvite(w http.ResponseWriter, r *http.Request) {
	if !s.allowed(w, r) {
		return
	}
	var req InviteRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&req); err != nil {
		writeErr(w, Errorf(http.StatusBadRequest, "bad request: %v", err))
		return
	}
	inv, err := s.backend.CreateInvite(r.Context(), req)
	s.reply(w, r, inv, err)
}

// trimName is used by the client to build paths.
func trimName(name string) string { return strings.TrimSpace(name) }
