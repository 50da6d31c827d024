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

	"github.com/healthcode/healthcode/issuer"
)

// Sweep deletes every record whose deadline is at or before now, destroys
// the epoch keys whose epoch has ended, and then compacts the file into a
// fresh one so no freed page keeps a deleted record. Deletion runs in
// transactions of at most Options.SweepChunk keys so redemptions keep flowing; only the
// compaction holds them off. A sweep cut short by a crash is finished by
// the next one: the need to compact is recorded with the deletions.
func (s *DB) Sweep(ctx context.Context, now time.Time) (issuer.SweepStats, error) {
	s.sweepMu.Lock()
	defer s.sweepMu.Unlock()
	stats := issuer.SweepStats{Deleted: make(map[string]int, len(deadlineCategories))}
	if now.IsZero() {
		return stats, errors.New("boltstore: sweep: now is required")
	}
	cutoff := now.Unix() // a key's deadline is whole seconds, rounded up
	for _, name := range deadlineCategories {
		stats.Deleted[name] = 0
	}
	start := time.Now()
	for _, name := range deadlineCategories {
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
	destroyed, err := s.destroyEpochKeys(cutoff)
	if err != nil {
		return stats, err
	}
	hook("keys-destroyed")
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
		if err := s.compact(); err != nil {
			return stats, fmt.Errorf("boltstore: sweep: compact: %w", err)
		}
		stats.Compacted = true
	}
	total := 0
	for _, n := range stats.Deleted {
		total += n
	}
	s.log.Info("sweep finished", "deleted", total, "epoch_keys_destroyed", destroyed,
		"compacted", stats.Compacted, "duration", time.Since(start))
	return stats, nil
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
		var ids *bolt.Bucket
		if name == issuer.CategoryReplay {
			ids = tx.Bucket(replayIDBucket)
		}
		for _, k := range expired {
			if err := b.Delete(k); err != nil {
				return err
			}
			if ids != nil {
				if err := ids.Delete(k[8:]); err != nil {
					return err
				}
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
		return bucket(tx, issuer.CategoryConfiguration).Delete(cfgCompactionPending)
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
	if err := syncDir(s.dir); err != nil {
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

// Inventory reports, per category, how many records are held, the earliest
// write hour among them and the next deadline. Counts only.
func (s *DB) Inventory(ctx context.Context) ([]issuer.CategoryStat, error) {
	names := append(append([]string(nil), deadlineCategories...), issuer.CategoryConfiguration)
	out := make([]issuer.CategoryStat, 0, len(names))
	err := s.view(ctx, func(tx *bolt.Tx) error {
		for _, name := range names {
			st := issuer.CategoryStat{Name: name}
			oldest := int64(-1)
			c := bucket(tx, name).Cursor()
			for k, v := c.First(); k != nil; k, v = c.Next() {
				if st.Count == 0 && name != issuer.CategoryConfiguration {
					next := time.Unix(keyDeadline(k), 0).UTC()
					st.NextDeadline = &next
				}
				st.Count++
				hour, _, err := splitValue(v)
				if err != nil {
					return fmt.Errorf("boltstore: inventory %s: %w", name, err)
				}
				if oldest < 0 || hour < oldest {
					oldest = hour
				}
			}
			if oldest >= 0 {
				t := time.Unix(oldest, 0).UTC()
				st.Oldest = &t
			}
			out = append(out, st)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
