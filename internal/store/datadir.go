package store

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Dir is a directory tariq keeps private files in (the data directory, or
// one below it), opened once so that every file in it is reached relative
// to that descriptor and never through a symbolic link.
//
// The service user (systemd User=tariq) owns the data directory, and root
// runs CLI commands that edit it (`tariq turn credentials`, `tariq peer
// add` with no daemon running). Whatever the service user plants there
// must never steer root onto another file (issue 9): every file is opened
// with O_NOFOLLOW and checked (a regular file with one link, owned by root
// or the directory's owner, writable by its owner alone); new files are
// created with O_EXCL, and only a file this process just created is ever
// given to the directory's owner. A directory, or a file in it, that
// others may write is refused with one line saying what to fix.
type Dir struct {
	f    *os.File
	path string
	what string // "data directory" or "directory", for messages
	// uid and gid own the data directory: the service user when root runs
	// the CLI. Files root creates in it are given to them, so the daemon
	// can still read them.
	uid, gid uint32
	checked  bool // false for WriteFile's directories outside the data directory
}

// OpenDir opens the data directory at path (it must exist) and checks it:
// a directory, writable by its owner alone, owned by root or by the user
// running tariq (root may use a directory the service user owns).
func OpenDir(path string) (*Dir, error) {
	d, err := openDir(path)
	if err != nil {
		return nil, err
	}
	d.what, d.checked = "data directory", true
	var st unix.Stat_t
	if err := unix.Fstat(d.fd(), &st); err != nil {
		d.Close()
		return nil, fmt.Errorf("data directory %s: %w", path, err)
	}
	if euid := uint32(os.Geteuid()); euid != 0 && st.Uid != euid && st.Uid != 0 {
		d.Close()
		return nil, fmt.Errorf("data directory %s is owned by uid %d, not by this user (uid %d): run tariq as root or as uid %[2]d", path, st.Uid, euid)
	}
	if err := d.checkMode(path, uint32(st.Mode), "700"); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// openDir opens path as a directory; the path itself may be a link (it is
// root's configuration), what is inside is never followed.
func openDir(path string) (*Dir, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, &fs.PathError{Op: "stat", Path: path, Err: err}
	}
	return &Dir{f: os.NewFile(uintptr(fd), path), path: path, what: "directory", uid: st.Uid, gid: st.Gid}, nil
}

// Close closes the directory.
func (d *Dir) Close() error { return d.f.Close() }

func (d *Dir) fd() int { return int(d.f.Fd()) }

func (d *Dir) join(name string) string { return filepath.Join(d.path, name) }

// Sub opens the directory name inside d, creating it (0700, owned like d)
// if missing, and checks it as OpenDir checks the data directory.
func (d *Dir) Sub(name string) (*Dir, error) {
	path := d.join(name)
	err := unix.Mkdirat(d.fd(), name, 0o700)
	created := err == nil
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, &fs.PathError{Op: "mkdir", Path: path, Err: err}
	}
	fd, err := unix.Openat(d.fd(), name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, d.openError(name, err)
	}
	sub := &Dir{f: os.NewFile(uintptr(fd), path), path: path, what: "directory", uid: d.uid, gid: d.gid, checked: true}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		sub.Close()
		return nil, &fs.PathError{Op: "stat", Path: path, Err: err}
	}
	if created && st.Uid == uint32(os.Geteuid()) {
		if err := d.giveToOwner(sub.f); err != nil {
			sub.Close()
			return nil, err
		}
		if err := unix.Fstat(fd, &st); err != nil {
			sub.Close()
			return nil, &fs.PathError{Op: "stat", Path: path, Err: err}
		}
	}
	if err := d.checkOwner(path, st.Uid); err != nil {
		sub.Close()
		return nil, err
	}
	if err := sub.checkMode(path, uint32(st.Mode), "700"); err != nil {
		sub.Close()
		return nil, err
	}
	return sub, nil
}

// checkMode refuses a file or directory that group or others may write;
// fix is the mode to suggest.
func (d *Dir) checkMode(path string, mode uint32, fix string) error {
	var who []string
	if mode&unix.S_IWGRP != 0 {
		who = append(who, "group")
	}
	if mode&unix.S_IWOTH != 0 {
		who = append(who, "others")
	}
	if len(who) == 0 {
		return nil
	}
	what := path
	if mode&unix.S_IFMT == unix.S_IFDIR {
		what = d.what + " " + path
	}
	return fmt.Errorf("%s is writable by %s: chmod %s %s", what, strings.Join(who, " and "), fix, path)
}

// checkOwner refuses a file owned by neither root nor the data
// directory's owner.
func (d *Dir) checkOwner(path string, uid uint32) error {
	if uid == 0 || uid == d.uid {
		return nil
	}
	return fmt.Errorf("%s is owned by uid %d, neither root nor the data directory's owner (uid %d): chown %[3]d %[1]s", path, uid, d.uid)
}

// openError explains why opening name failed, naming a planted link as such.
func (d *Dir) openError(name string, err error) error {
	var st unix.Stat_t
	if unix.Fstatat(d.fd(), name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
		return fmt.Errorf("%s is a symbolic link: remove it (tariq never follows links in its data directory)", d.join(name))
	}
	return &fs.PathError{Op: "open", Path: d.join(name), Err: err}
}

