// Package boltstore keeps the issuer's state in bbolt files and makes
// invariant 5 real. Replay records, the big and hot category, live in time
// partitions (replay/<epoch end>.db, one per deadline epoch, each with its
// own sealed epoch key beside it) that expire whole: a sweep shreds the key
// and unlinks the file, at a cost that does not depend on the live set, and
// never makes a redemption wait. The small categories (counts, audit,
// signing keys, policy history, configuration) sit in healthcode.db keyed
// by deadline; a sweep deletes what is due and compacts that file, in time
// proportional to those categories alone. The inventory is kept by the
// writes and the sweeps, never scanned. One issuer holds the data
// directory's lock file from Open to Close.
package boltstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/healthcode/healthcode/internal/kek"
	"github.com/healthcode/healthcode/issuer"
)

const (
	fileName           = "healthcode.db"
	compactName        = fileName + ".compact"
	replayDirName      = "replay"
	legacyEpochDirName = "epochs" // release 0's replay epoch keys

	defaultMaxBatchSize  = 1000
	defaultMaxBatchDelay = 2 * time.Millisecond
	defaultEpoch         = 24 * time.Hour
	defaultSweepChunk    = 10_000
	openTimeout          = 2 * time.Second

	// compactTxMaxSize bounds the memory of one compaction transaction.
	compactTxMaxSize = 64 << 20
)

// Configuration keys. Attesters and admin tokens carry their name after a
// prefix so each is one record.
var (
	cfgPolicy            = []byte("policy")
	cfgBundleKey         = []byte("bundle_key")
	cfgBundleSequence    = []byte("bundle_sequence")
	cfgEpochSeconds      = []byte("epoch_seconds")
	cfgCompactionPending = []byte("compaction_pending")
	cfgAttesterPrefix    = "attester/"
	cfgAdminTokenPrefix  = "admin_token/"
)

// smallCategories are the main file's buckets keyed by deadline, which a
// sweep walks, in inventory order (replay records come first, from their
// partitions).
var smallCategories = []string{
	issuer.CategoryCounts,
	issuer.CategoryAudit,
	issuer.CategorySigningKeys,
	issuer.CategoryPolicyHistory,
}

// ErrClosed is returned by every call after Close (or after a compaction
// that could not reopen the main file).
var ErrClosed = errors.New("boltstore: database is closed")

// Options tunes the store. KEK is required; the rest has defaults.
type Options struct {
	// MaxBatchSize caps how many redemptions share one commit (default 1000).
	MaxBatchSize int
	// MaxBatchDelay is how long a batch waits for company before it commits
	// (default 2ms: with 64 writers a 10ms delay gave 5.2k records/s, 1ms
	// gave 25k/s on two cores).
	MaxBatchDelay time.Duration
	// Epoch is the span of one replay partition and its key (default 24h,
	// whole seconds). A partition holds the records whose deadline falls in
	// its epoch and is dropped whole when the epoch ends, so a record stays
	// on disk (unredeemable: it counts as absent from its deadline on) at
	// most one Epoch past its deadline. A lookup probes every live
	// partition, so Epoch trades probes per lookup (retention / Epoch)
	// against that delay. The first Open records it; a later Open with a
	// different non-zero value fails.
	Epoch time.Duration
	// SweepChunk bounds how many records of the main file's categories one
	// sweep transaction deletes (default 10,000). Replay records are not
	// deleted one by one: their partitions are dropped whole, which no
	// redemption waits for.
	SweepChunk int
	// Clock stamps each record's write hour (default issuer.SystemClock).
	Clock issuer.Clock
	// Logger receives sweep and compaction summaries (never record content).
	Logger *slog.Logger
	// KEK (required) seals every private key the store holds (signing
	// keys, the bundle key, replay partition keys, each with additional
	// data naming its record); it is kept outside the data directory. Open
	// refuses a KEK other than the one the keys are sealed under.
	KEK *kek.Key
	// PreviousKEK, set only by RotateKEK: whatever is still sealed under
	// it is opened and resealed under KEK, so a rotation cut short by a
	// crash is finished by running it again.
	PreviousKEK *kek.Key
}

