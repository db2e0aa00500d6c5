// Package store keeps tariq's persistent state (generated keys and secrets,
// peers, invites) in one versioned JSON file under the data directory.
//
// Every change goes through Update, which holds an exclusive lock across
// processes (the daemon and a CLI editing the store while no daemon runs),
// reads the current state, applies the change and writes it back atomically:
// a crash or kill -9 at any point leaves either the old state or the new one.
package store

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tariq-vpn/tariq/config"
)

// Version is the state format this binary writes. A newer binary reads
// every older version (see migrate); an older binary refuses a newer file
// rather than silently dropping fields it does not know on its next write.
//
// Formats:
//
//	1  keys, REST secret, peers, invites
//	2  peers may use an extra port or the AmneziaWG form (Peer.Port,
//	   Peer.Obfuscated); the obfuscation parameters (VPNState.AmneziaWG)
const Version = 2

const (
	stateFile = "state.json"
	lockFile  = "state.lock"
)

// State is everything tariq keeps between runs.
type State struct {
	Version int        `json:"version"`
	Relay   RelayState `json:"relay"`
	VPN     VPNState   `json:"vpn"`
	// Peers are the WireGuard devices, in the order they were added.
	Peers []Peer `json:"peers"`
	// Invites are one-time links that hand a peer its config.
	Invites []Invite `json:"invites,omitempty"`
}

// Invite is a one-time link to one peer's config. Only the token's hash is
// kept, so a leaked state file does not leak live links.
type Invite struct {
	Hash      string    `json:"hash"` // hex SHA-256 of the token
	Peer      string    `json:"peer"`
	CreatedAt time.Time `json:"created_at"`
	Expires   time.Time `json:"expires"`
	UsedAt    time.Time `json:"used_at,omitzero"`
	// SwitchedAt is when the link handed out, after its one use, the
	// AmneziaWG form of the same config: the one exception to "once",
	// for a member whose stock WireGuard handshake never reached the
	// server (internal/daemon, invites.go). An older binary of format 2
	// ignores it and drops it on its next write; that binary refuses
	// every download of a used link, so it never allows the switch, and
	// a later binary reading the link back could allow it once more at
	// most within the hour after the use, handing out nothing the link's
	// holder does not already have. So it does not change the format.
	SwitchedAt time.Time `json:"switched_at,omitzero"`
}

// VPNState is the WireGuard endpoint's generated material.
type VPNState struct {
	// PrivateKey is the server's WireGuard private key (base64), generated
	// on first start and kept, so clients survive restarts.
	PrivateKey Secret `json:"private_key,omitempty"`
	// ULA is the IPv6 /64 generated once when vpn.address has no IPv6
	// prefix (RFC 4193 random global ID).
	ULA netip.Prefix `json:"ula,omitzero"`
	// Retired are addresses of removed peers. New peers get never-used
	// addresses first; retired ones are reused, oldest first, only when the
	// pool has nothing else.
	Retired []netip.Addr `json:"retired,omitempty"`
	// AmneziaWG are the obfuscation parameters of vpn.obfuscation,
	// generated once so that configs handed out keep working.
	AmneziaWG *AmneziaWG `json:"amneziawg,omitempty"`
}

// AmneziaWG holds AmneziaWG 1.x obfuscation parameters, named as the
// AmneziaWG apps' config files and amneziawg-go's UAPI name them (Jc, Jmin,
// Jmax: junk packets sent before each handshake initiation, and their size
// range; S1, S2: random bytes before the handshake initiation and response;
// H1-H4: the message-type headers replacing WireGuard's 1-4).
type AmneziaWG struct {
	Jc   int    `json:"jc"`
	Jmin int    `json:"jmin"`
	Jmax int    `json:"jmax"`
	S1   int    `json:"s1"`
	S2   int    `json:"s2"`
	H1   uint32 `json:"h1"`
	H2   uint32 `json:"h2"`
	H3   uint32 `json:"h3"`
	H4   uint32 `json:"h4"`
}

// Peer is one WireGuard device of a family member.
type Peer struct {
	Name      string `json:"name"`
	PublicKey string `json:"public_key"`
	// PrivateKey is kept only when tariq generated the pair; a peer added
	// with --public-key made its own and the server never holds it.
	PrivateKey   Secret     `json:"private_key,omitempty"`
	PresharedKey Secret     `json:"preshared_key"`
	IPv4         netip.Addr `json:"ipv4"`
	IPv6         netip.Addr `json:"ipv6,omitzero"`
	Disabled     bool       `json:"disabled,omitempty"`
	CreatedAt    time.Time  `json:"created_at"`
	// Port is the UDP port the device dials for stock WireGuard: 0 means
	// vpn.listen_port, anything else one of vpn.extra_ports.
	Port int `json:"port,omitempty"`
	// Obfuscated says the device speaks AmneziaWG to
	// vpn.obfuscation.listen_port (Port is then 0).
	Obfuscated bool `json:"obfuscated,omitempty"`
	// Reach is the last reachability check run from the peer's invite
	// page, if any. It is diagnostics, not configuration: a format-2 binary
	// that does not know it drops it on its next write, and loses nothing
	// else, so it does not change the format version.
	Reach *Reachability `json:"reach,omitempty"`
}

