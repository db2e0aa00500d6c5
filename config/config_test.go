package config

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

var update = flag.Bool("update", false, "rewrite golden files")

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "tariq.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// problems returns the lines of a Load error, sorted.
func problems(err error) []string {
	if err == nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(err.Error(), "\n") {
		out = append(out, line)
	}
	slices.Sort(out)
	return out
}

func TestDefaultsValidate(t *testing.T) {
	l, err := Load(Options{File: writeFile(t, "")})
	if err != nil {
		t.Fatalf("defaults do not load: %v", err)
	}
	if diff := cmp.Diff(Default(), l.Config, cmpopts.EquateEmpty(), cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
		cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("empty file differs from Default() (-want +got):\n%s", diff)
	}
}

func TestLoadProblems(t *testing.T) {
	for _, tc := range []struct {
		name string
		yaml string
		want []string
	}{
		{"unknown key", "server:\n  bogus: 1\n", []string{"server.bogus: unknown key"}},
		{"unknown section", "extra: 1\n", []string{"extra: unknown key"}},
		{"port range", "relay:\n  relay_ports: 70000-1\n", []string{`relay.relay_ports: "70000-1" is not a port range (want min-max, 1-65535, min <= max)`}},
		{"reversed range", "relay:\n  relay_ports: 6000-5000\n", []string{`relay.relay_ports: "6000-5000" is not a port range (want min-max, 1-65535, min <= max)`}},
		{"every problem at once", "relay:\n  relay_ip: nope\n  credential_ttl: 3x\n  max_allocations: abc\nserver:\n  bogus: 1\n", []string{
			`relay.credential_ttl: "3x" is not a duration (like 25s, 24h or 1h30m)`,
			`relay.max_allocations: "abc" is not a valid int`,
			`relay.relay_ip: "nope" is not an IP address`,
			"server.bogus: unknown key",
		}},
		{"bad prefix", "relay:\n  allow_peers: [10.0.0.0/33]\n", []string{`relay.allow_peers: "10.0.0.0/33" is not an IP prefix (like 10.0.0.0/8)`}},
		{"bad destination", "vpn:\n  allow_destinations: [10.0.0.0/33]\n  deny_destinations: [nope]\n  member_to_member: perhaps\n", []string{
			`vpn.allow_destinations: "10.0.0.0/33" is not an IP prefix (like 10.0.0.0/8)`,
			`vpn.deny_destinations: "nope" is not an IP prefix (like 10.0.0.0/8) or address`,
			`vpn.member_to_member: "perhaps" is not a valid bool`,
		}},
		{"destination with host bits", "vpn:\n  enabled: false\n  allow_destinations: [192.168.1.7/24]\n  deny_destinations: ['fd00::1/8', 10.1.0.0/16]\n", []string{
			"vpn.allow_destinations: 192.168.1.7/24 has bits set past the prefix length: write 192.168.1.0/24 for the range, or 192.168.1.7 alone for the one address",
			"vpn.deny_destinations: fd00::1/8 has bits set past the prefix length: write fd00::/8 for the range, or fd00::1 alone for the one address",
		}},
		{"log level", "server:\n  log_level: loud\n", []string{`server.log_level: "loud" is not one of debug, info, warn, error`}},
		{"store", "server:\n  store: consul\n  node_name: -x\n", []string{
			`server.node_name: "-x" is not a node name (1-63 letters, digits, '.', '_' or '-', starting with a letter or digit)`,
			`server.store: "consul" is not one of file, etcd`,
		}},
		{"etcd without endpoints", "server:\n  store: etcd\n", []string{
			"server.etcd.endpoints: is required when server.store is etcd (the cluster's client URLs, like https://10.0.0.1:2379)",
		}},
		{"etcd keys with the file store", "server:\n  etcd:\n    endpoints: [https://10.0.0.1:2379]\n", []string{
			"server.etcd.endpoints: set, but server.store is file: set server.store to etcd to use the cluster",
		}},
		{"etcd values", "server:\n  store: etcd\n  etcd:\n    endpoints: [10.0.0.1:2379, 'http://10.0.0.2:2379']\n    prefix: /tariq/\n    ca_file: ca.pem\n    cert_file: /etc/c.pem\n", []string{
			"server.etcd.ca_file: \"ca.pem\" is not an absolute path",
			"server.etcd.cert_file: cert_file and key_file go together (this node's client certificate and its key)",
			"server.etcd.cert_file: set, but no endpoint is https://: the cluster is reached without TLS",
			`server.etcd.endpoints: "10.0.0.1:2379" is not an etcd client URL (like https://10.0.0.1:2379)`,
			`server.etcd.prefix: "/tariq/" is not a key prefix (like /tariq: a '/' then segments of letters, digits, '.', '_' or '-' separated by '/', no '/' at the end)`,
		}},
		{"relative data dir", "server:\n  data_dir: state\n", []string{`server.data_dir: "state" is not an absolute path`}},
		{"public host with scheme", "server:\n  public_host: https://x.example\n", []string{`server.public_host: "https://x.example" is neither an IP address nor a DNS name (no scheme, no port)`}},
		{"tls mode", "tls:\n  mode: maybe\n", []string{`tls.mode: "maybe" is not one of auto, acme, self-signed, files, off`}},
		{"acme needs a host", "tls:\n  mode: acme\n", []string{
			"server.public_host: must be a DNS name or a public IP address when tls.mode is acme",
			"tls.email: is required when tls.mode is acme for a DNS name (the CA's account contact)",
		}},
		{"acme on a name needs email", "server:\n  public_host: vpn.example.org\ntls:\n  mode: acme\n", []string{
			"tls.email: is required when tls.mode is acme for a DNS name (the CA's account contact)",
		}},
		{"acme on a documentation address", "server:\n  public_host: 203.0.113.9\ntls:\n  mode: acme\n", []string{
			"server.public_host: 203.0.113.9 is not a public IP address, and no public CA certifies another (tls.mode acme)",
		}},
		{"acme on a private address", "server:\n  public_host: 10.1.2.3\ntls:\n  mode: acme\n  email: ops@example.org\n", []string{
			"server.public_host: 10.1.2.3 is not a public IP address, and no public CA certifies another (tls.mode acme)",
		}},
		{"acme on loopback ipv6", "server:\n  public_host: '::1'\ntls:\n  mode: acme\n", []string{
			"server.public_host: ::1 is not a public IP address, and no public CA certifies another (tls.mode acme)",
		}},
		{"acme on a public address needs no email", "server:\n  public_host: 193.0.14.129\ntls:\n  mode: acme\n", nil},
		{"acme on a public ipv6 address", "server:\n  public_host: '2a00:1450:4001:80e::200e'\ntls:\n  mode: acme\n  acme_profile: shortlived\n", nil},
		{"acme profile characters", "tls:\n  acme_profile: short lived\n", []string{
			`tls.acme_profile: "short lived" is not a profile name (letters, digits, '.', '_' and '-', at most 64)`,
		}},
		{"acme profile injection", "tls:\n  acme_profile: 'shortlived\",\"x'\n", []string{
			`tls.acme_profile: "shortlived\",\"x" is not a profile name (letters, digits, '.', '_' and '-', at most 64)`,
		}},
		{"acme profile too long", "tls:\n  acme_profile: " + strings.Repeat("a", 65) + "\n", []string{
			`tls.acme_profile: "` + strings.Repeat("a", 65) + `" is not a profile name (letters, digits, '.', '_' and '-', at most 64)`,
		}},
		{"acme profile", "tls:\n  acme_profile: tlsserver\n", nil},
		{"files needs files", "tls:\n  mode: files\n", []string{"tls.cert_file: is required when tls.mode is files", "tls.key_file: is required when tls.mode is files"}},
		{"acme ca url", "tls:\n  acme_ca: http://ca.example/dir\n", []string{`tls.acme_ca: "http://ca.example/dir" is not an https:// ACME directory URL`}},
		{"email", "tls:\n  email: not-an-email\n", []string{`tls.email: "not-an-email" is not an email address`}},
		{"web needs tls", "tls:\n  mode: 'off'\nrelay:\n  listen_tls: []\n", []string{"web.enabled: the HTTPS page needs TLS, but tls.mode is off"}},
		{"listen syntax", "relay:\n  listen_udp: [\"3478\"]\n", []string{`relay.listen_udp: "3478" is not host:port (like :3478 or 127.0.0.1:3478)`}},
		{"listen host name", "relay:\n  listen_tcp: [\"example.com:3478\"]\n", []string{`relay.listen_tcp: "example.com:3478": "example.com" is not an IP address (listen addresses take IPs, not names)`}},
		{"port clash", "relay:\n  listen_tls: [\":443\"]\n", []string{"web.listen: :443 is already used by relay.listen_tls (:443)"}},
		{"wildcard overlap", "relay:\n  listen_udp: [\"127.0.0.1:51820\"]\n", []string{"vpn.listen_port: :51820 overlaps relay.listen_udp (127.0.0.1:51820)"}},
		{"secret too short", "relay:\n  secrets: [short]\n", []string{"relay.secrets: secret #1 is 5 characters; use at least 16 (tariq generates one if the list is empty)"}},
		{"empty password", "relay:\n  users: {bob: \"\"}\n", []string{`relay.users: user "bob" has an empty password`}},
		{"per-user over total", "relay:\n  max_allocations: 10\n  max_allocations_per_user: 11\n", []string{"relay.max_allocations_per_user: 11 is more than relay.max_allocations (10)"}},
		{"two relay ipv4", "relay:\n  relay_ip: [203.0.113.1, 203.0.113.2]\n", []string{"relay.relay_ip: give at most one IPv4 and one IPv6 address"}},
		{"vpn address is a network", "vpn:\n  address: [10.77.0.0/24]\n", []string{"vpn.address: 10.77.0.0/24 is a network address; give the server's own address in it, like 10.77.0.1"}},
		{"vpn needs ipv4", "vpn:\n  address: [fd00::1/64]\n", []string{"vpn.address: needs exactly one IPv4 prefix (and at most one IPv6), got 0 IPv4"}},
		{"vpn mtu", "vpn:\n  mtu: 500\n", []string{"vpn.mtu: 500 is outside 1280-9000 (IPv6 needs at least 1280)"}},
		{"vpn interface", "vpn:\n  interface: a-very-long-interface-name\n", []string{`vpn.interface: "a-very-long-interface-name" is not an interface name (1-15 characters, no '/', ':' or spaces)`}},
		{"keepalive fraction", "vpn:\n  persistent_keepalive: 1.5\n", []string{"vpn.persistent_keepalive: 1.5s is not whole seconds between 0 and 65535s"}},
		{"nothing to serve", "vpn: {enabled: false}\nrelay: {enabled: false}\nweb: {enabled: false}\n", []string{"vpn.enabled: vpn, relay and web are all disabled: there is nothing to serve"}},
		{"extra port range", "vpn:\n  extra_ports: [0, 70000, 443]\n", []string{"vpn.extra_ports: 0 is not a port (1-65535)", "vpn.extra_ports: 70000 is not a port (1-65535)"}},
		{"extra port twice", "vpn:\n  extra_ports: [443, 443]\n", []string{"vpn.extra_ports: :443 is already used by vpn.extra_ports (:443)"}},
		{"extra port is listen port", "vpn:\n  extra_ports: [51820]\n", []string{"vpn.extra_ports: :51820 is already used by vpn.listen_port (:51820)"}},
		{"extra port is turn's", "vpn:\n  extra_ports: [3478]\n", []string{"vpn.extra_ports: :3478 is already used by relay.listen_udp (:3478)"}},
		{"extra port not a number", "vpn:\n  extra_ports: [https]\n", []string{`vpn.extra_ports: "https" is not a valid int`}},
		{"obfuscation port range", "vpn:\n  obfuscation: {enabled: true, listen_port: 0}\n", []string{"vpn.obfuscation.listen_port: 0 is not a port (1-65535)"}},
		{"obfuscation port is listen port", "vpn:\n  obfuscation: {enabled: true, listen_port: 51820}\n", []string{"vpn.obfuscation.listen_port: :51820 is already used by vpn.listen_port (:51820)"}},
		{"obfuscation port is an extra port", "vpn:\n  extra_ports: [443]\n  obfuscation: {enabled: true, listen_port: 443}\n", []string{"vpn.obfuscation.listen_port: :443 is already used by vpn.extra_ports (:443)"}},
		{"obfuscation port is turn's", "vpn:\n  obfuscation: {enabled: true, listen_port: 3478}\n", []string{"vpn.obfuscation.listen_port: :3478 is already used by relay.listen_udp (:3478)"}},
		{"ports that fit together", "vpn:\n  extra_ports: [443, 8443]\n  obfuscation: {enabled: true, listen_port: 51821}\n", nil},
		{"obfuscation off claims nothing", "vpn:\n  obfuscation: {enabled: false, listen_port: 51820}\n", nil},
		{"obfuscation unknown key", "vpn:\n  obfuscation: {enabled: true, jc: 4}\n", []string{"vpn.obfuscation.jc: unknown key"}},
		{"outline without the page", "vpn:\n  outline: {enabled: true}\nweb: {enabled: false}\n",
			[]string{"vpn.outline.enabled: the Outline path runs on the HTTPS page's ports: it needs web.enabled and a tls.mode other than off"}},
		{"outline without TLS", "vpn:\n  outline: {enabled: true}\ntls: {mode: \"off\"}\nweb: {enabled: false}\nrelay: {listen_tls: []}\n",
			[]string{"vpn.outline.enabled: the Outline path runs on the HTTPS page's ports: it needs web.enabled and a tls.mode other than off"}},
		{"outline with the VPN off claims nothing", "vpn:\n  enabled: false\n  outline: {enabled: true}\nweb: {enabled: false}\n", nil},
		{"outline on", "vpn:\n  outline: {enabled: true}\n", nil},
		{"outline unknown key", "vpn:\n  outline: {enabled: true, port: 443}\n", []string{"vpn.outline.port: unknown key"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(Options{File: writeFile(t, tc.yaml)})
			want := slices.Clone(tc.want)
			slices.Sort(want)
			if diff := cmp.Diff(want, problems(err)); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
			var fe *FieldError
			if err != nil && !errors.As(err, &fe) {
				t.Errorf("error %v carries no *FieldError", err)
			}
		})
	}
}

