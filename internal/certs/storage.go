package certs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sync"

	"github.com/caddyserver/certmagic"

	"github.com/tariq-vpn/tariq/internal/store"
)

// certmagicDir is where ACME certificates, keys and account live, below
// the data directory.
const certmagicDir = "certmagic"

// rootStorage is certmagic's storage in data_dir/certmagic, reached through
// an os.Root so that no link planted inside leads out of the data
// directory: the service user owns that directory, and a daemon run as root
// must never read or write root's files through it (issue 9). The layout
// is certmagic.FileStorage's (a key is a path below the directory), so what
// FileStorage stored stays in use.
//
// Locks are in-process: one daemon holds the data directory (store.Claim),
// and certmagic takes them only within it.
type rootStorage struct {
	root *os.Root

	mu    sync.Mutex               // guards locks
	locks map[string]chan struct{} // held locks; closed on unlock
}

var (
	_ certmagic.Storage   = (*rootStorage)(nil)
	_ certmagic.TryLocker = (*rootStorage)(nil)
)

// openRootStorage opens (creating it, 0700) data_dir/certmagic, and
// removes the temporary files an interrupted Store left there.
func openRootStorage(dataDir string) (*rootStorage, error) {
	top, err := store.OpenDir(dataDir)
	if err != nil {
		return nil, err
	}
	sub, err := top.Sub(certmagicDir) // creates and checks it, never through a link
	top.Close()
	if err != nil {
		return nil, err
	}
	sub.Close()
	dr, err := os.OpenRoot(dataDir)
	if err != nil {
		return nil, err
	}
	defer dr.Close()
	r, err := dr.OpenRoot(certmagicDir) // a link swapped in meanwhile stays inside dataDir
	if err != nil {
		return nil, err
	}
	s := &rootStorage{root: r, locks: map[string]chan struct{}{}}
	if err := s.removeTemp(); err != nil {
		r.Close()
		return nil, err
	}
	return s, nil
}

// removeTemp removes every temporary file (store.IsTemp) in the tree: a
// kill -9 in Store leaves one holding a private key.
func (s *rootStorage) removeTemp() error {
	var errs []error
	err := fs.WalkDir(s.root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && store.IsTemp(d.Name()) {
			if err := s.root.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
			}
		}
		return nil
	})
	return errors.Join(append(errs, err)...)
}

// Close closes the directory.
func (s *rootStorage) Close() error { return s.root.Close() }

func (s *rootStorage) String() string { return "rootStorage:" + s.root.Name() }

// keyPath turns a certmagic key into a path below the root.
func keyPath(key string) string {
	if key == "" {
		return "."
	}
	return filepath.FromSlash(key)
}

// Store writes value at key atomically: a temporary file created with
// O_EXCL beside it, synced, renamed over it.
func (s *rootStorage) Store(_ context.Context, key string, value []byte) (err error) {
	n := keyPath(key)
	dir := filepath.Dir(n)
	if err := s.root.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp := filepath.Join(dir, store.TempName(filepath.Base(n)))
	f, err := s.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			s.root.Remove(tmp)
		}
	}()
	if _, err := f.Write(value); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return s.root.Rename(tmp, n)
}

// Load returns the value at key; fs.ErrNotExist when there is none.
func (s *rootStorage) Load(_ context.Context, key string) ([]byte, error) {
	return s.root.ReadFile(keyPath(key))
}

// Delete removes key and everything below it; a missing key is no error.
func (s *rootStorage) Delete(_ context.Context, key string) error {
	return s.root.RemoveAll(keyPath(key))
}

// Exists reports whether key is a file or a directory.
func (s *rootStorage) Exists(_ context.Context, key string) bool {
	_, err := s.root.Stat(keyPath(key))
	return !errors.Is(err, fs.ErrNotExist)
}

// List returns the keys below prefix: its direct entries, or with
// recursive every key in the tree (as FileStorage.List).
func (s *rootStorage) List(ctx context.Context, prefix string, recursive bool) ([]string, error) {
	start := path.Clean("./" + prefix)
	var keys []string
	err := fs.WalkDir(s.root.FS(), start, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == start {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel := p
		if start != "." {
			rel = p[len(start)+1:]
		}
		keys = append(keys, path.Join(prefix, rel))
		if !recursive && d.IsDir() {
			return fs.SkipDir
		}
		return nil
	})
	return keys, err
}

// Stat describes key; fs.ErrNotExist when there is none.
func (s *rootStorage) Stat(_ context.Context, key string) (certmagic.KeyInfo, error) {
	fi, err := s.root.Stat(keyPath(key))
	if err != nil {
		return certmagic.KeyInfo{}, err
	}
	return certmagic.KeyInfo{Key: key, Modified: fi.ModTime(), Size: fi.Size(), IsTerminal: !fi.IsDir()}, nil
}

// Lock takes the named lock, waiting for it until ctx is done.
func (s *rootStorage) Lock(ctx context.Context, lock string) error {
	for {
		ok, held := s.tryLock(lock)
		if ok {
			return nil
		}
		select {
		case <-held:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// TryLock takes the named lock if it is free.
func (s *rootStorage) TryLock(ctx context.Context, lock string) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	ok, _ := s.tryLock(lock)
	return ok, nil
}

// tryLock takes lock, or returns the channel closed when its holder
// releases it.
func (s *rootStorage) tryLock(lock string) (ok bool, held <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ch, busy := s.locks[lock]; busy {
		return false, ch
	}
	s.locks[lock] = make(chan struct{})
	return true, nil
}

// Unlock releases the named lock.
func (s *rootStorage) Unlock(_ context.Context, lock string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch, ok := s.locks[lock]
	if !ok {
		return fmt.Errorf("unlocking %q: not locked", lock)
	}
	delete(s.locks, lock)
	close(ch)
	return nil
}

// StoredFile is one file of the ACME storage (StoredFiles).
type StoredFile struct {
	Key   string
	Value []byte
}

// StoredFiles returns every file of the data directory's ACME storage
// (account, certificates, their keys), for `tariq store migrate`.
func StoredFiles(dataDir string) ([]StoredFile, error) {
	s, err := openRootStorage(dataDir)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	ctx := context.Background()
	keys, err := s.List(ctx, "", true)
	if err != nil {
		return nil, err
	}
	var out []StoredFile
	for _, k := range keys {
		if fi, err := s.Stat(ctx, k); err != nil || !fi.IsTerminal {
			continue
		}
		v, err := s.Load(ctx, k)
		if err != nil {
			return nil, err
		}
		out = append(out, StoredFile{Key: k, Value: v})
	}
	return out, nil
}
