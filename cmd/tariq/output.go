package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// errOutputExists means an --output or --png file is already there and
// --force was not given.
var errOutputExists = errors.New("exists; keeping it (use --force to replace it)")

// checkOutput refuses, before anything changes, to write over what is at
// path (a file, a symlink, anything) unless force.
func checkOutput(path string, force bool) error {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return err
	case fi.IsDir():
		return usageErr(fmt.Errorf("%s is a directory", path))
	case !force:
		return usageErr(fmt.Errorf("%s %w", path, errOutputExists))
	}
	return nil
}

// writePrivate writes data to path for its owner alone (mode 0600),
// atomically: a temporary file in the same directory, then link(2) to
// path, which fails if anything is there and never follows a symlink; or,
// with force, rename(2) over it, which replaces a symlink rather than
// writing through it. A replaced file's mode is never widened: it keeps
// the narrower of its own and 0600. The file belongs to whoever runs
// tariq; it is never handed to the directory's owner.
func writePrivate(path string, data []byte, force bool) (err error) {
	if err := checkOutput(path, force); err != nil {
		return err
	}
	mode := fs.FileMode(0o600)
	if fi, err := os.Lstat(path); err == nil && fi.Mode().IsRegular() {
		mode &= fi.Mode().Perm()
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*") // 0600, O_EXCL
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		f.Close()
		os.Remove(tmp) // after link, the data stays under path
	}()
	if err := f.Chmod(mode); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if force {
		err = os.Rename(tmp, path)
	} else {
		err = os.Link(tmp, path)
	}
	if errors.Is(err, fs.ErrExist) {
		return usageErr(fmt.Errorf("%s %w", path, errOutputExists))
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
