// Package store keeps tariq's persistent state (generated keys and secrets,
// peers, invites) in one versioned JSON file under the data directory.
//
// Every change goes through Update, which holds an exclusive lock across
// processes (the daemon and a CLI editing the store while no daemon runs),
// reads the current state, applies the change and writes it back atomically:
// a crash or kill -9 at any point leaves either the old state or the new one.
//
// Only a missing state file is a first start: one that exists but is not a
// state tariq wrote is refused, never replaced by a new identity (see
// State.problem). Files in the data directory are never reached through a
// link (see Dir), and one daemon at a time holds the directory (Claim).
package store

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tariq-vpn/tariq/config"
	"github.com/tariq-vpn/tariq/internal/wgconf"
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
//	3  members: every peer (a device) belongs to one (Peer.Member), and a
//	   member has limits and counted usage (State.Members)
//	4  Outline: every member's key (Member.Outline) and the server's
//	   WebSocket prefix (State.Outline). A format-3 binary would drop them
//	   on its next write, and the keys members were given would stop
//	   working, so it must refuse the file instead.
//	5  REST secrets rotate (RelayState.Secrets, RelayState.Signing): a
//	   format-4 binary would drop the added ones, and the apps signing
//	   with them would stop getting through.
const Version = 5

// The files of the data directory the store owns. internal/certs keeps
// tls/ (the self-signed pair) and certmagic/ (ACME) beside them.
const (
	stateFile = "state.json"
	// lockFile is flocked around every read (shared) and change
	// (exclusive) of stateFile, by the daemon and the CLI alike.
	lockFile = "state.lock"
	// serveLockFile is flocked by the one daemon using the directory.
	serveLockFile = "serve.lock"
)

// State is everything tariq keeps between runs.
type State struct {
	Version int        `json:"version"`
	Relay   RelayState `json:"relay"`
	VPN     VPNState   `json:"vpn"`
	// Members are the people the devices belong to, in the order they
	// were added.
	Members []Member `json:"members,omitempty"`
	// Peers are the WireGuard devices, in the order they were added.
	Peers []Peer `json:"peers"`
	// Invites are one-time links that hand a peer its config.
	Invites []Invite `json:"invites,omitempty"`
	// Outline is the Outline path's server-wide material.
	Outline OutlineState `json:"outline,omitzero"`
}

// OutlineState is the Outline path's server-wide material, generated once
// and kept so that the keys handed out keep working.
type OutlineState struct {
	// Prefix is the unguessable first segment of the WebSocket paths
	// (/<prefix>/tcp, /<prefix>/udp), which every config document names.
	Prefix Secret `json:"prefix,omitempty"`
	// Retired are the hex SHA-256 of removed members' config-document
	// tokens, in the order they were removed: those URLs answer with an
	// error document (the app shows it) rather than as unknown paths.
	Retired []string `json:"retired,omitempty"`
}

// OutlineAccess is a member's Outline key: the Shadowsocks secret and the
// token that names their config document (https://<host>/<token>, which
// the ssconf:// key points at). Both are generated with the member.
type OutlineAccess struct {
	Secret Secret `json:"secret"`
	Token  Secret `json:"token"`
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
	// Outline says the link's one use handed out the member's Outline key
	// rather than the device's WireGuard config (format 4): it then never
	// switches to a WireGuard form.
	Outline bool `json:"outline,omitempty"`
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

// AmneziaWG holds the AmneziaWG obfuscation parameters (see wgconf).
type AmneziaWG = wgconf.AmneziaWG

// Member is one person of the family: their devices are the peers whose
// Member names them. Limits apply to the member, across all their devices
// and every path they use.
type Member struct {
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
	// Expires is when the member's devices stop working; zero: never.
	Expires time.Time `json:"expires,omitzero"`
	// DataLimit is the bytes, both directions together, the member may
	// pass per calendar month (UTC); 0: no limit.
	DataLimit uint64 `json:"data_limit,omitempty"`
	// Rate caps each direction, in bits per second, for the member's
	// devices together; 0: no cap.
	Rate uint64 `json:"rate,omitempty"`
	// Usage is what the member passed in Usage.Month.
	Usage Usage `json:"usage,omitzero"`
	// Outline is the member's Outline key; nil only in a state written
	// before format 4, until the members model generates it.
	Outline *OutlineAccess `json:"outline,omitempty"`
}

// Usage is one calendar month's bytes (UTC) of a member.
type Usage struct {
	// Month is 2026-12.
	Month string `json:"month"`
	// In is what the member's devices sent; Out what they received.
	In  uint64 `json:"in"`
	Out uint64 `json:"out"`
}

// Total is both directions.
func (u Usage) Total() uint64 { return u.In + u.Out }

// Member returns the member named name, or nil.
func (st *State) Member(name string) *Member {
	for i := range st.Members {
		if st.Members[i].Name == name {
			return &st.Members[i]
		}
	}
	return nil
}

// Peer is one WireGuard device of a family member.
type Peer struct {
	Name string `json:"name"`
	// Member names the member the device belongs to.
	Member    string `json:"member"`
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

// RelayState is the relay's generated material: the REST secrets kept in
// the state (see secrets.go), which verify after relay.secrets.
type RelayState struct {
	// Secret is the REST shared secret generated on first use; it signs
	// unless Signing names another. Empty once retired.
	Secret Secret `json:"secret,omitempty"`
	// Secrets are those added with `tariq turn secret add`, oldest first.
	Secrets []RESTSecret `json:"secrets,omitempty"`
	// Signing is the ID (SecretID) of the one of Secrets that signs; empty
	// means Secret.
	Signing string `json:"signing,omitempty"`
}

// Secret is a generated secret; it prints redacted.
type Secret = config.Secret

// Store is the state file in one data directory.
//
// Every operation opens the data directory once and reaches its files
// through that descriptor, never through a link (see Dir).
type Store struct {
	dir string
	mu  sync.Mutex // serialises Update within this process; the flock does so across processes
}

// Open creates the data directory (0700) if needed, checks it (see
// OpenDir) and returns its store. It touches no state until Load or Update.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating data directory: %w", err)
	}
	d, err := OpenDir(dir)
	if err != nil {
		return nil, err
	}
	d.Close()
	return &Store{dir: dir}, nil
}

