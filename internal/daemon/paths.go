package daemon

import (
	"context"
	"fmt"
	"net"
	"sync"

	"github.com/tariq-vpn/tariq/internal/egress"
	"github.com/tariq-vpn/tariq/internal/members"
	"github.com/tariq-vpn/tariq/internal/store"
	"github.com/tariq-vpn/tariq/vpn"
)

// openVPN opens the WireGuard endpoint with the identity the members
// model keeps, and the members model with the endpoint as its path, and
// the Outline path too when vpn.outline is on.
func (d *Daemon) openVPN(ctx context.Context, st store.Backend) error {
	path := &wgPath{}
	paths := []members.Path{path}
	var op *outlinePath
	if d.cfg.VPN.Outline.Enabled {
		var err error
		if op, err = d.newOutline(func() *members.Service { return d.members }); err != nil {
			return err
		}
		paths = append(paths, op)
	}
	m, err := members.New(members.Deps{
		Logger: d.log.With("component", "members"), Store: st, Config: d.config,
		Paths: paths, WebAddr: d.firstWebAddr, TrustedCert: d.trustedCert,
	})
	if err != nil {
		return err
	}
	id, err := m.Identity()
	if err != nil {
		return fmt.Errorf("members: %w", err)
	}
	if op != nil {
		op.prefix = id.OutlinePrefix
		d.outline = op
		d.add("outline", op)
		// Where Outline members may go: the same policy the WireGuard
		// path's nftables table renders, followed live here too.
		eg, err := egress.New(d.cfg, egress.Deps{Logger: d.log.With("component", "egress"), ULA: id.ULA})
		if err != nil {
			return err
		}
		d.add("egress", egressPart{eg})
		if err := eg.Open(ctx); err != nil {
			return err
		}
		d.egress.Store(eg)
	}
	v, err := vpn.New(d.cfg, vpn.Deps{Logger: d.log.With("component", "vpn"),
		Identity: vpn.Identity{PrivateKey: id.PrivateKey, ULA: id.ULA, AmneziaWG: id.AmneziaWG}})
	if err != nil {
		return err
	}
	path.v = v
	d.vpn, d.members = v, m
	d.add("vpn", v)
	if err := v.Open(ctx); err != nil {
		return err
	}
	// The endpoint is open: put the members on it, then count and enforce
	// their limits while serving.
	if err := m.Start(); err != nil {
		return fmt.Errorf("members: %w", err)
	}
	d.add("members", membersPart{m, d.opts.Limits})
	return nil
}

// firstWebAddr is the HTTPS port bound, for invite links; nil before the
// page is open.
func (d *Daemon) firstWebAddr() net.Addr {
	if addrs := d.WebAddrs(); len(addrs) > 0 {
		return addrs[0]
	}
	return nil
}

// wgPath is the WireGuard endpoint as the members model sees it.
type wgPath struct {
	v *vpn.Service

	mu   sync.Mutex             // guards read
	read map[string]vpn.Traffic // Usage as last read: budgets count from there
}

var _ members.Path = (*wgPath)(nil)

func (p *wgPath) Apply(d members.Desired) error {
	peers := make([]vpn.Peer, len(d.Devices))
	for i, dev := range d.Devices {
		peers[i] = vpn.Peer{Name: dev.Name, Group: dev.Member, PublicKey: dev.PublicKey, PresharedKey: dev.PresharedKey,
			IPv4: dev.IPv4, IPv6: dev.IPv6}
	}
	if err := p.v.SetPeers(peers); err != nil {
		return err
	}
	limits := make(map[string]vpn.GroupLimits, len(d.Limits))
	p.mu.Lock()
	for name, l := range d.Limits {
		limits[name] = vpn.GroupLimits{Rate: l.Rate, Budgeted: l.Budgeted, Remaining: l.Remaining, AsOf: p.read[name].Total()}
	}
	p.mu.Unlock()
	p.v.SetLimits(limits)
	return nil
}

func (p *wgPath) Usage() map[string]members.Traffic {
	u := p.v.Usage()
	p.mu.Lock()
	p.read = u
	p.mu.Unlock()
	out := make(map[string]members.Traffic, len(u))
	for name, t := range u {
		out[name] = members.Traffic{In: t.In, Out: t.Out}
	}
	return out
}

func (p *wgPath) Live() map[string]members.Live {
	out := map[string]members.Live{}
	for _, ps := range p.v.PeerStatus() {
		out[ps.Name] = members.Live{Endpoint: ps.Endpoint, LastHandshake: ps.LastHandshake, RxBytes: ps.RxBytes, TxBytes: ps.TxBytes}
	}
	return out
}

// membersPart counts members' usage and enforces their limits while the
// daemon serves, and stores the count when it stops.
type membersPart struct {
	m *members.Service
	t members.Timings
}

func (p membersPart) Serve(ctx context.Context) error {
	t := p.t
	def := members.DefaultTimings()
	if t.Tick <= 0 {
		t.Tick = def.Tick
	}
	if t.Flush <= 0 {
		t.Flush = def.Flush
	}
	return p.m.Serve(ctx, t)
}

func (p membersPart) Close() error { return p.m.Flush() }

// egressPart is the Outline path's destination policy as a part of the
// daemon: it follows the server's addresses until closed.
type egressPart struct{ *egress.Policy }

func (p egressPart) Serve(ctx context.Context) error {
	<-ctx.Done()
	return nil
}
