package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"

	"time"

	"github.com/tariq-vpn/tariq/config"
	"github.com/tariq-vpn/tariq/internal/admin"
	"github.com/tariq-vpn/tariq/internal/store"
	"github.com/tariq-vpn/tariq/internal/web"
	"github.com/tariq-vpn/tariq/vpn"
)

// PeerAdmin returns how the CLI manages peers: the running daemon's admin
// API when one answers, else the state store directly (running reports
// which). Changes through the daemon apply to the live device at once.
func PeerAdmin(ctx context.Context, cfg *config.Config) (p admin.Peers, running bool, err error) {
	c := admin.NewClient(cfg.Server.AdminSocket)
	if c.Running(ctx) {
		return c, true, nil
	}
	if !cfg.VPN.Enabled {
		return nil, false, errors.New("the WireGuard endpoint is disabled (vpn.enabled)")
	}
	st, err := store.Open(cfg.Server.DataDir)
	if err != nil {
		return nil, false, err
	}
	c2 := *cfg
	c2.Server.PublicHost = ResolveHost(cfg)
	return offlinePeers{cfg: &c2, store: st}, false, nil
}

// peerStatus converts the vpn package's view of a peer for the admin API.
func peerStatus(p vpn.PeerStatus) admin.PeerStatus {
	out := admin.PeerStatus{
		Name: p.Name, PublicKey: p.PublicKey, IPv4: p.IPv4.String(), Enabled: p.Enabled,
		LastHandshake: p.LastHandshake, RxBytes: p.RxBytes, TxBytes: p.TxBytes,
		Port: p.Port, Obfuscated: p.Obfuscated,
	}
	if p.IPv6.IsValid() {
		out.IPv6 = p.IPv6.String()
	}
	if p.Endpoint.IsValid() {
		out.Endpoint = p.Endpoint.String()
	}
	return out
}

func storedPeerStatus(cfg *config.Config, p store.Peer) admin.PeerStatus {
	return peerStatus(vpn.StoredPeerStatus(cfg, p))
}

// apiError gives vpn's sentinel errors their HTTP status.
func apiError(err error) error {
	if err == nil {
		return nil
	}
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, vpn.ErrPeerNotFound):
		code = http.StatusNotFound
	case errors.Is(err, vpn.ErrPeerExists), errors.Is(err, vpn.ErrKeyInUse), errors.Is(err, vpn.ErrPoolExhausted):
		code = http.StatusConflict
	case errors.Is(err, vpn.ErrBadKey), errors.Is(err, vpn.ErrBadName), errors.Is(err, errBadInvite),
		errors.Is(err, vpn.ErrBadPort), errors.Is(err, vpn.ErrObfuscationOff):
		code = http.StatusBadRequest
	}
	return &admin.Error{Code: code, Msg: err.Error()}
}

var errBadInvite = errors.New("bad invite request")

// inviteURL is the link for token: https://<public host>[:port]/join/<token>,
// on the first web.listen port.
func inviteURL(cfg *config.Config, token string) (string, error) {
	if !cfg.Web.Enabled || len(cfg.Web.Listen) == 0 || cfg.TLS.Mode == config.TLSOff {
		return "", fmt.Errorf("%w: invites need the HTTPS page (web.enabled, and a tls.mode other than off)", errBadInvite)
	}
	_, port, _ := net.SplitHostPort(cfg.Web.Listen[0])
	host := cfg.Server.PublicHost
	if port != "443" && port != "" && port != "0" {
		host = net.JoinHostPort(host, port)
	} else if ip := net.ParseIP(host); ip != nil && ip.To4() == nil {
		host = "[" + host + "]"
	}
	return "https://" + host + "/join/" + token, nil
}

