//go:build !linux

package vpn

import "net"

func uapiSocketPath(ifname string) string { return "" }

func openUAPI(ifname string) (net.Listener, error) { return nil, ErrNotSupported }
