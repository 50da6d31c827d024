package boltstore

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	bolt "go.etcd.io/bbolt"

	"github.com/healthcode/healthcode/internal/atomicfile"
	"github.com/healthcode/healthcode/internal/kek"
	"github.com/healthcode/healthcode/issuer"
)

// A replay partition holds the replay records whose deadline falls in one
// epoch, in its own bbolt file (replay/<end>.db) keyed by its own epoch key
// (replay/<end>.key, sealed under the KEK). It expires whole at the epoch's
// end: the key is shredded and the file unlinked, a cost that does not
// depend on how many records are live elsewhere. Release 0 kept the same
// records in one bucket of the main file, keyed by deadline || the same
// record hash under the same epoch keys (epochs/<end>.key); Open moves them.
type partition struct {
	end int64  // epoch end, unix seconds: every deadline in it is <= end
	key []byte // epoch key: record and secret hashes

	// mu is held shared by every use of db, and exclusively by the drop,
	// which a user never waits for: see acquire.
	mu sync.RWMutex
	db *bolt.DB // nil once dropped or closed
}

// acquire makes p usable until release, unless it is being dropped or
// closed: then it returns false at once rather than wait, and the caller
// treats the partition as gone (its records are past their deadlines).
func (p *partition) acquire() bool {
	if !p.mu.TryRLock() {
		return false
	}
	if p.db == nil {
		p.mu.RUnlock()
		return false
	}
	return true
}

func (p *partition) release() { p.mu.RUnlock() }

func (s *DB) partitionPath(end int64, ext string) string {
	return filepath.Join(s.replayDir, strconv.FormatInt(end, 10)+ext)
}

func partitionAAD(end int64) []byte {
	return []byte("healthcode/replay-partition/" + strconv.FormatInt(end, 10))
}

// partitionFile parses "<end>.db" or "<end>.key".
func partitionFile(name string) (int64, string, bool) {
	for _, ext := range []string{".db", ".key"} {
		if base, ok := strings.CutSuffix(name, ext); ok {
			n, err := strconv.ParseInt(base, 10, 64)
			if err != nil || n <= 0 || strconv.FormatInt(n, 10) != base {
				return 0, "", false
			}
			return n, ext, true
		}
	}
	return 0, "", false
}

// sealKey is the on-disk form of an epoch key: sealed under the KEK when
// there is one.
func (s *DB) sealKey(end int64, key []byte) ([]byte, error) {
	if s.opts.KEK == nil {
		return key, nil
	}
	return s.opts.KEK.Seal(key, partitionAAD(end))
}

func (s *DB) openKey(end int64, stored []byte) ([]byte, bool, error) {
	if kek.IsSealed(stored) {
		if s.opts.KEK == nil {
			return nil, false, fmt.Errorf("boltstore: replay partition key %d is sealed and no KEK was given", end)
		}
		k, err := s.opts.KEK.Open(stored, partitionAAD(end))
		reseal := false
		if errors.Is(err, kek.ErrWrongKEK) && s.opts.PreviousKEK != nil {
			// A KEK rotation (RotateKEK) reseals it under the new KEK.
			k, err = s.opts.PreviousKEK.Open(stored, partitionAAD(end))
			reseal = err == nil
		}
		if err != nil {
			return nil, false, fmt.Errorf("boltstore: replay partition key %d: %w", end, err)
		}
		if len(k) != epochKeySize {
			return nil, false, fmt.Errorf("boltstore: replay partition key %d is %d bytes, want %d", end, len(k), epochKeySize)
		}
		if reseal {
			s.resealed++
		}
		return k, reseal, nil
	}
	if len(stored) != epochKeySize {
		return nil, false, fmt.Errorf("boltstore: replay partition key %d is %d bytes, want %d", end, len(stored), epochKeySize)
	}
	// A key written before sealing: sealed now if a KEK is given.
	return stored, s.opts.KEK != nil, nil
}

// writeKey stores an epoch key durably (temp + fsync + rename).
func (s *DB) writeKey(end int64, key []byte) error {
	stored, err := s.sealKey(end, key)
	if err != nil {
		return fmt.Errorf("boltstore: seal replay partition key %d: %w", end, err)
	}
	if err := atomicfile.Write(s.partitionPath(end, ".key"), stored, 0o600); err != nil {
		return fmt.Errorf("boltstore: store replay partition key %d: %w", end, err)
	}
	return nil
}

// openPartitionFile opens (creating) a partition's bbolt file.
func (s *DB) openPartitionFile(end int64) (*bolt.DB, error) {
	db, err := s.openBolt(s.partitionPath(end, ".db"))
	if err != nil {
		return nil, err
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists([]byte(issuer.CategoryReplay)); err != nil {
			return err
		}
		_, err := tx.CreateBucketIfNotExists(inventoryBucket)
		return err
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("boltstore: prepare replay partition %d: %w", end, err)
	}
	return db, nil
}

