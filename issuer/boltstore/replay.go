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
	"time"

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

// loadEpochKeys reads every epoch key on disk: a lookup probes each live
// epoch, so each must be known from the start.
func (s *DB) loadEpochKeys() error {
	entries, err := os.ReadDir(s.epochDir)
	if err != nil {
		return fmt.Errorf("boltstore: read epoch key directory: %w", err)
	}
	for _, e := range entries {
		if epoch, ok := epochFile(e.Name()); ok {
			if _, err := s.epochKey(epoch); err != nil {
				return err
			}
		}
	}
	return nil
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

// recordHash is HMAC-SHA256(epochKey, attester || 0 || id)[:16]: the
// attester and id cannot be read back, and once the epoch key is gone not
// even a guess can be checked against it. Release 0 keyed its records by
// deadline || recordHash with the same construction.
func recordHash(epochKey []byte, attester, id string) []byte {
	m := hmac.New(sha256.New, epochKey)
	m.Write([]byte(attester))
	m.Write([]byte{0})
	m.Write([]byte(id))
	return m.Sum(nil)[:replayHashSize]
}

// secretHash is the keyed hash of a wallet's secret kept in its record:
// bound to the attestation and to the epoch key, so it is destroyed with
// the key like the record itself.
func secretHash(epochKey []byte, attester, id string, secret []byte) []byte {
	m := hmac.New(sha256.New, epochKey)
	m.Write([]byte("secret\x00"))
	m.Write([]byte(attester))
	m.Write([]byte{0})
	m.Write([]byte(id))
	m.Write([]byte{0})
	m.Write(secret)
	return m.Sum(nil)[:replayHashSize]
}

// record is one replay record's value: write hour (8) || deadline (8) ||
// retries (2) || has secret (1) || secret hash (16).
type record struct {
	hour      int64
	deadline  int64
	retries   int
	hasSecret bool
	secret    [replayHashSize]byte
}

const recordSize = 8 + 8 + 2 + 1 + replayHashSize

func (r record) encode() []byte {
	v := make([]byte, recordSize)
	binary.BigEndian.PutUint64(v, uint64(r.hour))
	binary.BigEndian.PutUint64(v[8:], uint64(r.deadline))
	binary.BigEndian.PutUint16(v[16:], uint16(r.retries))
	if r.hasSecret {
		v[18] = 1
	}
	copy(v[19:], r.secret[:])
	return v
}

func decodeRecord(v []byte) (record, error) {
	if len(v) != recordSize || v[18] > 1 {
		return record{}, errors.New("boltstore: stored replay record is malformed")
	}
	r := record{
		hour:      int64(binary.BigEndian.Uint64(v)),
		deadline:  int64(binary.BigEndian.Uint64(v[8:])),
		retries:   int(binary.BigEndian.Uint16(v[16:])),
		hasSecret: v[18] == 1,
	}
	copy(r.secret[:], v[19:])
	return r, nil
}

// retry says whether a request with this secret may retry the live record
// r: the same secret hash, and retries left.
func (r record) retry(hash []byte, maxRetries int) bool {
	return r.hasSecret && hash != nil && hmac.Equal(r.secret[:], hash) && r.retries < maxRetries
}

// countKey is deadline || day (unix) || colour.
func countKey(deadline int64, day int64, colour byte) []byte {
	suffix := make([]byte, 9)
	binary.BigEndian.PutUint64(suffix, uint64(day))
	suffix[8] = colour
	return deadlineKey(deadline, suffix)
}

// replayIDBucket holds the records by epoch || recordHash, so a record is
// found by (attester, id) alone; the category bucket indexes them by
// deadline for the sweep.
var replayIDBucket = []byte("replay_records_by_id")

// probe is one key's record hash and secret hash under one live epoch key.
type probe struct {
	epoch  int64
	hash   []byte
	secret []byte // nil when the request has no secret
}

// prepared is one replay key made ready for a transaction: its probes in
// every live epoch, and where a new record goes.
type prepared struct {
	probes   []probe
	target   probe // in the epoch of its deadline
	deadline int64
}

func (s *DB) liveEpochs(now int64) []int64 {
	s.keysMu.Lock()
	defer s.keysMu.Unlock()
	var out []int64
	for e := range s.keys {
		if e > now {
			out = append(out, e)
		}
	}
	return out
}

// prepare validates the keys and derives their hashes. A duplicate within
// the request is a *issuer.RedeemedError for the second one.
func (s *DB) prepare(rks []issuer.ReplayKey) ([]prepared, error) {
	seen := make(map[string]bool, len(rks))
	out := make([]prepared, len(rks))
	for i, rk := range rks {
		if rk.Attester == "" || rk.ID == "" {
			return nil, fmt.Errorf("boltstore: redeem: attestation %d: attester and id are required", i)
		}
		if strings.IndexByte(rk.Attester, 0) >= 0 {
			return nil, fmt.Errorf("boltstore: redeem: attestation %d: attester contains a NUL byte", i)
		}
		if rk.Secret != nil && len(rk.Secret) != 32 {
			return nil, fmt.Errorf("boltstore: redeem: attestation %d: secret is %d bytes, want 32", i, len(rk.Secret))
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
		epoch := s.epochOf(deadline)
		ek, err := s.epochKey(epoch)
		if err != nil {
			return nil, err
		}
		p := prepared{deadline: deadline, target: s.probeOf(epoch, ek, rk)}
		now := s.clock.Now().Unix()
		for _, e := range s.liveEpochs(now) {
			if e == epoch {
				p.probes = append(p.probes, p.target)
				continue
			}
			k, err := s.epochKey(e)
			if err != nil {
				return nil, err
			}
			p.probes = append(p.probes, s.probeOf(e, k, rk))
		}
		out[i] = p
	}
	return out, nil
}

func (s *DB) probeOf(epoch int64, key []byte, rk issuer.ReplayKey) probe {
	p := probe{epoch: epoch, hash: recordHash(key, rk.Attester, rk.ID)}
	if rk.Secret != nil {
		p.secret = secretHash(key, rk.Attester, rk.ID, rk.Secret)
	}
	return p
}

func idKey(epoch int64, hash []byte) []byte { return deadlineKey(epoch, hash) }

// live finds the live record of one key (deadline after now), if any.
func live(ids *bolt.Bucket, p prepared, now int64) (probe, record, bool, error) {
	for _, pr := range p.probes {
		v := ids.Get(idKey(pr.epoch, pr.hash))
		if v == nil {
			continue
		}
		r, err := decodeRecord(v)
		if err != nil {
			return probe{}, record{}, false, err
		}
		if r.deadline > now {
			return pr, r, true, nil
		}
	}
	return probe{}, record{}, false, nil
}

// Redeemed returns *issuer.RedeemedError if any attestation has a live
// record that this request may not retry. It only reads (no commit, no
// fsync): the issuer's cheap refusal of a replay before it spends
// signatures. Redeem stays the authority.
func (s *DB) Redeemed(ctx context.Context, rks []issuer.ReplayKey, maxRetries int) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	ps, err := s.prepare(rks)
	if err != nil {
		return err
	}
	now := s.clock.Now().Unix()
	return s.view(ctx, func(tx *bolt.Tx) error {
		ids := tx.Bucket(replayIDBucket)
		for i, p := range ps {
			pr, r, ok, err := live(ids, p, now)
			if err != nil {
				return err
			}
			if ok && !r.retry(pr.secret, maxRetries) {
				return &issuer.RedeemedError{Index: i}
			}
		}
		return nil
	})
}

// Redeem records every replay key and counts the colour in one durable
// transaction, or returns *issuer.RedeemedError and writes nothing.
func (s *DB) Redeem(ctx context.Context, r issuer.Redemption) (issuer.RedeemResult, error) {
	var res issuer.RedeemResult
	if err := ctx.Err(); err != nil {
		return res, err
	}
	if len(r.Replay) == 0 {
		return res, errors.New("boltstore: redeem: no attestations to record")
	}
	if r.MaxRetries < 0 {
		return res, fmt.Errorf("boltstore: redeem: MaxRetries must not be negative, got %d", r.MaxRetries)
	}
	if !r.Colour.Valid() {
		return res, fmt.Errorf("boltstore: redeem: colour %d is not a known colour", int(r.Colour))
	}
	day := r.Day.Unix()
	if r.Day.IsZero() || r.Day.Nanosecond() != 0 || day%86400 != 0 {
		return res, fmt.Errorf("boltstore: redeem: day must be a UTC midnight, got %s", r.Day.UTC().Format("2006-01-02T15:04:05.999999999Z"))
	}
	countDeadline, err := deadlineSeconds(r.CountDeadline, "aggregate count")
	if err != nil {
		return res, err
	}
	ps, err := s.prepare(r.Replay)
	if err != nil {
		return res, err
	}
	hour := s.writeHour()
	now := s.clock.Now().Unix()
	ck := countKey(countDeadline, day, byte(r.Colour))

	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.db == nil {
		return res, ErrClosed
	}
	redeemed := -1
	err = s.db.Batch(func(tx *bolt.Tx) error {
		// Batch may run this more than once: start afresh each time.
		redeemed = -1
		res = issuer.RedeemResult{Retried: make([]bool, len(ps)), Deadlines: make([]time.Time, len(ps))}
		ids := tx.Bucket(replayIDBucket)
		idx := tx.Bucket([]byte(issuer.CategoryReplay))
		type write struct {
			key []byte
			rec record
		}
		writes := make([]write, len(ps))
		for i, p := range ps {
			pr, rec, ok, err := live(ids, p, now)
			if err != nil {
				return err
			}
			if ok {
				if !rec.retry(pr.secret, r.MaxRetries) {
					redeemed = i
					return nil // write nothing; not an error, so the batch's others commit
				}
				rec.retries++
				res.Retried[i] = true
				res.Deadlines[i] = time.Unix(rec.deadline, 0).UTC()
				writes[i] = write{idKey(pr.epoch, pr.hash), rec}
				continue
			}
			rec = record{hour: hour, deadline: p.deadline}
			if p.target.secret != nil {
				rec.hasSecret = true
				copy(rec.secret[:], p.target.secret)
			}
			res.Deadlines[i] = time.Unix(p.deadline, 0).UTC()
			writes[i] = write{idKey(p.target.epoch, p.target.hash), rec}
		}
		for i, w := range writes {
			if !res.Retried[i] {
				// An expired record of the same key in the same epoch is
				// replaced: drop its deadline index entry first.
				if old := ids.Get(w.key); old != nil {
					o, err := decodeRecord(old)
					if err != nil {
						return err
					}
					if err := idx.Delete(deadlineKey(o.deadline, w.key)); err != nil {
						return err
					}
				}
				if err := idx.Put(deadlineKey(w.rec.deadline, w.key), u64(uint64(hour))); err != nil {
					return err
				}
			}
			if err := ids.Put(w.key, w.rec.encode()); err != nil {
				return err
			}
		}
		cb := tx.Bucket([]byte(issuer.CategoryCounts))
		v := make([]byte, 16)
		binary.BigEndian.PutUint64(v, uint64(hour))
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
		return issuer.RedeemResult{}, fmt.Errorf("boltstore: redeem: %w", err)
	}
	if redeemed >= 0 {
		return issuer.RedeemResult{}, &issuer.RedeemedError{Index: redeemed}
	}
	return res, nil
}
