// Package outline serves the Outline client's VPN path: Shadowsocks over
// WebSocket over the shared HTTPS port, by embedding outline-ss-server's
// service package (cipher list, replay cache, stream and association
// handlers) behind two WebSocket paths under an unguessable prefix.
//
// Every member has one secret. The cipher list changes live (SetKeys,
// SetLimits), and a member whose secret leaves the list loses its open TCP
// streams and UDP associations at once, while other members' connections go
// on. Every target is checked by the destination policy the daemon injects,
// on the TCP dial and on every UDP packet. Traffic is counted and shaped per
// member.
//
// outline-ss-server v1.9.2 is pinned: later tags rename the module
// (golang.getoutline.org/tunnel-server) and change the UDP validator API.
package outline

import (
	"container/list"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/Jigsaw-Code/outline-sdk/transport/shadowsocks"
	"github.com/Jigsaw-Code/outline-ss-server/service"
	"golang.org/x/time/rate"
)

// Cipher is the only Shadowsocks cipher the service accepts and renders.
const Cipher = "chacha20-ietf-poly1305"

// Config holds the service's tunables; zero fields take the defaults.
type Config struct {
	// AuthTimeout bounds how long a connection may take to show a valid
	// key. A connection that fails is held, silent, until then, so that a
	// prober learns nothing from timing (outline-ss-server's 59 s, the most
	// common timeout of servers that ignore bad requests). Default 59 s.
	AuthTimeout time.Duration
	// UDPTimeout is the NAT timeout of a UDP association: it ends when its
	// target socket has heard nothing for this long (RFC 4787 §4.3 asks
	// for at least 5 minutes; DNS gets 17 s, RFC 5452 §10). Default 5 min.
	UDPTimeout time.Duration
	// DialTimeout bounds a TCP connect to a target. Default 10 s.
	DialTimeout time.Duration
	// ReplayHistory is how many TCP handshakes the replay cache remembers.
	// Default 10000; at most 20000 (service.MaxCapacity).
	ReplayHistory int
}

func (c Config) withDefaults() (Config, error) {
	if c.AuthTimeout < 0 || c.UDPTimeout < 0 || c.DialTimeout < 0 || c.ReplayHistory < 0 {
		return c, errors.New("outline: negative timeout or replay history")
	}
	if c.ReplayHistory > service.MaxCapacity {
		return c, fmt.Errorf("outline: replay history %d is above %d", c.ReplayHistory, service.MaxCapacity)
	}
	if c.AuthTimeout == 0 {
		c.AuthTimeout = 59 * time.Second
	}
	if c.UDPTimeout == 0 {
		c.UDPTimeout = 5 * time.Minute
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = 10 * time.Second
	}
	if c.ReplayHistory == 0 {
		c.ReplayHistory = 10000
	}
	return c, nil
}

// Deps holds what the service must not create itself.
type Deps struct {
	Logger *slog.Logger
	// Allow is the destination policy: whether a member may reach ip and,
	// when not, the name of the rule that refused it (a metric label). It
	// sees every TCP target address before the connect and every UDP
	// target before each packet leaves; ip comes unmapped (a.b.c.d, never
	// ::ffff:a.b.c.d). Required.
	Allow func(ip netip.Addr) (ok bool, rule string)
	// Now is the clock for last-seen times; nil means time.Now.
	Now func() time.Time
}

// Key is one member's secret.
type Key struct {
	Member string
	Secret string
}

// LogValue keeps the secret out of logs.
func (k Key) LogValue() slog.Value { return slog.StringValue(k.Member) }

// Limits caps one member.
type Limits struct {
	// Rate caps the member's bytes per second in each direction, over all
	// its connections; 0 means no cap.
	Rate uint64
	// Blocked takes the member's secret out of the cipher list and cuts
	// its connections, as a removal does (expired, over its data limit).
	Blocked bool
}

// Traffic counts a member's bytes on the WebSocket paths (Shadowsocks
// frames, so with their small per-chunk overhead): In from the member, Out
// to the member. The counters only grow.
type Traffic struct {
	In, Out uint64
}

// MemberStatus is one member's activity since the service started.
type MemberStatus struct {
	Traffic
	// Open counts the member's open TCP streams and UDP associations.
	Open int
	// Total counts the connections that authenticated as the member.
	Total uint64
	// LastSeen is the last authentication; zero means never.
	LastSeen time.Time
}

// The two WebSocket paths, also the proto label of the metrics.
const (
	protoTCP = 0
	protoUDP = 1
)