// loadPartitions opens every partition in replay/. A file without its key
// can never be read again (its key was shredded by a drop cut short): it is
// removed. A key without a file is a creation cut short: the file is made.
func (s *DB) loadPartitions() error {
	entries, err := os.ReadDir(s.replayDir)
	if err != nil {
		return fmt.Errorf("boltstore: read replay directory: %w", err)
	}
	keys, files := map[int64]bool{}, map[int64]bool{}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") && strings.Contains(e.Name(), ".tmp-") {
			// An atomic write cut short.
			if err := os.Remove(filepath.Join(s.replayDir, e.Name())); err != nil {
				return fmt.Errorf("boltstore: remove stale replay key temp: %w", err)
			}
			continue
		}
		end, ext, ok := partitionFile(e.Name())
		if !ok {
			continue
		}
		if ext == ".key" {
			keys[end] = true
		} else {
			files[end] = true
		}
	}
	for end := range files {
		if !keys[end] {
			if err := os.Remove(s.partitionPath(end, ".db")); err != nil {
				return fmt.Errorf("boltstore: remove replay partition %d without its key: %w", end, err)
			}
		}
	}
	for end := range keys {
		stored, err := os.ReadFile(s.partitionPath(end, ".key"))
		if err != nil {
			return fmt.Errorf("boltstore: read replay partition key %d: %w", end, err)
		}
		key, reseal, err := s.openKey(end, stored)
		if err != nil {
			return err
		}
		if reseal {
			if err := s.writeKey(end, key); err != nil {
				return err
			}
		}
		db, err := s.openPartitionFile(end)
		if err != nil {
			return err
		}
		s.parts[end] = &partition{end: end, key: key, db: db}
	}
	return nil
}

// partitionFor returns the partition of epoch end, creating it (key first,
// then file, both durable) on first use. Only redemptions that need the
// same new partition wait for its creation, once per epoch.
func (s *DB) partitionFor(end int64, key []byte) (*partition, error) {
	s.partsMu.RLock()
	p, ok := s.parts[end]
	closed, dropped := s.parts == nil, end <= s.droppedThrough
	s.partsMu.RUnlock()
	if closed {
		return nil, ErrClosed
	}
	if ok {
		return p, nil
	}
	if dropped {
		// A sweep has dropped this epoch (its files may still be going):
		// never make it again under the same names.
		return nil, fmt.Errorf("boltstore: replay partition %d has already been dropped", end)
	}
	s.createMu.Lock()
	defer s.createMu.Unlock()
	s.partsMu.RLock()
	p, ok = s.parts[end]
	s.partsMu.RUnlock()
	if ok {
		return p, nil
	}
	if key == nil {
		key = make([]byte, epochKeySize)
		if _, err := rand.Read(key); err != nil {
			return nil, fmt.Errorf("boltstore: generate replay partition key: %w", err)
		}
	}
	if err := s.writeKey(end, key); err != nil {
		return nil, err
	}
	db, err := s.openPartitionFile(end)
	if err != nil {
		return nil, err
	}
	p = &partition{end: end, key: key, db: db}
	s.partsMu.Lock()
	defer s.partsMu.Unlock()
	if s.parts == nil {
		db.Close()
		return nil, ErrClosed
	}
	s.parts[end] = p
	return p, nil
}

// partitions returns the partitions held, earliest end first.
func (s *DB) partitions() []*partition {
	s.partsMu.RLock()
	defer s.partsMu.RUnlock()
	out := make([]*partition, 0, len(s.parts))
	for _, p := range s.parts {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b *partition) int { return int(a.end - b.end) })
	return out
}

// dropPartition deletes a partition whole: out of the lookup first, then
// closed once its in-flight reads are done, its key shredded (from then on
// no record in it can be tied to an attestation, even from a copy of the
// file), and its file unlinked.
func (s *DB) dropPartition(p *partition) error {
	s.partsMu.Lock()
	if s.parts[p.end] == p {
		delete(s.parts, p.end)
	}
	s.droppedThrough = max(s.droppedThrough, p.end)
	s.partsMu.Unlock()
	p.mu.Lock()
	var err error
	if p.db != nil {
		err = p.db.Close()
		p.db = nil
	}
	clear(p.key)
	p.mu.Unlock()
	if err != nil {
		return fmt.Errorf("boltstore: close replay partition %d: %w", p.end, err)
	}
	if err := shred(s.partitionPath(p.end, ".key")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("boltstore: destroy replay partition key %d: %w", p.end, err)
	}
	hook("partition-key-destroyed")
	if err := os.Remove(s.partitionPath(p.end, ".db")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("boltstore: remove replay partition %d: %w", p.end, err)
	}
	if err := atomicfile.SyncDir(s.replayDir); err != nil {
		return fmt.Errorf("boltstore: sync replay directory: %w", err)
	}
	return nil
}

// closePartitions closes every partition (Close of the store).
func (s *DB) closePartitions() error {
	s.partsMu.Lock()
	parts := s.parts
	s.parts = nil
	s.partsMu.Unlock()
	var errs []error
	for _, p := range parts {
		p.mu.Lock()
		if p.db != nil {
			errs = append(errs, p.db.Close())
			p.db = nil
		}
		clear(p.key)
		p.mu.Unlock()
	}
	return errors.Join(errs...)
}

// shred overwrites a file with zeros, syncs and unlinks it.
func shred(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err == nil {
		_, err = f.WriteAt(make([]byte, fi.Size()), 0)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Remove(path)
}
