package boltstore

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	bolt "go.etcd.io/bbolt"

	"github.com/healthcode/healthcode/issuer"
)

const (
	epochKeySize   = 32
	replayHashSize = 16
)

// epochOf returns the end of the epoch a deadline (unix seconds) falls in:
// the deadline rounded up to a multiple of the epoch length.
func (s *DB) epochOf(deadline int64) int64 {
	return (deadline + s.epoch - 1) / s.epoch * s.epoch
}

func (s *DB) epochPath(epoch int64) string {
	return filepath.Join(s.epochDir, strconv.FormatInt(epoch, 10)+".key")
}

// epochKey returns the key of an epoch, creating it durably on first use.
// It runs before any transaction so a batch retry never creates a file.
func (s *DB) epochKey(epoch int64) ([]byte, error) {
	s.keysMu.Lock()
	defer s.keysMu.Unlock()
	if k, ok := s.keys[epoch]; ok {
		return k, nil
	}
	path := s.epochPath(epoch)
	k, err := os.ReadFile(path)
	switch {
	case err == nil:
		if len(k) != epochKeySize {
			return nil, fmt.Errorf("boltstore: epoch key %d is %d bytes, want %d", epoch, len(k), epochKeySize)
		}
	case errors.Is(err, os.ErrNotExist):
		k = make([]byte, epochKeySize)
		if _, err := rand.Read(k); err != nil {
			return nil, fmt.Errorf("boltstore: generate epoch key: %w", err)
		}
		if err := writeFileDurably(s.epochDir, path, k); err != nil {
			return nil, fmt.Errorf("boltstore: store epoch key: %w", err)
		}
	default:
		return nil, fmt.Errorf("boltstore: read epoch key: %w", err)
	}
	s.keys[epoch] = k
	return k, nil
}

// writeFileDurably writes a new file by temp + fsync + rename + directory
// fsync, so a crash leaves either no file or the whole one.
func writeFileDurably(dir, path string, data []byte) error {
	f, err := os.CreateTemp(dir, ".tmp-")
	if err != nil {
		return err
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	ok = true
	return syncDir(dir)
}

// destroyEpochKeys overwrites and unlinks every epoch key whose epoch ended
// at or before now; the replay records it keyed have all been swept, and
// any copy left in a freed page can no longer be tied to an attestation.
func (s *DB) destroyEpochKeys(now int64) (int, error) {
	s.keysMu.Lock()
	defer s.keysMu.Unlock()
	entries, err := os.ReadDir(s.epochDir)
	if err != nil {
		return 0, fmt.Errorf("boltstore: read epoch key directory: %w", err)
	}
	destroyed := 0
	for _, e := range entries {
		epoch, ok := epochFile(e.Name())
		if !ok || epoch > now {
			continue
		}
		if err := shred(filepath.Join(s.epochDir, e.Name())); err != nil {
			return destroyed, fmt.Errorf("boltstore: destroy epoch key %d: %w", epoch, err)
		}
		if k, ok := s.keys[epoch]; ok {
			clear(k)
			delete(s.keys, epoch)
		}
		destroyed++
	}
	// Drop cached keys whose file had already gone (e.g. removed by hand).
	for epoch, k := range s.keys {
		if epoch <= now {
			clear(k)
			delete(s.keys, epoch)
		}
	}
	if destroyed > 0 {
		if err := syncDir(s.epochDir); err != nil {
			return destroyed, fmt.Errorf("boltstore: sync epoch key directory: %w", err)
		}
	}
	return destroyed, nil
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

// replayKey is deadline || HMAC-SHA256(epochKey, attester || 0 || id)[:16]:
// the attester and id cannot be read back, and once the epoch key is gone
// not even a guess can be checked against it.
func replayKey(deadline int64, epochKey []byte, attester, id string) []byte {
	m := hmac.New(sha256.New, epochKey)
	m.Write([]byte(attester))
	m.Write([]byte{0})
	m.Write([]byte(id))
	return deadlineKey(deadline, m.Sum(nil)[:replayHashSize])
}

// countKey is deadline || day (unix) || colour.
func countKey(deadline int64, day int64, colour byte) []byte {
	suffix := make([]byte, 9)
	binary.BigEndian.PutUint64(suffix, uint64(day))
	suffix[8] = colour
	return deadlineKey(deadline, suffix)
}

// replayKeys derives the record key of each attestation. A duplicate
// within the request is a *issuer.RedeemedError for the second one.
func (s *DB) replayKeys(rks []issuer.ReplayKey) ([][]byte, error) {
	seen := make(map[string]bool, len(rks))
	keys := make([][]byte, len(rks))
	for i, rk := range rks {
		if rk.Attester == "" || rk.ID == "" {
			return nil, fmt.Errorf("boltstore: redeem: attestation %d: attester and id are required", i)
		}
		if strings.IndexByte(rk.Attester, 0) >= 0 {
			return nil, fmt.Errorf("boltstore: redeem: attestation %d: attester contains a NUL byte", i)
		}
		ident := rk.Attester + "\x00" + rk.ID
		if seen[ident] {
			return nil, &issuer.RedeemedError{Index: i}
		}
		seen[ident] = true
		deadline, err := deadlineSeconds(rk.Deadline, fmt.Sprintf("attestation %d", i))
		if err != nil {
			return nil, err
		}
		ek, err := s.epochKey(s.epochOf(deadline))
		if err != nil {
			return nil, err
		}
		keys[i] = replayKey(deadline, ek, rk.Attester, rk.ID)
	}
	return keys, nil
}

// Redeemed returns *issuer.RedeemedError if any attestation was redeemed
// before. It only reads (no commit, no fsync): the issuer's cheap refusal
// of a replay before it spends signatures. Redeem stays the authority.
func (s *DB) Redeemed(ctx context.Context, rks []issuer.ReplayKey) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	keys, err := s.replayKeys(rks)
	if err != nil {
		return err
	}
	return s.view(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(issuer.CategoryReplay))
		for i, k := range keys {
			if b.Get(k) != nil {
				return &issuer.RedeemedError{Index: i}
			}
		}
		return nil
	})
}

