package vpn

import (
	"net"

	"golang.zx2c4.com/wireguard/ipc"
)

// uapiSocketPath is where wg(8) looks for a userspace interface's socket.
func uapiSocketPath(ifname string) string { return "/var/run/wireguard/" + ifname + ".sock" }

// openUAPI creates the UAPI socket, mode 0600 under a 0755 directory, so
// `wg show IFNAME` and `wg set IFNAME …` work against the running daemon
// (wireguard-go main.go does the same).
func openUAPI(ifname string) (net.Listener, error) {
	f, err := ipc.UAPIOpen(ifname)
	if err != nil {
		return nil, err
	}
	defer f.Close() // UAPIListen works on a duplicate
	return ipc.UAPIListen(ifname, f)
}
