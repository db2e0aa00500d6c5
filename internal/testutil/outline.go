package testutil

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/Jigsaw-Code/outline-sdk/transport"
	"github.com/Jigsaw-Code/outline-sdk/transport/shadowsocks"
	"github.com/Jigsaw-Code/outline-sdk/x/websocket"
	"go.yaml.in/yaml/v3"
)

// An independent Outline client for tests: it follows the Outline app's
// own code path (outline-sdk's x/websocket endpoints under
// transport/shadowsocks dialers), built from the config document an
// ssconf:// key points at, fetched over HTTPS trusting only the roots the
// test gives (Pebble's, say).

// OutlineConfig is the part of an Outline config document the client
// uses, read from the generic YAML tree by $type as the app reads it.
type OutlineConfig struct {
	TCPURL, UDPURL string // wss:// endpoints
	Cipher, Secret string
}

// OutlineDocError is a config document that says the key may not
// connect: the app shows Message instead of connecting.
type OutlineDocError struct{ Message string }

func (e *OutlineDocError) Error() string { return "outline config error: " + e.Message }

// OutlineFetch is one fetch of a config document.
type OutlineFetch struct {
	// Name is the key's #fragment, the name the app shows.
	Name   string
	Header http.Header
	Body   []byte
	Config OutlineConfig
}

// OutlineDialer dials TCP for the client (nil: net.Dialer); the censor
// lab passes one that dials from a namespace.
type OutlineDialer func(ctx context.Context, network, addr string) (net.Conn, error)

// FetchOutlineConfig turns an ssconf:// key into its https:// URL,
// fetches the document trusting only roots, and parses it. A document
// that carries an error is an *OutlineDocError (the fetch is returned
// too); a status other than 200 is an error.
func FetchOutlineConfig(ctx context.Context, key string, roots *x509.CertPool, dial OutlineDialer) (*OutlineFetch, error) {
	u, err := url.Parse(key)
	if err != nil || u.Scheme != "ssconf" {
		return nil, fmt.Errorf("not an ssconf:// key: %q", key)
	}
	u.Scheme = "https"
	name, _ := url.PathUnescape(u.Fragment)
	u.Fragment = ""
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, DialContext: dial}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err != nil {
		return nil, err
	}
	f := &OutlineFetch{Name: name, Header: resp.Header, Body: body}
	if resp.StatusCode != http.StatusOK {
		return f, fmt.Errorf("config document: %s", resp.Status)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(body, &doc); err != nil {
		return f, fmt.Errorf("config document: %w", err)
	}
	if e, ok := doc["error"].(map[string]any); ok {
		msg, _ := e["message"].(string)
		return f, &OutlineDocError{Message: msg}
	}
	tr2, _ := doc["transport"].(map[string]any)
	if tr2["$type"] != "tcpudp" {
		return f, errors.New("config document: transport is not $type tcpudp")
	}
	c := &f.Config
	for half, dst := range map[string]*string{"tcp": &c.TCPURL, "udp": &c.UDPURL} {
		d, _ := tr2[half].(map[string]any)
		ep, _ := d["endpoint"].(map[string]any)
		if d["$type"] != "shadowsocks" || ep["$type"] != "websocket" {
			return f, fmt.Errorf("config document: %s is not shadowsocks over websocket", half)
		}
		*dst, _ = ep["url"].(string)
		cipher, _ := d["cipher"].(string)
		secret, _ := d["secret"].(string)
		if c.Cipher != "" && (cipher != c.Cipher || secret != c.Secret) {
			return f, errors.New("config document: tcp and udp differ")
		}
		c.Cipher, c.Secret = cipher, secret
	}
	return f, nil
}

// OutlineClient is what the Outline app builds from a config document.
type OutlineClient struct {
	// Stream dials TCP targets through the TCP WebSocket path.
	Stream transport.StreamDialer
	// Packet listens for UDP through the UDP WebSocket path: each
	// ListenPacket is one association.
	Packet transport.PacketListener
}

// NewOutlineClient builds the client for c, verifying the server's
// certificate against roots only.
func NewOutlineClient(c OutlineConfig, roots *x509.CertPool, dial OutlineDialer) (*OutlineClient, error) {
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	tlsConf := &tls.Config{RootCAs: roots}
	endpoint := func(wsURL string) (transport.StreamEndpoint, error) {
		u, err := url.Parse(wsURL)
		if err != nil {
			return nil, err
		}
		host := u.Host
		if u.Port() == "" {
			host = net.JoinHostPort(u.Hostname(), "443")
		}
		return transport.FuncStreamEndpoint(func(ctx context.Context) (transport.StreamConn, error) {
			conn, err := dial(ctx, "tcp", host)
			if err != nil {
				return nil, err
			}
			sc, ok := conn.(transport.StreamConn)
			if !ok {
				conn.Close()
				return nil, fmt.Errorf("dialer returned a %T, not a stream connection", conn)
			}
			return sc, nil
		}), nil
	}
	tcpEP, err := endpoint(c.TCPURL)
	if err != nil {
		return nil, err
	}
	udpEP, err := endpoint(c.UDPURL)
	if err != nil {
		return nil, err
	}
	tcp, err := websocket.NewStreamEndpoint(c.TCPURL, tcpEP, websocket.WithTLSConfig(tlsConf))
	if err != nil {
		return nil, err
	}
	udp, err := websocket.NewPacketEndpoint(c.UDPURL, udpEP, websocket.WithTLSConfig(tlsConf))
	if err != nil {
		return nil, err
	}
	key, err := shadowsocks.NewEncryptionKey(c.Cipher, c.Secret)
	if err != nil {
		return nil, err
	}
	sd, err := shadowsocks.NewStreamDialer(transport.FuncStreamEndpoint(tcp), key)
	if err != nil {
		return nil, err
	}
	pl, err := shadowsocks.NewPacketListener(transport.FuncPacketEndpoint(udp), key)
	if err != nil {
		return nil, err
	}
	return &OutlineClient{Stream: sd, Packet: pl}, nil
}
