// Package etcdstore keeps tariq's shared state in an etcd cluster, so that
// several nodes serve one network: every node is the same WireGuard
// server, with the same members, invites and REST secrets, and a change
// made on one reaches the others through etcd's watch.
//
// The keys, under the configured prefix P (server.etcd.prefix):
//
//	P/state                 the shared state: state.json's format (identity,
//	                        members and their limits, devices, invites,
//	                        Outline material, REST secrets), usage left out.
//	                        Every change is a transaction on its mod revision
//	                        (compare-and-swap), retried on conflict.
//	P/usage/<month>/<node>  the bytes one node counted per member in one
//	                        month (JSON: member → {in, out}), written by that
//	                        node alone; a member's usage is the sum over nodes
//	P/nodes/<node>          a live node (JSON: public host, version, start,
//	                        health), under a lease that expires ~10 s after
//	                        the node stops renewing it
//	P/certmagic/<key>       certmagic's storage (ACME account, certificates)
//	P/locks/<name>/…        certmagic's locks (etcd concurrency mutexes)
//
// What is a node's own is never here: its listen addresses, NAT, sessions
// and allocations stay in its config and memory.
//
// The data paths never wait on etcd: Load answers from the state last
// seen, which a watch keeps current and which is written to a cache file
// in the data directory, so that a node restarted while etcd is away
// still serves its members. Writes fail then, with one line naming the
// endpoints; once etcd is back the watch resumes and every node converges.
package etcdstore

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	"github.com/tariq-vpn/tariq/internal/store"
)

// CacheFile is the cache of the shared state in the data directory.
const CacheFile = "etcd-cache.json"

// Options configure Open.
type Options struct {
	// Endpoints are the cluster's client URLs.
	Endpoints []string
	// Prefix is where this network's keys live (/tariq).
	Prefix string
	// TLS is the client's TLS configuration for https:// endpoints; nil
	// means plain connections.
	TLS *tls.Config
	// Node names this node (its usage counters, its registry key).
	Node string
	// DataDir is where the cache file goes; empty means no cache.
	DataDir string
	Logger  *slog.Logger
	// Timeout bounds each request, Update's retries included; zero means
	// 5 seconds.
	Timeout time.Duration
	// Resync is how often the whole state is read again although the
	// watch said nothing (a safety net); zero means 30 seconds.
	Resync time.Duration
}

// Store is the shared state in etcd.
type Store struct {
	opts   Options
	log    *slog.Logger
	cli    *clientv3.Client
	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	done   chan struct{} // closed when the sync loop has stopped

	mu      sync.Mutex // guards snap, subs and down
	snap    snapshot
	subs    map[chan struct{}]struct{}
	down    bool  // the last read failed: serving the state last seen
	lastErr error // why, when down

	cacheMu  sync.Mutex // serialises writes of the cache file, and guards cacheRev
	cacheRev int64      // revision of the snapshot last written to it

	started   bool // sync runs (set by Open)
	closeOnce sync.Once
	closeErr  error
}

var _ store.Backend = (*Store)(nil)

// snapshot is the shared state as last read.
type snapshot struct {
	rev      int64        // etcd revision it reflects; 0: from the cache or nothing yet
	stateRev int64        // mod revision of P/state; 0: no state yet
	state    *store.State // P/state, usage left out
	// usage is month → node → member → bytes.
	usage  map[string]map[string]map[string]store.Usage
	merged *store.State // state with every member's usage summed: what Load returns
}

// ErrUnavailable marks a request etcd did not answer (UnavailableError).
var ErrUnavailable = errors.New("etcd unavailable")

// UnavailableError is a request etcd did not answer: what was being done,
// the endpoints, and why, on one line.
type UnavailableError struct {
	Action    string
	Endpoints []string
	Err       error
}

func (e *UnavailableError) Error() string {
	return fmt.Sprintf("%s: etcd at %s %s", e.Action, strings.Join(e.Endpoints, ", "), Describe(e.Err))
}

// Is makes errors.Is(err, ErrUnavailable) true.
func (e *UnavailableError) Is(target error) bool { return target == ErrUnavailable }

func (e *UnavailableError) Unwrap() error { return e.Err }

// ErrNoState is a prefix without tariq's state where this node served
// one: etcd lost it, or server.etcd.prefix names another network.
var ErrNoState = errors.New("the etcd prefix holds no shared state")

