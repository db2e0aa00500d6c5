package config

import (
	"fmt"
	"net"
	"net/mail"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Validate returns every problem in c, each a *FieldError naming its key.
func (c *Config) Validate() []error {
	var v validator
	c.validateServer(&v)
	c.validateTLS(&v)
	c.validateVPN(&v)
	c.validateRelay(&v)
	c.validateListeners(&v)
	if !c.VPN.Enabled && !c.Relay.Enabled && !c.Web.Enabled {
		v.add("vpn.enabled", "vpn, relay and web are all disabled: there is nothing to serve")
	}
	return v.problems
}

type validator struct{ problems []error }

func (v *validator) add(key, format string, args ...any) {
	v.problems = append(v.problems, &FieldError{Key: key, Msg: fmt.Sprintf(format, args...)})
}

func (c *Config) validateServer(v *validator) {
	s := c.Server
	if s.PublicHost != "" && !ValidHost(s.PublicHost) {
		v.add("server.public_host", "%q is neither an IP address nor a DNS name (no scheme, no port)", s.PublicHost)
	}
	if !filepath.IsAbs(s.DataDir) {
		v.add("server.data_dir", "%q is not an absolute path", s.DataDir)
	}
	switch s.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		v.add("server.log_level", "%q is not one of debug, info, warn, error", s.LogLevel)
	}
	if !filepath.IsAbs(s.AdminSocket) {
		v.add("server.admin_socket", "%q is not an absolute path", s.AdminSocket)
	} else if len(s.AdminSocket) > 107 {
		v.add("server.admin_socket", "%q is longer than a unix socket path may be (107 bytes)", s.AdminSocket)
	}
	if s.MetricsListen != "" {
		if msg := checkListen(s.MetricsListen); msg != "" {
			v.add("server.metrics_listen", "%s", msg)
		}
	}
	if s.NodeName != "" && !ValidNodeName(s.NodeName) {
		v.add("server.node_name", "%q is not a node name (1-63 letters, digits, '.', '_' or '-', starting with a letter or digit)", s.NodeName)
	}
	c.validateEtcd(v)
}

func (c *Config) validateEtcd(v *validator) {
	s, e := c.Server, c.Server.Etcd
	switch s.Store {
	case StoreFile:
		if len(e.Endpoints) > 0 {
			v.add("server.etcd.endpoints", "set, but server.store is file: set server.store to etcd to use the cluster")
		}
	case StoreEtcd:
		if len(e.Endpoints) == 0 {
			v.add("server.etcd.endpoints", "is required when server.store is etcd (the cluster's client URLs, like https://10.0.0.1:2379)")
		}
	default:
		v.add("server.store", "%q is not one of file, etcd", s.Store)
	}
	https := false
	for _, ep := range e.Endpoints {
		u, err := url.Parse(ep)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" || u.Port() == "" ||
			(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
			v.add("server.etcd.endpoints", "%q is not an etcd client URL (like https://10.0.0.1:2379)", ep)
			continue
		}
		https = https || u.Scheme == "https"
	}
	if !ValidEtcdPrefix(e.Prefix) {
		v.add("server.etcd.prefix", "%q is not a key prefix (like /tariq: a '/' then segments of letters, digits, '.', '_' or '-' separated by '/', no '/' at the end)", e.Prefix)
	}
	for key, path := range map[string]string{"server.etcd.ca_file": e.CAFile, "server.etcd.cert_file": e.CertFile, "server.etcd.key_file": e.KeyFile} {
		switch {
		case path == "":
		case !filepath.IsAbs(path):
			v.add(key, "%q is not an absolute path", path)
		case len(e.Endpoints) > 0 && !https:
			v.add(key, "set, but no endpoint is https://: the cluster is reached without TLS")
		}
	}
	if (e.CertFile == "") != (e.KeyFile == "") {
		v.add("server.etcd.cert_file", "cert_file and key_file go together (this node's client certificate and its key)")
	}
}

