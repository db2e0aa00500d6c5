package config

import "fmt"

// FieldError is one problem with one config key.
type FieldError struct {
	Key string // key path, like relay.relay_ports
	Msg string // what is wrong, like `"70000-1" is not a port range`
}

func (e *FieldError) Error() string { return e.Key + ": " + e.Msg }

// FileError is a problem with the config file itself: it cannot be read,
// or it is not YAML of the right shape. Line is 1-based; 0 when the
// problem has no line.
type FileError struct {
	File string
	Line int
	Msg  string
	Err  error // the cause, for errors.Is (fs.ErrPermission, say)
}

func (e *FileError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("config %s: line %d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("config %s: %s", e.File, e.Msg)
}

func (e *FileError) Unwrap() error { return e.Err }