func TestLoadFileErrors(t *testing.T) {
	if _, err := Load(Options{File: filepath.Join(t.TempDir(), "missing.yaml")}); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("missing explicit file: %v", err)
	}
	if _, err := Load(Options{File: writeFile(t, "relay: [unclosed\n")}); err == nil || !strings.Contains(err.Error(), "line 1: did not find expected ',' or ']'") {
		t.Errorf("broken YAML: %v", err)
	}
}

// TestLoadYAMLErrorLine: a malformed file is named with the line where the
// problem is, one line of text per problem, whatever yaml.v3 would report
// (it names the line where the enclosing block began).
func TestLoadYAMLErrorLine(t *testing.T) {
	for _, tt := range []struct {
		name, body string
		want       []string // after "config FILE: "
	}{
		{"bad indentation", "server:\n  public_host: a\n  data_dir: /x\nvpn:\n  enabled: true\n  mtu: 1400\n relay: 1\n",
			[]string{"line 7: did not find expected key"}},
		{"unclosed quote", "server:\n  public_host: \"a\n", []string{"line 2: found unexpected end of stream"}},
		{"tab", "server:\n\tpublic_host: a\n", []string{"line 2: found character that cannot start any token"}},
		{"unclosed list", "# tariq\nrelay:\n  users: {}\n  listen_udp: [a\n\nweb:\n  enabled: true\n",
			[]string{"line 4: did not find expected ',' or ']'"}},
		{"multi-line string before the error", "server:\n  public_host: \"a\n    b\"\n  log_level: info\n   data_dir: /x\n",
			[]string{"line 5: mapping values are not allowed in this context"}},
		{"duplicate keys", "server:\n  public_host: a\nserver:\n  data_dir: b\nvpn: {}\nvpn: {}\n",
			[]string{`line 3: mapping key "server" already defined at line 1`, `line 6: mapping key "vpn" already defined at line 5`}},
		{"a list", "- server\n- vpn\n", []string{"line 1: want a mapping of sections (server:, tls:, vpn:, relay:, web:), not a list"}},
		{"a scalar", "hello\n", []string{"line 1: want a mapping of sections (server:, tls:, vpn:, relay:, web:), not a scalar"}},
		{"a section as a scalar", "server: 5\nvpn:\ntls:\n  mode: auto\nrelay: [a]\n",
			[]string{"line 1: server: want the section's keys indented under it, not a scalar", "line 5: relay: want the section's keys indented under it, not a list"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			file := writeFile(t, tt.body)
			_, err := Load(Options{File: file})
			var want []string
			for _, w := range tt.want {
				want = append(want, "config "+file+": "+w)
			}
			if err == nil || err.Error() != strings.Join(want, "\n") {
				t.Errorf("got %v\nwant %s", err, strings.Join(want, "\n"))
			}
			var fe *FileError
			if !errors.As(err, &fe) || fe.File != file {
				t.Errorf("not a *FileError for %s: %#v", file, err)
			}
		})
	}
}

