package vpn

import (
	"errors"
	"runtime"

	"github.com/tariq-vpn/tariq/internal/wgconf"
)

// Sentinels callers branch on. Each is wrapped with what and where, as in
// `vpn: peer "mom": public key already in use by peer "dad"`.
var (
	// ErrBadKey means a WireGuard key is not 32 bytes of standard base64
	// (or is unusable, like all zeros).
	ErrBadKey = wgconf.ErrBadKey
	// ErrKeyInUse means SetPeers was given one public key twice.
	ErrKeyInUse = errors.New("already in use")
	// ErrNotRunning means a live operation was asked of a Service that is
	// not open (before Open, or after Close).
	ErrNotRunning = errors.New("vpn is not running")
	// ErrNotSupported means the operation needs Linux (kernel TUN, netlink,
	// nftables, the UAPI socket).
	ErrNotSupported = errors.New("not supported on " + runtime.GOOS)
)
