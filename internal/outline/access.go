package outline

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// NewSecret returns a fresh member secret: 128 random bits, base32.
func NewSecret() string { return rand.Text() }

// NewPrefix returns a fresh unguessable path segment (128 random bits,
// base32), for the WebSocket paths or the access-key documents.
func NewPrefix() string { return rand.Text() }

// The Outline client's config document ("dynamic access key"): YAML with a
// transport of $type tcpudp, each half a Shadowsocks dialer over a
// WebSocket endpoint (Outline client 1.15 and later).
type accessDoc struct {
	Transport struct {
		Type string   `yaml:"$type"`
		TCP  ssDialer `yaml:"tcp"`
		UDP  ssDialer `yaml:"udp"`
	} `yaml:"transport"`
}

type ssDialer struct {
	Type     string     `yaml:"$type"`
	Endpoint wsEndpoint `yaml:"endpoint"`
	Cipher   string     `yaml:"cipher"`
	Secret   string     `yaml:"secret"`
}

type wsEndpoint struct {
	Type string `yaml:"$type"`
	URL  string `yaml:"url"`
}

type errorDoc struct {
	Error struct {
		Message string `yaml:"message"`
	} `yaml:"error"`
}

// AccessConfig renders the config document the Outline client fetches
// on every connect: wssBase is the WebSocket prefix URL
// (wss://host[:port]/<prefix>), to which /tcp and /udp are added.
func AccessConfig(wssBase, secret string) []byte {
	base := strings.TrimSuffix(wssBase, "/")
	half := func(path string) ssDialer {
		return ssDialer{
			Type:     "shadowsocks",
			Endpoint: wsEndpoint{Type: "websocket", URL: base + path},
			Cipher:   Cipher,
			Secret:   secret,
		}
	}
	var d accessDoc
	d.Transport.Type = "tcpudp"
	d.Transport.TCP, d.Transport.UDP = half("/tcp"), half("/udp")
	return mustYAML(d)
}

// ErrorConfig renders the document that makes the Outline client show msg
// instead of connecting (for a disabled or removed member).
func ErrorConfig(msg string) []byte {
	var d errorDoc
	d.Error.Message = msg
	return mustYAML(d)
}

func mustYAML(v any) []byte {
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(v); err != nil {
		// Plain structs of strings always marshal.
		panic(fmt.Sprintf("outline: rendering YAML: %v", err))
	}
	enc.Close()
	return b.Bytes()
}

// AccessKey returns a dynamic access key, ssconf://host[:port]/path#name:
// the Outline client turns it into https://host[:port]/path and fetches
// its config document there on every connect, so host, port and paths can
// change later without a new key. port 0 or 443 is left out; an IPv6
// literal goes in brackets; name (shown in the app) is percent-encoded.
func AccessKey(host string, port int, path, name string) string {
	h := host
	if ip, err := netip.ParseAddr(host); err == nil && ip.Is6() {
		h = "[" + ip.String() + "]"
	}
	if port != 0 && port != 443 {
		h += ":" + strconv.Itoa(port)
	}
	segs := strings.Split(strings.TrimPrefix(path, "/"), "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return "ssconf://" + h + "/" + strings.Join(segs, "/") + "#" + url.PathEscape(name)
}

// ConfigHandler serves the config documents at /<prefix>/<token> (or
// /<token> with an empty prefix) for GET and HEAD: lookup returns the
// token's document (AccessConfig, or ErrorConfig for a member who may not
// connect). Unknown tokens and everything else go to next, so the port
// answers them as the ordinary site. The answer carries
// Access-Control-Allow-Origin: * (older iOS clients fetch with CORS) and
// Cache-Control: no-store (the secret must not sit in a cache).
func ConfigHandler(prefix string, lookup func(token string) (doc []byte, ok bool), next http.Handler) (http.Handler, error) {
	lead := "/"
	if prefix != "" {
		if err := checkSegment(prefix); err != nil {
			return nil, fmt.Errorf("outline: config prefix: %w", err)
		}
		lead = "/" + prefix + "/"
	}
	if next == nil {
		next = http.NotFoundHandler()
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := strings.CutPrefix(r.URL.Path, lead)
		if !ok || token == "" || strings.Contains(token, "/") || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
			next.ServeHTTP(w, r)
			return
		}
		doc, ok := lookup(token)
		if !ok {
			next.ServeHTTP(w, r)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "application/yaml; charset=utf-8")
		h.Set("Content-Length", strconv.Itoa(len(doc)))
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Cache-Control", "no-store")
		h.Set("X-Content-Type-Options", "nosniff")
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodGet {
			w.Write(doc)
		}
	}), nil
}