func TestPrecedence(t *testing.T) {
	file := writeFile(t, "relay:\n  realm: from-file\n")
	get := func(opts Options) string {
		t.Helper()
		opts.File = file
		l, err := Load(opts)
		if err != nil {
			t.Fatal(err)
		}
		return l.Relay.Realm
	}
	if got := get(Options{}); got != "from-file" {
		t.Errorf("file: %q", got)
	}
	t.Setenv("TARIQ_RELAY_REALM", "from-env")
	if got := get(Options{}); got != "from-env" {
		t.Errorf("env over file: %q", got)
	}
	if got := get(Options{Set: map[string]string{"relay.realm": "from-flag"}}); got != "from-flag" {
		t.Errorf("flag over env: %q", got)
	}
	if _, err := Load(Options{File: file, Set: map[string]string{"relay.nope": "x"}}); err == nil || !strings.Contains(err.Error(), "relay.nope: unknown key") {
		t.Errorf("unknown flag key: %v", err)
	}
}

func TestUnknownEnv(t *testing.T) {
	t.Setenv("TARIQ_RELAY_REALMM", "typo")
	_, err := Load(Options{File: writeFile(t, "")})
	if err == nil || !strings.Contains(err.Error(), "TARIQ_RELAY_REALMM: unknown environment variable") {
		t.Errorf("typo in env: %v", err)
	}
}

