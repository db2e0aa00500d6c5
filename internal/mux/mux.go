// Package mux shares one TLS port between the HTTPS page and TURN over TLS.
// After the handshake it reads the first bytes of the stream: a STUN header
// with its magic cookie goes to the relay, an HTTP request to the web
// server. ALPN (stun.turn vs h2/http/1.1) is only a hint, because browsers'
// TURN-over-TLS sends no ALPN and sometimes no SNI (RFC 7443, RFC 8656 §3.5).
//
// Until it hands a connection over, the mux holds it under a deadline and
// a budget (Limits): per source address (IPv6: per /64), with slots kept
// for sources that have nothing pending, so that clients stalling their
// handshakes from one address, or a few, cannot lock out everyone else.
package mux

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/tariq-vpn/tariq/internal/accept"
	"github.com/tariq-vpn/tariq/internal/source"
)

// Kind is what the first bytes of a stream say it is.
type Kind int

// The kinds.
const (
	Unknown  Kind = iota // neither: dropped
	NeedMore             // too few bytes to tell yet
	TURN                 // a STUN/TURN message
	HTTP                 // an HTTP/1.x request or the HTTP/2 preface
)

func (k Kind) String() string {
	return [...]string{"unknown", "need-more", "turn", "http"}[k]
}

// sniffLen is how many bytes Classify needs to decide every case.
const sniffLen = 8

const stunMagicCookie = 0x2112A442

var httpPrefixes = [][]byte{
	[]byte("GET "), []byte("HEAD "), []byte("POST "), []byte("PUT "), []byte("DELETE "),
	[]byte("OPTIONS "), []byte("PATCH "), []byte("CONNECT "), []byte("TRACE "), []byte("PRI * HTTP/2.0"),
}

// Classify says what b, the first bytes of a stream, are. A STUN message
// starts with two zero bits and carries the magic cookie at bytes 4-7
// (RFC 5389 §6); an HTTP stream starts with a method and a space.
func Classify(b []byte) Kind {
	if len(b) == 0 {
		return NeedMore
	}
	if b[0]&0xC0 == 0 {
		if len(b) < 8 {
			return NeedMore
		}
		if binary.BigEndian.Uint32(b[4:8]) == stunMagicCookie {
			return TURN
		}
		return Unknown
	}
	more := false
	for _, p := range httpPrefixes {
		n := min(len(b), len(p))
		if bytes.Equal(b[:n], p[:n]) {
			if n == len(p) {
				return HTTP
			}
			more = true
		}
	}
	if more {
		return NeedMore
	}
	return Unknown
}

// Mux accepts TLS connections on one listener and routes each one.
type Mux struct {
	ln   net.Listener
	tls  *tls.Config
	turn func(raw, conn net.Conn) // takes ownership of both
	http *chanListener
	log  *slog.Logger
	lim  Limits

	pending  *pendingSet
	pressure rate.Sometimes // paces the warning that the port is under pressure
	wg       sync.WaitGroup
	once     sync.Once
	done     chan struct{}
}

// New returns a mux over ln (plain TCP) with the server TLS config tlsConf.
// turn receives TURN connections: raw is the socket, conn the TLS stream
// with the sniffed bytes still to be read. HTTP connections are accepted
// from HTTPListener. lim bounds the connections not yet handed over.
func New(ln net.Listener, tlsConf *tls.Config, turn func(raw, conn net.Conn), log *slog.Logger, lim Limits) *Mux {
	lim = lim.withDefaults()
	return &Mux{
		ln: ln, tls: tlsConf, turn: turn, log: log, lim: lim,
		http:     newChanListener(ln.Addr()),
		pending:  newPendingSet(lim),
		pressure: rate.Sometimes{Interval: time.Minute},
		done:     make(chan struct{}),
	}
}

// HTTPListener yields the connections that start with an HTTP request.
// They are TLS streams but not *tls.Conn, so serve them with an
// http.Server that allows unencrypted HTTP/2 (prior knowledge) for h2.
func (m *Mux) HTTPListener() net.Listener { return m.http }

// Addr returns the listening address.
func (m *Mux) Addr() net.Addr { return m.ln.Addr() }

// Serve accepts until ctx is done or the listener fails.
func (m *Mux) Serve(ctx context.Context) error {
	go func() {
		select {
		case <-ctx.Done():
			m.Close()
		case <-m.done:
		}
	}()
	accept.Loop(m.ln, m.done, m.log, "shared port", m.admit)
	return nil
}