// Open connects to the cluster and reads the shared state. If the cluster
// does not answer, the state comes from the cache file (a warning is
// logged), and Open fails only when there is none either. The store keeps
// the state current until Close.
func Open(ctx context.Context, opts Options) (*Store, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Timeout == 0 {
		opts.Timeout = 5 * time.Second
	}
	if opts.Resync == 0 {
		opts.Resync = 30 * time.Second
	}
	if opts.Node == "" {
		return nil, errors.New("etcd store: no node name")
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            opts.Endpoints,
		DialTimeout:          opts.Timeout,
		DialKeepAliveTime:    5 * time.Second,
		DialKeepAliveTimeout: 3 * time.Second,
		TLS:                  opts.TLS,
		Logger:               zap.NewNop(),
		DialOptions:          dialOptions(),
	})
	if err != nil {
		return nil, fmt.Errorf("etcd at %s: %w", strings.Join(opts.Endpoints, ", "), err)
	}
	sctx, cancel := context.WithCancel(context.Background())
	s := &Store{opts: opts, log: opts.Logger, cli: cli, ctx: sctx, cancel: cancel, done: make(chan struct{}),
		subs: map[chan struct{}]struct{}{}}
	// The cache first: what this node served before, which etcd's
	// answer replaces, unless etcd has lost the state (see lostLocked).
	cached, cerr := s.readCache()
	if cerr == nil {
		s.snap = cached
	}
	if err := s.resync(ctx); err != nil {
		if cerr != nil {
			s.Close()
			return nil, fmt.Errorf("%w; and no cache of the shared state to serve meanwhile: %v", err, cerr)
		}
		s.down, s.lastErr = true, err
		s.log.Warn("shared state not read from etcd; serving the shared state last seen, from the cache", "err", err,
			"cache", s.opts.DataDir+"/"+CacheFile)
	}
	s.started = true
	go s.sync()
	return s, nil
}

// dialOptions make gRPC try a lost endpoint again at least every two
// seconds: its default backoff grows to two minutes, and a node would
// take that long to see etcd come back.
func dialOptions() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
		Backoff:           backoff.Config{BaseDelay: 250 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
		MinConnectTimeout: 2 * time.Second,
	})}
}

// Client returns the etcd client (for the node registry and certmagic's
// storage, which share the connection).
func (s *Store) Client() *clientv3.Client { return s.cli }

// Prefix returns the key prefix.
func (s *Store) Prefix() string { return s.opts.Prefix }

// Node returns this node's name.
func (s *Store) Node() string { return s.opts.Node }

func (s *Store) stateKey() string    { return s.opts.Prefix + "/state" }
func (s *Store) usagePrefix() string { return s.opts.Prefix + "/usage/" }
func (s *Store) usageKey(month string) string {
	return s.usagePrefix() + month + "/" + s.opts.Node
}

// Close stops the watch and closes the connection; it is idempotent.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.cancel()
		if s.started {
			<-s.done
		}
		s.closeErr = s.cli.Close()
	})
	return s.closeErr
}

// Down reports whether the cluster did not answer the last read: the
// node then serves the state last seen.
func (s *Store) Down() bool { return s.Unreachable() != nil }

// Unreachable returns why the cluster did not answer the last read, or
// nil when it did.
func (s *Store) Unreachable() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.down {
		return nil
	}
	if s.lastErr == nil {
		return s.fail("reading the shared state", errors.New("no answer yet"))
	}
	return s.lastErr
}

// setDown records that etcd did not answer, and why.
func (s *Store) setDown(err error) {
	s.mu.Lock()
	s.down, s.lastErr = true, err
	s.mu.Unlock()
}

// Load returns the shared state as last seen, with every member's usage
// summed over the nodes. It never waits on etcd.
func (s *Store) Load() (*store.State, error) {
	s.mu.Lock()
	m := s.snap.merged
	s.mu.Unlock()
	if m == nil {
		return &store.State{Version: store.Version}, nil
	}
	return store.Clone(m), nil
}

// fail names the endpoints and what went wrong, on one line.
func (s *Store) fail(action string, err error) error {
	return &UnavailableError{Action: action, Endpoints: s.opts.Endpoints, Err: err}
}

