package etcdstore_test

import (
	"context"
	"errors"
	"io/fs"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"

	"github.com/tariq-vpn/tariq/internal/etcdstore"
	"github.com/tariq-vpn/tariq/internal/testutil"
)

// TestCertStorage holds the etcd storage to certmagic's Storage contract:
// Store and Load, fs.ErrNotExist for what is missing, Exists for files
// and directories, List direct and recursive, Stat, and Delete of a file
// or a whole directory (a missing key is no error). Keys are
// component-wise: "a" is a prefix of "a/b", not of "ab/c".
func TestCertStorage(t *testing.T) {
	c := testutil.Etcd(t, 1)
	a, _ := open(t, c.Endpoints(), testPrefix(t), "a")
	b, _ := open(t, c.Endpoints(), testPrefix(t), "b")
	var s certmagic.Storage = a.CertStorage()
	other := b.CertStorage() // another node's view of the same storage
	ctx := context.Background()
	if _, err := s.Load(ctx, "acme/account.json"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("load of a missing key: %v", err)
	}
	if _, err := s.Stat(ctx, "acme"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("stat of a missing key: %v", err)
	}
	if _, err := s.List(ctx, "acme", true); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("list of a missing directory: %v", err)
	}
	before := time.Now().Add(-time.Second)
	files := map[string]string{
		"acme/ca/users/default/default.json": "user",
		"acme/ca/users/default/default.key":  "key",
		"certificates/ca/vpn/vpn.crt":        "crt",
		"certificates/ca/vpn/vpn.key":        "crt key",
		"certificates/ca/vpnx/vpnx.crt":      "other",
		"ab/c":                               "ab",
	}
	for k, v := range files {
		if err := s.Store(ctx, k, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	for k, v := range files {
		if got, err := other.Load(ctx, k); err != nil || string(got) != v {
			t.Errorf("load %s on the other node: %q, %v", k, got, err)
		}
	}
	if err := s.Store(ctx, "certificates/ca/vpn/vpn.crt", []byte("renewed")); err != nil {
		t.Fatal(err)
	}
	if got, _ := other.Load(ctx, "certificates/ca/vpn/vpn.crt"); string(got) != "renewed" {
		t.Errorf("overwritten value: %q", got)
	}
	for _, k := range []string{"acme", "acme/ca", "certificates/ca/vpn", "certificates/ca/vpn/vpn.key", "ab/c"} {
		if !other.Exists(ctx, k) {
			t.Errorf("%s does not exist", k)
		}
	}
	for _, k := range []string{"a", "certificates/ca/vp", "nothing"} {
		if other.Exists(ctx, k) {
			t.Errorf("%s exists", k)
		}
	}
	fi, err := other.Stat(ctx, "certificates/ca/vpn/vpn.key")
	if err != nil || !fi.IsTerminal || fi.Size != int64(len("crt key")) || fi.Modified.Before(before) || fi.Key != "certificates/ca/vpn/vpn.key" {
		t.Errorf("stat of a file: %+v, %v", fi, err)
	}
	if fi, err := other.Stat(ctx, "certificates/ca"); err != nil || fi.IsTerminal {
		t.Errorf("stat of a directory: %+v, %v", fi, err)
	}
	list := func(p string, rec bool) []string {
		t.Helper()
		l, err := other.List(ctx, p, rec)
		if err != nil {
			t.Fatalf("list %s: %v", p, err)
		}
		slices.Sort(l)
		return l
	}
	if got, want := list("certificates/ca", false), []string{"certificates/ca/vpn", "certificates/ca/vpnx"}; !slices.Equal(got, want) {
		t.Errorf("list: %v, want %v", got, want)
	}
	if got, want := list("certificates", true), []string{"certificates/ca/vpn/vpn.crt", "certificates/ca/vpn/vpn.key", "certificates/ca/vpnx/vpnx.crt"}; !slices.Equal(got, want) {
		t.Errorf("recursive list: %v, want %v", got, want)
	}
	if got, want := list("", false), []string{"ab", "acme", "certificates"}; !slices.Equal(got, want) {
		t.Errorf("list of the top: %v, want %v", got, want)
	}
	if err := s.Delete(ctx, "certificates/ca/vpn"); err != nil {
		t.Fatal(err)
	}
	if other.Exists(ctx, "certificates/ca/vpn/vpn.crt") || !other.Exists(ctx, "certificates/ca/vpnx/vpnx.crt") {
		t.Error("delete of a directory took the wrong keys")
	}
	if err := s.Delete(ctx, "certificates/ca/vpn"); err != nil {
		t.Errorf("delete of a missing key: %v", err)
	}
	if err := s.Delete(ctx, "ab/c"); err != nil || other.Exists(ctx, "ab") {
		t.Errorf("delete of a file: %v", err)
	}
}

// TestCertLocks: certmagic's lock is held across nodes: a second node
// waits until the first unlocks, TryLock fails meanwhile, and a holder
// that dies without unlocking (its connection gone, like a kill -9) lets
// go once its lease runs out.
func TestCertLocks(t *testing.T) {
	testutil.LeakCheck(t)
	c := testutil.Etcd(t, 1)
	prefix := testPrefix(t)
	a, _ := open(t, c.Endpoints(), prefix, "a")
	b, _ := open(t, c.Endpoints(), prefix, "b")
	la, lb := a.CertStorage(), b.CertStorage()
	ctx := context.Background()
	if err := la.Lock(ctx, "issue_cert_vpn"); err != nil {
		t.Fatal(err)
	}
	if ok, err := lb.TryLock(ctx, "issue_cert_vpn"); ok || err != nil {
		t.Fatalf("TryLock of a held lock: %v, %v", ok, err)
	}
	if ok, err := lb.TryLock(ctx, "issue_cert_other"); !ok || err != nil {
		t.Fatalf("TryLock of another lock: %v, %v", ok, err)
	}
	lb.Unlock(ctx, "issue_cert_other")
	var got atomic.Bool
	done := make(chan error, 1)
	go func() {
		err := lb.Lock(ctx, "issue_cert_vpn")
		got.Store(true)
		done <- err
	}()
	time.Sleep(300 * time.Millisecond)
	if got.Load() {
		t.Fatal("b took the lock a holds")
	}
	if err := la.Unlock(ctx, "issue_cert_vpn"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("b did not get the lock a let go")
	}
	// b dies holding it: its client goes, its lease lapses, a gets it.
	short := etcdstore.NewCertStorage(b.Client(), prefix, 2)
	lb.Unlock(ctx, "issue_cert_vpn")
	if err := short.Lock(ctx, "issue_cert_vpn"); err != nil {
		t.Fatal(err)
	}
	b.Close()
	lctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := la.Lock(lctx, "issue_cert_vpn"); err != nil {
		t.Fatalf("the lock of a dead holder never came free: %v", err)
	}
	la.Unlock(ctx, "issue_cert_vpn")
	ctx2, cancel2 := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel2()
	if err := la.Lock(ctx2, "issue_cert_vpn"); err != nil {
		t.Fatalf("relock: %v", err)
	}
}
