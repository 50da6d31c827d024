package etcdstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/healthcode/healthcode/issuer"
)

// deadlinePrefixes are the categories a sweep deletes from, with the
// prefixes their records are under.
var deadlinePrefixes = []struct {
	category string
	prefix   string
}{
	{issuer.CategoryAudit, prefixAudit},
	{issuer.CategorySigningKeys, prefixKeys},
	{issuer.CategorySigningKeys, prefixWithdrawn},
	{issuer.CategoryPolicyHistory, prefixPolicyHist},
}

// Sweep deletes every record whose deadline is at or before now (audit
// entries, policy history, signing keys at DestroyAt, withdrawals, and
// epoch keys whose epoch has ended), one range deletion per prefix, then
// makes the deletion physical with a scrub (physical.go): the write-ahead
// log flushed past the deletions when there were any, history compacted
// and every member defragmented, so neither the WAL, old revisions nor
// freed pages keep a deleted value. Each run compacts, also after
// deletions made outside a sweep (withdrawals, replaced records). A member
// that cannot be reached is named in the error after the others are done;
// the next sweep does it again.
func (s *Store) Sweep(ctx context.Context, now time.Time) (issuer.SweepStats, error) {
	stats := issuer.SweepStats{Deleted: map[string]int{
		issuer.CategoryAudit: 0, issuer.CategorySigningKeys: 0, issuer.CategoryPolicyHistory: 0,
	}}
	if now.IsZero() {
		return stats, errors.New("etcdstore: sweep: now is required")
	}
	if s.isClosed() {
		return stats, ErrClosed
	}
	start := time.Now()
	cutoff := now.Unix() // a key's deadline is whole seconds, rounded up
	for _, c := range deadlinePrefixes {
		n, err := s.deleteDue(ctx, c.prefix, cutoff)
		stats.Deleted[c.category] += n
		if err != nil {
			return stats, fmt.Errorf("etcdstore: sweep %s: %w", c.category, err)
		}
	}
	epochs, err := s.deleteDue(ctx, prefixEpoch, cutoff)
	if err != nil {
		return stats, fmt.Errorf("etcdstore: sweep epoch keys: %w", err)
	}
	total := 0
	for _, n := range stats.Deleted {
		total += n
	}
	compacted, physErr := s.scrub(ctx, total+epochs > 0)
	stats.Compacted = compacted
	s.log.Info("etcdstore: sweep finished", "deleted", total, "epoch_keys_deleted", epochs,
		"compacted", stats.Compacted, "duration", time.Since(start))
	if physErr != nil {
		return stats, fmt.Errorf("etcdstore: sweep: %w", physErr)
	}
	return stats, nil
}

// deleteDue deletes the keys under prefix with deadline <= cutoff: one
// range deletion, since keys sort by deadline.
func (s *Store) deleteDue(ctx context.Context, prefix string, cutoff int64) (int, error) {
	op, cancel := s.op(ctx)
	defer cancel()
	from := s.key(prefix)
	resp, err := s.c.Delete(op, from, clientv3.WithRange(from+pad(cutoff+1)))
	if err != nil {
		return 0, err
	}
	return int(resp.Deleted), nil
}

// Inventory reports, per category this store holds (admin audit, signing
// keys with withdrawals, policy history, configuration), how many records
// it holds, the write hour of the record created first, and the next
// deadline: two small range requests per prefix (a count with the first
// created record, and the first key, which sorts by deadline). Replay
// records, aggregate counts and epoch keys are not here: the replay store
// reports them.
func (s *Store) Inventory(ctx context.Context) ([]issuer.CategoryStat, error) {
	type part struct {
		prefix   string
		deadline bool
	}
	cats := []struct {
		name  string
		parts []part
	}{
		{issuer.CategoryAudit, []part{{prefixAudit, true}}},
		{issuer.CategorySigningKeys, []part{{prefixKeys, true}, {prefixWithdrawn, true}}},
		{issuer.CategoryPolicyHistory, []part{{prefixPolicyHist, true}}},
		{issuer.CategoryConfiguration, []part{{prefixConfig, false}}},
	}
	out := make([]issuer.CategoryStat, 0, len(cats))
	for _, c := range cats {
		st := issuer.CategoryStat{Name: c.name}
		for _, p := range c.parts {
			n, oldest, next, err := s.tally(ctx, p.prefix, p.deadline)
			if err != nil {
				return nil, fmt.Errorf("etcdstore: inventory %s: %w", c.name, err)
			}
			st.Count += n
			st.Oldest = earlier(st.Oldest, oldest)
			st.NextDeadline = earlier(st.NextDeadline, next)
		}
		out = append(out, st)
	}
	return out, nil
}

func (s *Store) tally(ctx context.Context, prefix string, deadline bool) (int, *time.Time, *time.Time, error) {
	first, err := s.get(ctx, s.key(prefix), clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend), clientv3.WithLimit(1))
	if err != nil {
		return 0, nil, nil, err
	}
	if first.Count == 0 || len(first.Kvs) == 0 {
		return 0, nil, nil, nil
	}
	var w struct {
		W int64 `json:"w"`
	}
	var oldest *time.Time
	if err := json.Unmarshal(first.Kvs[0].Value, &w); err == nil && w.W > 0 {
		t := time.Unix(w.W, 0).UTC()
		oldest = &t
	}
	var next *time.Time
	if deadline {
		lowest, err := s.get(ctx, s.key(prefix), clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithLimit(1))
		if err != nil {
			return 0, nil, nil, err
		}
		if len(lowest.Kvs) == 1 {
			sec, _, err := s.splitDeadlineKey(prefix, lowest.Kvs[0].Key)
			if err != nil {
				return 0, nil, nil, err
			}
			t := time.Unix(sec, 0).UTC()
			next = &t
		}
	}
	return int(first.Count), oldest, next, nil
}

func earlier(a, b *time.Time) *time.Time {
	if a == nil {
		return b
	}
	if b == nil || a.Before(*b) {
		return a
	}
	return b
}
