package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/tariq-vpn/tariq/config"
	"github.com/tariq-vpn/tariq/internal/admin"
	"github.com/tariq-vpn/tariq/internal/certs"
	"github.com/tariq-vpn/tariq/internal/store"
)

// Severity grades a finding of Check.
type Severity int

// The severities.
const (
	OK Severity = iota
	Warn
	Fail
)

func (s Severity) String() string {
	return [...]string{"ok", "warn", "FAIL"}[s]
}

// Finding is one result of Check.
type Finding struct {
	Severity Severity
	What     string
	Detail   string
}

// Check examines the host for what the configuration needs: the data
// directory, the TUN device, free ports (unless this config's daemon is
// running), the public host and the certificate files.
func Check(ctx context.Context, l *config.Loaded) []Finding {
	cfg := l.Config
	var out []Finding
	add := func(s Severity, what, format string, args ...any) {
		out = append(out, Finding{s, what, fmt.Sprintf(format, args...)})
	}

	if l.File != "" {
		if fi, err := os.Stat(l.File); err == nil && fi.Mode().Perm()&0o077 != 0 && (len(cfg.Relay.Secrets) > 0 || len(cfg.Relay.Users) > 0) {
			add(Warn, "config file", "%s holds secrets but is readable by others (mode %v); chmod 600 it", l.File, fi.Mode().Perm())
		} else if err == nil {
			add(OK, "config file", "%s", l.File)
		}
	} else {
		add(OK, "config file", "none: running on defaults")
	}

	if err := writableDir(cfg.Server.DataDir); err != nil {
		add(Fail, "server.data_dir", "%s", err)
	} else if err := safeDataDir(cfg.Server.DataDir); err != nil {
		add(Fail, "server.data_dir", "%s", err)
	} else {
		add(OK, "server.data_dir", "%s is writable", cfg.Server.DataDir)
	}

	if cfg.Server.Store == config.StoreEtcd {
		out = append(out, checkEtcd(ctx, cfg))
	}

	st, err := admin.NewClient(cfg.Server.AdminSocket).Status(ctx)
	running := !errors.Is(err, admin.ErrNotRunning)
	if running {
		add(OK, "daemon", "running (admin socket %s); its ports are not probed", cfg.Server.AdminSocket)
	}
	if err == nil && st.VPN != nil {
		out = append(out, pendingPorts(cfg, st.VPN)...)
	}

	if cfg.VPN.Enabled {
		if f, err := os.OpenFile("/dev/net/tun", os.O_RDWR, 0); err != nil {
			add(Fail, "vpn", "cannot open /dev/net/tun: %v (needs root or CAP_NET_ADMIN, and the tun module)", err)
		} else {
			f.Close()
			add(OK, "vpn", "/dev/net/tun is usable")
		}
		for _, fam := range []struct{ name, path string }{{"IPv4", "/proc/sys/net/ipv4/ip_forward"}, {"IPv6", "/proc/sys/net/ipv6/conf/all/forwarding"}} {
			if b, err := os.ReadFile(fam.path); err == nil && len(b) > 0 && b[0] == '0' {
				add(OK, "vpn", "%s forwarding is off now; the daemon switches it on", fam.name)
			}
		}
	}

	if !running {
		out = append(out, checkPorts(cfg)...)
	}

	host := cfg.Server.PublicHost
	switch {
	case host == "":
		add(Warn, "server.public_host", "not set; clients will be told %s (the default route's address)", ResolveHost(cfg))
	case config.IsDNSName(host):
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		addrs, err := net.DefaultResolver.LookupNetIP(rctx, "ip", host)
		cancel()
		if err != nil {
			add(Warn, "server.public_host", "%s does not resolve: %v", host, err)
		} else {
			add(OK, "server.public_host", "%s resolves to %v", host, addrs)
		}
	default:
		add(OK, "server.public_host", "%s", host)
	}
	if cfg.Relay.Enabled && len(cfg.Relay.RelayIP) == 0 {
		if a, err := netip.ParseAddr(ResolveHost(&config.Config{})); err == nil && a.IsPrivate() {
			add(Warn, "relay.relay_ip", "this host's address %s is private: behind 1:1 NAT, set relay.relay_ip to the public address", a)
		}
	}

	if cfg.VPN.Enabled && cfg.VPN.Outline.Enabled {
		c := *cfg
		c.Server.PublicHost = ResolveHost(cfg)
		if err := offlineTrustedCert(&c, certs.ResolveMode(&c))(); err != nil {
			add(Warn, "vpn.outline.enabled", "no Outline key will work: %v", err)
		} else {
			add(OK, "vpn.outline.enabled", "the certificate will be one the Outline app trusts (tls.mode %s)", certs.ResolveMode(&c))
		}
	}

	if cfg.TLS.Mode == config.TLSFiles {
		if _, err := tls.LoadX509KeyPair(cfg.TLS.CertFile, cfg.TLS.KeyFile); err != nil {
			add(Fail, "tls.cert_file", "%v", err)
		} else {
			add(OK, "tls.cert_file", "certificate and key load")
		}
	}
	return out
}