// ValidNodeName reports whether n may name a node: 1-63 ASCII letters,
// digits, '.', '_' or '-', starting with a letter or digit (a host name
// is one). It is a segment of etcd keys and a column of `tariq node list`.
func ValidNodeName(n string) bool {
	if len(n) == 0 || len(n) > 63 {
		return false
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case (c == '.' || c == '_' || c == '-') && i > 0:
		default:
			return false
		}
	}
	return true
}

// ValidEtcdPrefix reports whether p may be server.etcd.prefix: "/" and
// segments of letters, digits, '.', '_' and '-' joined by "/", with no
// "/" at the end, so that no network's prefix is another's key.
func ValidEtcdPrefix(p string) bool {
	if len(p) < 2 || len(p) > 128 || p[0] != '/' {
		return false
	}
	for _, seg := range strings.Split(p[1:], "/") {
		if seg == "" || seg == "." || seg == ".." {
			return false
		}
		for i := 0; i < len(seg); i++ {
			c := seg[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
				return false
			}
		}
	}
	return true
}

// NodeName returns the node's name: server.node_name, else the host name
// (which must then be a valid node name).
func (c *Config) NodeName() (string, error) {
	if c.Server.NodeName != "" {
		return c.Server.NodeName, nil
	}
	h, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("server.node_name is empty and the host name is unknown (%w): set server.node_name", err)
	}
	if !ValidNodeName(h) {
		return "", fmt.Errorf("server.node_name is empty and the host name %q cannot name a node: set server.node_name", h)
	}
	return h, nil
}

func (c *Config) validateTLS(v *validator) {
	t := c.TLS
	switch t.Mode {
	case TLSAuto, TLSSelfSigned, TLSOff:
	case TLSACME:
		// A public IP address gets a certificate of its own (RFC 8738),
		// with no account contact needed; a DNS name keeps needing one.
		host := c.Server.PublicHost
		if a, err := netip.ParseAddr(host); err == nil {
			if !IsPublicIP(a) {
				v.add("server.public_host", "%s is not a public IP address, and no public CA certifies another (tls.mode acme)", host)
			}
			break
		}
		if host == "" || !isDNSName(host) {
			v.add("server.public_host", "must be a DNS name or a public IP address when tls.mode is acme")
		}
		if t.Email == "" {
			v.add("tls.email", "is required when tls.mode is acme for a DNS name (the CA's account contact)")
		}
	case TLSFiles:
		if t.CertFile == "" {
			v.add("tls.cert_file", "is required when tls.mode is files")
		}
		if t.KeyFile == "" {
			v.add("tls.key_file", "is required when tls.mode is files")
		}
	default:
		v.add("tls.mode", "%q is not one of auto, acme, self-signed, files, off", t.Mode)
	}
	if t.Email != "" {
		if _, err := mail.ParseAddress(t.Email); err != nil || strings.ContainsAny(t.Email, "<> ") {
			v.add("tls.email", "%q is not an email address", t.Email)
		}
	}
	if t.ACMECA != "" {
		if u, err := url.Parse(t.ACMECA); err != nil || u.Scheme != "https" || u.Host == "" {
			v.add("tls.acme_ca", "%q is not an https:// ACME directory URL", t.ACMECA)
		}
	}
	if t.ACMEProfile != "" && !validProfile(t.ACMEProfile) {
		v.add("tls.acme_profile", "%q is not a profile name (letters, digits, '.', '_' and '-', at most 64)", t.ACMEProfile)
	}
	for key, path := range map[string]string{"tls.acme_ca_roots": t.ACMECARoots, "tls.cert_file": t.CertFile, "tls.key_file": t.KeyFile} {
		if path != "" && !filepath.IsAbs(path) {
			v.add(key, "%q is not an absolute path", path)
		}
	}
	if c.Web.Enabled && t.Mode == TLSOff {
		v.add("web.enabled", "the HTTPS page needs TLS, but tls.mode is off")
	}
}

