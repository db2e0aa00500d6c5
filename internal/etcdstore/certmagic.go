package etcdstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// CertStorage is certmagic's Storage in etcd (P/certmagic/<key>), with its
// locks as etcd mutexes (P/locks/<name>), so that the nodes share one ACME
// account and one certificate: the node that takes the lock orders, the
// others find the certificate stored when they get the lock in turn.
//
// A lock lives in a session whose lease the holder keeps alive; a holder
// that dies (kill -9, a lost network) lets go when its lease runs out,
// LockTTL after its last keepalive.
type CertStorage struct {
	cli    *clientv3.Client
	prefix string // P/certmagic/
	locks  string // P/locks/
	ttl    int    // seconds

	mu   sync.Mutex // guards held
	held map[string]*heldLock
}

type heldLock struct {
	session *concurrency.Session
	mutex   *concurrency.Mutex
}

var (
	_ certmagic.Storage   = (*CertStorage)(nil)
	_ certmagic.TryLocker = (*CertStorage)(nil)
)

// LockTTL is how long a dead holder keeps a certmagic lock, in seconds.
const LockTTL = 10

// CertStorage returns certmagic's storage in this store's prefix.
func (s *Store) CertStorage() *CertStorage {
	return NewCertStorage(s.cli, s.opts.Prefix, LockTTL)
}

// NewCertStorage returns certmagic's storage under prefix, its locks held
// in sessions of ttl seconds.
func NewCertStorage(cli *clientv3.Client, prefix string, ttl int) *CertStorage {
	return &CertStorage{cli: cli, prefix: prefix + "/certmagic/", locks: prefix + "/locks/", ttl: ttl, held: map[string]*heldLock{}}
}

// value is what a key holds: certmagic asks for the modification time,
// which etcd does not keep.
type value struct {
	Modified time.Time `json:"modified"`
	Value    []byte    `json:"value"`
}

func (c *CertStorage) key(k string) string { return c.prefix + strings.Trim(k, "/") }

// Store puts v at key.
func (c *CertStorage) Store(ctx context.Context, key string, v []byte) error {
	b, err := json.Marshal(value{Modified: time.Now().UTC(), Value: v})
	if err != nil {
		return err
	}
	if _, err := c.cli.Put(ctx, c.key(key), string(b)); err != nil {
		return fmt.Errorf("storing %s in etcd: %w", key, err)
	}
	return nil
}

func (c *CertStorage) get(ctx context.Context, key string) (value, int, error) {
	resp, err := c.cli.Get(ctx, c.key(key))
	if err != nil {
		return value{}, 0, fmt.Errorf("loading %s from etcd: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return value{}, 0, fs.ErrNotExist
	}
	var v value
	if err := json.Unmarshal(resp.Kvs[0].Value, &v); err != nil {
		return value{}, 0, fmt.Errorf("etcd key %s is not certmagic's value: %w", c.key(key), err)
	}
	return v, len(v.Value), nil
}

// Load returns the value at key, or fs.ErrNotExist.
func (c *CertStorage) Load(ctx context.Context, key string) ([]byte, error) {
	v, _, err := c.get(ctx, key)
	return v.Value, err
}

// Delete removes key and, if it is a directory, every key below it.
func (c *CertStorage) Delete(ctx context.Context, key string) error {
	k := c.key(key)
	_, err := c.cli.Txn(ctx).Then(clientv3.OpDelete(k), clientv3.OpDelete(k+"/", clientv3.WithPrefix())).Commit()
	if err != nil {
		return fmt.Errorf("deleting %s in etcd: %w", key, err)
	}
	return nil
}

// Exists reports whether key is a file or a directory.
func (c *CertStorage) Exists(ctx context.Context, key string) bool {
	k := c.key(key)
	resp, err := c.cli.Txn(ctx).Then(
		clientv3.OpGet(k, clientv3.WithCountOnly()),
		clientv3.OpGet(k+"/", clientv3.WithPrefix(), clientv3.WithCountOnly()),
	).Commit()
	if err != nil {
		return false
	}
	return resp.Responses[0].GetResponseRange().Count > 0 || resp.Responses[1].GetResponseRange().Count > 0
}

// List returns the keys below path: with recursive, every file below it;
// without, its direct children (files and directories).
func (c *CertStorage) List(ctx context.Context, path string, recursive bool) ([]string, error) {
	dir := strings.Trim(path, "/")
	pfx := c.prefix
	if dir != "" {
		pfx += dir + "/"
	}
	resp, err := c.cli.Get(ctx, pfx, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, fmt.Errorf("listing %s in etcd: %w", path, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fs.ErrNotExist
	}
	var out []string
	for _, kv := range resp.Kvs {
		rel := strings.TrimPrefix(string(kv.Key), pfx)
		if !recursive {
			rel, _, _ = strings.Cut(rel, "/")
		}
		k := rel
		if dir != "" {
			k = dir + "/" + rel
		}
		if !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	return out, nil
}

// Stat describes key: a file with its size and modification time, or a
// directory.
func (c *CertStorage) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	v, size, err := c.get(ctx, key)
	if err == nil {
		return certmagic.KeyInfo{Key: key, Modified: v.Modified, Size: int64(size), IsTerminal: true}, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return certmagic.KeyInfo{}, err
	}
	if c.Exists(ctx, key) {
		return certmagic.KeyInfo{Key: key, IsTerminal: false}, nil
	}
	return certmagic.KeyInfo{}, fs.ErrNotExist
}

// Lock takes the lock name, waiting until whoever holds it (on any node)
// lets go or ctx is done.
func (c *CertStorage) Lock(ctx context.Context, name string) error {
	_, err := c.lock(ctx, name, true)
	return err
}

// TryLock takes the lock name if it is free, and reports whether it did.
func (c *CertStorage) TryLock(ctx context.Context, name string) (bool, error) {
	return c.lock(ctx, name, false)
}

func (c *CertStorage) lock(ctx context.Context, name string, wait bool) (bool, error) {
	sess, err := concurrency.NewSession(c.cli, concurrency.WithTTL(c.ttl), concurrency.WithContext(context.Background()))
	if err != nil {
		return false, fmt.Errorf("locking %s in etcd: %w", name, err)
	}
	m := concurrency.NewMutex(sess, c.locks+strings.Trim(name, "/"))
	if wait {
		err = m.Lock(ctx)
	} else {
		err = m.TryLock(ctx)
	}
	if err != nil {
		sess.Close()
		if !wait && errors.Is(err, concurrency.ErrLocked) {
			return false, nil
		}
		return false, fmt.Errorf("locking %s in etcd: %w", name, err)
	}
	c.mu.Lock()
	old := c.held[name]
	c.held[name] = &heldLock{session: sess, mutex: m}
	c.mu.Unlock()
	if old != nil { // the same process took it twice: certmagic never does
		old.session.Close()
	}
	return true, nil
}

// Unlock lets go of the lock name.
func (c *CertStorage) Unlock(ctx context.Context, name string) error {
	c.mu.Lock()
	h := c.held[name]
	delete(c.held, name)
	c.mu.Unlock()
	if h == nil {
		return fmt.Errorf("unlocking %s: not locked here", name)
	}
	err := h.mutex.Unlock(ctx)
	h.session.Close() // revokes the lease: the key goes even if Unlock failed
	if err != nil {
		return fmt.Errorf("unlocking %s in etcd: %w", name, err)
	}
	return nil
}
