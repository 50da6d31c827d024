package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/healthcode/healthcode/issuer"
)

// Deleting a key in etcd leaves its value in three places on every member's
// disk: the key's history in the backend file (member/snap/db) until a
// compaction, the freed pages of that file until a defragmentation, and the
// write-ahead log (member/wal/*.wal) until the segment holding the entry is
// purged. A member purges a segment only when all of the following hold:
//
//   - the segment is no longer the tail: the tail is closed and a new one
//     started only once it has grown past WALSegmentBytes;
//   - a snapshot was taken at an index past the start of the next segment,
//     which releases the lock on the old one: a member snapshots after
//     --snapshot-count applied entries;
//   - there are more segments than --max-wals: with --max-wals 1 one is
//     enough;
//   - the member's purge loop has run since: every 30 s.
//
// The issuer's own writes to etcd are few and small, so left alone the tail
// would hold a deleted value for months. Scrub therefore pushes the log past
// the deleted entries itself: it writes WALSegmentBytes of filler, waits
// until every member has applied it (so each has cut its segment), writes
// --snapshot-count + 1 small entries so that every member snapshots past the
// cut, then compacts and defragments every member. Within one purge
// interval after Scrub returns, no member that took part holds the deleted
// bytes. A member that was down or too slow catches up on the flush in one
// batch, which it may write to its old segment whole; so Scrub leaves its
// pending mark set and the next run flushes again, which clears it.

// WALSegmentBytes is the size past which an etcd member closes its WAL
// segment and starts the next (wal.SegmentSizeBytes, 64,000,000 from etcd
// 3.4 to 3.6; not configurable).
const WALSegmentBytes = 64 * 1000 * 1000

// fillerBytes is the value size of one filler entry: one WAL record each,
// well under etcd's default request limit (--max-request-bytes, 1.5 MiB)
// and the client's send limit (2 MiB).
const fillerBytes = 1000 * 1000

// fillerEntries of fillerBytes add up to more than WALSegmentBytes, so the
// tail is cut wherever it stood before.
const fillerEntries = WALSegmentBytes/fillerBytes + 1

// MaxSnapshotCount bounds Scrub.SnapshotCount: the flush writes that many
// small entries.
const MaxSnapshotCount = 100000

// tickers is how many small entries are written at once: enough to keep
// raft's batches full, few enough not to crowd the members.
const tickers = 16

// Scrub is the physical step of a sweep on etcd: after the sweep deleted
// keys, it makes every member's data directory forget their values.
type Scrub struct {
	Client *clientv3.Client
	// Endpoints are every member's client URL; each one is defragmented.
	Endpoints []string
	// Names are the members' names by endpoint, for messages (optional).
	Names map[string]string
	// Prefix is where the filler keys are written (under Prefix+"scrub/").
	Prefix string
	// SnapshotCount is the members' --snapshot-count (required: the flush
	// writes that many entries and one more, so keep it small; 1,000 is
	// cheap for the issuer's state).
	SnapshotCount uint64
	// Timeout bounds each ordinary request, so that a dead member or a
	// lost leader cannot hold the step; 0 means 5 s.
	Timeout time.Duration
	// SlowTimeout bounds what takes a member longer: applying the flush,
	// a compaction, a defragmentation (it rewrites the backend file); 0
	// means 1 min.
	SlowTimeout time.Duration
	// FlushEvery flushes even when nothing is known to be deleted, once
	// the last complete flush is that old: a bound for deletions no sweep
	// saw (records etcd deleted at their lease's end, overwritten values,
	// deletions that did not set the Pending mark). 0: only on deletion.
	FlushEvery time.Duration
	// Clock dates the flushes for FlushEvery; required with it.
	Clock issuer.Clock
}

// ScrubReport says what a scrub did, for the sweep's log line and metrics.
type ScrubReport struct {
	// Flushed is whether the WAL was pushed past the deleted entries.
	Flushed bool
	// FlushBytes is the value bytes written to do it (each member writes
	// them to its WAL once).
	FlushBytes int64
	// FlushEntries is how many entries the flush wrote.
	FlushEntries int
	// Revision is the revision history was last compacted to.
	Revision int64
	// Defragmented counts the members defragmented.
	Defragmented int
}

// Pending is an operation to add to any transaction that deletes or
// overwrites a value outside a sweep (a revoked key, a removed attester or
// admin token, a replaced policy or bundle key), on whichever replica: the
// next Run then flushes the write-ahead log even if its sweep deleted
// nothing.
func (s Scrub) Pending() clientv3.Op {
	return clientv3.OpPut(s.pendingKey(), "")
}

