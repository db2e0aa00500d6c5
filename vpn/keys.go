package vpn

import "github.com/tariq-vpn/tariq/internal/wgconf"

// Key is a WireGuard key (see wgconf.Key).
type Key = wgconf.Key