// open opens the existing file name in d without following a link, and
// checks it.
func (d *Dir) open(name string, flag int) (*os.File, error) {
	// O_NONBLOCK: a FIFO planted under the name must not block the open;
	// it is refused below as not a regular file.
	fd, err := unix.Openat(d.fd(), name, flag|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, d.openError(name, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, &fs.PathError{Op: "stat", Path: d.join(name), Err: err}
	}
	if d.checked {
		if err := d.checkFile(d.join(name), &st); err != nil {
			unix.Close(fd)
			return nil, err
		}
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), d.join(name)), nil
}

// checkFile refuses what is not a private regular file of tariq's.
func (d *Dir) checkFile(path string, st *unix.Stat_t) error {
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return fmt.Errorf("%s is not a regular file: remove it", path)
	case st.Nlink > 1:
		// A hard link to a file elsewhere (fs.protected_hardlinks=0) would
		// be read, or locked, as tariq's own.
		return fmt.Errorf("%s has %d hard links: make it a file of its own (cp %[1]s %[1]s.new && mv %[1]s.new %[1]s)", path, st.Nlink)
	}
	if err := d.checkOwner(path, st.Uid); err != nil {
		return err
	}
	return d.checkMode(path, uint32(st.Mode), "600")
}

// openOrCreate opens name in d (see open), creating it empty with mode
// 0600, given to the directory's owner, if it does not exist.
func (d *Dir) openOrCreate(name string, flag int) (*os.File, error) {
	for range 3 {
		fd, err := unix.Openat(d.fd(), name, flag|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err == nil {
			f := os.NewFile(uintptr(fd), d.join(name))
			if err := d.giveToOwner(f); err != nil {
				f.Close()
				return nil, err
			}
			return f, nil
		}
		if !errors.Is(err, unix.EEXIST) {
			return nil, d.openError(name, err)
		}
		f, err := d.open(name, flag)
		if !errors.Is(err, fs.ErrNotExist) {
			return f, err
		}
		// Removed between the two opens: try again.
	}
	return nil, fmt.Errorf("opening %s: it keeps disappearing", d.join(name))
}

// giveToOwner gives f, which this process has just created, to the
// directory's owner when running as root, so a root CLI editing the store
// of a daemon that runs as its own user leaves files that daemon can read.
// It changes the descriptor's file, never a path that could have been
// swapped meanwhile.
func (d *Dir) giveToOwner(f *os.File) error {
	if os.Geteuid() != 0 || d.uid == 0 {
		return nil
	}
	return f.Chown(int(d.uid), int(d.gid))
}

// ReadFile returns the content of the file name in d.
func (d *Dir) ReadFile(name string) ([]byte, error) {
	f, err := d.open(name, unix.O_RDONLY)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// TempName returns a fresh name for a temporary file that will be renamed
// to name: ".NAME.tmp-RANDOM", hidden, and recognised by IsTemp.
func TempName(name string) string {
	return "." + name + ".tmp-" + strconv.FormatUint(rand.Uint64(), 36)
}

// IsTemp reports whether name is a temporary file's (see TempName).
func IsTemp(name string) bool { return strings.HasPrefix(name, ".") && strings.Contains(name, ".tmp-") }

// WriteFile writes data to the file name in d atomically: a reader, or a
// restart after a crash or kill -9 at any instant, sees either the old file
// or the new one, never a torn one. It writes a temporary file created in d
// with O_EXCL|O_NOFOLLOW (so nothing planted under its name is written
// through), fsyncs it, renames it over name within d and fsyncs d
// (tailscale atomicfile). A link planted under name is replaced, never
// followed.
func (d *Dir) WriteFile(name string, data []byte, perm os.FileMode) (err error) {
	var tmp string
	var fd int
	for range 100 {
		tmp = TempName(name)
		fd, err = unix.Openat(d.fd(), tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, uint32(perm.Perm()))
		if !errors.Is(err, unix.EEXIST) {
			break
		}
	}
	if err != nil {
		return &fs.PathError{Op: "create", Path: d.join(tmp), Err: err}
	}
	f := os.NewFile(uintptr(fd), d.join(tmp))
	defer func() {
		if err != nil {
			f.Close()
			unix.Unlinkat(d.fd(), tmp, 0)
		}
	}()
	if err := f.Chmod(perm); err != nil { // the umask applied at create
		return err
	}
	if err := d.giveToOwner(f); err != nil {
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
	if err := unix.Renameat(d.fd(), tmp, d.fd(), name); err != nil {
		return &os.LinkError{Op: "rename", Old: d.join(tmp), New: d.join(name), Err: err}
	}
	if err := d.f.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", d.path, err)
	}
	return nil
}

// RemoveTemp removes the temporary files an interrupted WriteFile left in
// d (a kill -9 between create and rename leaves one, holding whatever was
// being written: private keys), links planted under such names included,
// and returns their names. It unlinks names, never following a link. The
// caller must know that no WriteFile into d runs meanwhile.
func (d *Dir) RemoveTemp() ([]string, error) {
	fd, err := unix.Openat(d.fd(), ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: d.path, Err: err}
	}
	list := os.NewFile(uintptr(fd), d.path)
	entries, err := list.ReadDir(-1)
	list.Close()
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, e := range entries {
		if !IsTemp(e.Name()) || e.IsDir() {
			continue
		}
		if err := unix.Unlinkat(d.fd(), e.Name(), 0); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, &fs.PathError{Op: "remove", Path: d.join(e.Name()), Err: err})
			continue
		}
		removed = append(removed, e.Name())
	}
	return removed, errors.Join(errs...)
}
