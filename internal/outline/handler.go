package outline

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/Jigsaw-Code/outline-sdk/x/websocket"
	"github.com/Jigsaw-Code/outline-ss-server/service"
	"github.com/Jigsaw-Code/outline-ss-server/service/metrics"
)

// session is one WebSocket connection on either path, from the upgrade
// until its handler returns. Cancelling its context cuts it: the client
// connection and the target connections close (conn.go).
type session struct {
	proto  int
	ctx    context.Context
	cancel context.CancelFunc
	conn   *clientConn // set before the upstream handler runs

	// guarded by Service.mu
	acct  *account // nil until the connection authenticates
	keyID string   // the cipher entry it authenticated with
}

// Handler returns the handler of the two WebSocket paths, /<prefix>/tcp
// and /<prefix>/udp. Everything else goes to next, unchanged: other paths,
// and requests on these paths that are not a WebSocket upgrade the service
// would accept (a plain GET, HTTP/2, a foreign Origin, a closed service),
// so the port answers them as the ordinary site it looks like. prefix is
// one path segment of URL-safe characters.
func (s *Service) Handler(prefix string, next http.Handler) (http.Handler, error) {
	if err := checkSegment(prefix); err != nil {
		return nil, fmt.Errorf("outline: path prefix: %w", err)
	}
	if next == nil {
		next = http.NotFoundHandler()
	}
	tcpPath, udpPath := "/"+prefix+"/tcp", "/"+prefix+"/udp"
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		proto := -1
		switch r.URL.Path {
		case tcpPath:
			proto = protoTCP
		case udpPath:
			proto = protoUDP
		}
		if proto < 0 || !isUpgrade(r) || !s.serve(w, r, proto) {
			next.ServeHTTP(w, r)
		}
	}), nil
}

// checkSegment accepts a non-empty path segment of unreserved characters
// (RFC 3986 §2.3), which need no escaping anywhere the path is written.
func checkSegment(p string) error {
	if p == "" {
		return errors.New("empty")
	}
	for _, c := range p {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_', c == '.', c == '~':
		default:
			return fmt.Errorf("%q: only letters, digits and -_.~", p)
		}
	}
	if p == "." || p == ".." {
		return fmt.Errorf("%q: a dot segment", p)
	}
	return nil
}

// isUpgrade reports whether r is a WebSocket opening handshake that
// gorilla's Upgrader (under x/websocket.Upgrade) accepts (RFC 6455 §4.2.1).
// Checking first matters: the Upgrader answers anything else with an error
// carrying Sec-WebSocket-Version: 13, which would tell a prober that a
// WebSocket endpoint lives here.
func isUpgrade(r *http.Request) bool {
	if r.Method != http.MethodGet || r.ProtoMajor != 1 || !r.ProtoAtLeast(1, 1) {
		return false
	}
	if !hasToken(r.Header, "Connection", "upgrade") || !hasToken(r.Header, "Upgrade", "websocket") {
		return false
	}
	if !hasToken(r.Header, "Sec-Websocket-Version", "13") {
		return false
	}
	key, err := base64.StdEncoding.DecodeString(r.Header.Get("Sec-Websocket-Key"))
	if err != nil || len(key) != 16 {
		return false
	}
	// The Upgrader's default origin check: none, or the request's host.
	if origin := r.Header["Origin"]; len(origin) > 0 {
		u, err := url.Parse(origin[0])
		if err != nil || !strings.EqualFold(u.Host, r.Host) {
			return false
		}
	}
	return true
}

// hasToken reports whether the comma-separated header name lists token.
func hasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// serve upgrades r and runs the upstream handler for proto until the
// connection ends or is cut. It reports false, having written nothing,
// when the service is closed.
func (s *Service) serve(w http.ResponseWriter, r *http.Request, proto int) bool {
	ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	sess := &session{proto: proto, ctx: ctx, cancel: cancel}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		cancel()
		return false
	}
	s.sessions[sess] = struct{}{}
	s.sessionsWG.Add(1)
	s.mu.Unlock()
	defer s.finish(sess)

	hw := &hijackRecorder{ResponseWriter: w}
	ws, err := websocket.Upgrade(hw, r, nil)
	if err != nil {
		// Only the hijack can fail after isUpgrade.
		s.log.Debug("outline upgrade failed", "remote", r.RemoteAddr, "err", err)
		return true
	}
	c := newClientConn(ws, hw.raw, sess)
	sess.conn = c
	context.AfterFunc(ctx, func() { c.Close() })
	switch proto {
	case protoTCP:
		s.streams.HandleStream(ctx, c, tcpMetrics{s, sess})
	case protoUDP:
		// The association handler sets no deadline of its own before
		// the first packet: bound the wait for it as the stream
		// handler does.
		c.SetReadDeadline(time.Now().Add(s.cfg.AuthTimeout))
		s.assocs.HandleAssociation(ctx, c, udpMetrics{s, sess})
	}
	return true
}