func (c *Config) validateVPN(v *validator) {
	n := c.VPN
	// The destination lists bind every VPN path (WireGuard and Outline),
	// so they are checked even with vpn.enabled off.
	for _, l := range []struct {
		key  string
		list []netip.Prefix
	}{{"vpn.allow_destinations", n.AllowDestinations}, {"vpn.deny_destinations", n.DenyDestinations}} {
		for _, p := range l.list {
			if m := p.Masked(); m != p {
				v.add(l.key, "%s has bits set past the prefix length: write %s for the range, or %s alone for the one address", p, m, p.Addr())
			}
		}
	}
	if !n.Enabled {
		return
	}
	switch n.Mode {
	case "tun":
	case "netstack":
		v.add("vpn.mode", "netstack is not implemented yet; use tun (needs root or CAP_NET_ADMIN and /dev/net/tun)")
	default:
		v.add("vpn.mode", "%q is not one of tun, netstack", n.Mode)
	}
	if n.Interface == "" || len(n.Interface) > 15 || strings.ContainsAny(n.Interface, "/ \t:") {
		v.add("vpn.interface", "%q is not an interface name (1-15 characters, no '/', ':' or spaces)", n.Interface)
	}
	if n.ListenPort < 1 || n.ListenPort > 65535 {
		v.add("vpn.listen_port", "%d is not a port (1-65535)", n.ListenPort)
	}
	for _, p := range n.ExtraPorts {
		if p < 1 || p > 65535 {
			v.add("vpn.extra_ports", "%d is not a port (1-65535)", p)
		}
	}
	if o := n.Obfuscation; o.Enabled && (o.ListenPort < 1 || o.ListenPort > 65535) {
		v.add("vpn.obfuscation.listen_port", "%d is not a port (1-65535)", o.ListenPort)
	}
	if n.Outline.Enabled && (!c.Web.Enabled || c.TLS.Mode == TLSOff) {
		v.add("vpn.outline.enabled", "the Outline path runs on the HTTPS page's ports: it needs web.enabled and a tls.mode other than off")
	}
	var v4, v6 int
	for _, p := range n.Address {
		switch {
		case p.Addr().Is4():
			v4++
			if p.Bits() > 30 {
				v.add("vpn.address", "%s leaves no room for clients (use /30 or shorter)", p)
			}
		default:
			v6++
			if p.Bits() > 126 {
				v.add("vpn.address", "%s leaves no room for clients (use /126 or shorter)", p)
			}
		}
		if p.Addr() == p.Masked().Addr() {
			v.add("vpn.address", "%s is a network address; give the server's own address in it, like %s", p, p.Addr().Next())
		}
	}
	if v4 != 1 {
		v.add("vpn.address", "needs exactly one IPv4 prefix (and at most one IPv6), got %d IPv4", v4)
	}
	if v6 > 1 {
		v.add("vpn.address", "at most one IPv6 prefix, got %d", v6)
	}
	if n.MTU < 1280 || n.MTU > 9000 {
		v.add("vpn.mtu", "%d is outside 1280-9000 (IPv6 needs at least 1280)", n.MTU)
	}
	if len(n.ClientAllowedIPs) == 0 {
		v.add("vpn.client_allowed_ips", "is empty: clients would route nothing through the tunnel")
	}
	if n.PersistentKeepalive < 0 || n.PersistentKeepalive > 65535*time.Second || n.PersistentKeepalive%time.Second != 0 {
		v.add("vpn.persistent_keepalive", "%s is not whole seconds between 0 and 65535s", n.PersistentKeepalive)
	}
}