var protoNames = [2]string{"tcp", "udp"}

// Service is the Outline server. It owns no socket: its Handler serves
// connections that the HTTPS server hands it.
type Service struct {
	cfg   Config
	log   *slog.Logger
	allow func(netip.Addr) (bool, string)
	now   func() time.Time
	stats *stats

	ciphers service.CipherList
	replay  service.ReplayCache
	streams service.StreamHandler
	assocs  service.AssociationHandler

	// sessionsWG counts the handlers running; targetsWG the UDP target
	// sockets not yet closed (each outlives its association by the few
	// moments its relay goroutine takes to notice).
	sessionsWG sync.WaitGroup
	targetsWG  sync.WaitGroup

	// mu guards the fields below and is held for no I/O. Lock order: mu,
	// then the cipher list's own lock (Update runs under mu).
	mu       sync.Mutex
	keys     []Key
	limits   map[string]Limits
	entries  map[string]*entry   // by member: its cipher entry in the list
	ids      map[string]string   // cipher entry ID → member, for the entries in the list
	accounts map[string]*account // by member, kept after removal (counters only grow)
	sessions map[*session]struct{}
	nextID   uint64
	closed   bool
}

// entry is a member's cipher entry in the list. The entry, and its ID,
// live as long as the member's secret does: a new secret gets a new ID, so
// connections made with the old one are told apart and cut.
type entry struct {
	secret string
	ce     *service.CipherEntry
}

// account is one member's counters and rate limiters.
type account struct {
	name    string
	in, out atomic.Uint64
	inLim   *rate.Limiter
	outLim  *rate.Limiter

	// guarded by Service.mu
	open     [2]int
	total    [2]uint64
	lastSeen time.Time
}

