package store

import "errors"

// ErrNewerState means the state was written by a newer tariq than this one.
var ErrNewerState = errors.New("state was written by a newer tariq")