// DB is the bbolt-backed issuer.Store and issuer.StateStore.
type DB struct {
	dir       string
	path      string
	replayDir string
	epoch     int64 // seconds
	opts      Options
	clock     issuer.Clock
	log       *slog.Logger
	lock      *os.File // the data directory's lock, held until Close

	// mu guards db (the main file): operations hold it shared; compaction
	// swaps the file under the exclusive lock.
	mu sync.RWMutex
	db *bolt.DB

	sweepMu sync.Mutex // one sweep at a time

	partsMu        sync.RWMutex
	parts          map[int64]*partition // by epoch end; nil once closed
	droppedThrough int64                // latest epoch end a sweep dropped
	createMu       sync.Mutex           // one partition creation at a time

	stripeSeed maphash.Seed
	stripes    [stripeCount]sync.Mutex

	resealed int // keys Open sealed or resealed (RotateKEK reports it)
}

var (
	_ issuer.Store      = (*DB)(nil)
	_ issuer.StateStore = (*DB)(nil)
)

// testHook lets the crash tests stop a helper process at a chosen stage.
var testHook func(stage string)

func hook(stage string) {
	if testHook != nil {
		testHook(stage)
	}
}

// Open opens (creating if needed) the store in dir and takes the data
// directory's lock; a second Open of the same directory, in this process or
// another, fails at once. It finishes what a crash left half done (a
// multi-partition redemption, a compaction, a drop) and moves a release-0
// replay bucket into partitions.
func Open(dir string, opts Options) (*DB, error) {
	if dir == "" {
		return nil, errors.New("boltstore: data directory must not be empty")
	}
	if opts.MaxBatchSize < 0 {
		return nil, fmt.Errorf("boltstore: MaxBatchSize must not be negative, got %d", opts.MaxBatchSize)
	}
	if opts.MaxBatchDelay < 0 {
		return nil, fmt.Errorf("boltstore: MaxBatchDelay must not be negative, got %s", opts.MaxBatchDelay)
	}
	if opts.SweepChunk < 0 {
		return nil, fmt.Errorf("boltstore: SweepChunk must not be negative, got %d", opts.SweepChunk)
	}
	if opts.Epoch < 0 || opts.Epoch%time.Second != 0 {
		return nil, fmt.Errorf("boltstore: Epoch must be a positive whole number of seconds, got %s", opts.Epoch)
	}
	if opts.KEK == nil {
		return nil, errors.New("boltstore: Options.KEK is required: the private keys in the store are sealed under it")
	}
	if opts.MaxBatchSize == 0 {
		opts.MaxBatchSize = defaultMaxBatchSize
	}
	if opts.MaxBatchDelay == 0 {
		opts.MaxBatchDelay = defaultMaxBatchDelay
	}
	if opts.SweepChunk == 0 {
		opts.SweepChunk = defaultSweepChunk
	}
	s := &DB{
		dir:        dir,
		path:       filepath.Join(dir, fileName),
		replayDir:  filepath.Join(dir, replayDirName),
		opts:       opts,
		clock:      opts.Clock,
		log:        opts.Logger,
		parts:      make(map[int64]*partition),
		stripeSeed: maphash.MakeSeed(),
	}
	if s.clock == nil {
		s.clock = issuer.SystemClock{}
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("boltstore: create data directory: %w", err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	s.lock = lock
	if err := s.open(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *DB) open() error {
	if err := os.MkdirAll(s.replayDir, 0o700); err != nil {
		return fmt.Errorf("boltstore: create replay directory: %w", err)
	}
	// A compaction cut short leaves its copy behind; the main file is still
	// whole (the copy only replaces it by rename), so the copy is dropped.
	if err := os.Remove(filepath.Join(s.dir, compactName)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("boltstore: remove stale compaction file: %w", err)
	}
	db, err := s.openBolt(s.path)
	if err != nil {
		return err
	}
	s.db = db
	if err := db.Update(func(tx *bolt.Tx) error {
		for _, name := range append(append([]string(nil), smallCategories...), issuer.CategoryConfiguration) {
			if _, err := tx.CreateBucketIfNotExists([]byte(name)); err != nil {
				return err
			}
		}
		if _, err := tx.CreateBucketIfNotExists(intentBucket); err != nil {
			return err
		}
		if err := buildInventory(tx); err != nil {
			return err
		}
		cfg := tx.Bucket([]byte(issuer.CategoryConfiguration))
		want := int64(s.opts.Epoch / time.Second)
		if v := cfg.Get(cfgEpochSeconds); v != nil {
			_, payload, err := splitValue(v)
			if err != nil || len(payload) != 8 {
				return errors.New("boltstore: stored epoch length is malformed")
			}
			stored := int64(binary.BigEndian.Uint64(payload))
			if want != 0 && want != stored {
				return fmt.Errorf("boltstore: Epoch %s differs from the %s this store was created with", s.opts.Epoch, time.Duration(stored)*time.Second)
			}
			s.epoch = stored
			return nil
		}
		if want == 0 {
			want = int64(defaultEpoch / time.Second)
		}
		s.epoch = want
		return put(tx, issuer.CategoryConfiguration, cfgEpochSeconds, s.value(u64(uint64(want))))
	}); err != nil {
		return fmt.Errorf("boltstore: prepare buckets: %w", err)
	}
	// The KEK is proven first: partition keys are sealed under it too.
	if err := s.sealAtRest(); err != nil {
		return err
	}
	if err := s.loadPartitions(); err != nil {
		return err
	}
	n, err := s.recoverIntents()
	if err != nil {
		return err
	}
	if n > 0 {
		s.log.Warn("rolled back redemptions a crash left half-written", "requests", n)
	}
	return s.migrateRelease0()
}

func (s *DB) openBolt(path string) (*bolt.DB, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: openTimeout})
	if err != nil {
		return nil, fmt.Errorf("boltstore: open %s: %w", path, err)
	}
	db.MaxBatchSize = s.opts.MaxBatchSize
	db.MaxBatchDelay = s.opts.MaxBatchDelay
	return db, nil
}

// Close closes every file and releases the data directory's lock. Calls
// after Close return ErrClosed.
func (s *DB) Close() error {
	// Partitions first, without mu: a redemption holding one may be waiting
	// for mu to count its colour.
	perr := s.closePartitions()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lock == nil {
		return nil
	}
	errs := []error{perr}
	if s.db != nil {
		errs = append(errs, s.db.Close())
		s.db = nil
	}
	// Last, so that no other issuer opens the files while they are open.
	errs = append(errs, s.lock.Close())
	s.lock = nil
	return errors.Join(errs...)
}

func (s *DB) closed() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.db == nil
}