// Dir returns the data directory.
func (s *Store) Dir() string { return s.dir }

// Path returns the path of name inside the data directory.
func (s *Store) Path(name string) string { return filepath.Join(s.dir, name) }

// Load returns the current state, or a fresh one if none was written yet.
// A state file that exists but is damaged is refused (ErrBadState).
func (s *Store) Load() (*State, error) {
	d, err := OpenDir(s.dir)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	unlock, err := lock(d, unix.LOCK_SH)
	if err != nil {
		return nil, err
	}
	defer unlock()
	return read(d)
}

// Update applies fn to the current state and saves the result atomically.
// If fn returns an error nothing is written and the error is returned as is.
// A damaged state file is refused (ErrBadState) and never overwritten; a
// change that would leave a state Load refuses is not written either.
func (s *Store) Update(fn func(*State) error) (*State, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, err := OpenDir(s.dir)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	unlock, err := lock(d, unix.LOCK_EX)
	if err != nil {
		return nil, err
	}
	defer unlock()
	st, err := read(d)
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
	if p := st.problem(); p != "" {
		return nil, &badStateError{path: d.join(stateFile), problem: p, writing: true}
	}
	if err := d.WriteFile(stateFile, append(after, '\n'), 0o600); err != nil {
		return nil, fmt.Errorf("writing state: %w", err)
	}
	return st, nil
}

// RemoveTemp removes the temporary files an interrupted state write left
// (see Dir.RemoveTemp), under the exclusive lock so that no write of
// another process is in flight, and returns their names.
func (s *Store) RemoveTemp() ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, err := OpenDir(s.dir)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	unlock, err := lock(d, unix.LOCK_EX)
	if err != nil {
		return nil, err
	}
	defer unlock()
	return d.RemoveTemp()
}

func compact(b []byte) string {
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return ""
	}
	return buf.String()
}

// read returns the state in d: a fresh one when there is no state file
// (the first start), else the file's, which must be one tariq wrote.
func read(d *Dir) (*State, error) {
	b, err := d.ReadFile(stateFile)
	if errors.Is(err, fs.ErrNotExist) {
		return &State{Version: Version}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading state: %w", err)
	}
	return parse(b, d.join(stateFile))
}

