package store

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// WriteFile writes data to path atomically: a reader, or a restart after a
// crash or kill -9 at any instant, sees either the old file or the new one,
// never a torn one. It writes a temporary file in the same directory, fsyncs
// it, renames it over path and fsyncs the directory (tailscale atomicfile).
func WriteFile(path string, data []byte, perm os.FileMode) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(perm); err != nil {
		return err
	}
	if err := matchOwner(f, dir); err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	defer d.Close()
	return d.Sync()
}

// matchOwner gives f its directory's owner when running as root, so a root
// CLI editing the store of a daemon that runs as its own user (systemd
// User=tariq) leaves files that daemon can still read.
func matchOwner(f *os.File, dir string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || st.Uid == 0 {
		return nil
	}
	return f.Chown(int(st.Uid), int(st.Gid))
}
