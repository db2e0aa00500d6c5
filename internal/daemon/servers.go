package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tariq-vpn/tariq/internal/members"
	"github.com/tariq-vpn/tariq/internal/mux"
	"github.com/tariq-vpn/tariq/internal/web"
)

// httpServer is an http.Server on one or more listeners, the shape the
// HTTPS page and the metrics endpoint share.
type httpServer struct {
	name  string
	addrs []string
	tls   *tls.Config // nil for plain HTTP
	srv   *http.Server
	lns   []net.Listener
}

func newHTTPServer(name string, addrs []string, tlsConf *tls.Config, h http.Handler, log *slog.Logger) *httpServer {
	return &httpServer{name: name, addrs: addrs, tls: tlsConf, srv: &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    32 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}}
}

func (s *httpServer) Open(ctx context.Context) error {
	var lc net.ListenConfig
	for _, a := range s.addrs {
		ln, err := lc.Listen(ctx, "tcp", a)
		if err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		if s.tls != nil {
			ln = tls.NewListener(ln, s.tls)
		}
		s.lns = append(s.lns, ln)
	}
	return nil
}

func (s *httpServer) Serve(ctx context.Context) error {
	errc := make(chan error, len(s.lns))
	for _, ln := range s.lns {
		go func() { errc <- s.srv.Serve(ln) }()
	}
	select {
	case <-ctx.Done():
		return nil
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	}
}

func (s *httpServer) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	for _, ln := range s.lns {
		ln.Close() // listeners Serve never saw
	}
	if errors.Is(err, context.DeadlineExceeded) {
		s.srv.Close()
	}
	return nil
}

// Addrs returns the bound addresses.
func (s *httpServer) Addrs() []net.Addr {
	out := make([]net.Addr, len(s.lns))
	for i, ln := range s.lns {
		out[i] = ln.Addr()
	}
	return out
}

// httpsServer is the HTTPS page on web.listen. Each address is one TLS
// port shared with TURN: the mux sends STUN streams to the relay and HTTP
// ones to the page.
type httpsServer struct {
	addrs []string
	tls   *tls.Config
	turn  func(raw, conn net.Conn)
	log   *slog.Logger
	lim   mux.Limits
	srv   *http.Server
	muxes []*mux.Mux
	// beforeShutdown ends what the server hijacked (the Outline
	// WebSockets), which Shutdown neither waits for nor closes.
	beforeShutdown func()
}

func newHTTPSServer(d *Daemon) (*httpsServer, error) {
	cfg := d.config()
	var inv web.Invites
	var checks web.Checks
	if d.members != nil {
		inv, checks = d.members, d.check
	}
	h := web.Handler(func() web.Info {
		info := web.Info{Host: d.host, Version: d.opts.Version, TrustedCert: !d.certs.Info().SelfSigned}
		for _, e := range d.Endpoints() {
			info.TURN = append(info.TURN, e.URI())
		}
		return info
	}, inv, checks)
	log := d.log.With("component", "web")
	var before func()
	if d.outline != nil {
		// The Outline paths in front of the page: documents and
		// WebSockets; every other request is the page's.
		oh, err := d.outline.handler(h)
		if err != nil {
			return nil, fmt.Errorf("outline: %w", err)
		}
		h, before = oh, func() { d.outline.Close() }
	}
	turn := func(raw, conn net.Conn) { conn.Close() }
	protos := []string{"h2", "http/1.1"}
	if d.relay != nil {
		turn = d.relay.PushTLS
		protos = append(protos, "stun.turn")
	}
	// The mux hands over TLS streams that are not *tls.Conn, which net/http
	// takes for cleartext: allow HTTP/2 with prior knowledge so h2 (whose
	// ALPN the handshake already agreed) still works.
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	srv := newHTTPServer("web", nil, nil, h, log).srv
	srv.Protocols = &protocols
	return &httpsServer{addrs: cfg.Web.Listen, tls: d.certs.TLSConfig(protos...), turn: turn, log: log, lim: d.opts.WebLimits, srv: srv,
		beforeShutdown: before}, nil
}

func (s *httpsServer) Open(ctx context.Context) error {
	var lc net.ListenConfig
	for _, a := range s.addrs {
		ln, err := lc.Listen(ctx, "tcp", a)
		if err != nil {
			return fmt.Errorf("web: %w", err)
		}
		s.muxes = append(s.muxes, mux.New(ln, s.tls, s.turn, s.log, s.lim))
	}
	return nil
}

func (s *httpsServer) Serve(ctx context.Context) error {
	errc := make(chan error, 2*len(s.muxes))
	for _, m := range s.muxes {
		go func() { errc <- m.Serve(ctx) }()
		go func() { errc <- s.srv.Serve(m.HTTPListener()) }()
	}
	select {
	case <-ctx.Done():
		return nil
	case err := <-errc:
		if err == nil || errors.Is(err, http.ErrServerClosed) {
			<-ctx.Done()
			return nil
		}
		return err
	}
}

func (s *httpsServer) Close() error {
	for _, m := range s.muxes {
		m.Close()
	}
	if s.beforeShutdown != nil {
		s.beforeShutdown()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); errors.Is(err, context.DeadlineExceeded) {
		s.srv.Close()
	}
	return nil
}

// Addrs returns the bound addresses.
func (s *httpsServer) Addrs() []net.Addr {
	out := make([]net.Addr, len(s.muxes))
	for i, m := range s.muxes {
		out[i] = m.Addr()
	}
	return out
}

// metricsServer serves Prometheus text on server.metrics_listen.
type metricsServer struct{ *httpServer }

