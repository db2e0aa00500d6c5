// Package config holds tariq's typed configuration: the defaults, loading from a
// YAML file, TARIQ_* environment variables and flags (in rising precedence), and
// validation that names the key path of every problem.
//
// The key names are a contract shared by the README, `tariq init`, the tests and
// operators' scripts: extend them, never rename them.
package config

import (
	"net/netip"
	"time"
)

// Config is the whole configuration of one tariq daemon.
type Config struct {
	Server ServerConfig `mapstructure:"server"`
	TLS    TLSConfig    `mapstructure:"tls"`
	VPN    VPNConfig    `mapstructure:"vpn"`
	Relay  RelayConfig  `mapstructure:"relay"`
	Web    WebConfig    `mapstructure:"web"`
}

// ServerConfig is the server section: identity, state and local endpoints.
type ServerConfig struct {
	// PublicHost is the name or IP address clients dial; exported configs,
	// TURN URIs and the certificate use it. Empty means detect the address of
	// the default route.
	PublicHost string `mapstructure:"public_host"`
	// DataDir holds keys, secrets, peers and certificates.
	DataDir string `mapstructure:"data_dir"`
	// LogLevel is one of debug, info, warn, error.
	LogLevel LogLevel `mapstructure:"log_level"`
	// AdminSocket is the unix socket of the local admin API.
	AdminSocket string `mapstructure:"admin_socket"`
	// MetricsListen is the host:port of the Prometheus endpoint; empty turns it off.
	MetricsListen string `mapstructure:"metrics_listen"`
	// Store is where the shared state (the server's identity, members,
	// devices, invites, REST secrets) lives: StoreFile, state.json in the
	// data directory, for one server; StoreEtcd, an etcd cluster, for
	// several nodes serving one network.
	Store StoreKind `mapstructure:"store"`
	// NodeName names this node among the nodes sharing an etcd prefix
	// (tariq node list, its usage counters); empty means the host name.
	NodeName string `mapstructure:"node_name"`
	// Etcd is the cluster when Store is StoreEtcd.
	Etcd EtcdConfig `mapstructure:"etcd"`
}

// StoreKind names a state store.
type StoreKind string

// The state stores.
const (
	StoreFile StoreKind = "file" // state.json in server.data_dir
	StoreEtcd StoreKind = "etcd" // an etcd cluster shared by several nodes
)

// EtcdConfig is the etcd cluster several nodes share their state through.
type EtcdConfig struct {
	// Endpoints are the cluster's client URLs (https://10.0.0.1:2379).
	Endpoints []string `mapstructure:"endpoints"`
	// Prefix is where this network's keys live, so that several networks
	// can share one cluster: /tariq, /family-a.
	Prefix string `mapstructure:"prefix"`
	// CAFile is the PEM file of the CA the cluster's certificates chain
	// to; empty means the system's roots (with https:// endpoints).
	CAFile string `mapstructure:"ca_file"`
	// CertFile and KeyFile are this node's client certificate, for a
	// cluster started with --client-cert-auth.
	CertFile string `mapstructure:"cert_file"`
	KeyFile  string `mapstructure:"key_file"`
}

// TLSConfig selects where certificates come from.
type TLSConfig struct {
	Mode        TLSMode `mapstructure:"mode"`
	Email       string  `mapstructure:"email"`
	ACMECA      string  `mapstructure:"acme_ca"`
	ACMECARoots string  `mapstructure:"acme_ca_roots"`
	// ACMEProfile is the ACME profile to order (draft-aaron-acme-profiles);
	// empty means shortlived for an IP address (the only profile Let's
	// Encrypt issues IP certificates in) and the CA's default for a name.
	ACMEProfile string `mapstructure:"acme_profile"`
	CertFile    string `mapstructure:"cert_file"`
	KeyFile     string `mapstructure:"key_file"`
}

