package store

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"time"

	"golang.org/x/sys/unix"
)

// Backend is where the shared state lives: the server's identity, the
// members, their devices and invites, the Outline material and the REST
// secrets. Two implement it: Store, the state file in the data directory
// (one server, the default), and internal/etcdstore, an etcd cluster that
// several nodes serving one network share.
//
// What belongs to one machine stays on the data directory whichever the
// backend (Store.Claim, Store.RemoveTemp, the certificates' files): a
// Backend holds only what every node must agree on.
type Backend interface {
	// Load returns the state as last seen. It never waits on another
	// machine: a remote backend answers from what it last saw, so the
	// paths keep serving while the cluster is away.
	Load() (*State, error)
	// Update applies fn to the current state and stores the result
	// atomically, compare-and-swap: if the state changed meanwhile (another
	// node's write), fn runs again on the new state, so it must have no
	// effect outside st but its return values. If fn returns an error
	// nothing is written and the error is returned as is; a change that
	// leaves st as it was writes nothing.
	Update(fn func(*State) error) (*State, error)
	// AddUsage adds bytes this node counted to members' usage. The state
	// Load returns has, per member, the sum over every node; a node never
	// overwrites another's counting.
	AddUsage(add []MemberUsage) error
	// Watch returns a channel that receives a value after the state
	// changed, by this process or another (coalesced: one value may stand
	// for several changes), until ctx is done.
	Watch(ctx context.Context) <-chan struct{}
	// Close releases the backend's connections; Load and Update fail
	// after it.
	Close() error
}

// MemberUsage is bytes counted for one member in one month (Usage.Month).
type MemberUsage struct {
	Member string
	Usage
}

var _ Backend = (*Store)(nil)

// AddUsage adds add to the members' usage in the state file. Bytes for a
// member removed since, or for a month the member's usage has moved past,
// are dropped; a later month starts the member's usage afresh.
func (s *Store) AddUsage(add []MemberUsage) error {
	_, err := s.Update(func(st *State) error {
		AddUsage(st, add)
		return nil
	})
	return err
}

// AddUsage adds add to the members' usage in st (see Store.AddUsage).
func AddUsage(st *State, add []MemberUsage) {
	for _, a := range add {
		m := st.Member(a.Member)
		switch {
		case m == nil: // removed since
			continue
		case m.Usage.Month > a.Month: // a month already over
			continue
		case m.Usage.Month < a.Month:
			m.Usage = Usage{Month: a.Month}
		}
		m.Usage.In += a.In
		m.Usage.Out += a.Out
	}
}

// watchInterval is how often the file store looks at the state file for
// changes another process made (the CLI with no daemon running).
const watchInterval = time.Second

// Watch reports changes of the state file, by this process or another:
// it compares the file's inode, size and change time every second.
func (s *Store) Watch(ctx context.Context) <-chan struct{} {
	ch := make(chan struct{}, 1)
	go func() {
		last, _ := s.stamp()
		t := time.NewTicker(watchInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			now, err := s.stamp()
			if err != nil || now == last {
				continue
			}
			last = now
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}()
	return ch
}

// fileStamp tells one version of the state file from another.
type fileStamp struct {
	ino, size    int64
	ctime, mtime unix.Timespec
}

// stamp returns the state file's fileStamp (zero when there is none).
func (s *Store) stamp() (fileStamp, error) {
	d, err := OpenDir(s.dir)
	if err != nil {
		return fileStamp{}, err
	}
	defer d.Close()
	var st unix.Stat_t
	err = unix.Fstatat(d.fd(), stateFile, &st, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, fs.ErrNotExist) {
		return fileStamp{}, nil
	}
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{ino: int64(st.Ino), size: st.Size, ctime: st.Ctim, mtime: st.Mtim}, nil
}

// Close does nothing: the file store holds nothing open between calls.
func (s *Store) Close() error { return nil }

// Clone returns a deep copy of st.
func Clone(st *State) *State {
	b, err := json.Marshal(st)
	if err != nil {
		panic(err) // every field of State marshals
	}
	out := &State{}
	if err := json.Unmarshal(b, out); err != nil {
		panic(err)
	}
	return out
}

// Equal reports whether a and b hold the same state.
func Equal(a, b *State) bool {
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && string(x) == string(y)
}

// Parse decodes a state in the state file's format (what Store writes,
// and what internal/etcdstore keeps in etcd and in its cache), refusing
// one that is not tariq's as Load does; name says where it came from in
// errors.
func Parse(b []byte, name string) (*State, error) { return parse(b, name) }

// Problem says what st lacks that tariq always writes along with the rest
// of it, or "" (see the state file's rules).
func (st *State) Problem() string { return st.problem() }
