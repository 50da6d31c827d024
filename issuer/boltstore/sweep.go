package boltstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/healthcode/healthcode/internal/atomicfile"

	"github.com/healthcode/healthcode/issuer"
)

// Sweep deletes every record whose deadline is at or before now. Replay
// partitions whose epoch has ended are dropped whole (key shredded, file
// unlinked): no redemption waits for that. The main file's categories are
// deleted in transactions of at most Options.SweepChunk keys, and the main
// file is then compacted into a fresh one so no freed page keeps a deleted
// record; that copy is proportional to the small categories alone. A sweep
// cut short by a crash is finished by the next one: the need to compact is
// recorded with the deletions, and a partition whose key is gone is
// removed at Open.
func (s *DB) Sweep(ctx context.Context, now time.Time) (issuer.SweepStats, error) {
	s.sweepMu.Lock()
	defer s.sweepMu.Unlock()
	stats := issuer.SweepStats{Deleted: make(map[string]int, len(smallCategories)+1)}
	if now.IsZero() {
		return stats, errors.New("boltstore: sweep: now is required")
	}
	if s.closed() {
		return stats, ErrClosed
	}
	cutoff := now.Unix() // a key's deadline is whole seconds, rounded up
	stats.Deleted[issuer.CategoryReplay] = 0
	for _, name := range smallCategories {
		stats.Deleted[name] = 0
	}
	start := time.Now()
	dropped := 0
	for _, p := range s.partitions() {
		if p.end > cutoff {
			break
		}
		n, err := partitionCount(p)
		if err != nil {
			return stats, fmt.Errorf("boltstore: sweep: %w", err)
		}
		if err := s.dropPartition(p); err != nil {
			return stats, fmt.Errorf("boltstore: sweep: %w", err)
		}
		stats.Deleted[issuer.CategoryReplay] += n
		dropped++
		hook("partition-dropped")
	}
	for _, name := range smallCategories {
		for {
			n, err := s.deleteExpired(ctx, name, cutoff)
			stats.Deleted[name] += n
			if err != nil {
				return stats, fmt.Errorf("boltstore: sweep %s: %w", name, err)
			}
			if n < s.opts.SweepChunk {
				break
			}
		}
	}
	pending := false
	if err := s.view(ctx, func(tx *bolt.Tx) error {
		pending = bucket(tx, issuer.CategoryConfiguration).Get(cfgCompactionPending) != nil
		return nil
	}); err != nil {
		return stats, err
	}
	if pending {
		if err := ctx.Err(); err != nil {
			return stats, err
		}
		hook("before-compact")
		if err := s.compact(); err != nil {
			return stats, fmt.Errorf("boltstore: sweep: compact: %w", err)
		}
		stats.Compacted = true
	}
	total := 0
	for _, n := range stats.Deleted {
		total += n
	}
	s.log.Info("sweep finished", "deleted", total, "replay_partitions_dropped", dropped,
		"compacted", stats.Compacted, "duration", time.Since(start))
	return stats, nil
}

// partitionCount reads how many records a partition holds, from its tally.
func partitionCount(p *partition) (int, error) {
	if !p.acquire() {
		return 0, nil
	}
	defer p.release()
	n := 0
	err := p.db.View(func(tx *bolt.Tx) error {
		t, err := tallyOf(tx, issuer.CategoryReplay)
		if err != nil {
			return err
		}
		n, _, err = readTally(t)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("replay partition %d: %w", p.end, err)
	}
	return n, nil
}

// deleteExpired deletes up to SweepChunk keys with deadline <= cutoff in
// one transaction: the keys are collected with a cursor first, then deleted.
func (s *DB) deleteExpired(ctx context.Context, name string, cutoff int64) (int, error) {
	n := 0
	err := s.update(ctx, func(tx *bolt.Tx) error {
		n = 0
		b := bucket(tx, name)
		var expired [][]byte
		c := b.Cursor()
		for k, _ := c.First(); k != nil && len(expired) < s.opts.SweepChunk; k, _ = c.Next() {
			if keyDeadline(k) > cutoff {
				break
			}
			expired = append(expired, bytes.Clone(k))
		}
		if len(expired) == 0 {
			return nil
		}
		for _, k := range expired {
			if _, err := del(tx, name, k); err != nil {
				return err
			}
		}
		n = len(expired)
		// Committed with the deletions: if we crash before compacting, the
		// next sweep still compacts.
		return s.markCompaction(tx)
	})
	if err == nil && n > 0 {
		hook("deleted-chunk")
	}
	return n, err
}

// compact copies the live records into a new file and renames it over the
// old one. Freed pages of the old file (deleted records, and old copies of
// live ones) are not copied, so they leave the data directory.
func (s *DB) compact() (err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.db == nil {
		return ErrClosed
	}
	tmp := filepath.Join(s.dir, compactName)
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	dst, err := bolt.Open(tmp, 0o600, &bolt.Options{Timeout: openTimeout})
	if err != nil {
		os.Remove(tmp)
		return err
	}
	abandon := func(err error) error {
		dst.Close()
		os.Remove(tmp)
		return err
	}
	if err := bolt.Compact(dst, s.db, compactTxMaxSize); err != nil {
		return abandon(err)
	}
	if err := dst.Update(func(tx *bolt.Tx) error {
		_, err := del(tx, issuer.CategoryConfiguration, cfgCompactionPending)
		return err
	}); err != nil {
		return abandon(err)
	}
	if err := dst.Sync(); err != nil {
		return abandon(err)
	}
	if err := dst.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	hook("compact-written")

	// From here the old handle is closed; whatever happens, reopen a file.
	if err := s.db.Close(); err != nil {
		os.Remove(tmp)
		return s.reopen(err)
	}
	if err := os.Rename(tmp, s.path); err != nil {
		os.Remove(tmp)
		return s.reopen(err)
	}
	if err := atomicfile.SyncDir(s.dir); err != nil {
		return s.reopen(err)
	}
	return s.reopen(nil)
}

// reopen opens the main file again after compaction; cause is the error
// that got us here, if any.
func (s *DB) reopen(cause error) error {
	db, err := s.openBolt(s.path)
	if err != nil {
		s.db = nil
		return errors.Join(cause, err)
	}
	s.db = db
	return cause
}
