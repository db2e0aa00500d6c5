package vpn

import (
	"errors"
	"runtime"

	"github.com/tariq-vpn/tariq/internal/wgconf"
)

// Sentinels callers branch on. Each is wrapped with what and where, as in
// `peer "mom": public key: must be 32 bytes base64`.
var (
	// ErrPeerExists means a peer with that name already exists.
	ErrPeerExists = errors.New("already exists")
	// ErrPeerNotFound means no peer has that name.
	ErrPeerNotFound = errors.New("no such peer")
	// ErrPoolExhausted means the address pool has no address left to give.
	ErrPoolExhausted = errors.New("address pool exhausted")
	// ErrBadKey means a WireGuard key is not 32 bytes of standard base64
	// (or is unusable, like all zeros or the server's own key).
	ErrBadKey = wgconf.ErrBadKey
	// ErrKeyInUse means another peer already has that public key.
	ErrKeyInUse = errors.New("already in use")
	// ErrBadName means a peer name is not 1-32 letters, digits, '-', '_' or
	// '.', starting with a letter or digit.
	ErrBadName = errors.New("must be 1-32 letters, digits, '-', '_' or '.', starting with a letter or digit")
	// ErrNotRunning means a live operation was asked of a Service that is
	// not open (before Open, or after Close).
	ErrNotRunning = errors.New("vpn is not running")
	// ErrNoPublicHost means a client config cannot be exported because
	// server.public_host is empty.
	ErrNoPublicHost = errors.New("server.public_host is empty: clients need a name or address to dial")
	// ErrBadPort means a peer's UDP port is not one tariq listens on.
	ErrBadPort = errors.New("is not a WireGuard port of this server")
	// ErrObfuscationOff means a peer wants the obfuscated (AmneziaWG) form
	// while vpn.obfuscation.enabled is false.
	ErrObfuscationOff = errors.New("the obfuscated listener is off (vpn.obfuscation.enabled)")
	// ErrNotSupported means the operation needs Linux (kernel TUN, netlink,
	// nftables, the UAPI socket).
	ErrNotSupported = errors.New("not supported on " + runtime.GOOS)
)