// view and update run fn on the current file under the shared lock.
func (s *DB) view(ctx context.Context, fn func(*bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.db == nil {
		return ErrClosed
	}
	return s.db.View(fn)
}

func (s *DB) update(ctx context.Context, fn func(*bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.db == nil {
		return ErrClosed
	}
	return s.db.Update(fn)
}

// Every stored value starts with its write time rounded down to the hour,
// which is all the inventory's "oldest" needs.
func (s *DB) value(payload []byte) []byte {
	v := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint64(v, uint64(s.writeHour()))
	copy(v[8:], payload)
	return v
}

func (s *DB) writeHour() int64 {
	return s.clock.Now().UTC().Truncate(time.Hour).Unix()
}

func splitValue(v []byte) (hour int64, payload []byte, err error) {
	if len(v) < 8 {
		return 0, nil, errors.New("boltstore: stored value is shorter than its header")
	}
	return int64(binary.BigEndian.Uint64(v)), v[8:], nil
}

func u64(n uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, n)
	return b
}

// deadlineSeconds converts a deadline to the key's unix seconds, rounding
// up so a record is never deleted before its deadline.
func deadlineSeconds(t time.Time, what string) (int64, error) {
	if t.IsZero() {
		return 0, fmt.Errorf("boltstore: %s: deadline is required", what)
	}
	sec := t.Unix()
	if t.Nanosecond() > 0 {
		sec++
	}
	if sec <= 0 {
		return 0, fmt.Errorf("boltstore: %s: deadline %s is not after 1970", what, t.UTC().Format(time.RFC3339))
	}
	return sec, nil
}

// deadlineKey is 8-byte big-endian deadline || suffix.
func deadlineKey(sec int64, suffix []byte) []byte {
	k := make([]byte, 8+len(suffix))
	binary.BigEndian.PutUint64(k, uint64(sec))
	copy(k[8:], suffix)
	return k
}

func keyDeadline(k []byte) int64 {
	if len(k) < 8 {
		return 0
	}
	return int64(binary.BigEndian.Uint64(k))
}