// envValues gives every key a valid value that differs from its default, in
// the environment's string form, and what flatten must then report.
var envValues = map[string][2]string{
	"server.public_host":             {"vpn.example.org", "vpn.example.org"},
	"server.data_dir":                {"/srv/tariq", "/srv/tariq"},
	"server.log_level":               {"debug", "debug"},
	"server.admin_socket":            {"/tmp/t.sock", "/tmp/t.sock"},
	"server.metrics_listen":          {"127.0.0.1:9999", "127.0.0.1:9999"},
	"server.store":                   {"etcd", "etcd"},
	"server.node_name":               {"node-1", "node-1"},
	"server.etcd.endpoints":          {"https://10.0.0.1:2379,https://10.0.0.2:2379", "[https://10.0.0.1:2379 https://10.0.0.2:2379]"},
	"server.etcd.prefix":             {"/family-a", "/family-a"},
	"server.etcd.ca_file":            {"/etc/tariq/etcd-ca.pem", "/etc/tariq/etcd-ca.pem"},
	"server.etcd.cert_file":          {"/etc/tariq/etcd.pem", "/etc/tariq/etcd.pem"},
	"server.etcd.key_file":           {"/etc/tariq/etcd-key.pem", "/etc/tariq/etcd-key.pem"},
	"tls.mode":                       {"self-signed", "self-signed"},
	"tls.email":                      {"ops@example.org", "ops@example.org"},
	"tls.acme_ca":                    {"https://ca.example/dir", "https://ca.example/dir"},
	"tls.acme_ca_roots":              {"/etc/roots.pem", "/etc/roots.pem"},
	"tls.acme_profile":               {"shortlived", "shortlived"},
	"tls.cert_file":                  {"/etc/c.pem", "/etc/c.pem"},
	"tls.key_file":                   {"/etc/k.pem", "/etc/k.pem"},
	"vpn.enabled":                    {"false", "false"},
	"vpn.mode":                       {"tun", "tun"},
	"vpn.interface":                  {"wg9", "wg9"},
	"vpn.listen_port":                {"51821", "51821"},
	"vpn.address":                    {"10.9.0.1/24,fd00:9::1/64", "[10.9.0.1/24 fd00:9::1/64]"},
	"vpn.dns":                        {"9.9.9.9", "[9.9.9.9]"},
	"vpn.mtu":                        {"1380", "1380"},
	"vpn.nat":                        {"false", "false"},
	"vpn.uplink":                     {"eth1", "eth1"},
	"vpn.client_allowed_ips":         {"10.0.0.0/8", "[10.0.0.0/8]"},
	"vpn.persistent_keepalive":       {"15s", "15s"},
	"vpn.extra_ports":                {"443,8443", "[443 8443]"},
	"vpn.obfuscation.enabled":        {"true", "true"},
	"vpn.obfuscation.listen_port":    {"51900", "51900"},
	"vpn.allow_destinations":         {"192.168.1.0/24,fd00::/8", "[192.168.1.0/24 fd00::/8]"},
	"vpn.deny_destinations":          {"8.8.8.8", "[8.8.8.8/32]"},
	"vpn.member_to_member":           {"true", "true"},
	"vpn.outline.enabled":            {"true", "true"},
	"relay.enabled":                  {"false", "false"},
	"relay.realm":                    {"example.org", "example.org"},
	"relay.listen_udp":               {":3479,:3480", "[:3479 :3480]"},
	"relay.listen_tcp":               {":3479", "[:3479]"},
	"relay.listen_tls":               {":5350", "[:5350]"},
	"relay.relay_ip":                 {"203.0.113.7,2001:db8::7", "[203.0.113.7 2001:db8::7]"},
	"relay.relay_bind":               {"203.0.113.7", "203.0.113.7"},
	"relay.relay_ports":              {"50000-50100", "50000-50100"},
	"relay.secrets":                  {"aaaaaaaaaaaaaaaa,bbbbbbbbbbbbbbbb", "[aaaaaaaaaaaaaaaa bbbbbbbbbbbbbbbb]"},
	"relay.users":                    {"Alice=pw1,bob=pw2", "map[Alice:pw1 bob:pw2]"},
	"relay.credential_ttl":           {"1h", "1h0m0s"},
	"relay.max_allocations":          {"100", "100"},
	"relay.max_allocations_per_user": {"5", "5"},
	"relay.allow_peers":              {"127.0.0.1,10.0.0.0/8", "[127.0.0.1/32 10.0.0.0/8]"},
	"relay.deny_peers":               {"198.51.100.0/24", "[198.51.100.0/24]"},
	"relay.tcp_relay":                {"true", "true"},
	"web.enabled":                    {"false", "false"},
	"web.listen":                     {":8443", "[:8443]"},
}