// Redeem records every replay key and counts the colour in one durable
// transaction, or returns *issuer.RedeemedError and writes nothing.
//
// The replay deadline must be a fixed function of the attestation (its
// expiry), not of the time of redemption: the key is found by deadline.
func (s *DB) Redeem(ctx context.Context, r issuer.Redemption) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(r.Replay) == 0 {
		return errors.New("boltstore: redeem: no attestations to record")
	}
	if !r.Colour.Valid() {
		return fmt.Errorf("boltstore: redeem: colour %d is not a known colour", int(r.Colour))
	}
	day := r.Day.Unix()
	if r.Day.IsZero() || r.Day.Nanosecond() != 0 || day%86400 != 0 {
		return fmt.Errorf("boltstore: redeem: day must be a UTC midnight, got %s", r.Day.UTC().Format("2006-01-02T15:04:05.999999999Z"))
	}
	countDeadline, err := deadlineSeconds(r.CountDeadline, "aggregate count")
	if err != nil {
		return err
	}
	keys, err := s.replayKeys(r.Replay)
	if err != nil {
		return err
	}
	hour := u64(uint64(s.writeHour()))
	ck := countKey(countDeadline, day, byte(r.Colour))

	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.db == nil {
		return ErrClosed
	}
	redeemed := -1
	err = s.db.Batch(func(tx *bolt.Tx) error {
		redeemed = -1 // Batch may run this more than once
		b := tx.Bucket([]byte(issuer.CategoryReplay))
		for i, k := range keys {
			if b.Get(k) != nil {
				redeemed = i
				return nil // write nothing; not an error, so the batch's others commit
			}
		}
		for _, k := range keys {
			if err := b.Put(k, hour); err != nil {
				return err
			}
		}
		cb := tx.Bucket([]byte(issuer.CategoryCounts))
		v := make([]byte, 16)
		copy(v, hour)
		var n uint64
		if old := cb.Get(ck); old != nil {
			if len(old) != 16 {
				return errors.New("boltstore: stored aggregate count is malformed")
			}
			copy(v[:8], old[:8]) // keep the first write hour: it is the oldest
			n = binary.BigEndian.Uint64(old[8:])
		}
		binary.BigEndian.PutUint64(v[8:], n+1)
		return cb.Put(ck, v)
	})
	if err != nil {
		return fmt.Errorf("boltstore: redeem: %w", err)
	}
	if redeemed >= 0 {
		return &issuer.RedeemedError{Index: redeemed}
	}
	return nil
}
