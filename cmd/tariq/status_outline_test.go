package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/tariq-vpn/tariq/internal/admin"
	"github.com/tariq-vpn/tariq/internal/members"
)

// TestStatusOutline: `tariq status` says whether Outline keys work and
// what the path refused and cut, and lists per member their Outline
// connections and the paths seen working.
func TestStatusOutline(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	st := &admin.Status{Version: "test", PublicHost: "vpn.example.org", StartedAt: now.Add(-time.Hour),
		VPN: &admin.VPNStatus{Interface: "tariq0", ListenPort: 51820,
			Outline: &admin.OutlineStatus{Refused: map[string]map[string]uint64{"tcp": {"loopback": 2}, "udp": {"own-address": 1}},
				Cuts: map[string]uint64{"removed": 3}},
			Members: []members.MemberStatus{
				{Name: "mom", Devices: []string{"mom"}, Outline: &members.MemberLive{Open: 2, Total: 7, LastSeen: now.Add(-90 * time.Second), In: 1 << 20, Out: 1 << 20},
					Seen: []string{"outline", "wireguard (check)"}},
				{Name: "dad", Devices: []string{"dad"}, Outline: &members.MemberLive{}},
			}}}
	var out bytes.Buffer
	printStatus(&app{stdout: &out}, st, now)
	text := strings.Join(strings.Fields(out.String()), " ")
	for _, want := range []string{
		"Outline Shadowsocks over WebSocket on the HTTPS port; keys work",
		"targets refused: tcp loopback 2, udp own-address 1",
		"connections cut: removed 3",
		"OUTLINE SEEN WORKING",
		"2 open, 7 since start, 2.0 MiB, last 1m30s ago outline, wireguard (check)",
		"never connected -",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("status lacks %q:\n%s", want, out.String())
		}
	}
	st.VPN.Outline.Untrusted = "the Outline app needs a publicly trusted certificate, and this server's is self-signed"
	out.Reset()
	printStatus(&app{stdout: &out}, st, now)
	if !strings.Contains(out.String(), "no key works: the Outline app needs a publicly trusted certificate") {
		t.Errorf("status with a self-signed certificate:\n%s", out.String())
	}
}