func newMetricsServer(d *Daemon) *metricsServer {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tariq_start_time_seconds", Help: "When the daemon started, in unix seconds.",
		}, func() float64 { return float64(d.started.Unix()) }),
	)
	if d.relay != nil {
		reg.MustRegister(d.relay.Stats().Collector(d.relay.Allocations))
	}
	if d.members != nil {
		reg.MustRegister(membersCollector{d})
	}
	if d.outline != nil {
		reg.MustRegister(d.outline.svc.Collector())
	}
	if d.certs != nil {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tariq_certificate_expiry_seconds", Help: "When the served certificate expires, in unix seconds.",
		}, func() float64 { return float64(d.certs.Info().NotAfter.Unix()) }))
	}
	cfg := d.config()
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return &metricsServer{newHTTPServer("metrics", []string{cfg.Server.MetricsListen}, nil, mux, d.log.With("component", "metrics"))}
}

// membersCollector exports the WireGuard devices and their members at
// scrape time, labelled by name (names are validated: letters, digits,
// '-', '_', '.').
type membersCollector struct{ d *Daemon }

var (
	descPeers         = prometheus.NewDesc("tariq_wireguard_peers", "WireGuard devices by state.", []string{"state"}, nil)
	descPeerHandshake = prometheus.NewDesc("tariq_wireguard_peer_last_handshake_seconds", "Last handshake with the device, in unix seconds (0: never).", []string{"peer", "member"}, nil)
	descPeerRx        = prometheus.NewDesc("tariq_wireguard_peer_received_bytes_total", "Bytes received from the device (WireGuard packets).", []string{"peer", "member"}, nil)
	descPeerTx        = prometheus.NewDesc("tariq_wireguard_peer_sent_bytes_total", "Bytes sent to the device (WireGuard packets).", []string{"peer", "member"}, nil)

	descMemberBytes     = prometheus.NewDesc("tariq_member_month_bytes", "Bytes the member passed this calendar month (UTC), on every path, by direction.", []string{"member", "direction"}, nil)
	descMemberLimit     = prometheus.NewDesc("tariq_member_data_limit_bytes", "The member's monthly data limit (0: none).", []string{"member"}, nil)
	descMemberRate      = prometheus.NewDesc("tariq_member_rate_limit_bits", "The member's rate cap per direction, in bits per second (0: none).", []string{"member"}, nil)
	descMemberExpires   = prometheus.NewDesc("tariq_member_expires_seconds", "When the member's access ends, in unix seconds (0: never).", []string{"member"}, nil)
	descMemberHandshake = prometheus.NewDesc("tariq_member_last_handshake_seconds", "The latest handshake of any of the member's devices, in unix seconds (0: never).", []string{"member"}, nil)
	descMemberBlocked   = prometheus.NewDesc("tariq_member_blocked", "1 when the member's devices are cut off, by reason (expired, over-limit).", []string{"member", "reason"}, nil)
)

func (c membersCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descPeers, descPeerHandshake, descPeerRx, descPeerTx,
		descMemberBytes, descMemberLimit, descMemberRate, descMemberExpires, descMemberHandshake, descMemberBlocked} {
		ch <- d
	}
}

func unixOrZero(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.Unix())
}

func (c membersCollector) Collect(ch chan<- prometheus.Metric) {
	devices, err := c.d.members.Devices()
	if err != nil {
		return
	}
	last := map[string]time.Time{}
	var enabled, disabled, blocked int
	for _, p := range devices {
		switch {
		case !p.Enabled:
			disabled++
			continue
		case p.Blocked != "":
			blocked++
		default:
			enabled++
		}
		if p.LastHandshake.After(last[p.Member]) {
			last[p.Member] = p.LastHandshake
		}
		ch <- prometheus.MustNewConstMetric(descPeerHandshake, prometheus.GaugeValue, unixOrZero(p.LastHandshake), p.Name, p.Member)
		ch <- prometheus.MustNewConstMetric(descPeerRx, prometheus.CounterValue, float64(p.RxBytes), p.Name, p.Member)
		ch <- prometheus.MustNewConstMetric(descPeerTx, prometheus.CounterValue, float64(p.TxBytes), p.Name, p.Member)
	}
	ch <- prometheus.MustNewConstMetric(descPeers, prometheus.GaugeValue, float64(enabled), "enabled")
	ch <- prometheus.MustNewConstMetric(descPeers, prometheus.GaugeValue, float64(disabled), "disabled")
	ch <- prometheus.MustNewConstMetric(descPeers, prometheus.GaugeValue, float64(blocked), "blocked")
	ms, err := c.d.members.Members()
	if err != nil {
		return
	}
	for _, m := range ms {
		ch <- prometheus.MustNewConstMetric(descMemberBytes, prometheus.GaugeValue, float64(m.Usage.In), m.Name, "in")
		ch <- prometheus.MustNewConstMetric(descMemberBytes, prometheus.GaugeValue, float64(m.Usage.Out), m.Name, "out")
		ch <- prometheus.MustNewConstMetric(descMemberLimit, prometheus.GaugeValue, float64(m.DataLimit), m.Name)
		ch <- prometheus.MustNewConstMetric(descMemberRate, prometheus.GaugeValue, float64(m.Rate), m.Name)
		ch <- prometheus.MustNewConstMetric(descMemberExpires, prometheus.GaugeValue, unixOrZero(m.Expires), m.Name)
		ch <- prometheus.MustNewConstMetric(descMemberHandshake, prometheus.GaugeValue, unixOrZero(last[m.Name]), m.Name)
		for _, why := range []string{members.BlockExpired, members.BlockOverLimit} {
			v := 0.0
			if m.Blocked == why {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(descMemberBlocked, prometheus.GaugeValue, v, m.Name, why)
		}
	}
}
