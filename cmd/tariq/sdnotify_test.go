package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestServeNotifiesSystemd runs the binary as systemd's Type=notify would:
// with NOTIFY_SOCKET set, it must say READY=1 only once it answers (every
// listener is up), RELOADING=1 (with MONOTONIC_USEC) then READY=1 around a
// SIGHUP, and STOPPING=1 on SIGTERM, then exit 0.
func TestServeNotifiesSystemd(t *testing.T) {
	bin, err := buildTariq()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	sockPath := filepath.Join(dir, "notify.sock")
	sock, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sockPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	msgs := make(chan string, 16)
	go func() {
		b := make([]byte, 4096)
		for {
			n, _, err := sock.ReadFromUnix(b)
			if err != nil {
				close(msgs)
				return
			}
			msgs <- string(b[:n])
		}
	}()
	next := func(want string) string {
		t.Helper()
		select {
		case m, ok := <-msgs:
			if !ok || !strings.Contains(m, want) {
				t.Fatalf("notification %q, want one with %q", m, want)
			}
			return m
		case <-time.After(15 * time.Second):
			t.Fatalf("no %s notification", want)
		}
		return ""
	}

	cmd := exec.Command(bin, append([]string{"serve"}, loopbackArgs(dir)...)...)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sockPath)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })

	next("READY=1")
	// READY means serving: the admin socket answers at once.
	if code, _, errOut := tariq(t, append([]string{"status"}, loopbackArgs(dir)...)...); code != 0 {
		t.Errorf("status right after READY=1: %s", errOut)
	}
	cmd.Process.Signal(syscall.SIGHUP)
	if m := next("RELOADING=1"); !strings.Contains(m, "MONOTONIC_USEC=") {
		t.Errorf("RELOADING=1 without MONOTONIC_USEC: %q", m)
	}
	next("READY=1")
	cmd.Process.Signal(syscall.SIGTERM)
	next("STOPPING=1")
	if err := cmd.Wait(); err != nil {
		t.Errorf("exit after SIGTERM: %v", err)
	}
}