// New checks cfg and builds the service, with an empty key set.
func New(cfg Config, deps Deps) (*Service, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if deps.Allow == nil {
		return nil, errors.New("outline: no destination policy")
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	s := &Service{
		cfg:      cfg,
		log:      deps.Logger,
		allow:    deps.Allow,
		now:      deps.Now,
		stats:    newStats(),
		ciphers:  service.NewCipherList(),
		replay:   service.NewReplayCache(cfg.ReplayHistory),
		limits:   map[string]Limits{},
		entries:  map[string]*entry{},
		ids:      map[string]string{},
		accounts: map[string]*account{},
		sessions: map[*session]struct{}{},
	}
	// The handlers are built from their parts rather than with
	// NewShadowsocksHandlers, to inject the auth timeout (a constant
	// there) and to set the policy before any connection can arrive. The
	// upstream logs only at debug level, with its own keys.
	upstream := s.log.With("upstream", "outline-ss-server")
	s.streams = service.NewStreamHandler(service.NewShadowsocksStreamAuthenticator(s.ciphers, &s.replay, nil, upstream), cfg.AuthTimeout)
	s.streams.SetTargetDialer(targetDialer{s})
	s.streams.SetLogger(upstream)
	s.assocs = service.NewAssociationHandler(s.ciphers, nil)
	s.assocs.SetTargetIPValidator(s.checkUDPTarget)
	s.assocs.SetTargetPacketListener(targetListener{s: s, inner: service.MakeTargetUDPListener(cfg.UDPTimeout, 0)})
	s.assocs.SetLogger(upstream)
	return s, nil
}

// SetKeys replaces the key set live. Members that left it, or whose
// secret changed, lose their open connections at once; the others keep
// theirs. An invalid set (an empty or repeated member or secret) changes
// nothing.
func (s *Service) SetKeys(keys []Key) error {
	members := make(map[string]bool, len(keys))
	secrets := make(map[string]bool, len(keys))
	for _, k := range keys {
		switch {
		case k.Member == "":
			return errors.New("outline: key with no member")
		case k.Secret == "":
			return fmt.Errorf("outline: member %s: empty secret", k.Member)
		case members[k.Member]:
			return fmt.Errorf("outline: member %s: two keys", k.Member)
		case secrets[k.Secret]:
			// The cipher search would find the first of the two members
			// for both: the second's traffic would count as the first's.
			return fmt.Errorf("outline: member %s: secret shared with another member", k.Member)
		}
		members[k.Member], secrets[k.Secret] = true, true
	}
	s.mu.Lock()
	s.keys = append([]Key(nil), keys...)
	cut := s.applyLocked()
	s.mu.Unlock()
	s.cut(cut, "removed")
	return nil
}

// SetLimits replaces every member's limits live; a member missing from
// limits has none. A blocked member is cut as if removed.
func (s *Service) SetLimits(limits map[string]Limits) {
	s.mu.Lock()
	s.limits = make(map[string]Limits, len(limits))
	for name, l := range limits {
		s.limits[name] = l
	}
	for name, a := range s.accounts {
		setRate(a, s.limits[name].Rate)
	}
	cut := s.applyLocked()
	s.mu.Unlock()
	s.cut(cut, "blocked")
}

// applyLocked rebuilds the cipher list from the keys and limits and
// returns the sessions whose key left it. The caller holds s.mu, so an
// authentication with a key that just left cannot slip between the swap
// and the cut: authenticate checks the ID under the same lock.
func (s *Service) applyLocked() []*session {
	l := list.New()
	entries := make(map[string]*entry, len(s.keys))
	ids := make(map[string]string, len(s.keys))
	for _, k := range s.keys {
		if s.limits[k.Member].Blocked {
			continue
		}
		e := s.entries[k.Member]
		if e == nil || e.secret != k.Secret {
			key, err := shadowsocks.NewEncryptionKey(Cipher, k.Secret)
			if err != nil {
				// Only an unknown cipher name fails, and Cipher is known.
				s.log.Error("outline key refused", "member", k.Member, "err", err)
				continue
			}
			s.nextID++
			ce := service.MakeCipherEntry(strconv.FormatUint(s.nextID, 10), key, k.Secret)
			e = &entry{secret: k.Secret, ce: &ce}
		}
		entries[k.Member] = e
		ids[e.ce.ID] = k.Member
		s.accountLocked(k.Member)
		// The list holds the same *CipherEntry across swaps, so a
		// member's last client IP (which orders the trial decryption)
		// survives; it is only touched under the cipher list's lock.
		l.PushBack(e.ce)
	}
	var cut []*session
	for sess := range s.sessions {
		if sess.acct != nil && ids[sess.keyID] == "" {
			cut = append(cut, sess)
		}
	}
	s.entries, s.ids = entries, ids
	s.ciphers.Update(l)
	return cut
}

// accountLocked returns the member's account, creating it.
func (s *Service) accountLocked(name string) *account {
	a := s.accounts[name]
	if a == nil {
		a = &account{
			name:   name,
			inLim:  rate.NewLimiter(rate.Inf, 0),
			outLim: rate.NewLimiter(rate.Inf, 0),
		}
		setRate(a, s.limits[name].Rate)
		s.accounts[name] = a
	}
	return a
}

// cut ends the sessions, counting them by reason. Each member connection
// is closed here, before cut returns: cancelling the session only starts
// its closing (context.AfterFunc runs in a goroutine of its own), and a
// packet the member sends meanwhile would still be relayed and answered.
func (s *Service) cut(sessions []*session, reason string) {
	for _, sess := range sessions {
		s.stats.cut(reason)
		sess.cancel()
		if sess.conn != nil {
			sess.conn.Close()
		}
	}
	if len(sessions) > 0 {
		s.log.Info("outline connections cut", "reason", reason, "count", len(sessions))
	}
}

// Usage returns every member's traffic so far, including members since
// removed.
func (s *Service) Usage() map[string]Traffic {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]Traffic, len(s.accounts))
	for name, a := range s.accounts {
		out[name] = a.traffic()
	}
	return out
}

// Status returns every member's activity, including members since removed.
func (s *Service) Status() map[string]MemberStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]MemberStatus, len(s.accounts))
	for name, a := range s.accounts {
		out[name] = MemberStatus{
			Traffic:  a.traffic(),
			Open:     a.open[protoTCP] + a.open[protoUDP],
			Total:    a.total[protoTCP] + a.total[protoUDP],
			LastSeen: a.lastSeen,
		}
	}
	return out
}

func (a *account) traffic() Traffic { return Traffic{In: a.in.Load(), Out: a.out.Load()} }

// Close cuts every connection, refuses new ones (the handler passes them
// on as ordinary requests) and waits for the handlers and their target
// sockets. It is idempotent.
func (s *Service) Close() error {
	s.mu.Lock()
	s.closed = true
	all := make([]*session, 0, len(s.sessions))
	for sess := range s.sessions {
		all = append(all, sess)
	}
	s.mu.Unlock()
	for _, sess := range all {
		sess.cancel()
	}
	s.sessionsWG.Wait()
	s.targetsWG.Wait()
	return nil
}
