package etcdstore

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/tariq-vpn/tariq/internal/store"
)

// Probe reaches the cluster as a node would, for `tariq check`: each
// endpoint's TCP port and TLS handshake, then a read of the prefix. It
// returns what it found when all is well, or one line saying what is
// wrong: unreachable, TLS, credentials refused, or a prefix holding keys
// that are not tariq's.
func Probe(ctx context.Context, opts Options) (string, error) {
	if opts.Timeout == 0 {
		opts.Timeout = 5 * time.Second
	}
	reached := 0
	var problems []string
	for _, ep := range opts.Endpoints {
		if err := probeEndpoint(ctx, ep, opts.TLS, opts.Timeout); err != nil {
			problems = append(problems, err.Error())
			continue
		}
		reached++
	}
	if reached == 0 {
		return "", fmt.Errorf("etcd is unreachable: %s", strings.Join(problems, "; "))
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: opts.Endpoints, DialTimeout: opts.Timeout, TLS: opts.TLS, Logger: zap.NewNop()})
	if err != nil {
		return "", fmt.Errorf("etcd at %s: %w", strings.Join(opts.Endpoints, ", "), err)
	}
	defer cli.Close()
	rctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	p := opts.Prefix
	resp, err := cli.Txn(rctx).Then(
		clientv3.OpGet(p+"/state"),
		clientv3.OpGet(p+"/", clientv3.WithPrefix(), clientv3.WithCountOnly()),
		clientv3.OpGet(p+"/nodes/", clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return "", &UnavailableError{Action: "reading prefix " + p, Endpoints: opts.Endpoints, Err: err}
	}
	var nodes []string
	for _, kv := range resp.Responses[2].GetResponseRange().Kvs {
		nodes = append(nodes, strings.TrimPrefix(string(kv.Key), p+"/nodes/"))
	}
	live := "no node live"
	if len(nodes) > 0 {
		live = "nodes live: " + strings.Join(nodes, ", ")
	}
	var extra string
	if len(problems) > 0 {
		extra = " (but " + strings.Join(problems, "; ") + ")"
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 {
		if n := resp.Responses[1].GetResponseRange().Count; n > int64(len(nodes)) {
			return "", fmt.Errorf("etcd prefix %s holds %d keys but no tariq state (%s/state): is server.etcd.prefix right?", p, n, p)
		}
		return fmt.Sprintf("reached %d of %d endpoints; prefix %s is empty: the first tariq serve fills it, or tariq store migrate --to etcd copies a one-server state; %s%s",
			reached, len(opts.Endpoints), p, live, extra), nil
	}
	st, err := store.Parse(kvs[0].Value, "etcd key "+p+"/state")
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("reached %d of %d endpoints; prefix %s holds tariq's state (%d members, %d devices); %s%s",
		reached, len(opts.Endpoints), p, len(st.Members), len(st.Peers), live, extra), nil
}

// probeEndpoint dials ep's port and, for https, completes a TLS handshake
// with cfg, naming what failed.
func probeEndpoint(ctx context.Context, ep string, cfg *tls.Config, timeout time.Duration) error {
	u, err := url.Parse(ep)
	if err != nil {
		return fmt.Errorf("%s: %w", ep, err)
	}
	d := &net.Dialer{Timeout: timeout}
	c, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Err != nil {
			err = op.Err
		}
		return fmt.Errorf("%s: %v", ep, err)
	}
	defer c.Close()
	if u.Scheme != "https" {
		return nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg != nil {
		tc = cfg.Clone()
	}
	if tc.ServerName == "" {
		tc.ServerName = u.Hostname()
	}
	t := tls.Client(c, tc)
	t.SetDeadline(time.Now().Add(timeout))
	if err := t.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("%s refused the TLS handshake: %v", ep, err)
	}
	// With client-cert-auth a bad client certificate shows only on the
	// first read: TLS 1.3 sends the server's verdict after the handshake.
	t.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := t.Read(make([]byte, 1)); err != nil && !isTimeout(err) && strings.Contains(err.Error(), "tls:") {
		return fmt.Errorf("%s refused this node's client certificate: %v", ep, err)
	}
	return nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
