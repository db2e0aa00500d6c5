package daemon

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tariq-vpn/tariq/config"
	"github.com/tariq-vpn/tariq/internal/admin"
	"github.com/tariq-vpn/tariq/internal/certs"
	"github.com/tariq-vpn/tariq/internal/etcdstore"
	"github.com/tariq-vpn/tariq/internal/store"
)

// The CLI's operations on the shared state that need no daemon: the REST
// secrets' rotation, the node list, the migration to etcd. Each opens the
// state server.store names and closes it; a daemon of this config (or
// another node) follows the change through its watch.

// withState runs fn on the shared state.
func withState(ctx context.Context, cfg *config.Config, fn func(store.Backend) error) error {
	st, err := OpenState(ctx, cfg, nil)
	if err != nil {
		return err
	}
	defer st.Close()
	return fn(st)
}

// RESTSecrets lists the REST secrets in force: relay.secrets, then the
// stored ones (`tariq turn secret list`).
func RESTSecrets(ctx context.Context, cfg *config.Config) (out []store.SecretInfo, err error) {
	err = withState(ctx, cfg, func(b store.Backend) error {
		st, err := b.Load()
		if err != nil {
			return err
		}
		out = store.RESTSecrets(cfg, st)
		return nil
	})
	return out, err
}

// AddRESTSecret generates a REST secret that every node verifies from now
// on (`tariq turn secret add`).
func AddRESTSecret(ctx context.Context, cfg *config.Config) (added store.SecretInfo, err error) {
	err = withState(ctx, cfg, func(b store.Backend) error {
		_, err := b.Update(func(st *store.State) error {
			added = st.AddSecret(time.Now())
			return nil
		})
		return err
	})
	return added, err
}

// SignWithSecret makes the stored secret id the one tariq signs its
// credentials with (`tariq turn secret sign`).
func SignWithSecret(ctx context.Context, cfg *config.Config, id string) error {
	return withState(ctx, cfg, func(b store.Backend) error {
		_, err := b.Update(func(st *store.State) error { return st.SignWith(id) })
		return err
	})
}

// RetireSecret removes the stored secret id (`tariq turn secret retire`).
func RetireSecret(ctx context.Context, cfg *config.Config, id string) error {
	return withState(ctx, cfg, func(b store.Backend) error {
		_, err := b.Update(func(st *store.State) error { return st.RetireSecret(id) })
		return err
	})
}

// errFileStore is what the node commands say on one server.
var errFileStore = errors.New("server.store is file: this is one server, with no nodes to list (server.store: etcd shares one network between nodes)")

// Nodes lists the live nodes sharing this config's etcd prefix (`tariq
// node list`).
func Nodes(ctx context.Context, cfg *config.Config) ([]etcdstore.Node, error) {
	if cfg.Server.Store != config.StoreEtcd {
		return nil, errFileStore
	}
	var out []etcdstore.Node
	err := withState(ctx, cfg, func(b store.Backend) error {
		var err error
		out, err = b.(*etcdstore.Store).Nodes(ctx)
		return err
	})
	return out, err
}

// MigrateToEtcd copies this server's state.json, its members' usage and
// its ACME account and certificates into the empty etcd prefix of the
// config (`tariq store migrate --to etcd`). The daemon must be stopped,
// so that nothing changes the file meanwhile; a prefix holding any key is
// refused and nothing is written.
func MigrateToEtcd(ctx context.Context, cfg *config.Config) (*store.State, error) {
	if cfg.Server.Store != config.StoreEtcd || len(cfg.Server.Etcd.Endpoints) == 0 {
		return nil, errors.New("set server.store: etcd and server.etcd.endpoints (and server.etcd.prefix) in the config first: they say where to copy to")
	}
	if admin.NewClient(cfg.Server.AdminSocket).Running(ctx) {
		return nil, fmt.Errorf("tariq serve is running (admin socket %s): stop it first, so that the state does not change while it is copied", cfg.Server.AdminSocket)
	}
	fs, err := store.Open(cfg.Server.DataDir)
	if err != nil {
		return nil, err
	}
	st, err := fs.Load()
	if err != nil {
		return nil, err
	}
	files, err := certs.StoredFiles(cfg.Server.DataDir)
	if err != nil {
		return nil, fmt.Errorf("reading the ACME files: %w", err)
	}
	var cf []etcdstore.CertFile
	for _, f := range files {
		cf = append(cf, etcdstore.CertFile{Key: f.Key, Value: f.Value})
	}
	opts, err := etcdstore.OptionsFrom(cfg)
	if err != nil {
		return nil, err
	}
	opts.DataDir = "" // no cache: the store opens only to write
	es, err := etcdstore.Open(ctx, opts)
	if err != nil {
		return nil, err
	}
	defer es.Close()
	if err := es.Migrate(ctx, st, cf); err != nil {
		return nil, err
	}
	return st, nil
}

// checkEtcd is `tariq check`'s finding for server.etcd.
func checkEtcd(ctx context.Context, cfg *config.Config) Finding {
	opts, err := etcdstore.OptionsFrom(cfg)
	if err != nil {
		return Finding{Fail, "server.etcd", err.Error()}
	}
	ok, err := etcdstore.Probe(ctx, opts)
	if err != nil {
		return Finding{Fail, "server.etcd", err.Error()}
	}
	return Finding{OK, "server.etcd", fmt.Sprintf("node %s: %s", opts.Node, ok)}
}
