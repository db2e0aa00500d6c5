package etcdstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tariq-vpn/tariq/internal/store"
)

// ErrNotEmpty is a migration into a prefix that already holds keys.
var ErrNotEmpty = errors.New("the etcd prefix is not empty")

// CertFile is one file of certmagic's storage, for Migrate.
type CertFile struct {
	Key   string
	Value []byte
}

// Migrate copies a one-server state (state.json, with this node's usage
// counted in it) and certmagic's files into the store's prefix, in one
// transaction that succeeds only if no key exists under the prefix: a
// prefix that holds anything (another network, a node that already
// started on it) is refused, and nothing is written.
func (s *Store) Migrate(ctx context.Context, st *store.State, certs []CertFile) error {
	if p := st.Problem(); p != "" {
		return fmt.Errorf("not migrating: the state %s", p)
	}
	if st.VPN.PrivateKey == "" && st.Relay.Secret == "" && len(st.Relay.Secrets) == 0 {
		return errors.New("not migrating: the state is empty (tariq never ran here): start the nodes on the empty prefix instead")
	}
	next := stripUsage(st)
	next.Version = store.Version
	b, err := json.Marshal(next)
	if err != nil {
		return err
	}
	ops := []clientv3.Op{clientv3.OpPut(s.stateKey(), string(b))}
	byMonth := map[string]map[string]store.Usage{}
	for _, m := range st.Members {
		if m.Usage.Month == "" || m.Usage.Total() == 0 {
			continue
		}
		if byMonth[m.Usage.Month] == nil {
			byMonth[m.Usage.Month] = map[string]store.Usage{}
		}
		byMonth[m.Usage.Month][m.Name] = store.Usage{In: m.Usage.In, Out: m.Usage.Out}
	}
	for month, u := range byMonth {
		b, err := json.Marshal(u)
		if err != nil {
			return err
		}
		ops = append(ops, clientv3.OpPut(s.usageKey(month), string(b)))
	}
	cs := s.CertStorage()
	for _, f := range certs {
		b, err := json.Marshal(value{Modified: nowUTC(), Value: f.Value})
		if err != nil {
			return err
		}
		ops = append(ops, clientv3.OpPut(cs.key(f.Key), string(b)))
	}
	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	// An empty range compares as one key with revision 0: true only when
	// nothing lives under the prefix.
	empty := clientv3.Compare(clientv3.CreateRevision(s.opts.Prefix+"/"), "=", 0).WithPrefix()
	resp, err := s.cli.Txn(ctx).If(empty).Then(ops...).Commit()
	if err != nil {
		return s.fail("migrating", err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("%w: %s already holds keys (another network, or a node started on it): choose an empty server.etcd.prefix", ErrNotEmpty, s.opts.Prefix)
	}
	// Take the migrated state as the one served from now on.
	return s.resync(ctx)
}

func nowUTC() time.Time { return time.Now().UTC() }
