package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"syscall"
	"time"
)

// ErrNotRunning means no daemon answers on the admin socket.
var ErrNotRunning = errors.New("tariq is not running")

// Client talks to a running daemon over its admin socket.
type Client struct {
	path string
	http *http.Client
}

// NewClient returns a client for the socket at path.
func NewClient(path string) *Client {
	return &Client{path: path, http: &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", path)
			},
		},
	}}
}

// Running reports whether a daemon answers on the socket.
func (c *Client) Running(ctx context.Context) bool {
	_, err := c.Status(ctx)
	return !errors.Is(err, ErrNotRunning)
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://tariq"+path, body)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("%w (no daemon on %s)", ErrNotRunning, c.path)
		}
		return fmt.Errorf("admin socket %s: %w", c.path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		e := &Error{Code: resp.StatusCode}
		if json.NewDecoder(resp.Body).Decode(e) != nil || e.Msg == "" {
			e.Msg = resp.Status
		}
		return e
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// Status returns the daemon's status.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	var st Status
	return &st, c.do(ctx, http.MethodGet, "/v1/status", nil, &st)
}

// Peers lists the WireGuard peers.
func (c *Client) Peers(ctx context.Context) ([]PeerStatus, error) {
	var p []PeerStatus
	return p, c.do(ctx, http.MethodGet, "/v1/peers", nil, &p)
}

// AddPeer adds a peer on the live device and returns its client config.
func (c *Client) AddPeer(ctx context.Context, req AddPeerRequest) (*PeerConfig, error) {
	var pc PeerConfig
	return &pc, c.do(ctx, http.MethodPost, "/v1/peers", req, &pc)
}

// PeerConfig returns one peer and its client config.
func (c *Client) PeerConfig(ctx context.Context, name string) (*PeerConfig, error) {
	var pc PeerConfig
	return &pc, c.do(ctx, http.MethodGet, "/v1/peers/"+url.PathEscape(trimName(name)), nil, &pc)
}

// RemovePeer removes a peer from the store and the live device.
func (c *Client) RemovePeer(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/v1/peers/"+url.PathEscape(trimName(name)), nil, nil)
}

// SetPeerEnabled enables or disables a peer.
func (c *Client) SetPeerEnabled(ctx context.Context, name string, enabled bool) error {
	verb := "disable"
	if enabled {
		verb = "enable"
	}
	return c.do(ctx, http.MethodPost, "/v1/peers/"+url.PathEscape(trimName(name))+"/"+verb, nil, nil)
}

// CreateInvite makes a one-time link to a peer's config.
func (c *Client) CreateInvite(ctx context.Context, req InviteRequest) (*Invite, error) {
	var inv Invite
	return &inv, c.do(ctx, http.MethodPost, "/v1/invites", req, &inv)
}

var _ Peers = (*Client)(nil)