func (s Scrub) pendingKey() string { return s.Prefix + "scrub/pending" }

// member names a member in messages: "member NAME (URL)", or its URL.
func (s Scrub) member(ep string) string {
	if n := s.Names[ep]; n != "" {
		return "member " + n + " (" + ep + ")"
	}
	return ep
}

// flushedKey holds the time (Unix seconds) of the last complete flush.
func (s Scrub) flushedKey() string { return s.Prefix + "scrub/flushed" }

// Run compacts etcd's history to the current revision and defragments every
// member. It first flushes the write-ahead log past what was deleted when
// deleted is true (the sweep deleted or overwrote something), when a
// Pending mark was written since the last complete flush, or when that
// flush is older than FlushEvery. A member that does not answer within the
// timeout is reported in the error (and the flush counted as incomplete,
// so the next run flushes again), and the others are still scrubbed.
func (s Scrub) Run(ctx context.Context, deleted bool) (ScrubReport, error) {
	var rep ScrubReport
	if s.Client == nil || len(s.Endpoints) == 0 {
		return rep, errors.New("etcdstore: scrub needs a client and every member's endpoint")
	}
	if s.SnapshotCount == 0 || s.SnapshotCount > MaxSnapshotCount {
		return rep, fmt.Errorf("etcdstore: scrub: snapshot count must be the members' --snapshot-count, 1 to %d, got %d", MaxSnapshotCount, s.SnapshotCount)
	}
	if s.FlushEvery < 0 || (s.FlushEvery > 0 && s.Clock == nil) {
		return rep, fmt.Errorf("etcdstore: scrub: flush interval %s needs a clock and must not be negative", s.FlushEvery)
	}
	c, cancel := s.op(ctx)
	marks, err := s.Client.Get(c, s.Prefix+"scrub/", clientv3.WithPrefix())
	cancel()
	if err != nil {
		return rep, fmt.Errorf("etcdstore: scrub: read its marks: %w", err)
	}
	var pending *mvccpb.KeyValue
	lastFlush := int64(-1)
	for _, kv := range marks.Kvs {
		switch string(kv.Key) {
		case s.pendingKey():
			pending = kv
		case s.flushedKey():
			if sec, err := strconv.ParseInt(string(kv.Value), 10, 64); err == nil {
				lastFlush = sec
			}
		}
	}
	due := deleted || pending != nil
	if s.FlushEvery > 0 && (lastFlush < 0 || s.Clock.Now().Unix()-lastFlush >= int64(s.FlushEvery/time.Second)) {
		due = true
	}
	var errs []error
	missed := map[string]bool{} // members that did not take part in the flush
	if due {
		merrs, err := s.flush(ctx, &rep, missed)
		if err != nil {
			return rep, s.keepPending(ctx, err)
		}
		errs = append(errs, merrs...)
	}
	for _, ep := range s.Endpoints {
		if missed[ep] {
			continue
		}
		rev, err := s.compactOn(ctx, ep)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		rep.Revision = rev
		c, cancel := s.slow(ctx)
		_, err = s.Client.Defragment(c, ep)
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("etcdstore: scrub: defragment %s: %w", s.member(ep), err))
			continue
		}
		rep.Defragmented++
	}
	switch {
	case due && len(errs) > 0:
		return rep, s.keepPending(ctx, errors.Join(errs...))
	case due:
		// The mark goes only if no deletion marked it again meanwhile:
		// that one's entry may be past the cut, so it waits for the next
		// run.
		ops := []clientv3.Op{}
		if s.Clock != nil {
			ops = append(ops, clientv3.OpPut(s.flushedKey(), strconv.FormatInt(s.Clock.Now().Unix(), 10)))
		}
		cmp := clientv3.Compare(clientv3.ModRevision(s.pendingKey()), "=", 0)
		if pending != nil {
			cmp = clientv3.Compare(clientv3.ModRevision(s.pendingKey()), "=", pending.ModRevision)
			ops = append(ops, clientv3.OpDelete(s.pendingKey()))
		}
		c, cancel := s.op(ctx)
		defer cancel()
		if _, err := s.Client.Txn(c).If(cmp).Then(ops...).Commit(); err != nil {
			errs = append(errs, fmt.Errorf("etcdstore: scrub: record the flush: %w", err))
		}
	}
	return rep, errors.Join(errs...)
}

