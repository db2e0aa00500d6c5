package testutil

import (
	"embed"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

//go:embed testdata/webrtc.html
var webrtcPage embed.FS

// RelayCall is what relayCall in testdata/webrtc.html resolves with.
type RelayCall struct {
	Error           string           `json:"error"`
	Received1       string           `json:"received1"` // at pc1, sent by pc2
	Received2       string           `json:"received2"` // at pc2, sent by pc1
	PC1             *CandidatePair   `json:"pc1"`
	PC2             *CandidatePair   `json:"pc2"`
	CandidateErrors []map[string]any `json:"candidateErrors"`
	Log             []string         `json:"log"`
}

// CandidatePair is one side's selected candidate pair, from getStats().
type CandidatePair struct {
	State         string `json:"state"`
	Nominated     bool   `json:"nominated"`
	LocalType     string `json:"localType"`
	LocalAddress  string `json:"localAddress"`
	RelayProtocol string `json:"relayProtocol"`
	URL           string `json:"url"`
	RemoteType    string `json:"remoteType"`
	RemoteAddress string `json:"remoteAddress"`
}

// WebRTCPageServer serves testdata/webrtc.html on loopback for the life of t.
func WebRTCPageServer(t testing.TB) string {
	s := httptest.NewServer(http.FileServerFS(webrtcPage))
	t.Cleanup(s.Close)
	return s.URL + "/testdata/webrtc.html"
}

// PlaceRelayCall loads the page at pageURL (from WebRTCPageServer) in b and
// places a relay-only call between two RTCPeerConnections through the one
// TURN server url, within 30 seconds. On failure the test log gets the
// page's own log and every icecandidateerror event.
func PlaceRelayCall(t testing.TB, b *Browser, pageURL, url, user, pass string) RelayCall {
	t.Helper()
	server, err := json.Marshal(map[string]string{"urls": url, "username": user, "credential": pass})
	if err != nil {
		t.Fatal(err)
	}
	var call RelayCall
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("page log:\n\t%s", strings.Join(call.Log, "\n\t"))
			t.Logf("icecandidateerror events: %v", call.CandidateErrors)
		}
	})
	err = b.RunTimeout(30*time.Second,
		chromedp.Navigate(pageURL),
		EvalJSON(fmt.Sprintf("relayCall(%s, 20000)", server), &call),
	)
	if err != nil {
		t.Fatalf("running the call: %v", err)
	}
	return call
}

// CheckRelayed fails t unless the call carried its messages both ways over
// a relay-to-relay candidate pair using protocol (udp, tcp or tls) on both
// sides.
func (c RelayCall) CheckRelayed(t testing.TB, protocol string) {
	t.Helper()
	if c.Error != "" {
		t.Errorf("call: %s", c.Error)
	}
	if c.Received2 != "ping from pc1" || c.Received1 != "pong from pc2" {
		t.Errorf("pc2 received %q, pc1 received %q; want the ping and the pong", c.Received2, c.Received1)
	}
	for _, side := range []struct {
		name string
		p    *CandidatePair
	}{{"pc1", c.PC1}, {"pc2", c.PC2}} {
		p := side.p
		if p == nil {
			t.Errorf("%s: no selected candidate pair", side.name)
			continue
		}
		if p.LocalType != "relay" || p.RemoteType != "relay" || p.RelayProtocol != protocol {
			t.Errorf("%s: selected pair %s (%s) → %s, relayProtocol %q; want relay → relay over %s",
				side.name, p.LocalType, p.LocalAddress, p.RemoteType, p.RelayProtocol, protocol)
		}
	}
}