func (c *Config) validateRelay(v *validator) {
	r := c.Relay
	if !r.Enabled {
		return
	}
	if len(r.ListenUDP)+len(r.ListenTCP)+len(r.ListenTLS) == 0 && !c.Web.Enabled {
		v.add("relay.listen_udp", "the relay is enabled but listens nowhere (listen_udp, listen_tcp, listen_tls and web.listen are all empty)")
	}
	if len(r.ListenTLS) > 0 && c.TLS.Mode == TLSOff {
		v.add("relay.listen_tls", "TURN over TLS needs TLS, but tls.mode is off (empty this list or pick a tls.mode)")
	}
	if r.Realm != "" && (strings.ContainsAny(r.Realm, "\"\\") || len(r.Realm) > 127) {
		v.add("relay.realm", "%q must be under 128 characters without quotes or backslashes", r.Realm)
	}
	var fam4, fam6 int
	for _, a := range r.RelayIP {
		switch {
		case !a.IsValid() || a.IsUnspecified():
			v.add("relay.relay_ip", "%s is not a usable relay address", a)
		case a.Unmap().Is4():
			fam4++
		default:
			fam6++
		}
	}
	if fam4 > 1 || fam6 > 1 {
		v.add("relay.relay_ip", "give at most one IPv4 and one IPv6 address")
	}
	if !r.RelayBind.IsValid() {
		v.add("relay.relay_bind", "is required (0.0.0.0 binds every address)")
	}
	if r.RelayPorts.Min == 0 {
		v.add("relay.relay_ports", "is required, like 49152-65535")
	} else if int(r.RelayPorts.Max)-int(r.RelayPorts.Min) < 1 {
		v.add("relay.relay_ports", "%s has fewer than 2 ports", r.RelayPorts)
	}
	for i, s := range r.Secrets {
		if len(s) < 16 {
			v.add("relay.secrets", "secret #%d is %d characters; use at least 16 (tariq generates one if the list is empty)", i+1, len(s))
		}
	}
	for name, pw := range r.Users {
		switch {
		case name == "" || strings.ContainsAny(name, "\r\n\""):
			v.add("relay.users", "%q is not a usable user name", name)
		case pw == "":
			v.add("relay.users", "user %q has an empty password", name)
		}
	}
	if r.CredentialTTL < time.Minute || r.CredentialTTL > 30*24*time.Hour {
		v.add("relay.credential_ttl", "%s is outside 1m-720h", r.CredentialTTL)
	}
	if r.MaxAllocations < 1 {
		v.add("relay.max_allocations", "%d must be at least 1", r.MaxAllocations)
	}
	if r.MaxAllocationsPerUser < 1 {
		v.add("relay.max_allocations_per_user", "%d must be at least 1", r.MaxAllocationsPerUser)
	} else if r.MaxAllocationsPerUser > r.MaxAllocations && r.MaxAllocations >= 1 {
		v.add("relay.max_allocations_per_user", "%d is more than relay.max_allocations (%d)", r.MaxAllocationsPerUser, r.MaxAllocations)
	}
}

// validateListeners checks every listen address and that no two services
// claim the same port on the same transport.
func (c *Config) validateListeners(v *validator) {
	type claim struct{ key, addr string }
	seen := map[string]claim{} // "udp/port" or "tcp/port" → first claimant
	use := func(transport, key string, list []string, enabled bool) {
		if !enabled {
			return
		}
		for _, addr := range list {
			if msg := checkListen(addr); msg != "" {
				v.add(key, "%s", msg)
				continue
			}
			host, port, _ := net.SplitHostPort(addr)
			if port == "0" {
				continue // kernel-chosen ports never collide
			}
			id := transport + "/" + hostKey(host) + "/" + port
			if prev, ok := seen[id]; ok {
				v.add(key, "%s is already used by %s (%s)", addr, prev.key, prev.addr)
				continue
			}
			// A wildcard and a specific host on one port collide too.
			for other, prev := range seen {
				t, h, p := splitID(other)
				if t == transport && p == port && (h == "*" || hostKey(host) == "*") {
					v.add(key, "%s overlaps %s (%s)", addr, prev.key, prev.addr)
				}
			}
			seen[id] = claim{key, addr}
		}
	}
	use("udp", "relay.listen_udp", c.Relay.ListenUDP, c.Relay.Enabled)
	use("tcp", "relay.listen_tcp", c.Relay.ListenTCP, c.Relay.Enabled)
	use("tcp", "relay.listen_tls", c.Relay.ListenTLS, c.Relay.Enabled)
	use("tcp", "web.listen", c.Web.Listen, c.Web.Enabled)
	if c.VPN.Enabled && c.VPN.ListenPort > 0 {
		use("udp", "vpn.listen_port", []string{":" + strconv.Itoa(c.VPN.ListenPort)}, true)
	}
	// Out-of-range ports are reported by validateVPN; only clashes here.
	udpPorts := func(ports ...int) []string {
		var out []string
		for _, p := range ports {
			if p >= 1 && p <= 65535 {
				out = append(out, ":"+strconv.Itoa(p))
			}
		}
		return out
	}
	use("udp", "vpn.extra_ports", udpPorts(c.VPN.ExtraPorts...), c.VPN.Enabled)
	use("udp", "vpn.obfuscation.listen_port", udpPorts(c.VPN.Obfuscation.ListenPort), c.VPN.Enabled && c.VPN.Obfuscation.Enabled)
	if c.Web.Enabled && len(c.Web.Listen) == 0 {
		v.add("web.listen", "the page is enabled but listens nowhere")
	}
}