// keepPending sets the pending mark after an incomplete flush, so that the
// next run flushes again, and returns err with anything that went wrong.
func (s Scrub) keepPending(ctx context.Context, err error) error {
	c, cancel := s.op(ctx)
	defer cancel()
	if _, perr := s.Client.Txn(c).Then(s.Pending()).Commit(); perr != nil {
		return errors.Join(err, fmt.Errorf("etcdstore: scrub: set pending mark: %w", perr))
	}
	return err
}

// compactOn compacts history to a new revision through member ep and
// returns once ep itself has removed the old revisions from its backend.
// A compaction is one raft entry, but each member deletes the revisions in
// its own time, and only the member that took the request waits for it: a
// defragmentation that ran before would copy the deleted values into the
// new file's free pages. So each member gets a compaction of its own, at a
// revision made for it.
func (s Scrub) compactOn(ctx context.Context, ep string) (int64, error) {
	c, cancel := s.op(ctx)
	defer cancel()
	r, err := s.Client.Put(c, s.Prefix+"scrub/compacted", "")
	if err != nil {
		return 0, fmt.Errorf("etcdstore: scrub: new revision to compact %s: %w", s.member(ep), err)
	}
	rev := r.Header.Revision
	conn, err := s.Client.Dial(ep)
	if err != nil {
		return 0, fmt.Errorf("etcdstore: scrub: compact %s: %w", s.member(ep), err)
	}
	defer conn.Close()
	kv := clientv3.NewKVFromKVClient(pb.NewKVClient(conn), s.Client)
	sc, scancel := s.slow(ctx)
	defer scancel()
	if _, err := kv.Compact(sc, rev, clientv3.WithCompactPhysical()); err != nil {
		return 0, fmt.Errorf("etcdstore: scrub: compact %s to revision %d: %w", s.member(ep), rev, err)
	}
	return rev, nil
}

// flush writes fillerEntries values of fillerBytes, so that every member
// cuts its WAL segment past the deleted entries; waits until every member
// has applied them, so that the cut comes before what follows in every
// member's log (a member that catches up later may write it all to the old
// segment); then writes SnapshotCount+1 small entries, so that every member
// snapshots past the cut and releases the old segment to its purge loop.
//
// Every entry is a transaction whose comparison cannot hold (no key has a
// creation revision below 0): it goes through raft and into every member's
// WAL whole, but writes nothing to the backend, so the flush neither grows
// the db file nor adds revisions.
//
// Members that did not apply the filler in time are put in missed, with an
// error each; err is for a flush that could not be written at all.
func (s Scrub) flush(ctx context.Context, rep *ScrubReport, missed map[string]bool) (merrs []error, err error) {
	dir := s.Prefix + "scrub/"
	never := clientv3.Compare(clientv3.CreateRevision(dir+"never"), "<", 0)
	entry := func(v string) error {
		c, cancel := s.op(ctx)
		defer cancel()
		r, err := s.Client.Txn(c).If(never).Then(clientv3.OpPut(dir+"filler", v)).Commit()
		if err == nil && r.Succeeded {
			err = errors.New("filler transaction was applied")
		}
		return err
	}
	filler := string(make([]byte, fillerBytes))
	for i := 0; i < fillerEntries; i++ {
		if err := entry(filler); err != nil {
			return nil, fmt.Errorf("etcdstore: scrub: WAL filler %d of %d: %w", i+1, fillerEntries, err)
		}
		rep.FlushBytes += fillerBytes
		rep.FlushEntries++
	}
	merrs = s.awaitApplied(ctx, missed)
	if len(missed) == len(s.Endpoints) {
		return merrs, errors.Join(append(merrs, errors.New("etcdstore: scrub: no member confirmed the WAL filler"))...)
	}
	if err := s.ticks(ctx, entry, rep); err != nil {
		return merrs, fmt.Errorf("etcdstore: scrub: snapshot entries: %w", err)
	}
	rep.Flushed = true
	return merrs, nil
}

