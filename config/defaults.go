package config

import (
	"net/netip"
	"os"
	"path/filepath"
	"time"
)

// DefaultFile is the config file read when no --config is given. Its absence
// is not an error: tariq runs on defaults.
const DefaultFile = "/etc/tariq/tariq.yaml"

// DefaultEtcdPrefix is server.etcd.prefix unless set.
const DefaultEtcdPrefix = "/tariq"

// Default returns the configuration a fresh `tariq serve` uses with no config
// file, no environment and no flags.
func Default() *Config {
	dataDir, adminSocket := defaultPaths()
	return &Config{
		Server: ServerConfig{
			DataDir:       dataDir,
			LogLevel:      "info",
			AdminSocket:   adminSocket,
			MetricsListen: "127.0.0.1:9477",
			Store:         StoreFile,
			Etcd:          EtcdConfig{Endpoints: []string{}, Prefix: DefaultEtcdPrefix},
		},
		TLS: TLSConfig{Mode: TLSAuto},
		VPN: VPNConfig{
			Enabled:             true,
			Mode:                "tun",
			Interface:           "tariq0",
			ListenPort:          51820,
			ExtraPorts:          []int{},
			Address:             []netip.Prefix{netip.MustParsePrefix("10.77.0.1/24")},
			DNS:                 []netip.Addr{netip.MustParseAddr("1.1.1.1"), netip.MustParseAddr("1.0.0.1")},
			MTU:                 1420,
			NAT:                 true,
			ClientAllowedIPs:    []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")},
			PersistentKeepalive: 25 * time.Second,
			Obfuscation:         ObfuscationConfig{ListenPort: 51821},
			AllowDestinations:   []netip.Prefix{},
			DenyDestinations:    []netip.Prefix{},
		},
		Relay: RelayConfig{
			Enabled:               true,
			ListenUDP:             []string{":3478"},
			ListenTCP:             []string{":3478"},
			ListenTLS:             []string{":5349"},
			RelayBind:             netip.IPv4Unspecified(),
			RelayPorts:            PortRange{Min: 49152, Max: 65535},
			Users:                 map[string]Secret{},
			CredentialTTL:         24 * time.Hour,
			MaxAllocations:        10000,
			MaxAllocationsPerUser: 50,
		},
		Web: WebConfig{
			Enabled: true,
			Listen:  []string{":443"},
		},
	}
}

// defaultPaths returns the data directory and admin socket: the system
// locations for root (and for systemd's StateDirectory/RuntimeDirectory), and
// per-user locations otherwise, so a non-root trial run needs no flags.
func defaultPaths() (dataDir, adminSocket string) {
	dataDir, adminSocket = "/var/lib/tariq", "/run/tariq/admin.sock"
	if d := os.Getenv("STATE_DIRECTORY"); d != "" {
		dataDir = filepath.SplitList(d)[0]
	}
	if d := os.Getenv("RUNTIME_DIRECTORY"); d != "" {
		adminSocket = filepath.Join(filepath.SplitList(d)[0], "admin.sock")
	}
	if os.Geteuid() == 0 {
		return dataDir, adminSocket
	}
	if os.Getenv("STATE_DIRECTORY") == "" {
		if home, err := os.UserHomeDir(); err == nil {
			dataDir = filepath.Join(home, ".local", "state", "tariq")
		}
	}
	if os.Getenv("RUNTIME_DIRECTORY") == "" {
		if rt := os.Getenv("XDG_RUNTIME_DIR"); rt != "" {
			adminSocket = filepath.Join(rt, "tariq", "admin.sock")
		} else {
			adminSocket = filepath.Join(dataDir, "admin.sock")
		}
	}
	return dataDir, adminSocket
}
