package relay

import (
	"bytes"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/tariq-vpn/tariq/config"
)

// Endpoint is one way to reach the relay, as an ICE server URI names it.
type Endpoint struct {
	Scheme    string // turn or turns
	Host      string
	Port      int
	Transport string // udp or tcp
}

// URI returns the RFC 7065 URI, e.g. turns:vpn.example.com:443?transport=tcp.
func (e Endpoint) URI() string {
	return fmt.Sprintf("%s:%s?transport=%s", e.Scheme, net.JoinHostPort(e.Host, strconv.Itoa(e.Port)), e.Transport)
}

// Protocol is LiveKit's name for the endpoint's transport: udp, tcp or tls.
func (e Endpoint) Protocol() string {
	if e.Scheme == "turns" {
		return "tls"
	}
	return e.Transport
}

// Endpoints lists how clients reach the relay at host: UDP, TCP and TLS on
// the configured ports, and TLS on each web.listen port (the HTTPS port
// carries TURN too). Each port appears once per kind.
func Endpoints(cfg *config.Config, host string, tlsOnWeb bool) []Endpoint {
	var out []Endpoint
	add := func(scheme, transport string, addrs []string) {
		for _, a := range addrs {
			_, p, err := net.SplitHostPort(a)
			port, _ := strconv.Atoi(p)
			if err != nil || port == 0 {
				continue
			}
			e := Endpoint{scheme, host, port, transport}
			if !slices.Contains(out, e) {
				out = append(out, e)
			}
		}
	}
	if !cfg.Relay.Enabled {
		return nil
	}
	add("turn", "udp", cfg.Relay.ListenUDP)
	add("turn", "tcp", cfg.Relay.ListenTCP)
	add("turns", "tcp", cfg.Relay.ListenTLS)
	if tlsOnWeb && cfg.Web.Enabled {
		add("turns", "tcp", cfg.Web.Listen)
	}
	return out
}

// Apps are the applications `tariq turn app` knows.
var Apps = []string{"synapse", "nextcloud", "jitsi", "galene", "livekit"}

type snippetData struct {
	Host      string
	Secret    string
	Endpoints []Endpoint
	TTL       time.Duration
	TTLSecs   int
	Lifetime  string // Synapse-style duration, e.g. 24h
}

func (d snippetData) Of(scheme, transport string) []Endpoint {
	var out []Endpoint
	for _, e := range d.Endpoints {
		if e.Scheme == scheme && e.Transport == transport {
			out = append(out, e)
		}
	}
	return out
}

// serverGroup is one Nextcloud Talk TURN server: a scheme and host:port
// with every transport it takes there.
type serverGroup struct{ Scheme, HostPort, Transports string }

func (d snippetData) Grouped() []serverGroup {
	var out []serverGroup
	for _, e := range d.Endpoints {
		hp := net.JoinHostPort(e.Host, strconv.Itoa(e.Port))
		i := slices.IndexFunc(out, func(g serverGroup) bool { return g.Scheme == e.Scheme && g.HostPort == hp })
		if i < 0 {
			out = append(out, serverGroup{e.Scheme, hp, e.Transport})
		} else if !strings.Contains(out[i].Transports, e.Transport) {
			out[i].Transports += "," + e.Transport
		}
	}
	return out
}

var snippets = template.Must(template.New("").Funcs(template.FuncMap{
	"hostport": func(e Endpoint) string { return net.JoinHostPort(e.Host, strconv.Itoa(e.Port)) },
}).Parse(`
{{define "synapse"}}# homeserver.yaml (Synapse). Restart Synapse after editing.
turn_uris:
{{- range .Endpoints}}
  - "{{.URI}}"
{{- end}}
turn_shared_secret: "{{.Secret}}"
# Credentials Synapse hands out live this long; tariq checks expiry only when
# a call allocates, so calls outlive it as with coturn.
turn_user_lifetime: {{.Lifetime}}
turn_allow_guests: true
{{end}}
{{define "nextcloud"}}# Nextcloud Talk: run as the web server user in the Nextcloud directory.
{{- range .Of "turn" "udp"}}
occ talk:stun:add {{hostport .}}
{{- end}}
{{- range .Grouped}}
occ talk:turn:add {{.Scheme}} {{.HostPort}} {{.Transports}} --secret="{{$.Secret}}"
{{- end}}
# Talk mints 24-hour credentials itself (Settings > Talk shows the servers).
{{end}}
{{define "jitsi"}}-- Prosody (Jitsi Meet): /etc/prosody/conf.d/<your-domain>.cfg.lua, then restart prosody.
external_service_secret = "{{.Secret}}";
external_services = {
{{- range .Of "turn" "udp"}}
    { type = "stun", host = "{{.Host}}", port = {{.Port}} },
{{- end}}
{{- range .Endpoints}}
    { type = "{{.Scheme}}", host = "{{.Host}}", port = {{.Port}}, transport = "{{.Transport}}", secret = true, ttl = {{$.TTLSecs}}, algorithm = "turn" },
{{- end}}
};
-- docker-jitsi-meet instead: in .env set
{{- with .Of "turn" "udp"}}{{with index . 0}}
--   TURN_HOST={{.Host}}  TURN_PORT={{.Port}}  TURN_TRANSPORT=udp{{end}}{{end}}
{{- with .Of "turns" "tcp"}}{{with index . 0}}
--   TURNS_HOST={{.Host}}  TURNS_PORT={{.Port}}{{end}}{{end}}
--   TURN_CREDENTIALS={{.Secret}}
{{end}}
{{define "galene"}}// Galène: data/ice-servers.json (Galène mints <expiry>:galene credentials itself).
[
  {
    "urls": [{{range $i, $e := .Endpoints}}{{if $i}}, {{end}}"{{$e.URI}}"{{end}}],
    "username": "galene",
    "credential": "{{.Secret}}",
    "credentialType": "hmac-sha1"
  }
]
{{end}}
{{define "livekit"}}# LiveKit server config.yaml (also Element Call / MatrixRTC's SFU).
rtc:
  turn_servers:
{{- range .Endpoints}}
    - host: {{.Host}}
      port: {{.Port}}
      protocol: {{.Protocol}}
      secret: "{{$.Secret}}"
      ttl: {{$.TTLSecs}}
{{- end}}
{{end}}`))

// AppSnippet returns the configuration app needs to use the relay at the
// given endpoints with REST shared secret secret and credential lifetime ttl.
func AppSnippet(app string, eps []Endpoint, secret string, ttl time.Duration) (string, error) {
	if !slices.Contains(Apps, app) {
		return "", fmt.Errorf("unknown app %q (one of %s)", app, strings.Join(Apps, ", "))
	}
	if len(eps) == 0 {
		return "", fmt.Errorf("the relay has no listeners (relay.enabled or relay.listen_*)")
	}
	d := snippetData{Host: eps[0].Host, Secret: secret, Endpoints: eps, TTL: ttl, TTLSecs: int(ttl / time.Second), Lifetime: shortDuration(ttl)}
	var b bytes.Buffer
	if err := snippets.ExecuteTemplate(&b, app, d); err != nil {
		return "", err
	}
	return strings.TrimLeft(b.String(), "\n"), nil
}

// shortDuration writes 24h rather than 24h0m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	s = strings.TrimSuffix(s, "0s")
	s = strings.TrimSuffix(s, "0m")
	return s
}
