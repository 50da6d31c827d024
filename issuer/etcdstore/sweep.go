package etcdstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/healthcode/healthcode/issuer"
)

// defragTimeout bounds the defragmentation of one member: it rewrites the
// member's whole backend file, longer than an ordinary request.
const defragTimeout = time.Minute

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
// makes the deletion physical: etcd compacts its history at the current
// revision (physically) and every member defragments its backend, so
// neither old revisions nor freed pages keep a deleted value. Each run
// compacts, also after deletions made outside a sweep (withdrawals,
// replaced records). A member that cannot be reached is named in the error
// after the others are done; the next sweep does it again.
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
	compacted, physErr := s.makePhysical(ctx)
	stats.Compacted = compacted
	total := 0
	for _, n := range stats.Deleted {
		total += n
	}
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

// makePhysical compacts etcd's history at the current revision, waits for
// the compaction to reach the backend (physical), and defragments every
// member; then afterDelete. compacted says whether the history was.
func (s *Store) makePhysical(ctx context.Context) (compacted bool, err error) {
	op, cancel := s.op(ctx)
	cur, err := s.c.Get(op, s.key(keyKEKCheck), clientv3.WithCountOnly())
	cancel()
	if err != nil {
		return false, fmt.Errorf("compact: read the revision: %w", err)
	}
	op, cancel = context.WithTimeout(ctx, defragTimeout)
	_, err = s.c.Compact(op, cur.Header.Revision, clientv3.WithCompactPhysical())
	cancel()
	// Compacted already (another replica's sweep got there first) is fine.
	if err != nil && !errors.Is(err, rpctypes.ErrCompacted) {
		return false, fmt.Errorf("compact at revision %d: %w", cur.Header.Revision, err)
	}
	op, cancel = s.op(ctx)
	members, err := s.c.MemberList(op)
	cancel()
	if err != nil {
		return true, fmt.Errorf("list members to defragment: %w", err)
	}
	var errs []error
	for _, m := range members.Members {
		if len(m.ClientURLs) == 0 {
			errs = append(errs, fmt.Errorf("member %s has no client address to defragment", m.Name))
			continue
		}
		// A member that does not answer in OpTimeout is not waited for
		// the long defragmentation bound.
		op, cancel := s.op(ctx)
		_, err := s.c.Status(op, m.ClientURLs[0])
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("defragment member %s: unreachable: %w", m.Name, err))
			continue
		}
		op, cancel = context.WithTimeout(ctx, defragTimeout)
		_, err = s.c.Defragment(op, m.ClientURLs[0])
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("defragment member %s: %w", m.Name, err))
		}
	}
	if err := s.afterDelete(ctx); err != nil {
		errs = append(errs, err)
	}
	return true, errors.Join(errs...)
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
