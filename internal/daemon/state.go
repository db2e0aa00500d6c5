package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/tariq-vpn/tariq/config"
	"github.com/tariq-vpn/tariq/internal/certs"
	"github.com/tariq-vpn/tariq/internal/etcdstore"
	"github.com/tariq-vpn/tariq/internal/store"
)

// OpenState opens the shared state server.store names: the state file in
// the data directory, or the etcd cluster (its cache in the data
// directory). The caller closes it.
func OpenState(ctx context.Context, cfg *config.Config, log *slog.Logger) (store.Backend, error) {
	b, _, err := openState(ctx, cfg, log, 0)
	return b, err
}

func openState(ctx context.Context, cfg *config.Config, log *slog.Logger, timeout time.Duration) (store.Backend, *etcdstore.Store, error) {
	if cfg.Server.Store != config.StoreEtcd {
		st, err := store.Open(cfg.Server.DataDir)
		if err != nil {
			return nil, nil, err
		}
		return st, nil, nil
	}
	if _, err := store.Open(cfg.Server.DataDir); err != nil { // the cache's directory, created and checked
		return nil, nil, err
	}
	opts, err := etcdstore.OptionsFrom(cfg)
	if err != nil {
		return nil, nil, err
	}
	opts.Logger, opts.Timeout = log, timeout
	es, err := etcdstore.Open(ctx, opts)
	if err != nil {
		return nil, nil, err
	}
	return es, es, nil
}

// statePart follows the shared state while the daemon serves: the relay
// takes up REST secrets changed elsewhere (another node, `tariq turn
// secret` on this one), and with etcd the node keeps its entry in the
// node registry. Closing it closes the etcd connection, after every other
// part (it is opened first).
type statePart struct {
	d  *Daemon
	es *etcdstore.Store // nil with the file store
}

func (p statePart) Serve(ctx context.Context) error {
	if p.es != nil {
		registered := make(chan struct{})
		go func() {
			defer close(registered)
			p.es.Register(ctx, p.d.nodeInfo)
		}()
		defer func() { <-registered }() // its entry deleted before the connection closes
	}
	changed := p.d.state.Watch(ctx)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
			if r := p.d.relay; r != nil {
				if err := r.SecretsChanged(); err != nil {
					p.d.log.Warn("REST secrets changed in the store but not taken up", "err", err)
				}
			}
		}
	}
}

func (p statePart) Close() error {
	if p.es != nil {
		return p.es.Close()
	}
	return nil
}

// nodeInfo is this node's entry in the node registry.
func (d *Daemon) nodeInfo() etcdstore.Node {
	n := etcdstore.Node{PublicHost: d.host, Version: d.opts.Version, StartedAt: d.started.UTC().Truncate(1e9), Health: "ok"}
	var problems []string
	if d.certs != nil {
		if info := d.certs.Info(); info.ACMEError != "" {
			problems = append(problems, "certificate: "+info.Source)
		}
	}
	if len(problems) > 0 {
		n.Health = strings.Join(problems, "; ")
	}
	return n
}

// storedSecrets is the relay's Deps.Secrets: the REST secrets in the
// shared state, one generated first if generate and none is stored.
func (d *Daemon) storedSecrets(generate bool) ([]config.Secret, error) {
	if generate {
		if _, err := store.RelaySecret(d.state); err != nil {
			return nil, err
		}
	}
	st, err := d.state.Load()
	if err != nil {
		return nil, err
	}
	return store.StoredSecrets(st), nil
}

// signingSecret returns the REST secret that signs the daemon's own
// credentials (the invite page's check).
func (d *Daemon) signingSecret() (string, error) {
	s, err := store.SigningSecret(d.config(), d.state)
	return s.Reveal(), err
}

// certStorage is ACME's storage for certs.Deps: the cluster's when the
// nodes share etcd, else nil (the data directory's).
func (d *Daemon) certStorage(deps *certs.Deps) {
	if es, ok := d.state.(*etcdstore.Store); ok {
		deps.Storage = es.CertStorage()
	}
}

// describeStore says where the shared state lives, for the start-up
// summary.
func describeStore(cfg *config.Config) string {
	if cfg.Server.Store == config.StoreEtcd {
		return fmt.Sprintf("etcd %s, prefix %s", strings.Join(cfg.Server.Etcd.Endpoints, ", "), cfg.Server.Etcd.Prefix)
	}
	return "state.json in " + cfg.Server.DataDir
}
