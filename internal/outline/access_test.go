package outline

import (
	"flag"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s differs (-want +got, -update rewrites it):\n%s", path, diff)
	}
}

func TestAccessConfig(t *testing.T) {
	doc := AccessConfig("wss://vpn.example.org/P4THPREFIX/", "s3cr3t")
	golden(t, "access.yaml", doc)
	// The shape the Outline client reads, from the generic tree.
	var tree map[string]any
	if err := yaml.Unmarshal(doc, &tree); err != nil {
		t.Fatal(err)
	}
	half := func(proto string) map[string]any {
		return map[string]any{
			"$type":    "shadowsocks",
			"endpoint": map[string]any{"$type": "websocket", "url": "wss://vpn.example.org/P4THPREFIX/" + proto},
			"cipher":   "chacha20-ietf-poly1305",
			"secret":   "s3cr3t",
		}
	}
	want := map[string]any{"transport": map[string]any{"$type": "tcpudp", "tcp": half("tcp"), "udp": half("udp")}}
	if diff := cmp.Diff(want, tree); diff != "" {
		t.Errorf("config tree (-want +got):\n%s", diff)
	}
}

func TestErrorConfig(t *testing.T) {
	doc := ErrorConfig(`This key was turned off: "ask" the server's owner.`)
	golden(t, "error.yaml", doc)
	var tree map[string]any
	if err := yaml.Unmarshal(doc, &tree); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"error": map[string]any{"message": `This key was turned off: "ask" the server's owner.`}}
	if diff := cmp.Diff(want, tree); diff != "" {
		t.Errorf("error tree (-want +got):\n%s", diff)
	}
}

func TestAccessKey(t *testing.T) {
	for _, tc := range []struct {
		host string
		port int
		path string
		name string
		want string
	}{
		{"vpn.example.org", 443, "K3Y", "grandma", "ssconf://vpn.example.org/K3Y#grandma"},
		{"vpn.example.org", 0, "/K3Y", "grandma", "ssconf://vpn.example.org/K3Y#grandma"},
		{"203.0.113.7", 8443, "a/K3Y", "Uncle Sam", "ssconf://203.0.113.7:8443/a/K3Y#Uncle%20Sam"},
		{"2001:db8::1", 443, "K3Y", "phone", "ssconf://[2001:db8::1]/K3Y#phone"},
		{"2001:db8::1", 8443, "K3Y", "phone", "ssconf://[2001:db8::1]:8443/K3Y#phone"},
		{"vpn.example.org", 443, "K3Y", "سارة", "ssconf://vpn.example.org/K3Y#%D8%B3%D8%A7%D8%B1%D8%A9"},
		{"vpn.example.org", 443, "K3Y", "a#b/c?d", "ssconf://vpn.example.org/K3Y#a%23b%2Fc%3Fd"},
	} {
		if got := AccessKey(tc.host, tc.port, tc.path, tc.name); got != tc.want {
			t.Errorf("AccessKey(%q, %d, %q, %q) = %s, want %s", tc.host, tc.port, tc.path, tc.name, got, tc.want)
		}
	}
}

func TestConfigHandler(t *testing.T) {
	doc := AccessConfig("wss://h/p", "s")
	h, err := ConfigHandler("docs", func(token string) ([]byte, bool) {
		return doc, token == "T0KEN"
	}, normalPage)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		method, path string
		want         int
		doc          bool
	}{
		{"GET", "/docs/T0KEN", http.StatusOK, true},
		{"HEAD", "/docs/T0KEN", http.StatusOK, false},
		{"GET", "/docs/OTHER", http.StatusNotFound, false},
		{"GET", "/docs/T0KEN/x", http.StatusNotFound, false},
		{"GET", "/docs/", http.StatusNotFound, false},
		{"POST", "/docs/T0KEN", http.StatusNotFound, false},
		{"GET", "/T0KEN", http.StatusNotFound, false},
		{"GET", "/", http.StatusOK, false},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, nil))
		if rec.Code != tc.want {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.path, rec.Code, tc.want)
		}
		isDoc := rec.Header().Get("Access-Control-Allow-Origin") == "*"
		if isDoc != (tc.want == http.StatusOK && tc.path != "/") {
			t.Errorf("%s %s: Access-Control-Allow-Origin %q", tc.method, tc.path, rec.Header().Get("Access-Control-Allow-Origin"))
		}
		if isDoc && rec.Header().Get("Cache-Control") != "no-store" {
			t.Errorf("%s %s: Cache-Control %q, want no-store", tc.method, tc.path, rec.Header().Get("Cache-Control"))
		}
		if got := rec.Body.String() == string(doc); got != tc.doc {
			t.Errorf("%s %s: body is the document: %v, want %v", tc.method, tc.path, got, tc.doc)
		}
	}
	if _, err := ConfigHandler("a/b", nil, nil); err == nil {
		t.Error("a prefix with a slash was accepted")
	}
}

func TestHandlerRefusesBadPrefix(t *testing.T) {
	s, err := New(Config{}, Deps{Allow: func(netip.Addr) (bool, string) { return false, "x" }})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"", "a/b", "..", "a b", "ä", "a%2F"} {
		if _, err := s.Handler(p, nil); err == nil {
			t.Errorf("prefix %q accepted", p)
		}
	}
	if _, err := s.Handler(NewPrefix(), nil); err != nil {
		t.Errorf("a NewPrefix refused: %v", err)
	}
}
