package wgconf

import (
	"errors"
	"flag"
	"image"
	"image/color"
	"image/png"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tariq-vpn/tariq/config"
	"github.com/tariq-vpn/tariq/internal/testutil"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

// fixedKey is a deterministic key for golden files.
func fixedKey(b byte) Key {
	var k Key
	for i := range k {
		k[i] = b + byte(i)
	}
	return k
}

func goldenDevice() Device {
	return Device{
		Name:         "mom",
		PrivateKey:   fixedKey(1).String(),
		PresharedKey: fixedKey(2).String(),
		IPv4:         netip.MustParseAddr("10.77.0.2"),
		IPv6:         netip.MustParseAddr("fd12:3456:789a::2"),
		Port:         51820,
	}
}

// goldenAWG are fixed obfuscation parameters for golden files.
func goldenAWG() AmneziaWG {
	return AmneziaWG{Jc: 5, Jmin: 47, Jmax: 812, S1: 71, S2: 133, H1: 1418275903, H2: 372048221, H3: 2075731890, H4: 955613077}
}

func goldenServer() Server {
	return Server{PublicKey: fixedKey(3).PublicKey(), AmneziaWG: goldenAWG()}
}

func TestClientConfigGolden(t *testing.T) {
	tests := []struct {
		name string
		edit func(*config.Config)
		dev  func(*Device)
	}{
		{name: "default"},
		{name: "ipv6-endpoint", edit: func(c *config.Config) { c.Server.PublicHost = "2001:db8::10" }, dev: func(d *Device) { d.Port = 443 }},
		{name: "ipv4-endpoint-split-tunnel", edit: func(c *config.Config) {
			c.Server.PublicHost = "203.0.113.7"
			c.VPN.ClientAllowedIPs = []netip.Prefix{netip.MustParsePrefix("10.77.0.0/24"), netip.MustParsePrefix("fd12:3456:789a::/64")}
			c.VPN.DNS = nil
			c.VPN.PersistentKeepalive = 0
			c.VPN.MTU = 1280
		}},
		{name: "own-key", dev: func(d *Device) {
			d.Name = "kid"
			d.PrivateKey = ""
		}},
		{name: "extra-port", dev: func(d *Device) { d.Port = 443 }},
		{name: "amneziawg", dev: func(d *Device) { d.Obfuscated, d.Port = true, 51821 }},
		{name: "amneziawg-ipv6-own-key", edit: func(c *config.Config) { c.Server.PublicHost = "2001:db8::10" },
			dev: func(d *Device) { d.Obfuscated, d.Port, d.PrivateKey = true, 8443, "" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := config.Default()
			cfg.Server.PublicHost = "vpn.example.com"
			if tt.edit != nil {
				tt.edit(cfg)
			}
			d := goldenDevice()
			if tt.dev != nil {
				tt.dev(&d)
			}
			got, err := ClientConfig(cfg, goldenServer(), d)
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

func TestClientConfigErrors(t *testing.T) {
	cfg := config.Default()
	cfg.Server.PublicHost = "vpn.example.com"
	pub := goldenServer()
	if _, err := ClientConfig(cfg, Server{}, goldenDevice()); !errors.Is(err, ErrBadKey) {
		t.Errorf("no server key: got %v", err)
	}
	bad := goldenDevice()
	bad.PresharedKey = "short"
	if _, err := ClientConfig(cfg, pub, bad); !errors.Is(err, ErrBadKey) || !strings.Contains(err.Error(), `peer "mom": preshared key`) {
		t.Errorf("bad PSK: got %v", err)
	}
	obf := goldenDevice()
	obf.Obfuscated = true
	badAWG := pub
	badAWG.AmneziaWG.H2 = badAWG.AmneziaWG.H1
	if _, err := ClientConfig(cfg, badAWG, obf); err == nil || !strings.Contains(err.Error(), "h1 and h2 are both") {
		t.Errorf("obfuscated device, damaged parameters: got %v", err)
	}
	noPort := goldenDevice()
	noPort.Port = 0
	if _, err := ClientConfig(cfg, pub, noPort); err == nil || !strings.Contains(err.Error(), "port 0 is not a port") {
		t.Errorf("no port: got %v", err)
	}
	cfg.Server.PublicHost = ""
	if _, err := ClientConfig(cfg, pub, goldenDevice()); !errors.Is(err, ErrNoPublicHost) {
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
	own := goldenDevice()
	own.PrivateKey = ""
	cfg := config.Default()
	cfg.Server.PublicHost = "2001:db8::10"
	pub := goldenServer()
	full, err := ClientConfig(cfg, pub, goldenDevice())
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