// admit takes a connection the listener accepted into the pending set,
// or refuses it, and starts its handshake.
func (m *Mux) admit(c net.Conn) {
	now := time.Now()
	a := m.pending.admit(source.KeyOf(c.RemoteAddr()), c, now)
	for _, p := range a.cut {
		p.conn.Close()
	}
	if len(a.cut) > 0 || a.p == nil {
		m.pressure.Do(func() {
			m.log.Warn("shared TLS port under pressure: cutting or refusing connections that have not finished their handshake",
				"listen", m.ln.Addr().String(), "pending", m.pending.len(), "max_pending", m.lim.MaxPending)
		})
	}
	if a.p == nil {
		m.log.Debug("connection refused", "remote", c.RemoteAddr().String(), "reason", a.reason)
		c.Close()
		return
	}
	deadline := now.Add(m.lim.HandshakeTimeout)
	if a.busy {
		deadline = now.Add(m.lim.BusyTimeout)
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		m.route(a.p, deadline)
	}()
}

// route does the handshake and the sniffing of p under deadlines, the
// handshake's given, then hands the connection over; anything that fails
// or is cut meanwhile is closed.
func (m *Mux) route(p *pendingConn, deadline time.Time) {
	raw := p.conn
	defer m.pending.done(p) // a no-op once handed over
	tc := tls.Server(raw, m.tls)
	raw.SetDeadline(deadline)
	if err := tc.Handshake(); err != nil {
		var rhe tls.RecordHeaderError
		if errors.As(err, &rhe) && rhe.Conn != nil && Classify(rhe.RecordHeader[:]) == HTTP {
			// Plain HTTP on the TLS port: say so, as net/http does.
			io.WriteString(rhe.Conn, "HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nThis port speaks HTTPS: use https://\n")
		}
		m.log.Debug("tls handshake failed", "remote", raw.RemoteAddr().String(), "err", err)
		raw.Close()
		return
	}
	if tc.ConnectionState().NegotiatedProtocol == "acme-tls/1" {
		raw.Close() // a TLS-ALPN-01 validation: the handshake was the answer
		return
	}
	sniff := time.Now().Add(m.lim.SniffTimeout)
	if busy := p.start.Add(m.lim.BusyTimeout); m.pending.busy() && busy.Before(sniff) {
		sniff = busy
	}
	raw.SetDeadline(sniff)
	buf := make([]byte, 0, 64)
	kind := NeedMore
	for kind == NeedMore {
		if len(buf) == cap(buf) {
			break
		}
		n, err := tc.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		kind = Classify(buf)
		if err != nil && kind == NeedMore {
			m.log.Debug("connection closed before its first message", "remote", raw.RemoteAddr().String(), "err", err)
			raw.Close()
			return
		}
	}
	if kind != TURN && kind != HTTP {
		m.log.Debug("connection dropped: neither TURN nor HTTP", "remote", raw.RemoteAddr().String(), "first_bytes", len(buf))
		raw.Close()
		return
	}
	if !m.pending.done(p) {
		raw.Close() // cut meanwhile: already closed, or about to be
		return
	}
	raw.SetDeadline(time.Time{})
	conn := &prefixConn{Conn: tc, prefix: buf}
	switch kind {
	case TURN:
		m.turn(raw, conn)
	case HTTP:
		if !m.http.deliver(conn) {
			conn.Close()
		}
	}
}

// Close stops accepting, closes the connections in handshake or sniffing
// and waits for them; connections already handed over belong to their
// servers.
func (m *Mux) Close() error {
	m.once.Do(func() {
		close(m.done)
		m.ln.Close()
		m.http.Close()
		for _, p := range m.pending.close() {
			p.conn.Close()
		}
	})
	m.wg.Wait()
	return nil
}

// prefixConn replays bytes already read from Conn before reading more.
type prefixConn struct {
	net.Conn
	mu     sync.Mutex
	prefix []byte
}

func (c *prefixConn) Read(b []byte) (int, error) {
	c.mu.Lock()
	if len(c.prefix) > 0 {
		n := copy(b, c.prefix)
		c.prefix = c.prefix[n:]
		c.mu.Unlock()
		return n, nil
	}
	c.mu.Unlock()
	return c.Conn.Read(b)
}

// chanListener is a net.Listener fed by the mux.
type chanListener struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) deliver(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

// pendingCount returns how many connections are in handshake or sniffing.
func (m *Mux) pendingCount() int { return m.pending.len() }
