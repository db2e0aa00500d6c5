package daemon

import (
	"net"
	"strconv"
	"time"

	"github.com/tariq-vpn/tariq/internal/web"
	"github.com/tariq-vpn/tariq/relay"
)

// checkCredentialTTL is how long the TURN credentials an invite page's
// check uses stay valid: the page runs the check at once.
const checkCredentialTTL = 15 * time.Minute

// check describes the reachability check of device peer's invite page:
// the server's WireGuard ports and TURN endpoints as bound, the HTTPS port
// when the Outline path hands out keys there; with creds,
// short-lived TURN credentials (id check:<peer>). The invite itself is the
// members model's; this is only what the daemon knows of its listeners.
func (d *Daemon) check(peer string, creds bool) *web.Check {
	cfg := d.config()
	c := &web.Check{Host: d.host, StockPorts: cfg.VPN.StockPorts(), AmneziaWGPort: cfg.VPN.ObfuscatedPort()}
	webPort := 0
	if a := d.firstWebAddr(); a != nil {
		_, p, _ := net.SplitHostPort(a.String())
		webPort, _ = strconv.Atoi(p)
	}
	for _, e := range d.Endpoints() {
		switch {
		case e.Scheme == "turn" && e.Transport == "udp" && c.TURNUDP == "":
			c.TURNUDP = e.URI()
		case e.Scheme == "turn" && e.Transport == "tcp" && c.TURNTCP == "":
			c.TURNTCP = e.URI()
		case e.Scheme == "turns" && e.Port == webPort && c.TURNTLS == "":
			c.TURNTLS = e.URI()
		}
	}
	if d.outline != nil && d.trustedCert() == nil {
		c.OutlinePort = webPort
	}
	if creds && d.relay != nil {
		secret, err := d.signingSecret()
		if err != nil {
			d.log.Warn("reachability check without TURN: no REST secret", "err", err)
			c.TURNUDP, c.TURNTCP, c.TURNTLS = "", "", ""
		} else {
			cr := relay.MintCredentials(secret, "check:"+peer, checkCredentialTTL, time.Now())
			c.Username, c.Credential = cr.Username, cr.Password
		}
	}
	return c
}
