package outline

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// FuzzHandlerRouting feeds the handler arbitrary requests: it never
// panics, and whatever it does not take as a WebSocket upgrade on one of
// its two paths reaches next.
func FuzzHandlerRouting(f *testing.F) {
	const prefix = "PREFIX"
	f.Add("GET", "/PREFIX/tcp", "Upgrade", "websocket", "13", "dGhlIHNhbXBsZSBub25jZQ==", "")
	f.Add("GET", "/PREFIX/udp", "keep-alive, Upgrade", "WebSocket", "13", "dGhlIHNhbXBsZSBub25jZQ==", "https://x")
	f.Add("POST", "/PREFIX/tcp/", "", "", "", "", "")
	f.Add("GET", "/prefix/tcp", "upgrade", "websocket", "8", "short", "")
	s, err := New(Config{}, Deps{Allow: denyAll})
	if err != nil {
		f.Fatal(err)
	}
	var nexted bool
	h, err := s.Handler(prefix, http.HandlerFunc(func(http.ResponseWriter, *http.Request) { nexted = true }))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, method, path, connection, upgrade, version, key, origin string) {
		r, err := http.NewRequest(method, "https://example.org/", nil)
		if err != nil {
			return
		}
		r.URL.Path = path
		r.Host = "example.org"
		for k, v := range map[string]string{"Connection": connection, "Upgrade": upgrade, "Sec-Websocket-Version": version, "Sec-Websocket-Key": key, "Origin": origin} {
			if v != "" {
				r.Header.Set(k, v)
			}
		}
		nexted = false
		// The recorder cannot be hijacked: an accepted upgrade ends there.
		h.ServeHTTP(httptest.NewRecorder(), r)
		onPath := path == "/"+prefix+"/tcp" || path == "/"+prefix+"/udp"
		if !nexted && !(onPath && isUpgrade(r)) {
			t.Errorf("%s %s (Connection %q, Upgrade %q, version %q, key %q, origin %q) reached neither next nor a WebSocket", method, path, connection, upgrade, version, key, origin)
		}
		if nexted && onPath && isUpgrade(r) {
			t.Errorf("a valid upgrade on %s went to next", path)
		}
	})
}