// TestEveryKeyFromEnv sets each key through its TARIQ_* variable alone and
// checks it arrives: viper only reads variables for keys it knows (#188, #761).
func TestEveryKeyFromEnv(t *testing.T) {
	for _, key := range Keys() {
		v, ok := envValues[key]
		if !ok {
			t.Errorf("%s has no entry in envValues: add one", key)
			continue
		}
		t.Run(key, func(t *testing.T) {
			t.Setenv(EnvName(key), v[0])
			// Keys that are only valid with a companion setting.
			base := "vpn: {enabled: false}\n"
			switch key {
			case "vpn.enabled", "vpn.mode", "vpn.interface", "vpn.listen_port", "vpn.address", "vpn.dns", "vpn.mtu",
				"vpn.nat", "vpn.uplink", "vpn.client_allowed_ips", "vpn.persistent_keepalive",
				"vpn.extra_ports", "vpn.obfuscation.enabled", "vpn.obfuscation.listen_port", "vpn.outline.enabled":
				base = ""
			case "web.enabled":
				base = ""
			case "server.store":
				base += "server: {etcd: {endpoints: ['https://10.0.0.1:2379']}}\n"
			case "server.etcd.endpoints":
				base += "server: {store: etcd}\n"
			case "server.etcd.cert_file":
				base += "server: {etcd: {key_file: /k.pem}}\n"
			case "server.etcd.key_file":
				base += "server: {etcd: {cert_file: /c.pem}}\n"
			}
			l, err := Load(Options{File: writeFile(t, base)})
			if err != nil {
				t.Fatalf("%s=%s: %v", EnvName(key), v[0], err)
			}
			got := fmt.Sprint(flatten(l.Config)[key])
			if key == "relay.users" {
				got = fmt.Sprint(l.Relay.Users)
				got = strings.ReplaceAll(got, "[redacted]", "") // Secret redacts in fmt
				want := fmt.Sprint(map[string]string{"Alice": "pw1", "bob": "pw2"})
				if fmt.Sprint(len(l.Relay.Users)) != "2" || l.Relay.Users["Alice"].Reveal() != "pw1" {
					t.Errorf("users: got %v, want %s", l.Relay.Users, want)
				}
				return
			}
			if got != v[1] {
				t.Errorf("got %s, want %s", got, v[1])
			}
		})
	}
}

