package members

import (
	"context"
	"time"
)

// Manager is what the CLI does with members: through the running daemon
// (admin.Client, over the admin socket), so that a change applies to the
// live paths at once, or, with no daemon running, on the store directly
// (Local), to apply when the daemon starts. The admin API serves a Local
// of the daemon's own Service.
type Manager interface {
	Devices(ctx context.Context) ([]DeviceStatus, error)
	Members(ctx context.Context) ([]MemberStatus, error)
	Add(ctx context.Context, req AddRequest) (*DeviceConfig, error)
	Show(ctx context.Context, name string) (*DeviceConfig, error)
	Remove(ctx context.Context, name string) error
	SetEnabled(ctx context.Context, name string, enabled bool) error
	SetLimits(ctx context.Context, name string, c LimitsChange) (*MemberStatus, error)
	CreateInvite(ctx context.Context, name string, ttl time.Duration) (*CreatedInvite, error)
	OutlineKey(ctx context.Context, name string) (*OutlineKey, error)
}

// DeviceConfig is a device with its client config (wg-quick text).
type DeviceConfig struct {
	Device DeviceStatus `json:"peer"`
	Config string       `json:"config"`
}

// Local is a Manager over a Service in this process.
type Local struct{ S *Service }

var _ Manager = Local{}

// Devices lists every device.
func (l Local) Devices(context.Context) ([]DeviceStatus, error) { return l.S.Devices() }

// Members lists every member.
func (l Local) Members(context.Context) ([]MemberStatus, error) { return l.S.Members() }

// Add adds a device and returns its config.
func (l Local) Add(ctx context.Context, req AddRequest) (*DeviceConfig, error) {
	p, err := l.S.Add(req)
	if err != nil {
		return nil, err
	}
	return l.Show(ctx, p.Name)
}

// Show returns a device with its config.
func (l Local) Show(_ context.Context, name string) (*DeviceConfig, error) {
	text, d, err := l.S.Config(name)
	if err != nil {
		return nil, err
	}
	return &DeviceConfig{Device: d, Config: text}, nil
}

// Remove removes a device.
func (l Local) Remove(_ context.Context, name string) error { return l.S.Remove(name) }

// SetEnabled enables or disables a device.
func (l Local) SetEnabled(_ context.Context, name string, enabled bool) error {
	return l.S.SetEnabled(name, enabled)
}

// SetLimits changes a member's limits.
func (l Local) SetLimits(_ context.Context, name string, c LimitsChange) (*MemberStatus, error) {
	m, err := l.S.SetLimits(name, c)
	if err != nil {
		return nil, err
	}
	return &m, nil
}

// CreateInvite makes a one-time link to a device's settings.
func (l Local) CreateInvite(_ context.Context, name string, ttl time.Duration) (*CreatedInvite, error) {
	inv, err := l.S.CreateInvite(name, ttl)
	if err != nil {
		return nil, err
	}
	return &inv, nil
}

// OutlineKey returns a member's Outline key (name: the member or one of
// their devices).
func (l Local) OutlineKey(_ context.Context, name string) (*OutlineKey, error) {
	k, err := l.S.OutlineKey(name)
	if err != nil {
		return nil, err
	}
	return &k, nil
}