// Describe says in a few words why a request to etcd failed.
func Describe(err error) string {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "x509") || strings.Contains(msg, "tls:") || strings.Contains(msg, "certificate"):
		return "refused the TLS handshake (" + msg + ")"
	case strings.Contains(msg, "permission denied") || strings.Contains(msg, "authentication") ||
		strings.Contains(msg, "Unauthenticated") || strings.Contains(msg, "user name") || strings.Contains(msg, "auth"):
		return "refused this node's credentials (" + msg + ")"
	case strings.Contains(msg, "leader changed") || strings.Contains(msg, "no leader"):
		return "has no leader: an election is under way, or too few members are up (" + msg + ")"
	case errors.Is(err, context.DeadlineExceeded) || strings.Contains(msg, "deadline exceeded") ||
		strings.Contains(msg, "connection refused") || strings.Contains(msg, "Unavailable"):
		return "is unreachable (" + msg + ")"
	}
	return "failed (" + msg + ")"
}

// read reads P/state and P/usage/ at one revision.
func (s *Store) read(ctx context.Context) (snapshot, error) {
	return s.readFor(ctx, "reading the shared state")
}

// readFor is read, naming action in an error.
func (s *Store) readFor(ctx context.Context, action string) (snapshot, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	resp, err := s.cli.Txn(ctx).Then(
		clientv3.OpGet(s.stateKey()),
		clientv3.OpGet(s.usagePrefix(), clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return snapshot{}, s.fail(action, err)
	}
	snap := snapshot{rev: resp.Header.Revision, usage: map[string]map[string]map[string]store.Usage{}}
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
		st, err := store.Parse(kvs[0].Value, "etcd key "+s.stateKey())
		if err != nil {
			return snapshot{}, err
		}
		snap.state, snap.stateRev = st, kvs[0].ModRevision
	} else {
		snap.state = &store.State{Version: store.Version}
	}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		month, node, ok := strings.Cut(strings.TrimPrefix(string(kv.Key), s.usagePrefix()), "/")
		if !ok {
			continue
		}
		var u map[string]store.Usage
		if err := json.Unmarshal(kv.Value, &u); err != nil {
			s.log.Warn("usage counters skipped: not JSON", "key", string(kv.Key), "err", err)
			continue
		}
		if snap.usage[month] == nil {
			snap.usage[month] = map[string]map[string]store.Usage{}
		}
		snap.usage[month][node] = u
	}
	snap.merged = merge(snap.state, snap.usage)
	return snap, nil
}

// merge returns st with every member's usage: the latest month any node
// counted them in, summed over the nodes.
func merge(st *store.State, usage map[string]map[string]map[string]store.Usage) *store.State {
	out := store.Clone(st)
	for i := range out.Members {
		m := &out.Members[i]
		m.Usage = store.Usage{}
		for month, nodes := range usage {
			if month < m.Usage.Month {
				continue
			}
			sum := store.Usage{Month: month}
			found := false
			for _, byMember := range nodes {
				if u, ok := byMember[m.Name]; ok {
					sum.In += u.In
					sum.Out += u.Out
					found = true
				}
			}
			if found {
				m.Usage = sum
			}
		}
	}
	return out
}

// resync reads the whole shared state and makes it the snapshot.
func (s *Store) resync(ctx context.Context) error {
	snap, err := s.read(ctx)
	if err != nil {
		s.setDown(err)
		return err
	}
	s.install(snap)
	return nil
}

// lost reports whether snap has no state where the snapshot in place
// holds a server identity: never taken for a change (a new network
// replacing the one every device is configured for).
func (s *Store) lostLocked(snap snapshot) bool {
	return snap.stateRev == 0 && s.snap.state != nil && s.snap.state.VPN.PrivateKey != ""
}

func (s *Store) noState() error {
	return fmt.Errorf("%w: etcd key %s is missing although this node served the network (from etcd or its cache): "+
		"check server.etcd.prefix, or restore the cluster; tariq will not start a new network over it "+
		"(to start one on purpose, stop tariq and delete %s/%s)", ErrNoState, s.stateKey(), s.opts.DataDir, CacheFile)
}

