package daemon

import (
	"crypto/subtle"
	"fmt"
	"time"

	"github.com/tariq-vpn/tariq/internal/store"
	"github.com/tariq-vpn/tariq/internal/web"
	"github.com/tariq-vpn/tariq/vpn"
)

// invites serves one-time links from the store for the HTTPS page.
type invites struct{ d *Daemon }

var _ web.Invites = invites{}

// find returns the index of the invite whose hash matches token's,
// comparing every stored hash in constant time.
func find(st *store.State, token string) int {
	want := []byte(web.HashToken(token))
	found := -1
	for i := range st.Invites {
		if subtle.ConstantTimeCompare([]byte(st.Invites[i].Hash), want) == 1 {
			found = i
		}
	}
	return found
}

func check(inv store.Invite, now time.Time) error {
	switch {
	case !inv.UsedAt.IsZero():
		return web.ErrInviteUsed
	case !now.Before(inv.Expires):
		return web.ErrInviteExpired
	}
	return nil
}

func (iv invites) Peek(token string) (*web.Invite, error) {
	st, err := iv.d.store.Load()
	if err != nil {
		return nil, err
	}
	i := find(st, token)
	if i < 0 {
		return nil, web.ErrInviteUnknown
	}
	if err := check(st.Invites[i], time.Now()); err != nil {
		return nil, err
	}
	return iv.render(st.Invites[i])
}

func (iv invites) Redeem(token string) (*web.Invite, error) {
	var used store.Invite
	_, err := iv.d.store.Update(func(st *store.State) error {
		i := find(st, token)
		if i < 0 {
			return web.ErrInviteUnknown
		}
		now := time.Now()
		if err := check(st.Invites[i], now); err != nil {
			return err
		}
		st.Invites[i].UsedAt = now
		used = st.Invites[i]
		return nil
	})
	if err != nil {
		return nil, err
	}
	inv, err := iv.render(used)
	if err == nil {
		iv.d.log.Info("invite used", "peer", used.Peer)
	}
	return inv, err
}

func (iv invites) render(inv store.Invite) (*web.Invite, error) {
	if iv.d.vpn == nil {
		return nil, web.ErrInviteUnknown
	}
	text, err := iv.d.vpn.ClientConfig(inv.Peer)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", web.ErrInviteUnknown, err)
	}
	png, err := vpn.QRPNG(text, 512)
	if err != nil {
		return nil, err
	}
	return &web.Invite{Peer: inv.Peer, Config: text, QRPNG: png, Expires: inv.Expires}, nil
}