// pendingPorts warns of WireGuard ports the file changes but the running
// daemon keeps until a restart (a reload never moves them).
func pendingPorts(cfg *config.Config, running *admin.VPNStatus) []Finding {
	var out []Finding
	pending := func(key string, file, serving any) {
		out = append(out, Finding{Warn, key, fmt.Sprintf("the daemon serves %v; %v takes effect on restart, "+
			"and devices given the old port then need their config again", serving, file)})
	}
	if p := cfg.VPN.ListenPort; p != 0 && p != running.ListenPort {
		pending("vpn.listen_port", p, running.ListenPort)
	}
	if !slices.Equal(cfg.VPN.ExtraPorts, running.ExtraPorts) && (len(cfg.VPN.ExtraPorts) > 0 || len(running.ExtraPorts) > 0) {
		pending("vpn.extra_ports", cfg.VPN.ExtraPorts, running.ExtraPorts)
	}
	filePort := 0
	if cfg.VPN.Obfuscation.Enabled {
		filePort = cfg.VPN.Obfuscation.ListenPort
	}
	if filePort != running.ObfuscationPort {
		pending("vpn.obfuscation.listen_port", filePort, running.ObfuscationPort)
	}
	return out
}

func writableDir(dir string) error {
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err == nil {
			if !fi.IsDir() {
				return fmt.Errorf("%s is not a directory", d)
			}
			f, err := os.CreateTemp(d, ".tariq-check-*")
			if err != nil {
				return fmt.Errorf("%s is not writable: %v", d, err)
			}
			f.Close()
			os.Remove(f.Name())
			return nil
		}
		if d == filepath.Dir(d) {
			return err
		}
	}
}

// safeDataDir runs the store's checks of an existing data directory
// (owner, mode), which would refuse it at start.
func safeDataDir(dir string) error {
	d, err := store.OpenDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // created at start
	}
	if err != nil {
		return err
	}
	return d.Close()
}

// checkPorts tries to bind every configured listener.
func checkPorts(cfg *config.Config) []Finding {
	var out []Finding
	probe := func(key, network, addr string) {
		var err error
		if network == "udp" {
			var c net.PacketConn
			if c, err = net.ListenPacket("udp", addr); err == nil {
				c.Close()
			}
		} else {
			var l net.Listener
			if l, err = net.Listen("tcp", addr); err == nil {
				l.Close()
			}
		}
		if err != nil {
			out = append(out, Finding{Fail, key, fmt.Sprintf("%s %s: %v", network, addr, err)})
		} else {
			out = append(out, Finding{OK, key, fmt.Sprintf("%s %s is free", network, addr)})
		}
	}
	if cfg.Relay.Enabled {
		for _, a := range cfg.Relay.ListenUDP {
			probe("relay.listen_udp", "udp", a)
		}
		for _, a := range cfg.Relay.ListenTCP {
			probe("relay.listen_tcp", "tcp", a)
		}
		if cfg.TLS.Mode != config.TLSOff {
			for _, a := range cfg.Relay.ListenTLS {
				probe("relay.listen_tls", "tcp", a)
			}
		}
	}
	if cfg.VPN.Enabled {
		for _, p := range cfg.VPN.WireGuardPorts() {
			probe(p.Key, "udp", ":"+strconv.Itoa(p.Port))
		}
	}
	if cfg.Web.Enabled {
		for _, a := range cfg.Web.Listen {
			probe("web.listen", "tcp", a)
		}
	}
	if cfg.Server.MetricsListen != "" {
		probe("server.metrics_listen", "tcp", cfg.Server.MetricsListen)
	}
	return out
}
