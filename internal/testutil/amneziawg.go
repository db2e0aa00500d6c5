package testutil

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var awgGo struct {
	once sync.Once
	path string
	err  error
}

// BuildAmneziaWGGo builds amneziawg-go (github.com/amnezia-vpn/amneziawg-go,
// the engine of the AmneziaWG apps; go.mod pins v0.2.12 as a tool) once per
// test binary and returns the binary's path: an independent AmneziaWG
// client for end-to-end tests. It is configured through its UAPI socket,
// NetNS.AmneziaWGSocket, with AmneziaWGSet.
func BuildAmneziaWGGo(t testing.TB) string {
	t.Helper()
	goBin := RequireBinary(t, "go")
	awgGo.once.Do(func() {
		dir := filepath.Join(os.TempDir(), fmt.Sprintf("tariq-test-bin-%d", os.Getuid()))
		if err := os.MkdirAll(dir, 0o700); err != nil {
			awgGo.err = err
			return
		}
		awgGo.path = filepath.Join(dir, "amneziawg-go")
		tmp := fmt.Sprintf("%s.%d", awgGo.path, os.Getpid())
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, goBin, "build", "-o", tmp, "github.com/amnezia-vpn/amneziawg-go")
		if out, err := cmd.CombinedOutput(); err != nil {
			awgGo.err = fmt.Errorf("go build github.com/amnezia-vpn/amneziawg-go: %w: %s", err, out)
			return
		}
		awgGo.err = os.Rename(tmp, awgGo.path)
	})
	if awgGo.err != nil {
		t.Fatal(awgGo.err)
	}
	return awgGo.path
}

// AmneziaWGSet sends a UAPI set operation (the text after "set=1", lines
// of key=value) to the amneziawg-go listening on sock (NetNS.AmneziaWGSocket),
// as awg(8) would, and fails the test unless it answers errno=0.
func AmneziaWGSet(t testing.TB, sock, set string) {
	t.Helper()
	c, err := net.DialTimeout("unix", sock, 5*time.Second)
	if err != nil {
		t.Fatalf("amneziawg-go UAPI: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(c, "set=1\n%s\n", strings.TrimRight(set, "\n")+"\n"); err != nil {
		t.Fatalf("amneziawg-go UAPI: %v", err)
	}
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("amneziawg-go UAPI: %v", err)
	}
	if strings.TrimSpace(line) != "errno=0" {
		t.Fatalf("amneziawg-go refused the configuration: %s", strings.TrimSpace(line))
	}
}

// AmneziaWGGet returns the UAPI get dump of the amneziawg-go listening on
// sock.
func AmneziaWGGet(t testing.TB, sock string) string {
	t.Helper()
	c, err := net.DialTimeout("unix", sock, 5*time.Second)
	if err != nil {
		t.Fatalf("amneziawg-go UAPI: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprint(c, "get=1\n\n")
	var b strings.Builder
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		if sc.Text() == "" {
			break
		}
		b.WriteString(sc.Text() + "\n")
	}
	return b.String()
}
