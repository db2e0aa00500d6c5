package members

import "errors"

// Sentinels callers branch on. Each is wrapped with what and where, as in
// `peer "mom": already exists`.
var (
	// ErrPeerExists means a device with that name already exists.
	ErrPeerExists = errors.New("already exists")
	// ErrPeerNotFound means no device or member has that name.
	ErrPeerNotFound = errors.New("no such peer")
	// ErrPoolExhausted means the address pool has no address left to give.
	ErrPoolExhausted = errors.New("address pool exhausted")
	// ErrKeyInUse means another device already has that public key.
	ErrKeyInUse = errors.New("already in use")
	// ErrBadName means a name is not 1-32 letters, digits, '-', '_' or '.',
	// starting with a letter or digit.
	ErrBadName = errors.New("must be 1-32 letters, digits, '-', '_' or '.', starting with a letter or digit")
	// ErrBadPort means a device's UDP port is not one tariq listens on.
	ErrBadPort = errors.New("is not a WireGuard port of this server")
	// ErrObfuscationOff means a device wants the obfuscated (AmneziaWG)
	// form while vpn.obfuscation.enabled is false.
	ErrObfuscationOff = errors.New("the obfuscated listener is off (vpn.obfuscation.enabled)")
	// ErrBadInvite is an invite that cannot be made.
	ErrBadInvite = errors.New("bad invite request")

	// The outcomes of looking up an invite token.
	ErrInviteUnknown = errors.New("no such invite")
	ErrInviteUsed    = errors.New("invite already used")
	ErrInviteExpired = errors.New("invite expired")
	// ErrFormNotOffered is a reveal asking for a config form the server
	// does not offer (it burns nothing then).
	ErrFormNotOffered = errors.New("this server does not offer that form of the settings")
)