// Reachability is what the invite page's check found from the member's
// own network: which of the server's paths got through (path names as
// the page reports them: wg-<port>, awg-<port>, turn-udp, turn-tcp,
// turns-<port>, udp-sustained) and what the page advised.
type Reachability struct {
	CheckedAt time.Time `json:"checked_at"`
	// Verdict is the advice: wireguard (the stock app, on Port),
	// amneziawg (the AmneziaWG app, on Port), calls (no VPN path, but
	// relayed calls work) or none.
	Verdict string   `json:"verdict"`
	Port    int      `json:"port,omitempty"`
	Reached []string `json:"reached,omitempty"`
	Failed  []string `json:"failed,omitempty"`
	// Confirmed is what the page found once the member switched the
	// connection on: "connected" (the server saw the device's handshake)
	// or "no-handshake" (none came: the network drops WireGuard's
	// handshake, which a port check cannot see, and the page handed out
	// the AmneziaWG form instead; Verdict is then amneziawg and
	// SwitchedFrom wireguard, the form the member had). The switched form
	// may connect later: "connected", SwitchedFrom kept. Empty: not
	// confirmed.
	Confirmed    string    `json:"confirmed,omitempty"`
	ConfirmedAt  time.Time `json:"confirmed_at,omitzero"`
	SwitchedFrom string    `json:"switched_from,omitempty"`
}

// Peer returns the peer named name, or nil.
func (st *State) Peer(name string) *Peer {
	for i := range st.Peers {
		if st.Peers[i].Name == name {
			return &st.Peers[i]
		}
	}
	return nil
}

// RelayState is the relay's generated material.
type RelayState struct {
	// Secret is the REST shared secret generated on first start, used when
	// relay.secrets is empty.
	Secret Secret `json:"secret,omitempty"`
}

// Secret is a generated secret; it prints redacted.
type Secret = config.Secret

// Store is the state file in one data directory.
type Store struct {
	dir string
	mu  sync.Mutex // serialises Update within this process; the flock does so across processes
}

// Open creates the data directory (0700) if needed and returns its store.
// It touches no state until Load or Update.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating data directory: %w", err)
	}
	return &Store{dir: dir}, nil
}

// Dir returns the data directory.
func (s *Store) Dir() string { return s.dir }

// Path returns the path of name inside the data directory.
func (s *Store) Path(name string) string { return filepath.Join(s.dir, name) }

// Load returns the current state, or a fresh one if none was written yet.
func (s *Store) Load() (*State, error) {
	unlock, err := s.lock(unix.LOCK_SH)
	if err != nil {
		return nil, err
	}
	defer unlock()
	return s.read()
}

// Update applies fn to the current state and saves the result atomically.
// If fn returns an error nothing is written and the error is returned as is.
func (s *Store) Update(fn func(*State) error) (*State, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	unlock, err := s.lock(unix.LOCK_EX)
	if err != nil {
		return nil, err
	}
	defer unlock()
	st, err := s.read()
	if err != nil {
		return nil, err
	}
	before, err := json.Marshal(st)
	if err != nil {
		return nil, err
	}
	if err := fn(st); err != nil {
		return nil, err
	}
	st.Version = Version
	after, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return nil, err
	}
	if compact(after) == string(before) {
		return st, nil
	}
	if err := WriteFile(s.Path(stateFile), append(after, '\n'), 0o600); err != nil {
		return nil, fmt.Errorf("writing state: %w", err)
	}
	return st, nil
}

func compact(b []byte) string {
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return ""
	}
	return buf.String()
}

func (s *Store) read() (*State, error) {
	b, err := os.ReadFile(s.Path(stateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return &State{Version: Version}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading state: %w", err)
	}
	var head struct {
		Version int `json:"version"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return nil, fmt.Errorf("reading state %s: %w", s.Path(stateFile), err)
	}
	if head.Version > Version {
		return nil, fmt.Errorf("%w (format %d, this binary knows up to %d): upgrade tariq", ErrNewerState, head.Version, Version)
	}
	st := &State{}
	if err := json.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("reading state %s: %w", s.Path(stateFile), err)
	}
	return migrate(st, head.Version)
}

// migrate upgrades a state read in format from to the current Version.
func migrate(st *State, from int) (*State, error) {
	switch from {
	case 0, 1:
		// 1 → 2 only added fields whose zero values mean what format 1 did:
		// every peer on vpn.listen_port in the stock form, no obfuscation
		// parameters yet (generated when vpn.obfuscation is first enabled).
	}
	st.Version = Version
	return st, nil
}

func (s *Store) lock(how int) (unlock func(), err error) {
	f, err := os.OpenFile(s.Path(lockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening state lock: %w", err)
	}
	if err := matchOwner(f, s.dir); err != nil {
		f.Close()
		return nil, fmt.Errorf("opening state lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), how); err != nil {
		f.Close()
		return nil, fmt.Errorf("locking state: %w", err)
	}
	return func() {
		unix.Flock(int(f.Fd()), unix.LOCK_UN)
		f.Close()
	}, nil
}

// NewSecret returns n random bytes, hex-encoded.
func NewSecret(n int) Secret {
	b := make([]byte, n)
	rand.Read(b)
	return Secret(hex.EncodeToString(b))
}

// RelaySecret returns the generated REST secret, creating and saving it on
// first use.
func (s *Store) RelaySecret() (Secret, error) {
	st, err := s.Update(func(st *State) error {
		if st.Relay.Secret == "" {
			st.Relay.Secret = NewSecret(32)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	return st.Relay.Secret, nil
}
