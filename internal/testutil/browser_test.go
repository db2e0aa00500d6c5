package testutil

import (
	"bytes"
	"fmt"
	"image/png"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestBrowser checks the harness itself: HostMap names resolve, others do
// not, the phone viewport reaches the page and its screenshots, the console
// is captured, and no chromium process outlives the browser's test.
func TestBrowser(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `<!doctype html><meta name="viewport" content="width=device-width">`+
			`<title>harness</title><script>console.log("hello from", location.host)</script>`)
	}))
	defer srv.Close()
	port := srv.URL[strings.LastIndexByte(srv.URL, ':')+1:]

	var b *Browser
	t.Run("page", func(t *testing.T) {
		b = NewBrowser(t, BrowserOptions{
			Timeout:  30 * time.Second,
			Viewport: PhoneViewport(),
			HostMap:  map[string]string{"tariq.test": "127.0.0.1"},
		})
		var got struct {
			Title  string `json:"title"`
			Width  int    `json:"width"`
			Ratio  int    `json:"ratio"`
			Host   string `json:"host"`
			Online bool   `json:"online"`
		}
		err := b.Run(
			chromedp.Navigate("http://tariq.test:"+port+"/"),
			EvalJSON(`(async () => {
				let online = true;
				try { await fetch("http://example.com/", {mode: "no-cors"}); } catch { online = false; }
				return {title: document.title, width: innerWidth, ratio: devicePixelRatio, host: location.host, online};
			})()`, &got),
		)
		if err != nil {
			t.Fatal(err)
		}
		if phone := PhoneViewport(); got.Title != "harness" || got.Width != int(phone.Width) || got.Ratio != int(phone.Scale) {
			t.Errorf("page saw %+v, want title harness, width %d, ratio %v", got, phone.Width, phone.Scale)
		}
		if got.Host != "tariq.test:"+port {
			t.Errorf("page loaded from %q, want tariq.test:%s through HostMap", got.Host, port)
		}
		if got.Online {
			t.Error("example.com resolved: the resolver rules do not keep chromium offline")
		}
		var shot []byte
		if err := b.RunTimeout(10*time.Second, chromedp.CaptureScreenshot(&shot)); err != nil {
			t.Errorf("screenshot: %v", err)
		} else if img, err := png.DecodeConfig(bytes.NewReader(shot)); err != nil || img.Width != 390*3 {
			t.Errorf("screenshot is %d px wide (%v), want %d", img.Width, err, 390*3)
		}
		c := strings.Join(b.Console(), "\n")
		if !strings.Contains(c, "hello from tariq.test:"+port) {
			t.Errorf("console %q lacks the page's message", c)
		}
		if !strings.Contains(c, "ERR_NAME_NOT_RESOLVED") {
			t.Errorf("console %q: example.com failed, but not for want of a name", c)
		}
	})
	if b != nil {
		if left := b.processes(); len(left) > 0 {
			t.Errorf("chromium processes %v left after cleanup", left)
		}
	}
}
