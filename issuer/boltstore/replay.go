package boltstore

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/maphash"
	"io"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/healthcode/healthcode/issuer"
)

const (
	epochKeySize   = 32
	replayHashSize = 16
	secretSize     = 32
	stripeCount    = 256
)

// epochOf returns the end of the epoch a deadline (unix seconds) falls in:
// the deadline rounded up to a multiple of the epoch length.
func (s *DB) epochOf(deadline int64) int64 {
	return (deadline + s.epoch - 1) / s.epoch * s.epoch
}

// recordHash is HMAC-SHA256(epochKey, attester || 0 || id)[:16]: the
// attester and id cannot be read back, and once the epoch key is gone not
// even a guess can be checked against it. Release 0 keyed its records by
// deadline || recordHash with the same construction.
func recordHash(epochKey []byte, attester, id string) []byte {
	return newRecordHasher(epochKey).hash(attester, id)
}

// recordHasher makes many record hashes under one key: the keyed state is
// set up once (a lookup probes every partition for every attestation).
type recordHasher struct{ m hash.Hash }

func newRecordHasher(epochKey []byte) recordHasher {
	return recordHasher{hmac.New(sha256.New, epochKey)}
}

func (h recordHasher) hash(attester, id string) []byte {
	h.m.Reset()
	io.WriteString(h.m, attester)
	h.m.Write([]byte{0})
	io.WriteString(h.m, id)
	return h.m.Sum(make([]byte, 0, sha256.Size))[:replayHashSize]
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

// intentBucket (main file) holds, while a request that spans several
// partitions is being written, the records it adds: recovery at Open
// deletes them if the process died before the last partition was written
// and the intent cleared. A request in one partition needs no intent: one
// bbolt transaction is all or none by itself.
var intentBucket = []byte("replay_intents")

// checked is one replay key, validated.
type checked struct {
	rk       issuer.ReplayKey
	deadline int64
	end      int64 // partition of a new record
}

func (s *DB) check(rks []issuer.ReplayKey, now int64) ([]checked, error) {
	seen := make(map[string]bool, len(rks))
	out := make([]checked, len(rks))
	for i, rk := range rks {
		if rk.Attester == "" || rk.ID == "" {
			return nil, fmt.Errorf("boltstore: redeem: attestation %d: attester and id are required", i)
		}
		if strings.IndexByte(rk.Attester, 0) >= 0 {
			return nil, fmt.Errorf("boltstore: redeem: attestation %d: attester contains a NUL byte", i)
		}
		if rk.Secret != nil && len(rk.Secret) != secretSize {
			return nil, fmt.Errorf("boltstore: redeem: attestation %d: secret is %d bytes, want %d", i, len(rk.Secret), secretSize)
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
		if deadline <= now {
			return nil, fmt.Errorf("boltstore: redeem: attestation %d: deadline %s is not after now (%s)", i,
				time.Unix(deadline, 0).UTC().Format(time.RFC3339), time.Unix(now, 0).UTC().Format(time.RFC3339))
		}
		out[i] = checked{rk: rk, deadline: deadline, end: s.epochOf(deadline)}
	}
	return out, nil
}

// hit is the live record of one key, if it has one.
type hit struct {
	p    *partition
	hash []byte
	rec  record
	ok   bool
}

// find probes every given partition, each with its own key, for each
// key's live record (deadline after now). It also returns each key's hash
// in the partition of its deadline (nil if that one was not given). The
// caller holds the partitions.
func find(parts []*partition, keys []checked, now int64) ([]hit, [][]byte, error) {
	hits := make([]hit, len(keys))
	targets := make([][]byte, len(keys))
	for _, p := range parts {
		rh := newRecordHasher(p.key)
		err := p.db.View(func(tx *bolt.Tx) error {
			b := tx.Bucket([]byte(issuer.CategoryReplay))
			for i, k := range keys {
				if hits[i].ok && k.end != p.end {
					continue
				}
				h := rh.hash(k.rk.Attester, k.rk.ID)
				if k.end == p.end {
					targets[i] = h
				}
				if hits[i].ok {
					continue
				}
				v := b.Get(h)
				if v == nil {
					continue
				}
				r, err := decodeRecord(v)
				if err != nil {
					return err
				}
				if r.deadline > now {
					hits[i] = hit{p: p, hash: h, rec: r, ok: true}
				}
			}
			return nil
		})
		if err != nil {
			return nil, nil, fmt.Errorf("boltstore: replay partition %d: %w", p.end, err)
		}
	}
	return hits, targets, nil
}

// mayRetry says whether key k may retry its live record h.
func mayRetry(h hit, k checked, maxRetries int) bool {
	var sh []byte
	if k.rk.Secret != nil {
		sh = secretHash(h.p.key, k.rk.Attester, k.rk.ID, k.rk.Secret)
	}
	return h.rec.retry(sh, maxRetries)
}

// acquireLive holds every partition whose end is after now (the only ones
// that can hold a live record); release with releaseAll.
func (s *DB) acquireLive(now int64) []*partition {
	var held []*partition
	for _, p := range s.partitions() {
		if p.end > now && p.acquire() {
			held = append(held, p)
		}
	}
	return held
}

func releaseAll(parts []*partition) {
	for _, p := range parts {
		p.release()
	}
}

// Redeemed returns *issuer.RedeemedError if any attestation has a live
// record that this request may not retry. It only reads (no commit, no
// fsync): the issuer's cheap refusal of a replay before it spends
// signatures. Redeem stays the authority.
func (s *DB) Redeemed(ctx context.Context, rks []issuer.ReplayKey, maxRetries int) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.closed() {
		return ErrClosed
	}
	now := s.clock.Now().Unix()
	keys, err := s.check(rks, now)
	if err != nil {
		return err
	}
	parts := s.acquireLive(now)
	defer releaseAll(parts)
	hits, _, err := find(parts, keys, now)
	if err != nil {
		return err
	}
	for i, h := range hits {
		if h.ok && !mayRetry(h, keys[i], maxRetries) {
			return &issuer.RedeemedError{Index: i}
		}
	}
	return nil
}

// lockStripes serialises check-and-set per attestation within the process
// (the data directory's lock keeps other processes out): requests for
// different attestations rarely share a stripe, so they run and commit
// together.
func (s *DB) lockStripes(keys []checked) func() {
	idx := make([]int, 0, len(keys))
	for _, k := range keys {
		var h maphash.Hash
		h.SetSeed(s.stripeSeed)
		h.WriteString(k.rk.Attester)
		h.WriteByte(0)
		h.WriteString(k.rk.ID)
		idx = append(idx, int(h.Sum64()%stripeCount))
	}
	slices.Sort(idx)
	idx = slices.Compact(idx)
	for _, i := range idx {
		s.stripes[i].Lock()
	}
	return func() {
		for _, i := range idx {
			s.stripes[i].Unlock()
		}
	}
}

// write is one record a request puts into a partition.
type write struct {
	hash  []byte
	rec   record
	added bool // a new record (not a retry): rolled back by recovery
}

// Redeem records every replay key and counts the colour, all or none and
// durably, or returns *issuer.RedeemedError and writes nothing.
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
	now := s.clock.Now().Unix()
	keys, err := s.check(r.Replay, now)
	if err != nil {
		return res, err
	}
	// Partitions for new records exist before any transaction, so a batch
	// retry never creates a file.
	for _, k := range keys {
		if _, err := s.partitionFor(k.end, nil); err != nil {
			return res, err
		}
	}
	unlock := s.lockStripes(keys)
	defer unlock()
	parts := s.acquireLive(now)
	defer releaseAll(parts)
	hits, targets, err := find(parts, keys, now)
	if err != nil {
		return res, err
	}
	byEnd := make(map[int64]*partition, len(parts))
	for _, p := range parts {
		byEnd[p.end] = p
	}
	hour := s.writeHour()
	res = issuer.RedeemResult{Retried: make([]bool, len(keys)), Deadlines: make([]time.Time, len(keys))}
	writes := map[*partition][]write{}
	for i, k := range keys {
		if h := hits[i]; h.ok {
			if !mayRetry(h, k, r.MaxRetries) {
				return issuer.RedeemResult{}, &issuer.RedeemedError{Index: i}
			}
			h.rec.retries++
			res.Retried[i] = true
			res.Deadlines[i] = time.Unix(h.rec.deadline, 0).UTC()
			writes[h.p] = append(writes[h.p], write{hash: h.hash, rec: h.rec})
			continue
		}
		p := byEnd[k.end]
		if p == nil {
			// Dropped between its creation and now: only a sweep run with
			// a time ahead of the store's clock can do that.
			return issuer.RedeemResult{}, fmt.Errorf("boltstore: redeem: attestation %d: replay partition %d was dropped", i, k.end)
		}
		rec := record{hour: hour, deadline: k.deadline}
		if k.rk.Secret != nil {
			rec.hasSecret = true
			copy(rec.secret[:], secretHash(p.key, k.rk.Attester, k.rk.ID, k.rk.Secret))
		}
		res.Deadlines[i] = time.Unix(k.deadline, 0).UTC()
		h := targets[i]
		if h == nil {
			h = recordHash(p.key, k.rk.Attester, k.rk.ID)
		}
		writes[p] = append(writes[p], write{hash: h, rec: rec, added: true})
	}
	ck := countKey(countDeadline, day, byte(r.Colour))
	if len(writes) == 1 {
		// One partition: its commit and the count's overlap. A crash
		// between them can only lose or add one aggregate count.
		counted := make(chan error, 1)
		go func() { counted <- s.count(ck, hour, nil) }()
		var werr error
		for p, ws := range writes {
			werr = writePartition(p, ws)
		}
		if err := errors.Join(werr, <-counted); err != nil {
			return issuer.RedeemResult{}, fmt.Errorf("boltstore: redeem: %w", err)
		}
		return res, nil
	}
	// Several partitions: the intent (with the count) is durable before
	// any of them is written, and cleared after the last.
	ordered := make([]*partition, 0, len(writes))
	for p := range writes {
		ordered = append(ordered, p)
	}
	slices.SortFunc(ordered, func(a, b *partition) int { return int(a.end - b.end) })
	var intent []byte
	for _, p := range ordered {
		for _, w := range writes[p] {
			if w.added {
				intent = binary.BigEndian.AppendUint64(intent, uint64(p.end))
				intent = append(intent, w.hash...)
			}
		}
	}
	seq := make(chan uint64, 1)
	if err := s.count(ck, hour, func(tx *bolt.Tx) error {
		b := tx.Bucket(intentBucket)
		n, err := b.NextSequence()
		if err != nil {
			return err
		}
		select {
		case <-seq: // a batch retry: the earlier run's number is void
		default:
		}
		seq <- n
		return b.Put(u64(n), intent)
	}); err != nil {
		return issuer.RedeemResult{}, fmt.Errorf("boltstore: redeem: %w", err)
	}
	id := <-seq
	hook("intent-written")
	for _, p := range ordered {
		if err := writePartition(p, writes[p]); err != nil {
			return issuer.RedeemResult{}, fmt.Errorf("boltstore: redeem: %w", err)
		}
		hook("partition-written")
	}
	if err := s.clearIntent(id); err != nil {
		return issuer.RedeemResult{}, fmt.Errorf("boltstore: redeem: %w", err)
	}
	return res, nil
}