// newInvite records a one-time link to peer p's config valid for ttl and
// returns the link; only the token's hash is stored.
func newInvite(st *store.Store, cfg *config.Config, name string, ttl time.Duration, now time.Time) (*admin.Invite, error) {
	if ttl <= 0 {
		ttl = 72 * time.Hour
	}
	if ttl > 30*24*time.Hour {
		return nil, fmt.Errorf("%w: --ttl %s is longer than 30 days", errBadInvite, ttl)
	}
	token, hash := web.NewToken()
	url, err := inviteURL(cfg, token)
	if err != nil {
		return nil, err
	}
	inv := store.Invite{Hash: hash, Peer: name, CreatedAt: now, Expires: now.Add(ttl)}
	_, err = st.Update(func(s *store.State) error {
		p := s.Peer(name)
		switch {
		case p == nil:
			return fmt.Errorf("peer %q: %w", name, vpn.ErrPeerNotFound)
		case p.PrivateKey == "":
			return fmt.Errorf("%w: peer %q brought its own key (--public-key), so the server has no config to hand out", errBadInvite, name)
		}
		s.Invites = append(pruneInvites(s.Invites, now), inv)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &admin.Invite{URL: url, Peer: name, Expires: inv.Expires}, nil
}

// pruneInvites drops invites that ended (used or expired) over 30 days ago.
func pruneInvites(in []store.Invite, now time.Time) []store.Invite {
	out := in[:0]
	for _, i := range in {
		end := i.Expires
		if !i.UsedAt.IsZero() {
			end = i.UsedAt
		}
		if now.Sub(end) < 30*24*time.Hour {
			out = append(out, i)
		}
	}
	return out
}

// dropInvites removes every invite of peer name (the peer is gone; a new
// peer of the same name must not inherit its links).
func dropInvites(st *store.Store, name string) error {
	_, err := st.Update(func(s *store.State) error {
		out := s.Invites[:0]
		for _, i := range s.Invites {
			if i.Peer != name {
				out = append(out, i)
			}
		}
		s.Invites = out
		return nil
	})
	return err
}

// offlinePeers manages peers on the store while no daemon runs.
type offlinePeers struct {
	cfg   *config.Config
	store *store.Store
}

var _ admin.Peers = offlinePeers{}

func (o offlinePeers) Peers(ctx context.Context) ([]admin.PeerStatus, error) {
	st, err := o.store.Load()
	if err != nil {
		return nil, err
	}
	out := make([]admin.PeerStatus, 0, len(st.Peers))
	for _, p := range st.Peers {
		out = append(out, storedPeerStatus(o.cfg, p))
	}
	return out, nil
}

func (o offlinePeers) config(p store.Peer) (*admin.PeerConfig, error) {
	text, err := vpn.ClientConfigFromStore(o.store, o.cfg, p)
	if err != nil {
		return nil, apiError(err)
	}
	return &admin.PeerConfig{Peer: storedPeerStatus(o.cfg, p), Config: text}, nil
}

func (o offlinePeers) AddPeer(ctx context.Context, req admin.AddPeerRequest) (*admin.PeerConfig, error) {
	p, err := vpn.AddPeerToStore(o.store, o.cfg, vpn.AddPeerRequest{Name: req.Name, PublicKey: req.PublicKey, Port: req.Port, Obfuscated: req.Obfuscated})
	if err != nil {
		return nil, apiError(err)
	}
	return o.config(p)
}

func (o offlinePeers) PeerConfig(ctx context.Context, name string) (*admin.PeerConfig, error) {
	p, err := vpn.PeerFromStore(o.store, name)
	if err != nil {
		return nil, apiError(err)
	}
	return o.config(p)
}

func (o offlinePeers) RemovePeer(ctx context.Context, name string) error {
	if err := vpn.RemovePeerFromStore(o.store, name); err != nil {
		return apiError(err)
	}
	return dropInvites(o.store, name)
}

func (o offlinePeers) SetPeerEnabled(ctx context.Context, name string, enabled bool) error {
	return apiError(vpn.SetPeerEnabledInStore(o.store, name, enabled))
}

func (o offlinePeers) CreateInvite(ctx context.Context, req admin.InviteRequest) (*admin.Invite, error) {
	inv, err := newInvite(o.store, o.cfg, req.Peer, req.TTL, time.Now())
	return inv, apiError(err)
}

// QRText renders text as a QR code for a terminal.
func QRText(text string) (string, error) { return vpn.QRText(text) }

// QRPNG renders text as a QR code PNG.
func QRPNG(text string) ([]byte, error) { return vpn.QRPNG(text, 768) }

// PrivateKeyPlaceholder marks the config of a peer that brought its own key.
const PrivateKeyPlaceholder = vpn.PrivateKeyPlaceholder
