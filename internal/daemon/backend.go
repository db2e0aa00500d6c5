package daemon

import (
	"context"
	"net/http"
	"time"

	"github.com/tariq-vpn/tariq/internal/admin"
	"github.com/tariq-vpn/tariq/vpn"
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
	if d.vpn != nil {
		cfg := d.config()
		vs := &admin.VPNStatus{Interface: cfg.VPN.Interface, ListenPort: d.vpn.ListenPort(), PublicKey: d.vpn.ServerPublicKey(),
			ExtraPorts: cfg.VPN.ExtraPorts}
		if cfg.VPN.Obfuscation.Enabled {
			vs.ObfuscationPort = cfg.VPN.Obfuscation.ListenPort
		}
		for _, p := range d.vpn.PeerStatus() {
			vs.Peers = append(vs.Peers, peerStatus(p))
		}
		addReach(d, vs.Peers)
		st.VPN = vs
	}
	if d.certs != nil {
		info := d.certs.Info()
		st.TLS = &admin.CertStatus{Mode: string(info.Mode), Source: info.Source, CA: info.CA, ACMEError: info.ACMEError,
			Names: info.Names, Issuer: info.Issuer, NotAfter: info.NotAfter, SelfSigned: info.SelfSigned, SPKIHash: info.SPKIHash}
	}
	return st, nil
}

var errNoVPN = admin.Errorf(http.StatusServiceUnavailable, "the WireGuard endpoint is not running (vpn.enabled)")

func (b backend) Peers(ctx context.Context) ([]admin.PeerStatus, error) {
	if b.d.vpn == nil {
		return nil, errNoVPN
	}
	var out []admin.PeerStatus
	for _, p := range b.d.vpn.PeerStatus() {
		out = append(out, peerStatus(p))
	}
	return out, nil
}

func (b backend) peerConfig(name string) (*admin.PeerConfig, error) {
	text, err := b.d.vpn.ClientConfig(name)
	if err != nil {
		return nil, apiError(err)
	}
	for _, p := range b.d.vpn.PeerStatus() {
		if p.Name == name {
			return &admin.PeerConfig{Peer: peerStatus(p), Config: text}, nil
		}
	}
	return nil, apiError(vpn.ErrPeerNotFound)
}

func (b backend) AddPeer(ctx context.Context, req admin.AddPeerRequest) (*admin.PeerConfig, error) {
	if b.d.vpn == nil {
		return nil, errNoVPN
	}
	p, err := b.d.vpn.AddPeer(vpn.AddPeerRequest{Name: req.Name, PublicKey: req.PublicKey, Port: req.Port, Obfuscated: req.Obfuscated})
	if err != nil {
		return nil, apiError(err)
	}
	return b.peerConfig(p.Name)
}

func (b backend) PeerConfig(ctx context.Context, name string) (*admin.PeerConfig, error) {
	if b.d.vpn == nil {
		return nil, errNoVPN
	}
	return b.peerConfig(name)
}

func (b backend) RemovePeer(ctx context.Context, name string) error {
	if b.d.vpn == nil {
		return errNoVPN
	}
	if err := b.d.vpn.RemovePeer(name); err != nil {
		return apiError(err)
	}
	return dropInvites(b.d.store, name)
}

func (b backend) SetPeerEnabled(ctx context.Context, name string, enabled bool) error {
	if b.d.vpn == nil {
		return errNoVPN
	}
	return apiError(b.d.vpn.SetPeerEnabled(name, enabled))
}

func (b backend) CreateInvite(ctx context.Context, req admin.InviteRequest) (*admin.Invite, error) {
	if b.d.vpn == nil {
		return nil, errNoVPN
	}
	cfg := *b.d.config()
	if b.d.web != nil && len(b.d.web.Addrs()) > 0 {
		cfg.Web.Listen = addrStrings(b.d.web.Addrs()[:1])
	}
	inv, err := newInvite(b.d.store, &cfg, req.Peer, req.TTL, time.Now())
	if err == nil {
		b.d.log.Info("invite created", "peer", req.Peer, "expires", inv.Expires.Format(time.RFC3339))
	}
	return inv, apiError(err)
}

// addReach fills in each peer's last reachability check from the store.
func addReach(d *Daemon, peers []admin.PeerStatus) {
	state, err := d.store.Load()
	if err != nil {
		return // status without the checks rather than no status
	}
	for i := range peers {
		if p := state.Peer(peers[i].Name); p != nil && p.Reach != nil {
			r := p.Reach
			peers[i].Reach = &admin.Reachability{CheckedAt: r.CheckedAt, Verdict: r.Verdict, Port: r.Port,
				Reached: r.Reached, Failed: r.Failed, Confirmed: r.Confirmed, ConfirmedAt: r.ConfirmedAt,
				SwitchedFrom: r.SwitchedFrom}
		}
	}
}