// VPNConfig is the WireGuard endpoint.
type VPNConfig struct {
	Enabled    bool   `mapstructure:"enabled"`
	Mode       string `mapstructure:"mode"`
	Interface  string `mapstructure:"interface"`
	ListenPort int    `mapstructure:"listen_port"`
	// ExtraPorts are more UDP ports speaking stock WireGuard (443, say),
	// for networks that block the usual one. Each peer uses one of them or
	// listen_port.
	ExtraPorts          []int          `mapstructure:"extra_ports"`
	Address             []netip.Prefix `mapstructure:"address"`
	DNS                 []netip.Addr   `mapstructure:"dns"`
	MTU                 int            `mapstructure:"mtu"`
	NAT                 bool           `mapstructure:"nat"`
	Uplink              string         `mapstructure:"uplink"`
	ClientAllowedIPs    []netip.Prefix `mapstructure:"client_allowed_ips"`
	PersistentKeepalive time.Duration  `mapstructure:"persistent_keepalive"`
	// Obfuscation is a listener speaking AmneziaWG 1.x, on a port of its own.
	Obfuscation ObfuscationConfig `mapstructure:"obfuscation"`
	// AllowDestinations are ranges members may reach although the
	// built-in list refuses them (a home network behind the server, say).
	// They never open the server itself. Every VPN path obeys them.
	AllowDestinations []netip.Prefix `mapstructure:"allow_destinations"`
	// DenyDestinations are refused to members in addition to the built-in
	// list; they win over AllowDestinations and MemberToMember.
	DenyDestinations []netip.Prefix `mapstructure:"deny_destinations"`
	// MemberToMember lets members' devices reach each other through the
	// tunnel.
	MemberToMember bool `mapstructure:"member_to_member"`
	// Outline is the VPN path over TCP: Shadowsocks over WebSocket on the
	// HTTPS port, for the Outline app.
	Outline OutlineConfig `mapstructure:"outline"`
}

// OutlineConfig is the Outline-compatible VPN path: Shadowsocks over
// WebSocket over TLS on the web.listen ports, for networks where no UDP
// gets through. Every member has an Outline key (an ssconf:// link) next
// to their WireGuard devices. The Outline app verifies the certificate
// against the system's roots, so the path needs a publicly trusted one
// (tls.mode auto or acme with a public IP address or a DNS name, or
// files): with a self-signed certificate no key is handed out.
type OutlineConfig struct {
	Enabled bool `mapstructure:"enabled"`
}

// ObfuscationConfig is the AmneziaWG-compatible listener: WireGuard with
// junk packets before handshakes, padded handshakes and custom message
// headers, so that DPI keyed on WireGuard's fixed headers and sizes does not
// recognise it. Its parameters are generated once per server and kept in
// the state; peers added with --obfuscated get them in their config.
type ObfuscationConfig struct {
	Enabled    bool `mapstructure:"enabled"`
	ListenPort int  `mapstructure:"listen_port"`
}

// RelayConfig is the TURN relay.
type RelayConfig struct {
	Enabled bool `mapstructure:"enabled"`
	// Realm is the long-term credential realm; empty means the public host.
	Realm     string   `mapstructure:"realm"`
	ListenUDP []string `mapstructure:"listen_udp"`
	ListenTCP []string `mapstructure:"listen_tcp"`
	ListenTLS []string `mapstructure:"listen_tls"`
	// RelayIP is the address put in XOR-RELAYED-ADDRESS, at most one per
	// family; a VPS behind 1:1 NAT sets its public address here.
	RelayIP []netip.Addr `mapstructure:"relay_ip"`
	// RelayBind is the local address relayed sockets bind to; an unspecified
	// address (0.0.0.0 or ::) means every local address of both families.
	RelayBind  netip.Addr `mapstructure:"relay_bind"`
	RelayPorts PortRange  `mapstructure:"relay_ports"`
	// Secrets are REST shared secrets: the first signs, all verify. Empty
	// means one generated and kept in the data directory.
	Secrets []Secret `mapstructure:"secrets"`
	// Users are static long-term users, name to password.
	Users                 map[string]Secret `mapstructure:"users"`
	CredentialTTL         time.Duration     `mapstructure:"credential_ttl"`
	MaxAllocations        int               `mapstructure:"max_allocations"`
	MaxAllocationsPerUser int               `mapstructure:"max_allocations_per_user"`
	// AllowPeers are let through although the built-in list denies them.
	AllowPeers []netip.Prefix `mapstructure:"allow_peers"`
	// DenyPeers are refused in addition to the built-in list; they win over AllowPeers.
	DenyPeers []netip.Prefix `mapstructure:"deny_peers"`
	// TCPRelay turns on RFC 6062 TCP allocations. Off by default: it turns a
	// relay into a TCP proxy.
	TCPRelay bool `mapstructure:"tcp_relay"`
}

// WebConfig is the HTTPS page.
type WebConfig struct {
	Enabled bool     `mapstructure:"enabled"`
	Listen  []string `mapstructure:"listen"`
}

// RealmOrHost returns the relay realm, falling back to host (the resolved
// public host) when no realm is configured.
func (c *Config) RealmOrHost(host string) string {
	if c.Relay.Realm != "" {
		return c.Relay.Realm
	}
	return host
}
