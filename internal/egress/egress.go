// Package egress keeps the destination policy of the member paths current:
// where a member's traffic may go, on WireGuard (the vpn package renders it
// into its nftables table) and on Outline (its dialer asks Allow before
// every TCP connect and UDP packet). The policy is addrpolicy.Destinations,
// built from vpn.allow_destinations, vpn.deny_destinations,
// vpn.member_to_member, the tunnel subnets, and the server's own addresses,
// which a Policy follows live (internal/ownaddr), so an address added to an
// interface is refused the moment it appears.
//
// A Policy has the shape of a subsystem: New builds, Open lists the
// addresses and starts following them, Reload applies a new config, Close
// stops.
package egress

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/tariq-vpn/tariq/config"
	"github.com/tariq-vpn/tariq/internal/addrpolicy"
	"github.com/tariq-vpn/tariq/internal/ownaddr"
	"github.com/tariq-vpn/tariq/internal/wgconf"
)

// Deps is what a Policy uses but does not create.
type Deps struct {
	Logger *slog.Logger
	// ULA is the IPv6 /64 of the tunnel when vpn.address has none (the
	// server identity's), for the members' subnets.
	ULA netip.Prefix
	// OnChange, when set, is called after the server's own addresses
	// changed, on the goroutine that follows them (never from Open, Reload
	// or Close, whose callers know), with the policy then stored; a
	// Reload may store a newer one at any time, so a caller rendering the
	// policy elsewhere reads Current under its own lock.
	OnChange func(*addrpolicy.Destinations)
}

// RuleNotOpen is the rule Allow names before Open: nothing is allowed
// until the server's own addresses are known.
const RuleNotOpen = "not-open"

// Policy is the live destination policy.
type Policy struct {
	deps Deps
	log  *slog.Logger
	cur  atomic.Pointer[addrpolicy.Destinations] // nil until Open

	mu     sync.Mutex     // serialises building and storing cur (Open, Reload, address changes)
	cfg    *config.Config // guarded by mu
	host   *ownaddr.Host  // guarded by mu; nil until Open
	closed bool           // guarded by mu
}

// New checks cfg and builds the policy; it opens nothing.
func New(cfg *config.Config, deps Deps) (*Policy, error) {
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if _, err := rulesFor(cfg, deps.ULA); err != nil {
		return nil, fmt.Errorf("egress: %w", err)
	}
	return &Policy{deps: deps, log: deps.Logger, cfg: cfg}, nil
}

// Open lists the server's own addresses in the caller's network namespace
// and follows them from then on.
func (p *Policy) Open(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.host != nil || p.closed {
		return errors.New("egress: already opened")
	}
	h, err := ownaddr.Open()
	if err != nil {
		return fmt.Errorf("egress: %w", err)
	}
	p.host = h
	if err := p.refreshLocked(p.cfg); err != nil {
		return fmt.Errorf("egress: %w", err)
	}
	if err := h.Watch(p.log, p.addrsChanged); err != nil {
		// Off Linux, or without netlink: the list stays as it was at
		// start, and a reload lists again.
		p.log.Warn("the server's addresses will not be followed live", "err", err)
	}
	d := p.cur.Load()
	r := d.Rules()
	p.log.Info("member destinations", "own", join(d.Own()), "allow", join(r.Allow),
		"deny", join(r.Deny), "member_to_member", r.MemberToMember)
	return nil
}

// Allow reports whether a member may reach ip and, when not, the rule that
// refused it (addrpolicy.Destinations.Allow). It is what internal/outline
// takes as Deps.Allow, and may be called from any goroutine.
func (p *Policy) Allow(ip netip.Addr) (ok bool, rule string) {
	d := p.cur.Load()
	if d == nil {
		return false, RuleNotOpen
	}
	return d.Allow(ip)
}

// Current returns the policy in force; nil before Open.
func (p *Policy) Current() *addrpolicy.Destinations { return p.cur.Load() }

// Reload applies vpn.allow_destinations, vpn.deny_destinations and
// vpn.member_to_member from cfg, and lists the server's addresses again
// (relay.relay_ip and server.public_host count among them). Everything it
// reads can change live.
func (p *Policy) Reload(cfg *config.Config) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errors.New("egress: closed")
	}
	if p.host == nil {
		p.cfg = cfg
		return nil
	}
	if err := p.refreshLocked(cfg); err != nil {
		return fmt.Errorf("egress: %w", err)
	}
	p.cfg = cfg
	return nil
}

// Close stops following the addresses. It is idempotent.
func (p *Policy) Close() error {
	p.mu.Lock()
	h := p.host
	p.closed = true
	p.mu.Unlock()
	if h != nil {
		return h.Close() // waits for an address change under way, which takes mu
	}
	return nil
}

// refreshLocked builds the policy for cfg with the addresses listed now
// and stores it.
func (p *Policy) refreshLocked(cfg *config.Config) error {
	rules, err := rulesFor(cfg, p.deps.ULA)
	if err != nil {
		return err
	}
	own, err := p.ownLocked(cfg)
	if err != nil {
		return err
	}
	p.cur.Store(addrpolicy.NewDestinations(rules, own))
	return nil
}

// ownLocked returns the server's own addresses: every address on its
// interfaces, and the public addresses the config names (relay.relay_ip,
// server.public_host when it is an address), which a VPS behind 1:1 NAT
// has on no interface.
func (p *Policy) ownLocked(cfg *config.Config) ([]netip.Addr, error) {
	own, err := p.host.List()
	if err != nil {
		return nil, fmt.Errorf("listing the server's addresses: %w", err)
	}
	own = append(own, cfg.Relay.RelayIP...)
	if a, err := netip.ParseAddr(cfg.Server.PublicHost); err == nil {
		own = append(own, a)
	}
	return own, nil
}

// addrsChanged runs on the address watch's goroutine after a burst of
// address events.
func (p *Policy) addrsChanged() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	own, err := p.ownLocked(p.cfg)
	if err != nil {
		p.mu.Unlock()
		p.log.Warn("keeping the last list of the server's addresses", "err", err)
		return
	}
	d, changed := p.cur.Load().WithOwn(own)
	if changed {
		p.cur.Store(d)
	}
	p.mu.Unlock()
	if !changed {
		return
	}
	p.log.Info("server addresses changed", "own", join(d.Own()))
	if p.deps.OnChange != nil {
		p.deps.OnChange(d)
	}
}

// rulesFor returns the destination rules cfg sets, with the tunnel
// subnets when the WireGuard endpoint is on.
func rulesFor(cfg *config.Config, ula netip.Prefix) (addrpolicy.DestinationRules, error) {
	r := addrpolicy.DestinationRules{
		Allow:          slices.Clone(cfg.VPN.AllowDestinations),
		Deny:           slices.Clone(cfg.VPN.DenyDestinations),
		MemberToMember: cfg.VPN.MemberToMember,
	}
	if cfg.VPN.Enabled {
		plan, err := wgconf.PlanFor(cfg, ula)
		if err != nil {
			return r, err
		}
		r.Members = plan.Networks()
	}
	return r, nil
}

func join[T fmt.Stringer](xs []T) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = x.String()
	}
	return strings.Join(s, ", ")
}