// install makes snap the snapshot unless a newer one is in place, writes
// the cache and tells the watchers when the state changed.
func (s *Store) install(snap snapshot) {
	s.mu.Lock()
	wasDown := s.down
	s.down = false
	if snap.rev < s.snap.rev {
		s.mu.Unlock()
		return
	}
	if s.lostLocked(snap) {
		s.mu.Unlock()
		s.log.Error("the shared state is gone from etcd; serving the one last seen", "err", s.noState())
		return
	}
	changed := s.snap.merged == nil || !store.Equal(s.snap.merged, snap.merged)
	s.snap = snap
	if changed {
		for ch := range s.subs {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
	s.mu.Unlock()
	if wasDown {
		s.log.Info("etcd reachable again; the shared state is current", "revision", snap.rev)
	}
	if changed {
		s.writeCache(snap)
	}
}

// Watch returns a channel that receives a value after the shared state
// (members, usage, secrets…) changed, on any node.
func (s *Store) Watch(ctx context.Context) <-chan struct{} {
	ch := make(chan struct{}, 1)
	s.mu.Lock()
	s.subs[ch] = struct{}{}
	s.mu.Unlock()
	go func() {
		select {
		case <-ctx.Done():
		case <-s.ctx.Done():
		}
		s.mu.Lock()
		delete(s.subs, ch)
		s.mu.Unlock()
	}()
	return ch
}

// sync keeps the snapshot current until Close: a watch on the prefix, a
// full read after every change it reports and every Resync, and when
// etcd is away, reads again with a backoff until it answers.
func (s *Store) sync() {
	defer close(s.done)
	backoff := 250 * time.Millisecond
	for s.ctx.Err() == nil {
		s.mu.Lock()
		down, rev := s.down, s.snap.rev
		s.mu.Unlock()
		if down || rev == 0 {
			if err := s.resync(s.ctx); err != nil {
				if s.ctx.Err() != nil {
					return
				}
				s.log.Debug("etcd still unreachable", "err", err)
				sleep(s.ctx, backoff)
				backoff = min(backoff*2, 5*time.Second)
				continue
			}
			backoff = 250 * time.Millisecond
		}
		s.watch()
	}
}

// watch follows the prefix from the snapshot's revision until the watch
// fails or Close; every event batch and every Resync reads the state again.
func (s *Store) watch() {
	s.mu.Lock()
	rev := s.snap.rev
	s.mu.Unlock()
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(s.ctx))
	defer cancel()
	wch := s.cli.Watch(ctx, s.opts.Prefix+"/", clientv3.WithPrefix(), clientv3.WithRev(rev+1), clientv3.WithProgressNotify())
	t := time.NewTicker(s.opts.Resync)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case resp, ok := <-wch:
			if !ok || resp.Err() != nil || resp.Canceled {
				if s.ctx.Err() == nil {
					s.setDown(s.fail("watching the shared state", fmt.Errorf("watch ended: %v", resp.Err())))
					s.log.Debug("etcd watch ended; reading again", "err", resp.Err())
				}
				return
			}
			relevant := false
			for _, ev := range resp.Events {
				k := string(ev.Kv.Key)
				if k == s.stateKey() || strings.HasPrefix(k, s.usagePrefix()) {
					relevant = true
				}
			}
			if relevant {
				if err := s.resync(s.ctx); err != nil {
					s.log.Warn("etcd unreachable; serving the shared state last seen", "err", err)
					return
				}
			}
		case <-t.C:
			if err := s.resync(s.ctx); err != nil {
				s.log.Warn("etcd unreachable; serving the shared state last seen", "err", err)
				return
			}
		}
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// Update applies fn to the current shared state and stores the result
// with a transaction on P/state's mod revision; a conflict (another node
// wrote meanwhile) reads the state again and runs fn again, within
// Options.Timeout. fn sees every member's usage summed over the nodes;
// usage itself is never written here (AddUsage).
func (s *Store) Update(fn func(*store.State) error) (*store.State, error) {
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.Timeout)
	defer cancel()
	for attempt := 0; ; attempt++ {
		snap, err := s.readFor(ctx, "storing the change")
		if err != nil {
			// A leader change or a member going away is over in a moment:
			// try again within the timeout.
			if errors.Is(err, ErrUnavailable) && ctx.Err() == nil {
				sleep(ctx, 100*time.Millisecond)
				if ctx.Err() == nil {
					continue
				}
			}
			s.setDown(err)
			return nil, err
		}
		s.mu.Lock()
		lost := s.lostLocked(snap)
		s.mu.Unlock()
		if lost {
			return nil, s.noState()
		}
		s.install(snap)
		st := store.Clone(snap.merged)
		if err := fn(st); err != nil {
			return nil, err
		}
		st.Version = store.Version
		next := stripUsage(st)
		if store.Equal(next, snap.state) {
			return st, nil
		}
		if p := next.Problem(); p != "" {
			return nil, fmt.Errorf("not writing the shared state: it then %s (a bug in tariq: please report it)", p)
		}
		b, err := json.Marshal(next)
		if err != nil {
			return nil, err
		}
		cmp := clientv3.Compare(clientv3.ModRevision(s.stateKey()), "=", snap.stateRev)
		resp, err := s.cli.Txn(ctx).If(cmp).Then(clientv3.OpPut(s.stateKey(), string(b))).Commit()
		var rev int64
		switch {
		case err != nil:
			// The answer was lost (a leader change, a member killed): the
			// write may have happened. Running fn again on a state that
			// has it would report an error for a change that was made.
			var applied bool
			rev, applied, err = s.applied(ctx, s.stateKey(), snap.stateRev, string(b), err)
			if err != nil {
				return nil, s.fail("storing the change", err)
			}
			if !applied {
				break
			}
			fallthrough
		case resp != nil && resp.Succeeded:
			if rev == 0 {
				rev = resp.Header.Revision
			}
			s.install(snapshot{rev: rev, stateRev: rev, state: next, usage: snap.usage, merged: merge(next, snap.usage)})
			return st, nil
		}
		// Another node wrote first: read again and retry, after a short
		// random pause so that writers do not keep colliding.
		sleep(ctx, time.Duration(rand.IntN(10+min(attempt, 20)*5))*time.Millisecond)
		if ctx.Err() != nil {
			return nil, s.fail("storing the change", fmt.Errorf("gave up after %d conflicting writes: %w", attempt+1, ctx.Err()))
		}
	}
}

