// Package web is the HTTPS page tariq serves on web.listen: for now a
// small landing page that says what the server is, with strict security
// headers and no third-party assets.
package web

import (
	"html/template"
	"net/http"
)

// Info is what the landing page shows.
type Info struct {
	Host    string
	TURN    []string // TURN URIs
	Version string
	// TrustedCert is true when the certificate is one browsers trust
	// (ACME or files), which turns on HSTS.
	TrustedCert bool
}

var landing = template.Must(template.New("landing").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>tariq on {{.Host}}</title>
<style>body{font-family:system-ui,sans-serif;max-width:36rem;margin:2rem auto;padding:0 1rem;line-height:1.5}code{word-break:break-all}</style>
</head><body>
<h1>tariq</h1>
<p>This server ({{.Host}}) carries calls and a private VPN for the people who run it and their family.</p>
<p>If you were sent a link to join, open that link on your phone.</p>
{{with .TURN}}<h2>For app operators</h2><p>TURN URIs:</p><ul>{{range .}}<li><code>{{.}}</code></li>{{end}}</ul>{{end}}
</body></html>
`))

// Handler serves the landing page and, when invites is not nil, the
// one-time invite links under /join/, whose pages run the reachability
// check that checks describes (nil: none).
func Handler(info func() Info, invites Invites, checks Checks) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		landing.Execute(w, info())
	})
	if invites != nil {
		h := newInviteHandler(invites, checks, func() string { return info().Host })
		// GET (and HEAD) never disclose the settings nor use the link up:
		// link previews and mail scanners fetch links. Only the member's
		// POST does (invite.go, reveal).
		mux.HandleFunc("GET /join/{token}", h.page)
		mux.HandleFunc("POST /join/{token}", h.reveal)
		mux.HandleFunc("POST /join/{token}/check", h.check)
		mux.HandleFunc("POST /join/{token}/turn", h.creds)
		mux.HandleFunc("GET /join/{token}/connected", h.connected)
		mux.HandleFunc("GET /join/{token}/ws", h.ws)
		mux.HandleFunc("GET /assets/reach.js", serveReachJS)
	}
	sec := SecurityHeaders(mux)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if info().TrustedCert {
			w.Header().Set("Strict-Transport-Security", "max-age=31536000")
		}
		sec.ServeHTTP(w, r)
	})
}

// SecurityHeaders sets headers for a page with no third-party assets and no
// reason to be framed or to leak where its visitors came from. Forms post
// only to the page itself (the invite's reveal, for a browser without
// script); Cache-Control: no-store keeps revealed settings out of caches
// and history.
func SecurityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Cross-Origin-Opener-Policy", "same-origin")
		hd.Set("Cache-Control", "no-store")
		hd.Set("X-Robots-Tag", "noindex, nofollow")
		h.ServeHTTP(w, r)
	})
}
