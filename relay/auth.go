package relay

import (
	"net"
	"sync"
	"time"

	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"

	"github.com/tariq-vpn/tariq/config"
)

// policy is everything a reload may change, as one immutable snapshot read
// per request through Service.policy (an atomic.Pointer): users, secrets,
// quotas and the peer filter. Swapping it never touches sockets or
// allocations.
type policy struct {
	realm      string
	users      map[string][]byte // static user → long-term key MD5(user:realm:password)
	secrets    []string          // REST shared secrets; the first signs, all verify
	configured int               // how many of secrets are relay.secrets (the rest: the state store's)
	maxAllocs  int
	maxPerUser int
	filter     *Filter
	gen        uint64 // set when stored: one more than the policy before
}

func newPolicy(cfg *config.Config, realm string, secrets []config.Secret, filter *Filter) *policy {
	p := &policy{
		realm:      realm,
		users:      make(map[string][]byte, len(cfg.Relay.Users)),
		maxAllocs:  cfg.Relay.MaxAllocations,
		maxPerUser: cfg.Relay.MaxAllocationsPerUser,
		filter:     filter,
	}
	for name, pw := range cfg.Relay.Users {
		p.users[name] = turn.GenerateAuthKey(name, realm, pw.Reveal())
	}
	for _, s := range secrets {
		p.secrets = append(p.secrets, s.Reveal())
	}
	return p
}

// candidate is one (userID, key) pair a username may authenticate with.
type candidate struct {
	userID string
	key    []byte
}

// candidates returns the keys username may use for method at now: its
// static key, or one REST key per shared secret. A REST credential's expiry
// is checked on Allocate only, as coturn does, so a call outlives a short
// credential through its refreshes. reason says why there are none.
func (p *policy) candidates(username string, method stun.Method, now time.Time) (cands []candidate, reason string) {
	if key, ok := p.users[username]; ok {
		return []candidate{{username, key}}, ""
	}
	expiry, id, ok := ParseRESTUsername(username)
	if !ok || len(p.secrets) == 0 {
		return nil, "unknown-user"
	}
	if method == stun.MethodAllocate && !now.Before(expiry) {
		return nil, "expired"
	}
	userID := id
	if userID == "" {
		userID = username
	}
	for _, secret := range p.secrets {
		cands = append(cands, candidate{userID, turn.GenerateAuthKey(username, p.realm, RESTPassword(secret, username))})
	}
	return cands, ""
}

// hints remembers, per client address, which REST secret the gate found to
// sign that client's last request, so the AuthHandler hands pion the key that
// verifies. pion asks for one key per request; with several secrets during a
// rotation only the gate, which sees the whole message, can tell which one.
type hints struct {
	mu sync.Mutex
	m  map[string]hint
}

type hint struct {
	username string
	index    int
	at       time.Time
}

func (h *hints) put(src net.Addr, username string, index int, now time.Time) {
	h.mu.Lock()
	if h.m == nil {
		h.m = map[string]hint{}
	}
	h.m[src.String()] = hint{username, index, now}
	h.mu.Unlock()
}

func (h *hints) take(src net.Addr, username string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	k := src.String()
	if e, ok := h.m[k]; ok && e.username == username {
		delete(h.m, k)
		return e.index
	}
	return 0
}

// sweep drops hints older than maxAge (requests pion answered before asking
// for a key, such as a stale nonce).
func (h *hints) sweep(now time.Time, maxAge time.Duration) {
	h.mu.Lock()
	for k, e := range h.m {
		if now.Sub(e.at) > maxAge {
			delete(h.m, k)
		}
	}
	h.mu.Unlock()
}

// authenticate is pion's AuthHandler.
func (s *Service) authenticate(ra *turn.RequestAttributes) (userID string, key []byte, ok bool) {
	p := s.policy.Load()
	cands, reason := p.candidates(ra.Username, ra.Method, s.now())
	if len(cands) == 0 {
		s.stats.authFailed(reason)
		s.log.Debug("turn auth refused", "user", ra.Username, "remote", ra.SrcAddr.String(), "reason", reason)
		return "", nil, false
	}
	i := 0
	if len(cands) > 1 {
		i = min(s.hints.take(ra.SrcAddr, ra.Username), len(cands)-1)
	}
	return cands[i].userID, cands[i].key, true
}

// quotaOK is pion's QuotaHandler: 486 past relay.max_allocations in total
// (or what the open-file limit allows, fdBudget) or
// relay.max_allocations_per_user for one user. Concurrent Allocates on
// different sockets may overshoot a limit by at most one each.
func (s *Service) quotaOK(userID, realm string, src net.Addr) bool {
	p := s.policy.Load()
	total := p.maxAllocs
	if s.fdAllocs > 0 {
		total = min(total, s.fdAllocs)
	}
	s.allocMu.Lock()
	defer s.allocMu.Unlock()
	if s.allocTotal >= total || s.allocByUser[userID] >= p.maxPerUser {
		s.stats.QuotaRejected.Add(1)
		s.log.Debug("turn allocation quota reached", "user", userID, "remote", src.String(),
			"user_allocations", s.allocByUser[userID], "total_allocations", s.allocTotal)
		return false
	}
	return true
}

// permit is pion's PermissionHandler for CreatePermission, ChannelBind and
// Connect.
func (s *Service) permit(client net.Addr, peer net.IP) bool {
	v, reason := s.checkPeer(peer)
	if v == Deny {
		s.log.Debug("turn peer refused", "remote", client.String(), "peer", peer.String(), "rule", reason)
	}
	return v != Deny
}

func (s *Service) checkPeer(peer net.IP) (Verdict, string) {
	a, _ := netipFromIP(peer)
	v, reason := s.policy.Load().filter.Check(a)
	if v == Deny {
		s.stats.peerDenied(reason)
	}
	return v, reason
}
