package store

import (
	"os"
	"path/filepath"
)

// WriteFile writes data to path atomically (see Dir.WriteFile): the
// temporary file is created with O_EXCL|O_NOFOLLOW in path's directory and
// renamed within it. For files outside the data directory (the config
// file, a QR code PNG); the data directory's files go through Dir, which
// also checks what it finds. Run as root, the new file goes to the
// directory's owner, as in the data directory.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	d, err := openDir(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.WriteFile(base, data, perm)
}
