package daemon

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestDependencyRules enforces the package graph ARCHITECTURE.md sets out
// (as tailscale's cmd/tailscaled/deps_test.go does): config imports nothing
// of ours; vpn and relay never import each other, the daemon or members;
// only the daemon imports vpn and relay.
func TestDependencyRules(t *testing.T) {
	const mod = "github.com/tariq-vpn/tariq"
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, mod+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	checked := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg, imports := strings.TrimPrefix(fields[0], mod), fields[1:]
		for _, imp := range imports {
			if !strings.HasPrefix(imp, mod) {
				continue
			}
			checked++
			dep := strings.TrimPrefix(imp, mod)
			switch {
			case pkg == "/config":
				t.Errorf("config imports %s; it must import nothing of ours", dep)
			case (dep == "/vpn" || dep == "/relay") && pkg != "/internal/daemon":
				t.Errorf("%s imports %s; only internal/daemon may", pkg, dep)
			case (pkg == "/vpn" || pkg == "/relay") && (strings.HasPrefix(dep, "/internal/daemon") || dep == "/internal/members"):
				t.Errorf("%s imports %s", pkg, dep)
			}
		}
	}
	if checked == 0 {
		t.Fatal("no internal imports seen: the go list output was not parsed")
	}
}

// TestBuildsOffLinux: Linux is the product, but every package builds on
// any OS, Linux-only code sitting in _linux.go files beside _other.go ones
// that return a clear error (ARCHITECTURE.md).
func TestBuildsOffLinux(t *testing.T) {
	if testing.Short() {
		t.Skip("cross-compiles the module")
	}
	for _, goos := range []string{"darwin", "freebsd"} {
		cmd := exec.Command("go", "build", "-o", os.DevNull, "./...")
		cmd.Dir = "../.."
		cmd.Env = append(os.Environ(), "GOOS="+goos, "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("GOOS=%s go build ./...: %v\n%s", goos, err, out)
		}
	}
}
