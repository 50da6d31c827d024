// Package boltstore keeps the issuer's state in one bbolt file and makes
// invariant 5 real: every record sits in a bucket keyed by its deadline, a
// sweep deletes what is due, destroys the epoch keys that made replay
// records linkable, and compacts the file so no freed page survives.
package boltstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/healthcode/healthcode/internal/kek"
	"github.com/healthcode/healthcode/issuer"
)

const (
	fileName     = "healthcode.db"
	compactName  = fileName + ".compact"
	epochDirName = "epochs"

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

// deadlineCategories are the buckets a sweep walks, in inventory order.
var deadlineCategories = []string{
	issuer.CategoryReplay,
	issuer.CategoryCounts,
	issuer.CategoryAudit,
	issuer.CategorySigningKeys,
	issuer.CategoryPolicyHistory,
}

// ErrClosed is returned by every call after Close (or after a compaction
// that could not reopen the file).
var ErrClosed = errors.New("boltstore: database is closed")

// Options tunes the store. KEK is required; the rest has defaults.
type Options struct {
	// MaxBatchSize caps how many redemptions share one commit (default 1000).
	MaxBatchSize int
	// MaxBatchDelay is how long a batch waits for company before it commits
	// (default 2ms: with 64 writers a 10ms delay gave 5.2k records/s, 1ms
	// gave 25k/s on two cores).
	MaxBatchDelay time.Duration
	// Epoch is the span of one replay epoch key (default 24h, whole seconds).
	// A key is destroyed once every deadline it covers has passed. The first
	// Open records it; a later Open with a different non-zero value fails,
	// since replay records already written could no longer be found.
	Epoch time.Duration
	// SweepChunk bounds how many records one sweep transaction deletes
	// (default 10,000): redemptions wait at most one chunk's commit. Smaller
	// chunks cut redemption latency during a sweep and slow the sweep.
	SweepChunk int
	// Clock stamps each record's write hour (default issuer.SystemClock).
	Clock issuer.Clock
	// Logger receives sweep and compaction summaries (never record content).
	Logger *slog.Logger
	// KEK (required) seals every private key the store holds (signing
	// keys, the bundle key, replay epoch keys); it is kept outside the data
	// directory. Open refuses a KEK other than the one the keys are sealed
	// under.
	KEK *kek.Key
}

// DB is the bbolt-backed issuer.Store and issuer.StateStore.
type DB struct {
	dir      string
	path     string
	epochDir string
	epoch    int64 // seconds
	opts     Options
	clock    issuer.Clock
	log      *slog.Logger

	// mu guards db: operations hold it shared; compaction swaps the file
	// under the exclusive lock.
	mu sync.RWMutex
	db *bolt.DB

	sweepMu sync.Mutex // one sweep at a time

	keysMu sync.Mutex
	keys   map[int64][]byte // epoch end (unix) -> key
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

// Open opens (creating if needed) the store in dir.
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
		dir:      dir,
		path:     filepath.Join(dir, fileName),
		epochDir: filepath.Join(dir, epochDirName),
		opts:     opts,
		clock:    opts.Clock,
		log:      opts.Logger,
		keys:     make(map[int64][]byte),
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
	if err := os.MkdirAll(s.epochDir, 0o700); err != nil {
		return nil, fmt.Errorf("boltstore: create epoch key directory: %w", err)
	}
	// A compaction cut short leaves its copy behind; the main file is still
	// whole (the copy only replaces it by rename), so the copy is dropped.
	if err := os.Remove(filepath.Join(dir, compactName)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("boltstore: remove stale compaction file: %w", err)
	}
	if err := s.removeStaleKeyTemps(); err != nil {
		return nil, err
	}
	db, err := s.openBolt(s.path)
	if err != nil {
		return nil, err
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		for _, name := range append(deadlineCategories, issuer.CategoryConfiguration) {
			if _, err := tx.CreateBucketIfNotExists([]byte(name)); err != nil {
				return err
			}
		}
		if _, err := tx.CreateBucketIfNotExists(replayIDBucket); err != nil {
			return err
		}
		cfg := tx.Bucket([]byte(issuer.CategoryConfiguration))
		want := int64(opts.Epoch / time.Second)
		if v := cfg.Get(cfgEpochSeconds); v != nil {
			_, payload, err := splitValue(v)
			if err != nil || len(payload) != 8 {
				return errors.New("boltstore: stored epoch length is malformed")
			}
			stored := int64(binary.BigEndian.Uint64(payload))
			if want != 0 && want != stored {
				return fmt.Errorf("boltstore: Epoch %s differs from the %s this store was created with", opts.Epoch, time.Duration(stored)*time.Second)
			}
			s.epoch = stored
			return nil
		}
		if want == 0 {
			want = int64(defaultEpoch / time.Second)
		}
		s.epoch = want
		return cfg.Put(cfgEpochSeconds, s.value(u64(uint64(want))))
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("boltstore: prepare buckets: %w", err)
	}
	s.db = db
	// The KEK is proven first: epoch keys are sealed under it too.
	if err := s.sealAtRest(); err != nil {
		s.Close()
		return nil, err
	}
	if err := s.loadEpochKeys(); err != nil {
		s.Close()
		return nil, err
	}
	if err := s.migrateLegacyReplay(); err != nil {
		s.Close()
		return nil, fmt.Errorf("boltstore: move release-0 replay records: %w", err)
	}
	return s, nil
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

// Close closes the file. Calls after Close return ErrClosed.
func (s *DB) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.db == nil {
		return nil
	}
	err := s.db.Close()
	s.db = nil
	return err
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

func (s *DB) removeStaleKeyTemps() error {
	entries, err := os.ReadDir(s.epochDir)
	if err != nil {
		return fmt.Errorf("boltstore: read epoch key directory: %w", err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".tmp-") {
			if err := os.Remove(filepath.Join(s.epochDir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("boltstore: remove stale epoch key temp: %w", err)
			}
		}
	}
	return nil
}

// epochFile parses "<unix>.key".
func epochFile(name string) (int64, bool) {
	base, ok := strings.CutSuffix(name, ".key")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(base, 10, 64)
	if err != nil || n <= 0 {
		return 0, false
	}
	return n, true
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
