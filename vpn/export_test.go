package vpn

import (
	"errors"
	"image"
	"image/color"
	"image/png"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tariq-vpn/tariq/config"
	"github.com/tariq-vpn/tariq/internal/store"
	"github.com/tariq-vpn/tariq/internal/testutil"
)

func goldenPeer() store.Peer {
	priv := fixedKey(1)
	return store.Peer{
		Name:         "mom",
		PublicKey:    priv.PublicKey().String(),
		PrivateKey:   store.Secret(priv.String()),
		PresharedKey: store.Secret(fixedKey(2).String()),
		IPv4:         addr("10.77.0.2"),
		IPv6:         addr("fd12:3456:789a::2"),
		CreatedAt:    time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
	}
}

// goldenAWG are fixed obfuscation parameters for golden files.
func goldenAWG() store.AmneziaWG {
	return store.AmneziaWG{Jc: 5, Jmin: 47, Jmax: 812, S1: 71, S2: 133, H1: 1418275903, H2: 372048221, H3: 2075731890, H4: 955613077}
}

func goldenServer() ServerInfo {
	return ServerInfo{PublicKey: fixedKey(3).PublicKey().String(), AmneziaWG: goldenAWG()}
}

func TestClientConfigGolden(t *testing.T) {
	serverPub := goldenServer()
	tests := []struct {
		name string
		edit func(*config.Config)
		peer func(*store.Peer)
	}{
		{name: "default"},
		{name: "ipv6-endpoint", edit: func(c *config.Config) { c.Server.PublicHost = "2001:db8::10"; c.VPN.ListenPort = 443 }},
		{name: "ipv4-endpoint-split-tunnel", edit: func(c *config.Config) {
			c.Server.PublicHost = "203.0.113.7"
			c.VPN.ClientAllowedIPs = []netip.Prefix{pfx("10.77.0.0/24"), pfx("fd12:3456:789a::/64")}
			c.VPN.DNS = nil
			c.VPN.PersistentKeepalive = 0
			c.VPN.MTU = 1280
		}},
		{name: "own-key", peer: func(p *store.Peer) {
			p.Name = "kid"
			p.PublicKey = fixedKey(9).PublicKey().String()
			p.PrivateKey = ""
		}},
		{name: "extra-port", edit: func(c *config.Config) { c.VPN.ExtraPorts = []int{443, 8443} }, peer: func(p *store.Peer) { p.Port = 443 }},
		{name: "amneziawg", edit: func(c *config.Config) {
			c.VPN.ExtraPorts = []int{443}
			c.VPN.Obfuscation = config.ObfuscationConfig{Enabled: true, ListenPort: 51821}
		}, peer: func(p *store.Peer) { p.Obfuscated = true }},
		{name: "amneziawg-ipv6-own-key", edit: func(c *config.Config) {
			c.Server.PublicHost = "2001:db8::10"
			c.VPN.Obfuscation = config.ObfuscationConfig{Enabled: true, ListenPort: 8443}
		}, peer: func(p *store.Peer) {
			p.Obfuscated = true
			p.PublicKey = fixedKey(9).PublicKey().String()
			p.PrivateKey = ""
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := config.Default()
			cfg.Server.PublicHost = "vpn.example.com"
			if tt.edit != nil {
				tt.edit(cfg)
			}
			p := goldenPeer()
			if tt.peer != nil {
				tt.peer(&p)
			}
			got, err := ClientConfig(cfg, serverPub, p)
			if err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", tt.name+".conf")
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Errorf("%s (-want +got):\n%s", golden, diff)
			}
		})
	}
}

// TestClientConfigKeysMatch: an exported config for a stored peer carries
// that peer's key pair, PSK and addresses and the server's public key.
func TestClientConfigKeysMatch(t *testing.T) {
	cfg := testConfig(t)
	st := testStore(t, cfg)
	p, err := AddPeerToStore(st, cfg, AddPeerRequest{Name: "mom"})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ServerFromStore(st, cfg)
	if err != nil {
		t.Fatal(err)
	}
	serverPub := srv.PublicKey
	text, err := ClientConfig(cfg, srv, p)
	if err != nil {
		t.Fatal(err)
	}
	c := parseWGQuick(t, text)
	priv, err := ParseKey(c["Interface.PrivateKey"])
	if err != nil || priv.PublicKey().String() != p.PublicKey {
		t.Errorf("exported private key does not belong to the peer's public key")
	}
	if c["Peer.PublicKey"] != serverPub || c["Peer.PresharedKey"] != p.PresharedKey.Reveal() {
		t.Errorf("peer section keys wrong: %v", c)
	}
	if want := p.IPv4.String() + "/32, " + p.IPv6.String() + "/128"; c["Interface.Address"] != want {
		t.Errorf("Address = %q, want %q", c["Interface.Address"], want)
	}
	if c["Peer.Endpoint"] != "vpn.example.com:51820" {
		t.Errorf("Endpoint = %q", c["Peer.Endpoint"])
	}
}

