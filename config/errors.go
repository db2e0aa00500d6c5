package config

// FieldError is one problem with one config key.
type FieldError struct {
	Key string // key path, like relay.relay_ports
	Msg string // what is wrong, like `"70000-1" is not a port range`
}

func (e *FieldError) Error() string { return e.Key + ": " + e.Msg }