func TestUsersKeepCase(t *testing.T) {
	l, err := Load(Options{File: writeFile(t, "relay:\n  users:\n    Alice: Secret1\n    bob: 123\n")})
	if err != nil {
		t.Fatal(err)
	}
	if l.Relay.Users["Alice"].Reveal() != "Secret1" || l.Relay.Users["bob"].Reveal() != "123" || len(l.Relay.Users) != 2 {
		t.Errorf("users = %#v", l.Relay.Users)
	}
}

func TestDurationsAndPrefixes(t *testing.T) {
	l, err := Load(Options{File: writeFile(t, "vpn:\n  persistent_keepalive: 30\nrelay:\n  credential_ttl: 90m\n  allow_peers: ['::ffff:127.0.0.1']\n")})
	if err != nil {
		t.Fatal(err)
	}
	if l.VPN.PersistentKeepalive != 30*time.Second {
		t.Errorf("bare number keepalive = %v, want 30s", l.VPN.PersistentKeepalive)
	}
	if l.Relay.CredentialTTL != 90*time.Minute {
		t.Errorf("ttl = %v", l.Relay.CredentialTTL)
	}
	if l.Relay.AllowPeers[0].Bits() != 128 {
		t.Errorf("bare address prefix = %v, want a /128", l.Relay.AllowPeers[0])
	}
}

