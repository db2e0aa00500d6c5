package config

import (
	"bytes"
	"text/template"
)

// TemplateData fills the file `tariq init` writes.
type TemplateData struct {
	Host   string // server.public_host
	Email  string // tls.email
	Secret string // the first relay.secrets entry
	// Outline turns vpn.outline on: for a host that gets a publicly
	// trusted certificate, which the Outline app needs.
	Outline bool
}

var initTemplate = template.Must(template.New("init").Parse(`# tariq configuration, written by "tariq init".
# Every key can also come from the environment as TARIQ_<SECTION>_<KEY>
# (TARIQ_RELAY_REALM, ...), and flags beat both. Unknown keys are an error.
# Apply changes with "systemctl reload tariq" (SIGHUP); the log says which
# changes need a restart.

server:
  public_host: {{printf "%q" .Host}}   # the name or IP clients dial; configs, TURN URIs and the certificate use it
  data_dir: /var/lib/tariq         # keys, secrets, peers, certificates (kept 0600)
  log_level: info                  # debug | info | warn | error
  admin_socket: /run/tariq/admin.sock
  metrics_listen: 127.0.0.1:9477   # Prometheus text format; "" turns metrics off
  store: file                      # file (state.json in data_dir: one server) | etcd (several nodes, one network)
  node_name: ""                    # this node's name among the nodes; empty = the host name
  etcd:                            # the cluster the nodes share their state through (server.store: etcd)
    endpoints: []                  # its client URLs, like [https://10.0.0.1:2379, https://10.0.0.2:2379]
    prefix: /tariq                 # where this network's keys live; one cluster may hold several networks
    ca_file: ""                    # PEM roots the cluster's certificates chain to; empty = the system's
    cert_file: ""                  # this node's client certificate and key (etcd --client-cert-auth)
    key_file: ""

tls:
  mode: auto          # auto | acme | self-signed | files | off
                      # auto: ACME when public_host is a public IP address, or a DNS name
                      # and email is set; else self-signed
  email: {{printf "%q" .Email}}   # the CA account's contact; an IP address needs none
  acme_ca: ""         # ACME directory URL; empty = Let's Encrypt
  acme_ca_roots: ""   # PEM file of roots to trust for that CA (private CAs)
  acme_profile: ""    # empty = shortlived (about 6 days, renewed automatically) for an IP
                      # address, the CA's default for a DNS name
  cert_file: ""       # files mode
  key_file: ""

vpn:
  enabled: true
  mode: tun                        # tun (kernel TUN device)
  interface: tariq0
  listen_port: 51820               # UDP; open it in the VPS firewall
  extra_ports: []                  # more UDP ports for stock WireGuard, like [443] where 51820 is blocked
                                   # ("tariq peer add NAME --port 443" hands a device that port)
  address: [10.77.0.1/24]          # the server's tunnel address; an IPv6 ULA /64 is generated unless you add one
  dns: [1.1.1.1, 1.0.0.1]          # pushed to clients
  mtu: 1420
  nat: true                        # masquerade client traffic out of the uplink
  uplink: ""                       # empty = the default-route interface
  client_allowed_ips: [0.0.0.0/0, "::/0"]
  persistent_keepalive: 25s
  # Members reach the internet, not the server's networks: private, CGNAT, link-local (cloud
  # metadata), ULA, multicast and the other special-purpose ranges are refused on every VPN path.
  allow_destinations: []           # CIDRs members may reach although that list refuses them (a home
                                   # network behind the server, say); never the server itself
  deny_destinations: []            # CIDRs refused to members in addition to that list (these win)
  member_to_member: false          # members' devices reach each other through the tunnel
  obfuscation:                     # AmneziaWG-compatible WireGuard for networks that block plain WireGuard
    enabled: false                 # devices added with --obfuscated use it, in the AmneziaWG or AmneziaVPN app
    listen_port: 51821             # UDP, a port of its own; stock clients keep using the ports above
  outline:                         # the Outline app's path, for networks where no UDP gets through: Shadowsocks
                                   # over WebSocket on the web.listen ports ("tariq peer show NAME --outline")
    enabled: {{.Outline}}{{if .Outline}}                  {{else}}                 {{end}}# needs a publicly trusted certificate (tls: a public IP address, a DNS
                                   # name with email, or files): the app refuses a self-signed one

relay:
  enabled: true
  realm: ""                        # empty = public_host
  listen_udp: [":3478"]
  listen_tcp: [":3478"]
  listen_tls: [":5349"]            # the web.listen port carries TURN over TLS too
  relay_ip: ""                     # public IP for XOR-RELAYED-ADDRESS when the VPS is behind 1:1 NAT
  relay_bind: 0.0.0.0              # 0.0.0.0 (or ::) = every address, both families
  relay_ports: 49152-65535         # open these UDP ports in the VPS firewall
  secrets:                         # REST shared secrets (coturn's use-auth-secret): the first signs, all verify
    - {{printf "%q" .Secret}}
  users: {}                        # static long-term users, name: password
  credential_ttl: 24h              # lifetime of credentials "tariq turn credentials" mints
  max_allocations: 10000
  max_allocations_per_user: 50
  allow_peers: []                  # CIDRs let through although the built-in list denies them
  deny_peers: []                   # CIDRs refused in addition to the built-in list (these win)
  tcp_relay: false                 # RFC 6062 TCP allocations; off: it turns a relay into a TCP proxy

web:
  enabled: true
  listen: [":443"]                 # HTTPS page; TURN over TLS shares the port
`))

// Template returns the commented config file `tariq init` writes. It names
// every key with its default, so it doubles as the reference.
func Template(d TemplateData) string {
	var b bytes.Buffer
	if err := initTemplate.Execute(&b, d); err != nil {
		panic(err) // the template is a constant; a failure is a programming error
	}
	return b.String()
}
