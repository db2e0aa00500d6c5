// Package testutil holds what tariq's tests share: skipping (or, under CI,
// failing) when root or an external program is missing, and a goroutine
// leak check.
package testutil

import (
	"os"
	"os/exec"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// InCI reports whether the tests run in CI (CI=true), where a missing
// prerequisite is a failure rather than a reason to skip.
func InCI() bool { return os.Getenv("CI") == "true" }

// skipOrFail skips t with reason outside CI and fails it in CI, so CI can
// never pass by skipping.
func skipOrFail(t testing.TB, reason string) {
	t.Helper()
	if InCI() {
		t.Fatalf("CI=true but %s", reason)
	}
	t.Skip(reason)
}

// RequireRoot skips (fails under CI) unless the test runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		skipOrFail(t, "this test needs root (network namespaces, TUN, nftables)")
	}
}

// RequireBinary returns the path of the named program, skipping (failing
// under CI) when it is not installed.
func RequireBinary(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		skipOrFail(t, name+" is not installed (.ci/run installs it)")
	}
	return p
}

// LeakCheck fails t if goroutines started during the test outlive it.
// Call it first, so its cleanup runs last.
func LeakCheck(t testing.TB, ignore ...goleak.Option) {
	t.Helper()
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		opts := append([]goleak.Option{before}, ignore...)
		if err := goleak.Find(opts...); err != nil {
			t.Error(err)
		}
	})
}

// WaitFor polls cond every 20 ms until it holds, failing t with what if it
// does not within timeout.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