func TestSecretRedacted(t *testing.T) {
	s := Secret("hunter2hunter2hunter2")
	for _, got := range []string{fmt.Sprint(s), fmt.Sprintf("%v %s %#v", s, s, s), fmt.Sprint(RelayConfig{Secrets: []Secret{s}})} {
		if strings.Contains(got, "hunter2") {
			t.Errorf("secret leaked: %s", got)
		}
	}
	if s.Reveal() != "hunter2hunter2hunter2" {
		t.Error("Reveal")
	}
}

// TestTemplate checks `tariq init`'s file against a golden copy, that it
// loads, and that it names every key (so it stays the reference).
func TestTemplate(t *testing.T) {
	text := Template(TemplateData{Host: "vpn.example.org", Email: "ops@example.org", Secret: "0123456789abcdef0123456789abcdef", Outline: true})
	golden := filepath.Join("testdata", "init.golden.yaml")
	if *update {
		if err := os.WriteFile(golden, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(want), text); diff != "" {
		t.Errorf("template differs from %s (-want +got; rerun with -update if intended):\n%s", golden, diff)
	}
	l, err := Load(Options{File: writeFile(t, text)})
	if err != nil {
		t.Fatalf("template does not load: %v", err)
	}
	if l.Server.PublicHost != "vpn.example.org" || l.Relay.Secrets[0].Reveal() != "0123456789abcdef0123456789abcdef" || !l.VPN.Outline.Enabled {
		t.Errorf("template values not read back: %+v %+v", l.Server, l.VPN.Outline)
	}
	// A host without a trusted certificate gets the Outline path off, the
	// file otherwise the same.
	off := Template(TemplateData{Host: "10.0.0.1", Secret: "0123456789abcdef0123456789abcdef"})
	if l, err := Load(Options{File: writeFile(t, off)}); err != nil || l.VPN.Outline.Enabled {
		t.Errorf("template with Outline off: %v, outline %+v", err, l)
	}
	if got := len(strings.Split(off, "\n")); got != len(strings.Split(text, "\n")) {
		t.Errorf("the template has %d lines with Outline off, %d with it on", got, len(strings.Split(text, "\n")))
	}
	for _, key := range Keys() {
		// Each part of the path at its own depth: "vpn:", "  obfuscation:", "    enabled:".
		for i, part := range strings.Split(key, ".") {
			if !strings.Contains(text, "\n"+strings.Repeat("  ", i)+part+":") {
				t.Errorf("template does not name %s", key)
				break
			}
		}
	}
}

func FuzzPortRange(f *testing.F) {
	for _, s := range []string{"49152-65535", "1-1", "0-5", "70000-1", "5", "a-b", "-", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var r PortRange
		if err := r.UnmarshalText([]byte(s)); err != nil {
			return
		}
		if r.Min == 0 || r.Min > r.Max {
			t.Fatalf("%q accepted as %v", s, r)
		}
		var back PortRange
		if err := back.UnmarshalText([]byte(r.String())); err != nil || back != r {
			t.Fatalf("%v does not round-trip", r)
		}
	})
}

