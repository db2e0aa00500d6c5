package certs

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
)

func openTestStorage(t *testing.T, dataDir string) *rootStorage {
	t.Helper()
	s, err := openRootStorage(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestRootStorage: rootStorage keeps certmagic.FileStorage's contract and
// layout, so what FileStorage stored before loads, and the other way round.
func TestRootStorage(t *testing.T) {
	ctx := context.Background()
	data := filepath.Join(t.TempDir(), "data")
	os.Mkdir(data, 0o700)
	old := &certmagic.FileStorage{Path: filepath.Join(data, certmagicDir)}
	if err := old.Store(ctx, "certificates/ca/host/host.key", []byte("old key")); err != nil {
		t.Fatal(err)
	}
	s := openTestStorage(t, data)
	if b, err := s.Load(ctx, "certificates/ca/host/host.key"); err != nil || string(b) != "old key" {
		t.Errorf("FileStorage's key: %q %v", b, err)
	}
	for k, v := range map[string]string{"certificates/ca/host/host.crt": "crt", "acme/ca/users/me/me.json": "{}", "last_clean.json": "{}"} {
		if err := s.Store(ctx, k, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	if b, err := old.Load(ctx, "certificates/ca/host/host.crt"); err != nil || string(b) != "crt" {
		t.Errorf("FileStorage reads ours: %q %v", b, err)
	}
	if fi, err := os.Stat(filepath.Join(data, certmagicDir, "certificates/ca/host/host.crt")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("stored file: %v %v", fi, err)
	}
	if _, err := s.Load(ctx, "nope"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load of a missing key: %v", err)
	}
	if _, err := s.Stat(ctx, "nope/x"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Stat of a missing key: %v", err)
	}
	if ki, err := s.Stat(ctx, "certificates/ca/host"); err != nil || ki.IsTerminal || ki.Key != "certificates/ca/host" {
		t.Errorf("Stat of a directory: %+v %v", ki, err)
	}
	if ki, err := s.Stat(ctx, "last_clean.json"); err != nil || !ki.IsTerminal || ki.Size != 2 {
		t.Errorf("Stat of a file: %+v %v", ki, err)
	}
	for _, tc := range []struct {
		prefix    string
		recursive bool
		want      []string
	}{
		{"certificates", false, []string{"certificates/ca"}},
		{"certificates/ca/host", false, []string{"certificates/ca/host/host.crt", "certificates/ca/host/host.key"}},
		{"certificates", true, []string{"certificates/ca", "certificates/ca/host", "certificates/ca/host/host.crt", "certificates/ca/host/host.key"}},
		{"", false, []string{"acme", "certificates", "last_clean.json"}},
	} {
		got, err := s.List(ctx, tc.prefix, tc.recursive)
		want, _ := old.List(ctx, tc.prefix, tc.recursive)
		slices.Sort(got)
		slices.Sort(want)
		if err != nil || !slices.Equal(got, tc.want) || !slices.Equal(got, want) {
			t.Errorf("List(%q, %v) = %v %v, want %v (FileStorage: %v)", tc.prefix, tc.recursive, got, err, tc.want, want)
		}
	}
	if _, err := s.List(ctx, "nope", true); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("List of a missing prefix: %v", err)
	}
	if err := s.Delete(ctx, "certificates"); err != nil || s.Exists(ctx, "certificates/ca/host/host.crt") || !s.Exists(ctx, "acme") {
		t.Errorf("Delete: %v", err)
	}
	if err := s.Delete(ctx, "certificates"); err != nil {
		t.Errorf("Delete of a missing key: %v", err)
	}
}

// TestRootStorageLocks: a named lock is held by one taker at a time; a
// waiter gives up when its context ends.
func TestRootStorageLocks(t *testing.T) {
	ctx := context.Background()
	s := openTestStorage(t, t.TempDir())
	if err := s.Lock(ctx, "issue_cert_host"); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.TryLock(ctx, "issue_cert_host"); ok || err != nil {
		t.Errorf("TryLock of a held lock: %v %v", ok, err)
	}
	if ok, err := s.TryLock(ctx, "other"); !ok || err != nil {
		t.Errorf("TryLock of a free lock: %v %v", ok, err)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := s.Lock(short, "issue_cert_host"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Lock of a held lock: %v", err)
	}
	got := make(chan error, 1)
	go func() { got <- s.Lock(ctx, "issue_cert_host") }()
	if err := s.Unlock(ctx, "issue_cert_host"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		if err != nil {
			t.Error(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("waiter never got the released lock")
	}
	if err := s.Unlock(ctx, "never"); err == nil {
		t.Error("unlocking a lock never taken succeeded")
	}
}

// TestRootStorageStaysInside: links planted in data_dir/certmagic (by the
// service user, who owns it) never lead a store, load or delete outside
// the data directory, and temporary files a kill -9 left are removed when
// the storage opens.
func TestRootStorageStaysInside(t *testing.T) {
	ctx := context.Background()
	base := t.TempDir()
	outside := filepath.Join(base, "outside")
	os.Mkdir(outside, 0o700)
	canary := filepath.Join(outside, "canary")
	os.WriteFile(canary, []byte("canary"), 0o600)
	data := filepath.Join(base, "data")
	cm := filepath.Join(data, certmagicDir)
	os.MkdirAll(cm, 0o700)
	os.Symlink(outside, filepath.Join(cm, "certificates"))
	os.Symlink(canary, filepath.Join(cm, "account.key"))
	os.Symlink(canary, filepath.Join(cm, ".account.key.tmp-1"))
	os.WriteFile(filepath.Join(cm, ".host.key.tmp-2"), []byte("private key"), 0o600)

	s := openTestStorage(t, data)
	for _, left := range []string{".account.key.tmp-1", ".host.key.tmp-2"} {
		if _, err := os.Lstat(filepath.Join(cm, left)); err == nil {
			t.Errorf("%s survived opening the storage", left)
		}
	}
	if err := s.Store(ctx, "certificates/ca/host.key", []byte("key")); err == nil {
		t.Error("stored through a link leading outside")
	}
	if b, err := s.Load(ctx, "account.key"); err == nil {
		t.Errorf("loaded through a link leading outside: %q", b)
	}
	if err := s.Store(ctx, "account.key", []byte("key")); err != nil {
		t.Errorf("replacing the link: %v", err)
	}
	if err := s.Delete(ctx, "certificates"); err != nil {
		t.Errorf("deleting the link: %v", err)
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 1 {
		t.Errorf("outside the data directory: %v", entries)
	}
	if b, _ := os.ReadFile(canary); string(b) != "canary" {
		t.Errorf("canary %q", b)
	}
	// The directory itself swapped for a link out: refused.
	os.RemoveAll(cm)
	os.Symlink(outside, cm)
	if s, err := openRootStorage(data); err == nil {
		s.Close()
		t.Error("opened certmagic/ through a link")
	}
}