func hostKey(host string) string {
	if host == "" || host == "0.0.0.0" || host == "::" {
		return "*"
	}
	return host
}

func splitID(id string) (transport, host, port string) {
	transport, rest, _ := strings.Cut(id, "/")
	i := strings.LastIndexByte(rest, '/')
	return transport, rest[:i], rest[i+1:]
}

// checkListen returns why addr is not a host:port to listen on, or "".
func checkListen(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Sprintf("%q is not host:port (like :3478 or 127.0.0.1:3478)", addr)
	}
	if host != "" {
		if _, err := netip.ParseAddr(host); err != nil && host != "localhost" {
			return fmt.Sprintf("%q: %q is not an IP address (listen addresses take IPs, not names)", addr, host)
		}
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Sprintf("%q: %q is not a port (0-65535)", addr, port)
	}
	return ""
}

// ValidHost reports whether h is an IP address or a DNS name.
func ValidHost(h string) bool {
	if _, err := netip.ParseAddr(h); err == nil {
		return true
	}
	return isDNSName(h)
}

// isDNSName reports whether h is a syntactically valid DNS name that is not an IP address.
func isDNSName(h string) bool {
	if _, err := netip.ParseAddr(h); err == nil {
		return false
	}
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > 253 {
		return false
	}
	for label := range strings.SplitSeq(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

// IsDNSName reports whether h is a DNS name rather than an IP address.
func IsDNSName(h string) bool { return isDNSName(h) }

// validProfile reports whether p can name an ACME profile: the CA's
// directory lists the names it offers (draft-aaron-acme-profiles), which
// cannot be checked offline, so only the characters are.
func validProfile(p string) bool {
	if p == "" || len(p) > 64 {
		return false
	}
	for _, r := range p {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// notPublic are the address blocks the IANA special-purpose registries
// (iana-ipv4-special-registry, iana-ipv6-special-registry) mark as not
// globally reachable, within the unicast space IsPublicIP starts from. No
// public CA certifies an address in them (CA/Browser Forum Baseline
// Requirements 4.2.2: no reserved IP addresses).
var notPublic = func() []netip.Prefix {
	var out []netip.Prefix
	for _, p := range []string{
		"0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
		"192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15",
		"198.51.100.0/24", "203.0.113.0/24", "240.0.0.0/4",
		"2001::/23", "2001:db8::/32", "2002::/16", "3fff::/20",
	} {
		out = append(out, netip.MustParsePrefix(p))
	}
	return out
}()

// globalUnicast6 is the IPv6 global unicast space (RFC 4291 2.4; IANA
// ipv6-unicast-address-assignments): an address outside it is not one a
// server on the internet is reached at.
var globalUnicast6 = netip.MustParsePrefix("2000::/3")

// IsPublicIP reports whether a is a globally reachable unicast address, the
// kind a public CA issues certificates for (Let's Encrypt, in its
// shortlived profile): not loopback, private, link-local, CGNAT, ULA,
// documentation, benchmarking, multicast or otherwise special-purpose.
// IPv4-mapped addresses are judged as the IPv4 address they map.
func IsPublicIP(a netip.Addr) bool {
	a = a.Unmap()
	if !a.IsValid() || a.Zone() != "" || !a.IsGlobalUnicast() {
		return false
	}
	if a.Is6() && !globalUnicast6.Contains(a) {
		return false
	}
	for _, p := range notPublic {
		if p.Contains(a) {
			return false
		}
	}
	return true
}
