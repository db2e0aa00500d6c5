package etcdstore

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Node is a live node as `tariq node list` shows it: its key lives under
// a lease that the node keeps alive, so a node that stops (or loses etcd)
// drops off the list within NodeTTL seconds.
type Node struct {
	Name       string    `json:"name"`
	PublicHost string    `json:"public_host"`
	Version    string    `json:"version"`
	StartedAt  time.Time `json:"started_at"`
	// Health is "ok", or what is wrong on the node, in a few words.
	Health string `json:"health"`
	// UpdatedAt is when the node last wrote its entry.
	UpdatedAt time.Time `json:"updated_at"`
}

// NodeTTL is the lease of a node's entry, in seconds.
const NodeTTL = 10

func (s *Store) nodesPrefix() string { return s.opts.Prefix + "/nodes/" }

// Register keeps this node's entry (P/nodes/<node>) under a lease until
// ctx is done, rewriting it when info's answer changes and at least every
// minute; after losing the lease (etcd away longer than NodeTTL) it takes
// a new one as soon as etcd answers. On return the entry is gone.
func (s *Store) Register(ctx context.Context, info func() Node) {
	key := s.nodesPrefix() + s.opts.Node
	backoff := 500 * time.Millisecond
	for ctx.Err() == nil {
		err := s.registerOnce(ctx, key, info)
		if ctx.Err() != nil {
			break
		}
		s.log.Warn("node entry lost; registering again", "node", s.opts.Node, "err", err)
		sleep(ctx, backoff)
		backoff = min(backoff*2, 5*time.Second)
	}
	dctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s.cli.Delete(dctx, key)
}

func (s *Store) registerOnce(ctx context.Context, key string, info func() Node) error {
	gctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	lease, err := s.cli.Grant(gctx, NodeTTL)
	cancel()
	if err != nil {
		return s.fail("registering the node", err)
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		s.cli.Revoke(rctx, lease.ID)
		cancel()
	}()
	kctx, kcancel := context.WithCancel(ctx)
	defer kcancel()
	alive, err := s.cli.KeepAlive(kctx, lease.ID)
	if err != nil {
		return s.fail("registering the node", err)
	}
	put := func(n Node) error {
		n.Name, n.UpdatedAt = s.opts.Node, time.Now().UTC().Truncate(time.Second)
		b, err := json.Marshal(n)
		if err != nil {
			return err
		}
		pctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
		defer cancel()
		if _, err := s.cli.Put(pctx, key, string(b), clientv3.WithLease(lease.ID)); err != nil {
			return s.fail("registering the node", err)
		}
		return nil
	}
	last := info()
	if err := put(last); err != nil {
		return err
	}
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	written := time.Now()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case _, ok := <-alive:
			if !ok {
				return fmt.Errorf("lease %x expired", lease.ID)
			}
		case <-t.C:
			n := info()
			if n == last && time.Since(written) < time.Minute {
				continue
			}
			if err := put(n); err != nil {
				return err
			}
			last, written = n, time.Now()
		}
	}
}

// Nodes lists the live nodes, by name.
func (s *Store) Nodes(ctx context.Context) ([]Node, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	resp, err := s.cli.Get(ctx, s.nodesPrefix(), clientv3.WithPrefix())
	if err != nil {
		return nil, s.fail("listing the nodes", err)
	}
	var out []Node
	for _, kv := range resp.Kvs {
		var n Node
		if err := json.Unmarshal(kv.Value, &n); err != nil {
			n = Node{Name: strings.TrimPrefix(string(kv.Key), s.nodesPrefix()), Health: "unreadable entry"}
		}
		out = append(out, n)
	}
	slices.SortFunc(out, func(a, b Node) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}
