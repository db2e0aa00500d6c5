package store

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/tariq-vpn/tariq/internal/testutil"
)

// canary is a file outside the data directory that a planted link points
// at; nothing tariq does may change it.
type canary struct {
	path string
	data []byte
	fi   os.FileInfo
}

func newCanary(t *testing.T) *canary {
	t.Helper()
	path := filepath.Join(t.TempDir(), "canary")
	data := []byte(`{"version":2,"relay":{"secret":"canary"}}` + "\n")
	if err := os.WriteFile(path, data, 0o640); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return &canary{path, data, fi}
}

// intact fails t if the canary's content, mode or owner changed.
func (c *canary) intact(t *testing.T) {
	t.Helper()
	fi, err := os.Stat(c.path)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(c.path)
	was, now := c.fi.Sys().(*syscall.Stat_t), fi.Sys().(*syscall.Stat_t)
	if !bytes.Equal(b, c.data) || fi.Mode() != c.fi.Mode() || was.Uid != now.Uid || was.Gid != now.Gid {
		t.Errorf("canary changed: mode %v uid %d gid %d %q (was %v %d %d %q)", fi.Mode(), now.Uid, now.Gid, b, c.fi.Mode(), was.Uid, was.Gid, c.data)
	}
}

// TestLinksInDataDirNeverFollowed: a symbolic or hard link planted in the
// data directory under any name tariq uses is refused, with one line naming
// it, by reads and writes alike; the file it points at is untouched.
func TestLinksInDataDirNeverFollowed(t *testing.T) {
	for _, name := range []string{lockFile, stateFile} {
		for _, kind := range []string{"symlink", "hard link"} {
			t.Run(name+" "+kind, func(t *testing.T) {
				c := newCanary(t)
				s, err := Open(filepath.Join(filepath.Dir(c.path), "data"))
				if err != nil {
					t.Fatal(err)
				}
				link := s.Path(name)
				want := "is a symbolic link"
				if kind == "symlink" {
					err = os.Symlink(c.path, link)
				} else {
					err, want = os.Link(c.path, link), "has 2 hard links"
				}
				if err != nil {
					t.Fatal(err)
				}
				_, errLoad := s.Load()
				_, errSecret := s.RelaySecret()
				_, errUpdate := s.Update(func(st *State) error { st.Relay.Secret = "mine"; return nil })
				for _, err := range []error{errLoad, errSecret, errUpdate} {
					if err == nil || !strings.Contains(err.Error(), link+" "+want) || strings.Contains(err.Error(), "\n") {
						t.Errorf("got %v, want one line saying %s %s", err, link, want)
					}
				}
				c.intact(t)
			})
		}
	}
}

// TestUnsafeDataDirRefused: a data directory, or a file in it, that others
// may write is refused with one line saying what to fix.
func TestUnsafeDataDirRefused(t *testing.T) {
	// put writes name in dir with exactly mode (WriteFile honours the umask).
	put := func(dir, name, data string, mode os.FileMode) error {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), mode); err != nil {
			return err
		}
		return os.Chmod(p, mode)
	}
	for _, tc := range []struct {
		name  string
		setup func(dir string) error
		want  string // %s is the data directory
	}{
		{"dir writable by group", func(dir string) error { return os.Chmod(dir, 0o770) }, "data directory %s is writable by group: chmod 700 %s"},
		{"dir writable by others", func(dir string) error { return os.Chmod(dir, 0o707) }, "data directory %s is writable by others: chmod 700 %s"},
		{"state writable by others", func(dir string) error {
			return put(dir, stateFile, `{"version":2,"relay":{"secret":"ab"}}`, 0o606)
		}, "%s/state.json is writable by others: chmod 600 %s/state.json"},
		{"lock writable by group", func(dir string) error { return put(dir, lockFile, "", 0o660) },
			"%s/state.lock is writable by group: chmod 600 %s/state.lock"},
		{"lock is a directory", func(dir string) error { return os.Mkdir(filepath.Join(dir, lockFile), 0o700) },
			"%s/state.lock is not a regular file"},
		{"lock is a FIFO", func(dir string) error { return syscall.Mkfifo(filepath.Join(dir, lockFile), 0o600) },
			"%s/state.lock is not a regular file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := tc.setup(dir); err != nil {
				t.Fatal(err)
			}
			want := strings.ReplaceAll(tc.want, "%s", dir)
			s, err := Open(dir)
			if err == nil {
				_, err = s.Load()
			}
			if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("got %v, want one line with %q", err, want)
			}
		})
	}
}

// TestForeignOwnerRefused: as root, a file in the data directory owned by
// neither root nor the directory's owner (the service user) is refused,
// and a state lock the root CLI creates goes to the service user so the
// daemon can open it.
func TestForeignOwnerRefused(t *testing.T) {
	testutil.RequireRoot(t) // to own files as other users
	dir := filepath.Join(t.TempDir(), "data")
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	const service, stranger = 65534, 65533
	if err := os.Chown(dir, service, service); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RelaySecret(); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{stateFile, lockFile} {
		fi, err := os.Stat(s.Path(n))
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != service || st.Gid != service {
			t.Errorf("%s owned by %d:%d, want the service user's %d", n, st.Uid, st.Gid, service)
		}
	}
	os.Chown(s.Path(stateFile), stranger, stranger)
	_, err = s.Load()
	want := s.Path(stateFile) + " is owned by uid 65533, neither root nor the data directory's owner (uid 65534): chown 65534 " + s.Path(stateFile)
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("got %v, want %q", err, want)
	}
}
