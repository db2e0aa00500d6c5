package daemon

import (
	"errors"
	"testing"

	"github.com/tariq-vpn/tariq/config"
	"github.com/tariq-vpn/tariq/internal/store"
	"github.com/tariq-vpn/tariq/internal/web"
)

// TestResolveForm: a download may ask for the stock form on any of the
// server's WireGuard ports or for the AmneziaWG form when it is on; a bare
// ?form=wireguard means the peer's own stock port; nothing else is offered.
func TestResolveForm(t *testing.T) {
	cfg := &config.Config{}
	cfg.VPN.ListenPort, cfg.VPN.ExtraPorts = 51820, []int{443}
	cfg.VPN.Obfuscation.Enabled, cfg.VPN.Obfuscation.ListenPort = true, 51821
	stock443 := store.Peer{Name: "dad", Port: 443}
	awg := store.Peer{Name: "mom", Obfuscated: true}
	for _, tc := range []struct {
		name string
		p    store.Peer
		in   web.Form
		want web.Form
		err  error
	}{
		{"own stock port", stock443, web.Form{}, web.Form{Port: 443}, nil},
		{"listen port", stock443, web.Form{Port: 51820}, web.Form{Port: 51820}, nil},
		{"obfuscated peer, stock", awg, web.Form{}, web.Form{Port: 51820}, nil},
		{"amneziawg", stock443, web.Form{AmneziaWG: true}, web.Form{AmneziaWG: true, Port: 51821}, nil},
		{"not a port", stock443, web.Form{Port: 444}, web.Form{}, web.ErrFormNotOffered},
		{"obfuscated port in stock form", stock443, web.Form{Port: 51821}, web.Form{}, web.ErrFormNotOffered},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := resolveForm(cfg, tc.p, tc.in)
			if got != tc.want || !errors.Is(err, tc.err) {
				t.Errorf("resolveForm(%+v) = %+v, %v; want %+v, %v", tc.in, got, err, tc.want, tc.err)
			}
		})
	}
	cfg.VPN.Obfuscation.Enabled = false
	if _, err := resolveForm(cfg, stock443, web.Form{AmneziaWG: true}); !errors.Is(err, web.ErrFormNotOffered) {
		t.Errorf("amneziawg with obfuscation off: %v", err)
	}
}
