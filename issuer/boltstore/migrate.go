package boltstore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	bolt "go.etcd.io/bbolt"

	"github.com/healthcode/healthcode/internal/atomicfile"
	"github.com/healthcode/healthcode/issuer"
)

// legacyReplayKeySize is a release-0 record key: deadline (8) || record
// hash (16), the hash made as recordHash is, under epochs/<end>.key.
const legacyReplayKeySize = 8 + replayHashSize

// migrateRelease0 moves a release-0 replay bucket into partitions: each old
// epoch key becomes its partition's key (sealed under the KEK when given),
// so the old record hashes stay valid and an attestation redeemed before
// the upgrade is still refused. Expired records are not carried over. The
// bucket then leaves the main file (compacted, so its pages go too) and the
// old key files are shredded. Every step can run again after a crash:
// records are put by key, and the old bucket and keys go last.
func (s *DB) migrateRelease0() error {
	legacyDir := filepath.Join(s.dir, legacyEpochDirName)
	var hasBucket bool
	if err := s.db.View(func(tx *bolt.Tx) error {
		hasBucket = tx.Bucket([]byte(issuer.CategoryReplay)) != nil
		return nil
	}); err != nil {
		return err
	}
	if hasBucket {
		keys, err := readLegacyKeys(legacyDir)
		if err != nil {
			return err
		}
		now := s.clock.Now().Unix()
		moved := 0
		const perTx = 50_000
		pending := map[int64][]write{}
		flush := func(end int64) error {
			ws := pending[end]
			delete(pending, end)
			if len(ws) == 0 {
				return nil
			}
			p, err := s.partitionFor(end, keys[end])
			if err != nil {
				return err
			}
			if err := p.db.Update(func(tx *bolt.Tx) error {
				for _, w := range ws {
					if err := put(tx, issuer.CategoryReplay, w.hash, w.rec.encode()); err != nil {
						return err
					}
				}
				return nil
			}); err != nil {
				return fmt.Errorf("boltstore: upgrade: replay partition %d: %w", end, err)
			}
			moved += len(ws)
			return nil
		}
		if err := s.db.View(func(tx *bolt.Tx) error {
			return tx.Bucket([]byte(issuer.CategoryReplay)).ForEach(func(k, v []byte) error {
				if len(k) != legacyReplayKeySize {
					return nil
				}
				deadline := keyDeadline(k)
				end := s.epochOf(deadline)
				if deadline <= now || keys[end] == nil {
					return nil // expired, or its key is gone: it can match nothing
				}
				hour, _, err := splitValue(v)
				if err != nil {
					return fmt.Errorf("boltstore: upgrade: replay record: %w", err)
				}
				pending[end] = append(pending[end], write{
					hash: append([]byte(nil), k[8:]...),
					rec:  record{hour: hour, deadline: deadline},
				})
				if len(pending[end]) >= perTx {
					return flush(end)
				}
				return nil
			})
		}); err != nil {
			return err
		}
		for end := range pending {
			if err := flush(end); err != nil {
				return err
			}
		}
		if err := s.db.Update(func(tx *bolt.Tx) error {
			if err := tx.DeleteBucket([]byte(issuer.CategoryReplay)); err != nil {
				return err
			}
			return s.markCompaction(tx)
		}); err != nil {
			return fmt.Errorf("boltstore: upgrade: remove the old replay bucket: %w", err)
		}
		if err := s.compact(); err != nil {
			return fmt.Errorf("boltstore: upgrade: compact: %w", err)
		}
		s.log.Info("moved release-0 replay records into partitions", "records", moved)
	}
	return removeLegacyKeys(legacyDir)
}

func readLegacyKeys(dir string) (map[int64][]byte, error) {
	keys := map[int64][]byte{}
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return keys, nil
	}
	if err != nil {
		return nil, fmt.Errorf("boltstore: upgrade: read %s: %w", dir, err)
	}
	for _, e := range entries {
		base, ok := strings.CutSuffix(e.Name(), ".key")
		if !ok {
			continue
		}
		end, err := strconv.ParseInt(base, 10, 64)
		if err != nil || end <= 0 {
			continue
		}
		k, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("boltstore: upgrade: read epoch key %d: %w", end, err)
		}
		if len(k) != epochKeySize {
			return nil, fmt.Errorf("boltstore: upgrade: epoch key %d is %d bytes, want %d", end, len(k), epochKeySize)
		}
		keys[end] = k
	}
	return keys, nil
}

// removeLegacyKeys shreds release 0's epoch key files (the partitions hold
// their own copies now) and removes their directory.
func removeLegacyKeys(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("boltstore: upgrade: read %s: %w", dir, err)
	}
	for _, e := range entries {
		if err := shred(filepath.Join(dir, e.Name())); err != nil {
			return fmt.Errorf("boltstore: upgrade: destroy old epoch key: %w", err)
		}
	}
	if err := os.Remove(dir); err != nil {
		return fmt.Errorf("boltstore: upgrade: remove %s: %w", dir, err)
	}
	return atomicfile.SyncDir(filepath.Dir(dir))
}