// awaitApplied waits until every member has applied the log up to the
// highest index any member reports committed (at least the last filler's,
// which the client saw committed). A member that does not get there within
// the timeout goes in missed.
func (s Scrub) awaitApplied(ctx context.Context, missed map[string]bool) []error {
	var target uint64
	var errs []error
	for _, ep := range s.Endpoints {
		c, cancel := s.op(ctx)
		st, err := s.Client.Status(c, ep)
		cancel()
		if err != nil {
			missed[ep] = true
			errs = append(errs, fmt.Errorf("etcdstore: scrub: status of %s: %w", s.member(ep), err))
			continue
		}
		target = max(target, st.RaftIndex)
	}
	for _, ep := range s.Endpoints {
		if missed[ep] {
			continue
		}
		if err := s.awaitMember(ctx, ep, target); err != nil {
			missed[ep] = true
			errs = append(errs, err)
		}
	}
	return errs
}

func (s Scrub) awaitMember(ctx context.Context, ep string, index uint64) error {
	c, cancel := s.slow(ctx)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		st, err := s.Client.Status(c, ep)
		if err == nil && st.RaftAppliedIndex >= index {
			return nil
		}
		select {
		case <-c.Done():
			return fmt.Errorf("etcdstore: scrub: %s did not apply the WAL filler (index %d): %v", s.member(ep), index, errors.Join(err, c.Err()))
		case <-tick.C:
		}
	}
}

// ticks writes SnapshotCount+1 small entries, tickers at a time.
func (s Scrub) ticks(ctx context.Context, entry func(string) error, rep *ScrubReport) error {
	n := int(s.SnapshotCount) + 1
	next := make(chan struct{})
	errc := make(chan error, tickers)
	var wg sync.WaitGroup
	var mu sync.Mutex
	for w := 0; w < tickers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range next {
				if err := entry(""); err != nil {
					errc <- err
					return
				}
				mu.Lock()
				rep.FlushEntries++
				mu.Unlock()
			}
		}()
	}
	var err error
feed:
	for i := 0; i < n; i++ {
		select {
		case next <- struct{}{}:
		case err = <-errc:
			break feed
		case <-ctx.Done():
			err = ctx.Err()
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err == nil {
		select {
		case err = <-errc:
		default:
		}
	}
	return err
}

func (s Scrub) op(ctx context.Context) (context.Context, context.CancelFunc) {
	t := s.Timeout
	if t <= 0 {
		t = 5 * time.Second
	}
	return context.WithTimeout(ctx, t)
}

func (s Scrub) slow(ctx context.Context) (context.Context, context.CancelFunc) {
	t := s.SlowTimeout
	if t <= 0 {
		t = time.Minute
	}
	return context.WithTimeout(ctx, t)
}

// SnapshotCount is the --snapshot-count the store's sweep assumes of every
// member; a member with a larger one would not snapshot past the flush
// (docs/operating.md, "etcd settings for real deletion").
const SnapshotCount = 1000

// flushEvery bounds how long a deletion no sweep saw stays in the WAL.
const flushEvery = time.Hour

func (s *Store) scrubber(endpoints []string, names map[string]string) Scrub {
	return Scrub{
		Client:        s.c,
		Endpoints:     endpoints,
		Names:         names,
		Prefix:        s.p,
		SnapshotCount: SnapshotCount,
		Timeout:       s.opts.OpTimeout,
		FlushEvery:    flushEvery,
		Clock:         s.clock,
	}
}

// scrubPending marks the next scrub to flush, for a transaction that
// deletes a secret outside a sweep.
func (s *Store) scrubPending() clientv3.Op { return s.scrubber(nil, nil).Pending() }

// scrub is the physical half of Sweep, on every member in the cluster's
// member list; compacted says whether history was compacted on any.
func (s *Store) scrub(ctx context.Context, deleted bool) (compacted bool, err error) {
	op, cancel := s.op(ctx)
	members, err := s.c.MemberList(op)
	cancel()
	if err != nil {
		return false, fmt.Errorf("list members to scrub: %w", err)
	}
	var eps []string
	names := map[string]string{}
	var errs []error
	for _, m := range members.Members {
		if len(m.ClientURLs) == 0 {
			errs = append(errs, fmt.Errorf("member %s has no client address to scrub", m.Name))
			continue
		}
		eps = append(eps, m.ClientURLs[0])
		names[m.ClientURLs[0]] = m.Name
	}
	rep, err := s.scrubber(eps, names).Run(ctx, deleted)
	s.log.Info("etcdstore: scrub", "flushed", rep.Flushed, "flush_bytes", rep.FlushBytes,
		"flush_entries", rep.FlushEntries, "defragmented", rep.Defragmented, "members", len(eps))
	return rep.Revision > 0, errors.Join(append(errs, err)...)
}