// parse decodes the state file at path. Anything but a JSON object with a
// version and the material tariq writes with the rest (see problem) is
// refused: a damaged file read as a first start would silently become a
// new identity, and every device's and app's configuration would stop
// working.
func parse(b []byte, path string) (*State, error) {
	bad := func(problem string) error { return &badStateError{path: path, problem: problem} }
	if !json.Valid(b) {
		var v any
		err := json.Unmarshal(b, &v)
		return nil, bad(fmt.Sprintf("is not valid JSON (%v)", err))
	}
	if t := bytes.TrimSpace(b); t[0] != '{' {
		return nil, bad("is not a JSON object")
	}
	var head struct {
		Version int `json:"version"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return nil, bad(fmt.Sprintf("is not tariq's state (%v)", err))
	}
	if head.Version > Version {
		return nil, fmt.Errorf("%w (format %d, this binary knows up to %d): upgrade tariq", ErrNewerState, head.Version, Version)
	}
	if head.Version < 1 {
		return nil, bad("has no version")
	}
	st := &State{}
	if err := json.Unmarshal(b, st); err != nil {
		return nil, bad(fmt.Sprintf("is not tariq's state (%v)", err))
	}
	st, err := migrate(st, head.Version)
	if err != nil {
		return nil, err
	}
	if p := st.problem(); p != "" {
		return nil, bad(p)
	}
	return st, nil
}

// problem says what st lacks that tariq always writes along with the rest
// of it, or "" when nothing is missing.
//
// Every write of the state generates material first: the relay's REST
// secret (RelaySecret: the relay's start without relay.secrets, `tariq
// turn credentials`, the invite page) or the server's WireGuard key, which
// is generated together with the ULA and the obfuscation parameters, and
// before any peer exists (the VPN's start, `tariq peer add` with no daemon
// running). So a state holding neither was not written by tariq, and one
// holding anything of the VPN's (peers, invites, retired addresses, the
// ULA, the obfuscation parameters) without the server key lost it. A state
// with the REST secret alone is legitimate: `tariq turn credentials` ran
// before the first start, or the VPN was never enabled.
func (st *State) problem() string {
	key := st.VPN.PrivateKey.Reveal()
	if key == "" {
		const missing = " but no server WireGuard private key (vpn.private_key)"
		switch {
		case len(st.Peers) > 0:
			return "has peers" + missing
		case len(st.Members) > 0:
			return "has members" + missing
		case len(st.Invites) > 0:
			return "has invites" + missing
		case len(st.VPN.Retired) > 0:
			return "has retired peer addresses" + missing
		case st.VPN.ULA.IsValid():
			return "has an IPv6 ULA" + missing
		case st.VPN.AmneziaWG != nil:
			return "has obfuscation parameters" + missing
		case st.Outline.Prefix != "" || len(st.Outline.Retired) > 0:
			return "has Outline material" + missing
		case st.Relay.Secret == "" && len(st.Relay.Secrets) == 0:
			return "holds neither the server WireGuard private key nor the relay REST secret, one of which tariq writes into every state it saves"
		}
		return ""
	}
	if b, err := base64.StdEncoding.DecodeString(key); err != nil || len(b) != 32 {
		return "has a server WireGuard private key that is not 32 bytes of base64"
	}
	return ""
}

// migrate upgrades a state read in format from to the current Version.
func migrate(st *State, from int) (*State, error) {
	switch from {
	case 1:
		// 1 → 2 only added fields whose zero values mean what format 1 did:
		// every peer on vpn.listen_port in the stock form, no obfuscation
		// parameters yet (generated when vpn.obfuscation is first enabled).
		fallthrough
	case 2:
		// 2 → 3: every device was its own person. Each becomes a member of
		// its own name, created with it, with no limits.
		for i := range st.Peers {
			p := &st.Peers[i]
			if p.Member == "" {
				p.Member = p.Name
			}
			if st.Member(p.Member) == nil {
				st.Members = append(st.Members, Member{Name: p.Member, CreatedAt: p.CreatedAt})
			}
		}
		fallthrough
	case 3:
		// 3 → 4 only added the Outline material, generated by the members
		// model when first needed.
		fallthrough
	case 4:
		// 4 → 5 only added the rotated REST secrets; the generated one
		// keeps signing.
	}
	st.Version = Version
	return st, nil
}

// lock takes the state lock in d: shared for reading, exclusive for a
// change.
func lock(d *Dir, how int) (unlock func(), err error) {
	f, err := d.openOrCreate(lockFile, unix.O_RDONLY)
	if err != nil {
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

// Claim takes the data directory for one daemon (`tariq serve`) until
// release is called: an exclusive lock on serve.lock, apart from the state
// lock the CLI also takes, so that a second daemon on the same directory
// (with another admin socket) is refused instead of serving a state it
// does not see change. The file holds the daemon's pid for that refusal.
func (s *Store) Claim() (release func(), err error) {
	d, err := OpenDir(s.dir)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	f, err := d.openOrCreate(serveLockFile, unix.O_RDWR)
	if err != nil {
		return nil, fmt.Errorf("opening daemon lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		defer f.Close()
		if !errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("locking %s: %w", f.Name(), err)
		}
		b := make([]byte, 32)
		n, _ := f.ReadAt(b, 0)
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b[:n]))); err == nil && pid > 0 {
			return nil, fmt.Errorf("data directory %s is in use by another tariq serve (pid %d)", s.dir, pid)
		}
		return nil, fmt.Errorf("data directory %s is in use by another tariq serve", s.dir)
	}
	if err := f.Truncate(0); err == nil {
		_, err = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("writing %s: %w", f.Name(), err)
	}
	return func() {
		f.Truncate(0)
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

// RelaySecret returns the stored REST secret that signs, generating and
// saving one on first use (see the package function RelaySecret).
func (s *Store) RelaySecret() (Secret, error) { return RelaySecret(s) }