// finish ends sess: its connections close and it leaves the books.
func (s *Service) finish(sess *session) {
	sess.cancel()
	s.mu.Lock()
	delete(s.sessions, sess)
	if a := sess.acct; a != nil {
		a.open[sess.proto]--
	}
	s.mu.Unlock()
	s.sessionsWG.Done()
}

// authenticate books sess under the member whose cipher entry id it
// proved. An id that left the list since the upstream took its snapshot
// (a removal racing the handshake) cuts the session instead.
func (s *Service) authenticate(sess *session, id string) {
	s.mu.Lock()
	name, ok := s.ids[id]
	if s.closed {
		s.mu.Unlock()
		sess.cancel()
		return
	}
	if !ok {
		s.mu.Unlock()
		s.cut([]*session{sess}, "removed")
		return
	}
	a := s.accounts[name]
	sess.acct, sess.keyID = a, id
	a.open[sess.proto]++
	a.total[sess.proto]++
	a.lastSeen = s.now()
	s.mu.Unlock()
	sess.conn.attach(a)
	if sess.proto == protoUDP {
		sess.conn.SetReadDeadline(time.Time{})
	}
}

// hijackRecorder keeps the connection the WebSocket upgrade hijacks, so a
// cut can close it from any goroutine: the WebSocket connection's own
// Close writes fields its reader reads without a lock.
type hijackRecorder struct {
	http.ResponseWriter
	raw net.Conn
}

func (h *hijackRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	h.raw = c
	return c, rw, err
}

func (h *hijackRecorder) Unwrap() http.ResponseWriter { return h.ResponseWriter }

var _ http.Hijacker = (*hijackRecorder)(nil)

// tcpMetrics hears a stream's authentication and probe outcome. The
// upstream calls it without a nil check.
type tcpMetrics struct {
	s    *Service
	sess *session
}

var _ service.TCPConnMetrics = tcpMetrics{}

func (m tcpMetrics) AddAuthentication(id string) { m.s.authenticate(m.sess, id) }

func (m tcpMetrics) AddClose(string, metrics.ProxyMetrics, time.Duration) {}

// AddProbe counts a stream that failed to authenticate: an unknown key
// (ERR_CIPHER), a replayed handshake (ERR_REPLAY_CLIENT) or one of the
// server's own salts sent back (ERR_REPLAY_SERVER).
func (m tcpMetrics) AddProbe(status, _ string, _ int64) {
	m.s.stats.authFailed(protoTCP, authReason(status))
}

// udpMetrics hears an association's authentication and packets. The
// upstream calls it without a nil check, and its relay goroutine may call
// AddPacketFromTarget after AddClose.
type udpMetrics struct {
	s    *Service
	sess *session
}

var _ service.UDPAssociationMetrics = udpMetrics{}

func (m udpMetrics) AddAuthentication(id string) { m.s.authenticate(m.sess, id) }

// AddPacketFromClient counts an association whose first packet decrypts
// with no key (the upstream then ends it).
func (m udpMetrics) AddPacketFromClient(status string, _, _ int64) {
	if status == "ERR_CIPHER" && m.sess.conn.account() == nil {
		m.s.stats.authFailed(protoUDP, authReason(status))
	}
}

func (m udpMetrics) AddPacketFromTarget(string, int64, int64) {}

func (m udpMetrics) AddClose() {}

// authReason names an upstream authentication status as a metric label.
func authReason(status string) string {
	switch status {
	case "ERR_CIPHER":
		return "unknown-key"
	case "ERR_REPLAY_CLIENT":
		return "replay"
	case "ERR_REPLAY_SERVER":
		return "server-salt"
	}
	return "other"
}
