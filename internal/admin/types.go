package admin

import "time"

// Status is what `tariq status` shows.
type Status struct {
	Version    string       `json:"version"`
	PublicHost string       `json:"public_host"`
	StartedAt  time.Time    `json:"started_at"`
	Relay      *RelayStatus `json:"relay,omitempty"`
	VPN        *VPNStatus   `json:"vpn,omitempty"`
	TLS        *CertStatus  `json:"tls,omitempty"`
}

// RelayStatus is the TURN relay's part of Status.
type RelayStatus struct {
	Realm          string            `json:"realm"`
	URIs           []string          `json:"uris"`
	Allocations    int               `json:"allocations"`
	ByUser         map[string]int    `json:"by_user,omitempty"`
	AuthFailures   map[string]uint64 `json:"auth_failures,omitempty"`
	PeersDenied    map[string]uint64 `json:"peers_denied,omitempty"`
	BytesToPeers   uint64            `json:"bytes_to_peers"`
	BytesFromPeers uint64            `json:"bytes_from_peers"`
	RelayIPv4      string            `json:"relay_ipv4,omitempty"`
	RelayIPv6      string            `json:"relay_ipv6,omitempty"`
}

// VPNStatus is the WireGuard endpoint's part of Status.
type VPNStatus struct {
	Interface  string `json:"interface"`
	ListenPort int    `json:"listen_port"`
	// ExtraPorts speak stock WireGuard too; ObfuscationPort, if not 0,
	// speaks the AmneziaWG form.
	ExtraPorts      []int        `json:"extra_ports,omitempty"`
	ObfuscationPort int          `json:"obfuscation_port,omitempty"`
	PublicKey       string       `json:"public_key"`
	Peers           []PeerStatus `json:"peers"`
}

// PeerStatus is one WireGuard peer.
type PeerStatus struct {
	Name          string    `json:"name"`
	PublicKey     string    `json:"public_key"`
	IPv4          string    `json:"ipv4"`
	IPv6          string    `json:"ipv6,omitempty"`
	Enabled       bool      `json:"enabled"`
	Endpoint      string    `json:"endpoint,omitempty"`
	LastHandshake time.Time `json:"last_handshake,omitzero"`
	RxBytes       uint64    `json:"rx_bytes"`
	TxBytes       uint64    `json:"tx_bytes"`
	// Port is the UDP port the peer's config dials; Obfuscated says it is
	// the AmneziaWG form (for the AmneziaWG or AmneziaVPN app).
	Port       int  `json:"port,omitempty"`
	Obfuscated bool `json:"obfuscated,omitempty"`
	// Reach is the last reachability check from the peer's invite page.
	Reach *Reachability `json:"reach,omitempty"`
}

// CertStatus is the certificate being served.
type CertStatus struct {
	Mode string `json:"mode"`
	// Source is where the live certificate comes from: acme, fallback
	// (self-signed while ACME has none yet), self-signed or files.
	Source     string    `json:"source"`
	CA         string    `json:"acme_ca,omitempty"`
	ACMEError  string    `json:"acme_error,omitempty"`
	Names      []string  `json:"names"`
	Issuer     string    `json:"issuer"`
	NotAfter   time.Time `json:"not_after,omitzero"`
	SelfSigned bool      `json:"self_signed"`
	SPKIHash   string    `json:"spki_sha256,omitempty"`
}

// AddPeerRequest asks for a new WireGuard peer.
type AddPeerRequest struct {
	Name string `json:"name"`
	// PublicKey is set when the device made its own key pair; the server
	// then never holds the private key.
	PublicKey string `json:"public_key,omitempty"`
	// Port is the UDP port the device dials: 0 for vpn.listen_port, else
	// one of vpn.extra_ports.
	Port int `json:"port,omitempty"`
	// Obfuscated asks for the AmneziaWG form, on vpn.obfuscation.listen_port.
	Obfuscated bool `json:"obfuscated,omitempty"`
}

// PeerConfig is a peer with its client configuration (wg-quick text).
type PeerConfig struct {
	Peer   PeerStatus `json:"peer"`
	Config string     `json:"config"`
}

// InviteRequest asks for a one-time link to a peer's config.
type InviteRequest struct {
	Peer string        `json:"peer"`
	TTL  time.Duration `json:"ttl"`
}

// Invite is a one-time link. The URL carries the only copy of the token.
type Invite struct {
	URL     string    `json:"url"`
	Peer    string    `json:"peer"`
	Expires time.Time `json:"expires"`
}

// Reachability is the last reachability check a member's invite page ran
// from their network (store.Reachability).
type Reachability struct {
	CheckedAt time.Time `json:"checked_at"`
	// Verdict is what the page advised: wireguard or amneziawg (that app,
	// on Port), calls (the VPN is blocked, relayed calls work) or none.
	Verdict string   `json:"verdict"`
	Port    int      `json:"port,omitempty"`
	Reached []string `json:"reached,omitempty"`
	Failed  []string `json:"failed,omitempty"`
	// Confirmed is what the page found once the member switched the
	// connection on: connected, or no-handshake (the page then handed out
	// the AmneziaWG form; SwitchedFrom is wireguard, the form before).
	Confirmed    string    `json:"confirmed,omitempty"`
	ConfirmedAt  time.Time `json:"confirmed_at,omitzero"`
	SwitchedFrom string    `json:"switched_from,omitempty"`
}
