package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tariq-vpn/tariq/internal/testutil"
)

// concurrentChildEnv marks a test process that TestE2ETwoRunsAtOnce
// started, so it does not start two more. Not TARIQ_*: the config refuses
// unknown ones.
const concurrentChildEnv = "TQ_E2E_CONCURRENT_CHILD"

// concurrentTests are the end-to-end tests run twice at once: stock
// WireGuard and AmneziaWG clients (wireguard-go, amneziawg-go, wg) with
// fixed interface names, and the README's daemon on its defaults
// (interface tariq0, the default ports).
var concurrentTests = []string{"TestObfuscatedWireGuardEndToEnd", "TestREADMETryIt"}

// TestE2ETwoRunsAtOnce: two runs of the end-to-end tests at once on one
// host both pass. Every process of a lab runs in namespaces of the test's
// own, including the socket directories (/var/run/wireguard,
// /var/run/amneziawg) that wireguard-go, amneziawg-go, wg(8) and tariq
// share by fixed path, so two labs with interfaces of the same name do not
// take each other's sockets. The runs are two processes of this test
// binary, each with -test.run naming the tests.
func TestE2ETwoRunsAtOnce(t *testing.T) {
	if os.Getenv(concurrentChildEnv) != "" {
		t.Skip("a run TestE2ETwoRunsAtOnce started")
	}
	testutil.RequireRoot(t)
	for _, b := range []string{"wg", "ip", "nft", "busybox", "curl", "turnutils_stunclient", "timeout"} {
		testutil.RequireBinary(t, b)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// Build the shared client binaries once first, so the runs start
	// together rather than one after the other's build.
	testutil.BuildWireGuardGo(t)
	testutil.BuildAmneziaWGGo(t)

	const timeout = 3 * time.Minute
	ctx, cancel := context.WithTimeout(context.Background(), timeout+30*time.Second)
	defer cancel()
	outs := make([]bytes.Buffer, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i := range 2 {
		cmd := exec.CommandContext(ctx, exe, "-test.run=^("+strings.Join(concurrentTests, "|")+")$",
			"-test.count=1", "-test.v=true", "-test.timeout="+timeout.String())
		cmd.Env = append(os.Environ(), concurrentChildEnv+"=1")
		cmd.Stdout, cmd.Stderr = &outs[i], &outs[i]
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		wg.Go(func() { errs[i] = cmd.Wait() })
	}
	wg.Wait()
	for i := range 2 {
		out := outs[i].String()
		failed := errs[i] != nil
		for _, name := range concurrentTests {
			if !strings.Contains(out, "--- PASS: "+name+" ") {
				failed = true
			}
		}
		if failed {
			t.Errorf("run %d of 2 (%v):\n%s", i+1, errs[i], out)
		}
	}
}
