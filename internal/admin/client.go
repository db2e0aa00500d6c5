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

	"github.com/tariq-vpn/tariq/internal/members"
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

// Devices lists the devices.
func (c *Client) Devices(ctx context.Context) ([]members.DeviceStatus, error) {
	var d []members.DeviceStatus
	return d, c.do(ctx, http.MethodGet, "/v1/peers", nil, &d)
}

// Members lists the members with their limits and usage.
func (c *Client) Members(ctx context.Context) ([]members.MemberStatus, error) {
	var m []members.MemberStatus
	return m, c.do(ctx, http.MethodGet, "/v1/members", nil, &m)
}

// Add adds a device, live, and returns its client config.
func (c *Client) Add(ctx context.Context, req members.AddRequest) (*members.DeviceConfig, error) {
	var dc members.DeviceConfig
	return &dc, c.do(ctx, http.MethodPost, "/v1/peers", req, &dc)
}

// Show returns one device and its client config.
func (c *Client) Show(ctx context.Context, name string) (*members.DeviceConfig, error) {
	var dc members.DeviceConfig
	return &dc, c.do(ctx, http.MethodGet, "/v1/peers/"+url.PathEscape(trimName(name)), nil, &dc)
}

// Remove removes a device.
func (c *Client) Remove(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/v1/peers/"+url.PathEscape(trimName(name)), nil, nil)
}

// SetEnabled enables or disables a device.
func (c *Client) SetEnabled(ctx context.Context, name string, enabled bool) error {
	verb := "disable"
	if enabled {
		verb = "enable"
	}
	return c.do(ctx, http.MethodPost, "/v1/peers/"+url.PathEscape(trimName(name))+"/"+verb, nil, nil)
}

// SetLimits changes a member's limits.
func (c *Client) SetLimits(ctx context.Context, name string, lc members.LimitsChange) (*members.MemberStatus, error) {
	var m members.MemberStatus
	return &m, c.do(ctx, http.MethodPost, "/v1/members/"+url.PathEscape(trimName(name))+"/limits", lc, &m)
}

// CreateInvite makes a one-time link to a device's settings.
func (c *Client) CreateInvite(ctx context.Context, name string, ttl time.Duration) (*members.CreatedInvite, error) {
	var inv members.CreatedInvite
	return &inv, c.do(ctx, http.MethodPost, "/v1/invites", InviteRequest{Peer: name, TTL: ttl}, &inv)
}

// OutlineKey returns a member's Outline key.
func (c *Client) OutlineKey(ctx context.Context, name string) (*members.OutlineKey, error) {
	var k members.OutlineKey
	return &k, c.do(ctx, http.MethodGet, "/v1/members/"+url.PathEscape(trimName(name))+"/outline", nil, &k)
}

var _ members.Manager = (*Client)(nil)
