package testutil

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

// inNetNSEnv names the test a re-executed test binary is to run inside its
// namespace.
const inNetNSEnv = "TESTUTIL_IN_NETNS" // not TARIQ_*: config.Load refuses unknown ones

// InNetNS runs the calling test in a network namespace of its own, as a
// whole process: NetNS.Do moves one thread, but an in-process daemon opens
// sockets from many goroutines (certmagic's ACME client, pion's relayed
// sockets), which must all land in the same namespace as its TUN device.
//
// In the test process InNetNS creates a NetNS, runs this test binary there
// with -test.run selecting t alone (killed by PID after timeout), logs the
// child's output, passes, skips or fails t as the child did, and returns
// false: the caller returns at once. In the child it returns true and the
// caller runs the test body, with loopback up and nothing else configured.
// It needs root and iproute2.
func InNetNS(t *testing.T, timeout time.Duration) bool {
	t.Helper()
	if os.Getenv(inNetNSEnv) == t.Name() {
		return true
	}
	ns := NewNetNS(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(t.Name(), "/")
	for i, p := range parts {
		parts[i] = "^" + regexp.QuoteMeta(p) + "$"
	}
	args := []string{exe, "-test.run=" + strings.Join(parts, "/"), "-test.count=1", "-test.v=true",
		"-test.timeout=" + timeout.String()}
	if testing.Short() {
		args = append(args, "-test.short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout+10*time.Second)
	defer cancel()
	cmd := ns.Command(args...) // ip netns exec execs in place: the PID is the child's
	cmd.Env = append(os.Environ(), inNetNSEnv+"="+t.Name())
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting the test in %s: %v", ns.Name, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-ctx.Done():
		cmd.Process.Kill()
		err = fmt.Errorf("killed after %v: %w", timeout+10*time.Second, <-done)
	}
	t.Logf("in namespace %s (pid %d):\n%s", ns.Name, cmd.Process.Pid, out.String())
	switch {
	case err == nil && strings.Contains(out.String(), "--- SKIP: "+t.Name()+" "):
		t.Skip("skipped in the namespace (see the log above)")
	case err == nil && strings.Contains(out.String(), "--- PASS: "+t.Name()+" "):
	default:
		t.Fatalf("the test failed in namespace %s: %v", ns.Name, err)
	}
	return false
}