// writePartition puts a request's records into one partition in one
// (batched) transaction, keeping the partition's inventory in step.
func writePartition(p *partition, ws []write) error {
	if len(ws) > 1 {
		// In key order bbolt touches each page once (large fills).
		slices.SortFunc(ws, func(a, b write) int { return bytes.Compare(a.hash, b.hash) })
	}
	err := p.db.Batch(func(tx *bolt.Tx) error {
		for _, w := range ws {
			if err := put(tx, issuer.CategoryReplay, w.hash, w.rec.encode()); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("replay partition %d: %w", p.end, err)
	}
	return nil
}

// count adds one to an aggregate count in the main file, with more work in
// the same transaction if given.
func (s *DB) count(ck []byte, hour int64, more func(*bolt.Tx) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.db == nil {
		return ErrClosed
	}
	return s.db.Batch(func(tx *bolt.Tx) error {
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
		if err := put(tx, issuer.CategoryCounts, ck, v); err != nil {
			return err
		}
		if more != nil {
			return more(tx)
		}
		return nil
	})
}

func (s *DB) clearIntent(id uint64) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.db == nil {
		return ErrClosed
	}
	return s.db.Batch(func(tx *bolt.Tx) error {
		if err := tx.Bucket(intentBucket).Delete(u64(id)); err != nil {
			return err
		}
		// The intent named record hashes: the next sweep compacts them out
		// of the main file's freed pages, before their partition goes.
		return s.markCompaction(tx)
	})
}

// recoverIntents undoes every request that a crash left between its
// intent and its last partition: the records it added are deleted (their
// requests were never answered), then the intent. Retries it counted up
// stay counted: that only spends a retry.
func (s *DB) recoverIntents() (int, error) {
	type pending struct {
		id      []byte
		entries []byte
	}
	var ps []pending
	if err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(intentBucket).ForEach(func(k, v []byte) error {
			ps = append(ps, pending{slices.Clone(k), slices.Clone(v)})
			return nil
		})
	}); err != nil {
		return 0, err
	}
	const entrySize = 8 + replayHashSize
	for _, pd := range ps {
		if len(pd.entries)%entrySize != 0 {
			return 0, errors.New("boltstore: stored replay intent is malformed")
		}
		byEnd := map[int64][][]byte{}
		for e := pd.entries; len(e) > 0; e = e[entrySize:] {
			end := int64(binary.BigEndian.Uint64(e))
			byEnd[end] = append(byEnd[end], e[8:entrySize])
		}
		for end, hashes := range byEnd {
			p := s.parts[end]
			if p == nil {
				continue // dropped since: nothing of it is left
			}
			if err := p.db.Update(func(tx *bolt.Tx) error {
				for _, h := range hashes {
					if _, err := del(tx, issuer.CategoryReplay, h); err != nil {
						return err
					}
				}
				return nil
			}); err != nil {
				return 0, fmt.Errorf("boltstore: recover replay partition %d: %w", end, err)
			}
		}
		if err := s.db.Update(func(tx *bolt.Tx) error {
			if err := tx.Bucket(intentBucket).Delete(pd.id); err != nil {
				return err
			}
			return s.markCompaction(tx)
		}); err != nil {
			return 0, err
		}
	}
	return len(ps), nil
}
