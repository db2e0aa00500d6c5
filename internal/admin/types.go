package admin

import (
	"time"

	"github.com/tariq-vpn/tariq/internal/members"
)

// Status is what `tariq status` shows.
type Status struct {
	Version    string       `json:"version"`
	PublicHost string       `json:"public_host"`
	StartedAt  time.Time    `json:"started_at"`
	Relay      *RelayStatus `json:"relay,omitempty"`
	VPN        *VPNStatus   `json:"vpn,omitempty"`
	TLS        *CertStatus  `json:"tls,omitempty"`
	// Cluster is the etcd store the nodes share; nil on one server.
	Cluster *ClusterStatus `json:"cluster,omitempty"`
}

// ClusterStatus is the shared etcd store's part of Status.
type ClusterStatus struct {
	Endpoints []string `json:"endpoints"`
	Prefix    string   `json:"prefix"`
	Node      string   `json:"node"`
	// Unreachable says why etcd does not answer now (the node serves the
	// state it last saw), or "".
	Unreachable string `json:"unreachable,omitempty"`
	// Nodes are the live nodes, this one included.
	Nodes []NodeStatus `json:"nodes,omitempty"`
}

// NodeStatus is one live node.
type NodeStatus struct {
	Name       string    `json:"name"`
	PublicHost string    `json:"public_host"`
	Version    string    `json:"version"`
	StartedAt  time.Time `json:"started_at"`
	Health     string    `json:"health"`
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
	ExtraPorts      []int                  `json:"extra_ports,omitempty"`
	ObfuscationPort int                    `json:"obfuscation_port,omitempty"`
	PublicKey       string                 `json:"public_key"`
	Members         []members.MemberStatus `json:"members"`
	Peers           []members.DeviceStatus `json:"peers"`
	// Outline is the Outline path, when vpn.outline is on; each member's
	// activity on it is in Members.
	Outline *OutlineStatus `json:"outline,omitempty"`
}

// OutlineStatus is the Outline path's part of VPNStatus.
type OutlineStatus struct {
	// Untrusted says why no Outline key works now (the certificate is
	// not publicly trusted), or "".
	Untrusted string `json:"untrusted,omitempty"`
	// Refused counts targets the destination policy refused, by path
	// (tcp, udp) and rule.
	Refused map[string]map[string]uint64 `json:"refused,omitempty"`
	// AuthFailures counts connections that showed no valid key, by path
	// and reason.
	AuthFailures map[string]map[string]uint64 `json:"auth_failures,omitempty"`
	// Cuts counts open connections cut by a removal or a limit.
	Cuts map[string]uint64 `json:"cuts,omitempty"`
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
