package relay

import "errors"

var (
	// ErrFamilyUnsupported means the relay has no address of the requested
	// family to relay from (answered with 440 Address Family not Supported).
	ErrFamilyUnsupported = errors.New("no relay address of that family")
	// ErrTCPRelayDisabled means RFC 6062 TCP allocations are switched off
	// (answered with 442 Unsupported Transport Protocol).
	ErrTCPRelayDisabled = errors.New("tcp relaying is disabled (relay.tcp_relay)")
	// ErrNoRelayPort means every try at a free port in relay.relay_ports failed.
	ErrNoRelayPort = errors.New("no free port in relay.relay_ports")
)