// parseWGQuick reads a wg-quick file into "Section.Key" → value.
func parseWGQuick(t *testing.T, text string) map[string]string {
	t.Helper()
	out := map[string]string{}
	section := ""
	for line := range strings.Lines(text) {
		line, _, _ = strings.Cut(line, "#")
		line = strings.TrimSpace(line)
		switch {
		case line == "":
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[]")
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("bad line %q", line)
			}
			out[section+"."+strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return out
}

func TestClientConfigErrors(t *testing.T) {
	cfg := config.Default()
	cfg.Server.PublicHost = "vpn.example.com"
	pub := goldenServer()
	if _, err := ClientConfig(cfg, ServerInfo{PublicKey: "nope"}, goldenPeer()); !errors.Is(err, ErrBadKey) {
		t.Errorf("bad server key: got %v", err)
	}
	bad := goldenPeer()
	bad.PresharedKey = "short"
	if _, err := ClientConfig(cfg, pub, bad); !errors.Is(err, ErrBadKey) || !strings.Contains(err.Error(), `peer "mom": preshared key`) {
		t.Errorf("bad PSK: got %v", err)
	}
	obf := goldenPeer()
	obf.Obfuscated = true
	if _, err := ClientConfig(cfg, pub, obf); !errors.Is(err, ErrObfuscationOff) {
		t.Errorf("obfuscated peer, obfuscation off: got %v", err)
	}
	cfg.VPN.Obfuscation.Enabled = true
	badAWG := pub
	badAWG.AmneziaWG.H2 = badAWG.AmneziaWG.H1
	if _, err := ClientConfig(cfg, badAWG, obf); err == nil || !strings.Contains(err.Error(), "h1 and h2 are both") {
		t.Errorf("obfuscated peer, damaged parameters: got %v", err)
	}
	gone := goldenPeer()
	gone.Port = 443 // vpn.extra_ports no longer has it
	if _, err := ClientConfig(cfg, pub, gone); !errors.Is(err, ErrBadPort) || !strings.Contains(err.Error(), `peer "mom": port 443 is not a WireGuard port`) {
		t.Errorf("port no longer configured: got %v", err)
	}
	cfg.Server.PublicHost = ""
	if _, err := ClientConfig(cfg, pub, goldenPeer()); !errors.Is(err, ErrNoPublicHost) {
		t.Errorf("no public host: got %v", err)
	}
}

// zbar decodes the QR code in img with zbarimg and returns the text.
func zbar(t *testing.T, pngBytes []byte) string {
	t.Helper()
	zbarimg := testutil.RequireBinary(t, "zbarimg")
	f := filepath.Join(t.TempDir(), "qr.png")
	if err := os.WriteFile(f, pngBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(zbarimg, "--raw", "-q", f).Output()
	if err != nil {
		t.Fatalf("zbarimg found no QR code: %v", err)
	}
	return strings.TrimSuffix(string(out), "\n")
}

func qrTexts(t *testing.T) map[string]string {
	own := goldenPeer()
	own.PrivateKey = ""
	cfg := config.Default()
	cfg.Server.PublicHost = "2001:db8::10"
	pub := goldenServer()
	full, err := ClientConfig(cfg, pub, goldenPeer())
	if err != nil {
		t.Fatal(err)
	}
	placeholder, err := ClientConfig(cfg, pub, own)
	if err != nil {
		t.Fatal(err)
	}
	return map[string]string{"client config": full, "placeholder config": placeholder, "short": "hello tariq"}
}

// TestQRPNG: the PNG decodes (zbarimg, an independent decoder) to exactly
// the text, newlines and all.
func TestQRPNG(t *testing.T) {
	for name, text := range qrTexts(t) {
		t.Run(name, func(t *testing.T) {
			b, err := QRPNG(text, 600)
			if err != nil {
				t.Fatal(err)
			}
			if got := zbar(t, b); got != text {
				t.Errorf("decoded:\n%q\nwant:\n%q", got, text)
			}
		})
	}
}

// TestQRText: the half-block drawing, read back module by module (a glyph
// is light, a blank is dark, as on a dark terminal) and rendered to a PNG,
// decodes to exactly the text.
func TestQRText(t *testing.T) {
	for name, text := range qrTexts(t) {
		t.Run(name, func(t *testing.T) {
			s, err := QRText(text)
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
			width := len([]rune(lines[0]))
			var rows [][]bool // true = dark module
			for _, l := range lines {
				r := []rune(l)
				if len(r) != width {
					t.Fatalf("ragged drawing: %d vs %d columns", len(r), width)
				}
				top, bot := make([]bool, width), make([]bool, width)
				for x, c := range r {
					switch c {
					case ' ':
						top[x], bot[x] = true, true
					case '█':
					case '▀':
						bot[x] = true
					case '▄':
						top[x] = true
					default:
						t.Fatalf("unexpected rune %q", c)
					}
				}
				rows = append(rows, top, bot)
			}
			const scale = 8
			img := image.NewGray(image.Rect(0, 0, width*scale, len(rows)*scale))
			for y, row := range rows {
				for x, dark := range row {
					c := color.Gray{Y: 255}
					if dark {
						c.Y = 0
					}
					for dy := range scale {
						for dx := range scale {
							img.SetGray(x*scale+dx, y*scale+dy, c)
						}
					}
				}
			}
			var buf strings.Builder
			if err := png.Encode(&buf, img); err != nil {
				t.Fatal(err)
			}
			if got := zbar(t, []byte(buf.String())); got != text {
				t.Errorf("decoded:\n%q\nwant:\n%q", got, text)
			}
		})
	}
}
