package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/tariq-vpn/tariq/config"
	"github.com/tariq-vpn/tariq/internal/admin"
	"github.com/tariq-vpn/tariq/internal/certs"
	"github.com/tariq-vpn/tariq/internal/etcdstore"
	"github.com/tariq-vpn/tariq/internal/members"
)

// backend answers the admin API from the running daemon: members through
// the daemon's own members model, whose changes reach the live endpoint at
// once, and status.
type backend struct{ d *Daemon }

var _ admin.Backend = backend{}

var errNoVPN = admin.Errorf(http.StatusServiceUnavailable, "the WireGuard endpoint is not running (vpn.enabled)")

// local returns the members model, or errNoVPN.
func (b backend) local() (members.Local, error) {
	if b.d.members == nil {
		return members.Local{}, errNoVPN
	}
	return members.Local{S: b.d.members}, nil
}

func (b backend) Devices(ctx context.Context) ([]members.DeviceStatus, error) {
	l, err := b.local()
	if err != nil {
		return nil, err
	}
	return l.Devices(ctx)
}

func (b backend) Members(ctx context.Context) ([]members.MemberStatus, error) {
	l, err := b.local()
	if err != nil {
		return nil, err
	}
	return l.Members(ctx)
}

func (b backend) Add(ctx context.Context, req members.AddRequest) (*members.DeviceConfig, error) {
	l, err := b.local()
	if err != nil {
		return nil, err
	}
	return l.Add(ctx, req)
}

func (b backend) Show(ctx context.Context, name string) (*members.DeviceConfig, error) {
	l, err := b.local()
	if err != nil {
		return nil, err
	}
	return l.Show(ctx, name)
}

func (b backend) Remove(ctx context.Context, name string) error {
	l, err := b.local()
	if err != nil {
		return err
	}
	return l.Remove(ctx, name)
}

func (b backend) SetEnabled(ctx context.Context, name string, enabled bool) error {
	l, err := b.local()
	if err != nil {
		return err
	}
	return l.SetEnabled(ctx, name, enabled)
}

func (b backend) SetLimits(ctx context.Context, name string, c members.LimitsChange) (*members.MemberStatus, error) {
	l, err := b.local()
	if err != nil {
		return nil, err
	}
	return l.SetLimits(ctx, name, c)
}

func (b backend) CreateInvite(ctx context.Context, name string, ttl time.Duration) (*members.CreatedInvite, error) {
	l, err := b.local()
	if err != nil {
		return nil, err
	}
	return l.CreateInvite(ctx, name, ttl)
}

func (b backend) OutlineKey(ctx context.Context, name string) (*members.OutlineKey, error) {
	l, err := b.local()
	if err != nil {
		return nil, err
	}
	return l.OutlineKey(ctx, name)
}

func (b backend) Status(ctx context.Context) (*admin.Status, error) {
	d := b.d
	st := &admin.Status{Version: d.opts.Version, PublicHost: d.host, StartedAt: d.started}
	if d.relay != nil {
		rs := d.relay.Status()
		stats := d.relay.Stats()
		st.Relay = &admin.RelayStatus{
			Realm:          rs.Realm,
			Allocations:    rs.Allocations,
			ByUser:         rs.ByUser,
			AuthFailures:   stats.AuthFailures(),
			PeersDenied:    stats.PeersDenied(),
			BytesToPeers:   stats.BytesToPeers.Load(),
			BytesFromPeers: stats.BytesFromPeers.Load(),
			RelayIPv4:      rs.RelayIPv4,
			RelayIPv6:      rs.RelayIPv6,
		}
		for _, e := range d.Endpoints() {
			st.Relay.URIs = append(st.Relay.URIs, e.URI())
		}
	}
	if d.vpn != nil {
		cfg := d.config()
		vs := &admin.VPNStatus{Interface: cfg.VPN.Interface, ListenPort: d.vpn.ListenPort(), PublicKey: d.vpn.ServerPublicKey(),
			ExtraPorts: cfg.VPN.ExtraPorts, ObfuscationPort: cfg.VPN.ObfuscatedPort()}
		var err error
		if vs.Peers, err = d.members.Devices(); err != nil {
			return nil, err
		}
		if vs.Members, err = d.members.Members(); err != nil {
			return nil, err
		}
		if o := d.outline; o != nil {
			ost := &admin.OutlineStatus{Refused: o.svc.Refusals(), AuthFailures: o.svc.AuthFailures(), Cuts: o.svc.Cuts()}
			if err := d.trustedCert(); err != nil {
				ost.Untrusted = err.Error()
			}
			vs.Outline = ost
		}
		st.VPN = vs
	}
	if es, ok := d.state.(*etcdstore.Store); ok {
		cfg := d.config()
		cs := &admin.ClusterStatus{Endpoints: cfg.Server.Etcd.Endpoints, Prefix: es.Prefix(), Node: es.Node()}
		var nodes []etcdstore.Node
		err := es.Unreachable()
		if err == nil {
			nctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			nodes, err = es.Nodes(nctx)
			cancel()
		}
		if err != nil {
			cs.Unreachable = err.Error()
		}
		for _, n := range nodes {
			cs.Nodes = append(cs.Nodes, nodeStatus(n))
		}
		st.Cluster = cs
	}
	if d.certs != nil {
		info := d.certs.Info()
		st.TLS = &admin.CertStatus{Mode: string(info.Mode), Source: info.Source, CA: info.CA, ACMEError: info.ACMEError,
			Names: info.Names, Issuer: info.Issuer, NotAfter: info.NotAfter, SelfSigned: info.SelfSigned, SPKIHash: info.SPKIHash}
	}
	return st, nil
}

// Members returns how the CLI manages members: the running daemon's admin
// API when one answers, else the state store directly (running reports
// which): the state file, or etcd, whose nodes apply the change at once.
// Changes through the daemon apply to the live endpoint at once. close
// releases what Members opened.
func Members(ctx context.Context, cfg *config.Config) (m members.Manager, running bool, close func(), err error) {
	c := admin.NewClient(cfg.Server.AdminSocket)
	if c.Running(ctx) {
		return c, true, func() {}, nil
	}
	if !cfg.VPN.Enabled {
		return nil, false, nil, errors.New("the WireGuard endpoint is disabled (vpn.enabled)")
	}
	st, err := OpenState(ctx, cfg, nil)
	if err != nil {
		return nil, false, nil, err
	}
	c2 := *cfg
	c2.Server.PublicHost = ResolveHost(cfg)
	s, err := members.New(members.Deps{Store: st, Config: func() *config.Config { return &c2 },
		TrustedCert: offlineTrustedCert(&c2, certs.ResolveMode(&c2))})
	if err != nil {
		st.Close()
		return nil, false, nil, fmt.Errorf("members: %w", err)
	}
	return members.Local{S: s}, false, func() { st.Close() }, nil
}

// nodeStatus is a registry entry as the admin API shows it.
func nodeStatus(n etcdstore.Node) admin.NodeStatus {
	return admin.NodeStatus{Name: n.Name, PublicHost: n.PublicHost, Version: n.Version, StartedAt: n.StartedAt, Health: n.Health}
}