// TestIsPublicIP checks which addresses count as public, the ones a public
// CA certifies: globally reachable unicast, per the IANA special-purpose
// registries.
func TestIsPublicIP(t *testing.T) {
	for _, tc := range []struct {
		addr string
		want bool
	}{
		{"193.0.14.129", true},
		{"8.8.8.8", true},
		{"::ffff:193.0.14.129", true}, // judged as the IPv4 address it maps
		{"2a00:1450:4001:80e::200e", true},
		{"2606:4700:4700::1111", true},
		{"127.0.0.1", false},
		{"127.8.9.10", false},
		{"::1", false},
		{"0.0.0.0", false},
		{"::", false},
		{"10.1.2.3", false},
		{"172.16.0.1", false},
		{"192.168.1.1", false},
		{"100.64.0.1", false},
		{"169.254.169.254", false},
		{"192.0.0.9", false},
		{"192.0.2.2", false},
		{"198.18.0.1", false},
		{"198.51.100.7", false},
		{"203.0.113.9", false},
		{"224.0.0.1", false},
		{"240.0.0.1", false},
		{"255.255.255.255", false},
		{"::ffff:10.0.0.1", false},
		{"::ffff:127.0.0.1", false},
		{"fe80::1", false},
		{"fe80::1%eth0", false},
		{"fd00:ec2::254", false},
		{"fc00::1", false},
		{"ff02::1", false},
		{"2001:db8::10", false},
		{"3fff::1", false},
		{"2001::1", false},           // Teredo
		{"2002:c000:0204::1", false}, // 6to4
		{"64:ff9b::808:808", false},  // NAT64: not the server's own address
		{"100::1", false},
		{"5f00::1", false},
		{"4000::1", false}, // outside 2000::/3: unallocated
	} {
		if got := IsPublicIP(netip.MustParseAddr(tc.addr)); got != tc.want {
			t.Errorf("IsPublicIP(%s) = %v, want %v", tc.addr, got, tc.want)
		}
	}
	if IsPublicIP(netip.Addr{}) {
		t.Error("the zero Addr is public")
	}
}
