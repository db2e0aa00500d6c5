// Package members owns tariq's family members: a person, their devices
// (each a WireGuard peer with its forms: stock, an extra port, AmneziaWG),
// their one-time invite links and reachability results, and their limits
// (expiry, a monthly data limit, a rate cap) with the usage counted toward
// them. The running daemon, the CLI without a daemon and the web page all
// go through it.
package members
