package store

import (
	"errors"
	"fmt"
)

// ErrNewerState means the state was written by a newer tariq than this one.
var ErrNewerState = errors.New("state was written by a newer tariq")

// ErrBadState means the state file exists but is not a state tariq wrote:
// not JSON, not an object, without a version, or lacking material that the
// rest of it was generated with (see State.problem). tariq refuses it
// rather than start afresh with new keys, which would break every
// device's and app's configuration, and never overwrites it.
var ErrBadState = errors.New("damaged state file")

// badStateError names the state file and what is wrong with it, on one line.
type badStateError struct {
	path, problem string
	// writing: a change would have left the state so (a bug), rather than
	// the file on disk being so.
	writing bool
}

func (e *badStateError) Error() string {
	if e.writing {
		return fmt.Sprintf("not writing state file %s: it then %s (a bug in tariq: please report it)", e.path, e.problem)
	}
	return fmt.Sprintf("state file %s %s: restore it from a backup, or move it aside to start afresh with new keys (every device and app must then be set up again)", e.path, e.problem)
}

func (e *badStateError) Is(target error) bool { return target == ErrBadState }