// applied finds out whether a compare-and-swap of key from mod revision
// base to value, whose answer was lost with txnErr, happened: the first
// write of key after base (the one whose compare held) wrote value. It
// returns that write's revision. If etcd cannot tell (it does not answer,
// or compacted that history), the error is txnErr.
func (s *Store) applied(ctx context.Context, key string, base int64, value string, txnErr error) (int64, bool, error) {
	for {
		if ctx.Err() != nil {
			return 0, false, txnErr
		}
		resp, err := s.cli.Get(ctx, key)
		if err != nil {
			sleep(ctx, 100*time.Millisecond) // a new leader may take a moment
			continue
		}
		if len(resp.Kvs) == 0 || resp.Kvs[0].ModRevision == base {
			return 0, false, nil // nothing written since: not ours either
		}
		if string(resp.Kvs[0].Value) == value {
			return resp.Kvs[0].ModRevision, true, nil
		}
		wctx, cancel := context.WithCancel(ctx)
		wch := s.cli.Watch(wctx, key, clientv3.WithRev(base+1))
		for wr := range wch {
			if wr.Err() != nil || len(wr.Events) == 0 {
				if wr.Err() != nil {
					cancel()
					return 0, false, txnErr
				}
				continue
			}
			ev := wr.Events[0]
			cancel()
			return ev.Kv.ModRevision, ev.Type == clientv3.EventTypePut && string(ev.Kv.Value) == value, nil
		}
		cancel()
		return 0, false, txnErr
	}
}

// stripUsage returns st without usage: usage lives in P/usage/.
func stripUsage(st *store.State) *store.State {
	out := store.Clone(st)
	for i := range out.Members {
		out.Members[i].Usage = store.Usage{}
	}
	return out
}

// AddUsage adds bytes this node counted to its own counters
// (P/usage/<month>/<node>), compare-and-swap, so that nothing counted is
// lost even if two processes share a node name.
//
// While etcd is known to be away it fails at once, without a request: the
// members model keeps what it counted and calls again a minute later, and
// must not wait meanwhile (it holds its lock).
func (s *Store) AddUsage(add []store.MemberUsage) error {
	if err := s.Unreachable(); err != nil {
		return err
	}
	byMonth := map[string][]store.MemberUsage{}
	for _, a := range add {
		byMonth[a.Month] = append(byMonth[a.Month], a)
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.Timeout)
	defer cancel()
	for month, adds := range byMonth {
		key := s.usageKey(month)
		for {
			resp, err := s.cli.Get(ctx, key)
			if err != nil {
				err = s.fail("storing usage", err)
				s.setDown(err)
				return err
			}
			cur := map[string]store.Usage{}
			var modRev int64
			if len(resp.Kvs) > 0 {
				modRev = resp.Kvs[0].ModRevision
				if err := json.Unmarshal(resp.Kvs[0].Value, &cur); err != nil {
					return fmt.Errorf("etcd key %s is not usage counters: %w", key, err)
				}
			}
			for _, a := range adds {
				u := cur[a.Member]
				u.In += a.In
				u.Out += a.Out
				u.Month = ""
				cur[a.Member] = u
			}
			b, err := json.Marshal(cur)
			if err != nil {
				return err
			}
			tr, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", modRev)).
				Then(clientv3.OpPut(key, string(b))).Commit()
			if err != nil {
				// Counted twice if retried after a write that happened.
				rev, applied, err := s.applied(ctx, key, modRev, string(b), err)
				if err != nil {
					return s.fail("storing usage", err)
				}
				if applied {
					s.installUsage(rev, month, cur)
					break
				}
				continue
			}
			if tr.Succeeded {
				s.installUsage(tr.Header.Revision, month, cur)
				break
			}
		}
	}
	return nil
}

