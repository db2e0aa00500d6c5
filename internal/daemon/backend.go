package daemon

import (
	"context"
	"net/http"

	"github.com/tariq-vpn/tariq/internal/admin"
)

// backend answers the admin API from the running daemon.
type backend struct{ d *Daemon }

var _ admin.Backend = backend{}

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
	if d.certs != nil {
		info := d.certs.Info()
		st.TLS = &admin.CertStatus{Mode: string(info.Mode), Names: info.Names, Issuer: info.Issuer,
			NotAfter: info.NotAfter, SelfSigned: info.SelfSigned, SPKIHash: info.SPKIHash}
	}
	return st, nil
}

var errNoVPN = admin.Errorf(http.StatusServiceUnavailable, "the WireGuard endpoint is not running (vpn.enabled)")

func (b backend) Peers(ctx context.Context) ([]admin.PeerStatus, error) { return nil, errNoVPN }

func (b backend) AddPeer(ctx context.Context, req admin.AddPeerRequest) (*admin.PeerConfig, error) {
	return nil, errNoVPN
}

func (b backend) PeerConfig(ctx context.Context, name string) (*admin.PeerConfig, error) {
	return nil, errNoVPN
}

func (b backend) RemovePeer(ctx context.Context, name string) error { return errNoVPN }

func (b backend) SetPeerEnabled(ctx context.Context, name string, enabled bool) error {
	return errNoVPN
}
