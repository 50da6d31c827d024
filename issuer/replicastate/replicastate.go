// Package replicastate is the state of one issuer replica (DESIGN §8):
// etcdstore for everything but replay records and counts, redisstore for
// those, with the two stores' Sweep and Inventory merged. It is what
// `issuer serve --etcd --redis` gives the issuer as its State, and what
// tests of a replica's whole state (the cluster forensic test) build.
package replicastate

import (
	"context"
	"errors"
	"time"

	"github.com/healthcode/healthcode/issuer"
	"github.com/healthcode/healthcode/issuer/etcdstore"
	"github.com/healthcode/healthcode/issuer/redisstore"
)

// State is a replica's issuer.StateStore and issuer.Sharing: the etcd
// store, with the Redis side's replay records and counts merged into the
// inventory and the sweep. The Redis store is also the issuer's Store.
type State struct {
	*etcdstore.Store
	Replay *redisstore.Store
}

// Inventory is etcd's categories with Redis's replay records and counts.
func (s State) Inventory(ctx context.Context) ([]issuer.CategoryStat, error) {
	stats, err := s.Store.Inventory(ctx)
	if err != nil {
		return nil, err
	}
	replay, err := s.Replay.Inventory(ctx)
	if err != nil {
		return nil, err
	}
	return mergeInventory(stats, replay), nil
}

// mergeInventory puts each category of over in place of base's row of the
// same name, or after base's rows.
func mergeInventory(base, over []issuer.CategoryStat) []issuer.CategoryStat {
	out := make([]issuer.CategoryStat, 0, len(base)+len(over))
	used := make([]bool, len(over))
	for _, b := range base {
		for n, o := range over {
			if o.Name == b.Name {
				b, used[n] = o, true
			}
		}
		out = append(out, b)
	}
	for n, o := range over {
		if !used[n] {
			out = append(out, o)
		}
	}
	return out
}

// Sweep sweeps etcd (its deadlines, epoch keys past their end, compaction
// and defragmentation) and Redis (what its expiry has not yet removed),
// both even if one fails.
func (s State) Sweep(ctx context.Context, now time.Time) (issuer.SweepStats, error) {
	st, err := s.Store.Sweep(ctx, now)
	rst, rerr := s.Replay.Sweep(ctx, now)
	if st.Deleted == nil {
		st.Deleted = map[string]int{}
	}
	for k, n := range rst.Deleted {
		st.Deleted[k] += n
	}
	st.Compacted = st.Compacted || rst.Compacted
	return st, errors.Join(err, rerr)
}