// installUsage puts this node's counters for month, as just written at
// rev, into the snapshot at once, so that limits count them before the
// watch reports the write.
func (s *Store) installUsage(rev int64, month string, cur map[string]store.Usage) {
	s.mu.Lock()
	if s.snap.state == nil {
		s.mu.Unlock()
		return
	}
	usage := map[string]map[string]map[string]store.Usage{}
	for m, nodes := range s.snap.usage {
		usage[m] = map[string]map[string]store.Usage{}
		for n, u := range nodes {
			usage[m][n] = u
		}
	}
	if usage[month] == nil {
		usage[month] = map[string]map[string]store.Usage{}
	}
	usage[month][s.opts.Node] = cur
	snap := snapshot{rev: max(rev, s.snap.rev), stateRev: s.snap.stateRev, state: s.snap.state, usage: usage}
	snap.merged = merge(snap.state, usage)
	s.mu.Unlock()
	s.install(snap)
}

// cache is the cache file's content.
type cache struct {
	// Prefix and Revision say which network and which version of it.
	Prefix   string          `json:"prefix"`
	Revision int64           `json:"revision"`
	State    json.RawMessage `json:"state"`
}

// writeCache writes snap to the cache file, atomically, 0600.
func (s *Store) writeCache(snap snapshot) {
	if s.opts.DataDir == "" || snap.merged == nil {
		return
	}
	st, err := json.Marshal(snap.merged)
	if err == nil {
		var b []byte
		b, err = json.MarshalIndent(cache{Prefix: s.opts.Prefix, Revision: snap.rev, State: st}, "", "  ")
		if err == nil {
			s.cacheMu.Lock()
			if snap.rev >= s.cacheRev { // an older snapshot installed concurrently never overwrites a newer one
				err = writeFile(s.opts.DataDir, CacheFile, append(b, '\n'))
				if err == nil {
					s.cacheRev = snap.rev
				}
			}
			s.cacheMu.Unlock()
		}
	}
	if err != nil {
		s.log.Warn("cache of the shared state not written", "err", err)
	}
}

func writeFile(dir, name string, b []byte) error {
	d, err := store.OpenDir(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.WriteFile(name, b, 0o600)
}

// readCache reads the cache file.
func (s *Store) readCache() (snapshot, error) {
	if s.opts.DataDir == "" {
		return snapshot{}, errors.New("no data directory")
	}
	d, err := store.OpenDir(s.opts.DataDir)
	if err != nil {
		return snapshot{}, err
	}
	defer d.Close()
	path := s.opts.DataDir + "/" + CacheFile
	b, err := d.ReadFile(CacheFile)
	if errors.Is(err, fs.ErrNotExist) {
		return snapshot{}, fmt.Errorf("%s does not exist", path)
	}
	if err != nil {
		return snapshot{}, err
	}
	var c cache
	if err := json.Unmarshal(b, &c); err != nil {
		return snapshot{}, fmt.Errorf("%s is not a cache tariq wrote: %w", path, err)
	}
	if c.Prefix != s.opts.Prefix {
		return snapshot{}, fmt.Errorf("%s holds prefix %s, not %s", path, c.Prefix, s.opts.Prefix)
	}
	st, err := store.Parse(c.State, path)
	if err != nil {
		return snapshot{}, err
	}
	// rev 0: any read from etcd replaces it.
	return snapshot{state: stripUsage(st), merged: st, usage: map[string]map[string]map[string]store.Usage{}}, nil
}
