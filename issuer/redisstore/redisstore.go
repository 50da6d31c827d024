// Package redisstore is issuer.Store on a Redis Cluster (DESIGN §8): the
// replay set of stateless issuer replicas. Each replay record is one hash
// key written "if absent" (or if its deadline has passed) with an absolute
// expiry (PEXPIREAT) at its deadline, so Redis deletes it by itself.
//
// Epochs: every record of an (attester, id) pair is filed under the
// epoch (Options.Epoch, 24h by default) that ends at or after the pair's
// ReplayKey.Accepted — the last instant it can redeem, the same for all its
// renewal periods. The record's key is prefix "r:" end ":" and
// HMAC-SHA256, under that epoch's key (Options.EpochKeys: etcd, shared by
// every replica), of the pair, never the ids; the value holds the
// deadline, the retry count, a keyed hash of the wallet's secret and the
// marker of the request that last wrote it — nothing from which an
// attestation can be read back without the epoch key. A lookup reads
// exactly one key (no probing of several epochs), and two replicas racing
// on one attestation contend on one key. The epoch key outlives every
// record of its epoch (deadline <= Accepted <= end) and is deleted from
// etcd once its end has passed: from then on any surviving copy of a
// record (a stale AOF, a backup) is unlinkable to its attestation. Keys
// are cached in memory (immutable) and forgotten once their end has
// passed.
//
// All or none across shards: the keys of one request hash to different
// slots, so no multi-key command or MULTI can cover them. Redeem writes
// them one by one in key order, each by a script on its own slot, every
// write tagged with a random per-request marker; on a refusal (or an
// error) it undoes only the writes that still carry its marker. A process
// that dies between two writes leaves records that refuse a replay of
// those attestations (safe: never a double redemption); the owner's retry
// with the same secret reclaims them as a retry. Taking keys in one global
// order means two requests racing for the same keys cannot both lose.
//
// Durability is the operator's: AOF with appendfsync always on every node,
// and Options.WaitReplicas to have each write acknowledged by a replica
// (WAIT on the key's own master, in the same pipeline as the write) before
// Redeem returns. Replication stays asynchronous: a master that fails
// after its write and before any replica has it loses that write, and
// WAIT narrows the window without closing it. With one replica per
// master, a promoted replica has none of its own until the old master
// rejoins: WAIT then answers 0 and Redeem on that shard fails (safe, but
// an outage of that shard's slots); run two replicas per master for
// WaitReplicas 1 to survive a failover (TestMasterKilledUnderLoad).
//
// Cost of one redemption of n attestations: the issuer's read-only
// pre-check (Redeemed: one pipeline, split by go-redis into one per
// master, sent in parallel), then n record writes one after another (a
// script, with WAIT in the same pipeline when WaitReplicas is set), then
// one MULTI for the day's count: n+2 sequential round trips, 3 for one
// attestation. Epoch keys cost nothing in steady state (one EpochKeys call
// per epoch and process). Measured with BenchmarkRedeem (go test -run X
// -bench BenchmarkRedeem -benchtime 3000x ./issuer/redisstore/: one
// attestation with a secret, 16 at a time, a 3+3 cluster on the same
// 2-core machine shared with other work, load average 9 to 13): 3.03
// round trips per redemption (the rest: layout reloads); 0.17 to 0.46 ms
// per redemption (2,200 to 5,900/s) without WAIT and 0.21 to 0.68 ms
// (1,500 to 4,700/s) with WaitReplicas 1, over five runs — the spread is
// the machine's other load, not the store.
//
// Deletion (invariant 5). Redis's own expiry is not enough: its active
// expiry was seen to delete a key 262 s after its deadline, and until a
// key is deleted every AOF rewrite and snapshot copies it; a deleted key
// stays in the AOF until the next rewrite, and in an RDB file until the
// next snapshot. Sweep, run on one replica at a time, therefore:
//   - deletes, on every master (SCAN MATCH prefix*: SCAN deletes the
//     expired keys it meets), the records of an ended epoch outright and
//     the others whose stored deadline has passed by the store's clock
//     (Redis goes by its own), and the aggregate counts past their
//     deadline (from the index of days);
//   - waits until every online replica has applied those deletions;
//   - rewrites the AOF of every node, masters and replicas, and waits
//     until each rewrite is done (Redis 7 then unlinks the old base and
//     incremental files);
//   - then takes a fresh RDB snapshot on every node (BGSAVE). Timed
//     snapshots are off (save ""): the AOF is the persistence. But a
//     replica keeps the RDB file of a full resynchronisation (with
//     repl-diskless-load disabled, the default), so an RDB file may exist
//     on any node; the snapshot replaces it with what the node holds now.
//     Its cost is a second fork and write of the live data per sweep.
//
// A record is thus gone from every running node's files at the first
// sweep after its deadline (TestForensicAfterSweep searches every node's
// directory byte by byte). A node that is down during a sweep keeps its
// stale files until it rejoins and the next sweep runs (its copies are
// unlinkable anyway once their epoch key is gone): the sweep does the
// rest and fails naming the nodes the cluster deems failing. A replica
// whose link is down is not waited for; it gets the deletions when it
// resynchronises.
//
// Sweep's cost, measured on 3+3 nodes sharing one 2-core machine at load
// average 10: with a few dozen records, 1.2 s (six rewrites and six
// snapshots); with 100,000 records, half of them due (BenchmarkSweep: go
// test -run X -bench BenchmarkSweep -benchtime 2x ./issuer/redisstore/),
// 3.3 s: about 45,000 records scanned per second over the three masters
// (one script per SCAN batch of 1,000; a script per record did 26,000),
// plus about 0.9 s to rewrite and snapshot. At 600 million records that
// is hours on such a machine: a sweep's scan is proportional to the
// records held, so it needs dedicated cores per shard, more shards, or a
// longer sweep interval. The rewrite and the snapshot each write a
// node's whole dataset, as any AOF rewrite does.
package redisstore

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/healthcode/healthcode/issuer"
	"github.com/healthcode/healthcode/policy"
)

const (
	epochKeySize = 32
	secretSize   = 32
	hashSize     = 16
)

// EpochKeys hands out the epoch keys that key record names and secret
// hashes: the 32-byte key of the epoch ending at end, the same for every
// replica of one deployment (created on first use), and gone once end has
// passed. Production uses issuer/etcdstore's, whose sweep deletes a key
// once its end has passed: every record filed under that epoch becomes
// unlinkable to its attestation, wherever a copy of it survives.
type EpochKeys interface {
	EpochKey(ctx context.Context, end time.Time) ([]byte, error)
}

// Options configures a Store.
type Options struct {
	// EpochKeys (required) gives the key of each epoch.
	EpochKeys EpochKeys
	// Epoch is the length of an epoch, in whole hours (default 24h).
	// Every record of a pair is filed under the epoch ending at or after
	// its ReplayKey.Accepted, so that epoch's key outlives all of them.
	Epoch time.Duration
	// Prefix namespaces this store's keys (no '{' or '}': keys must
	// spread over the slots). Every replica of one deployment must use
	// the same Prefix and Epoch (else they would file one attestation
	// under two names), and one prefix must not begin another store's.
	Prefix string
	// Clock is the store's now for "live" and "expired" (default
	// issuer.SystemClock). Redis's own expiry uses its wall clock; a record
	// whose deadline has passed by Clock counts as absent even while Redis
	// still holds it.
	Clock issuer.Clock
	// WaitReplicas, if positive, is how many replicas must acknowledge
	// each record (WAIT) before Redeem returns; WaitTimeout bounds it
	// (default 1s).
	WaitReplicas int
	WaitTimeout  time.Duration
	// MaxAttempts bounds how often one script is sent on a cluster error
	// (a failover, a moved slot), reloading the cluster's layout between
	// tries (default 4). Re-sending is safe: the marker makes each write
	// idempotent.
	MaxAttempts int
	// PersistTimeout bounds how long Sweep waits for the replicas to
	// apply its deletions, and then for every node's AOF rewrite and
	// snapshot (default 30m).
	PersistTimeout time.Duration
}

// Store is the Redis Cluster issuer.Store.
type Store struct {
	c    *redis.ClusterClient
	opts Options

	mu     sync.Mutex
	epochs map[int64][]byte // epoch end (unix seconds) → its key; immutable, dropped once end passed
}

var (
	_ issuer.Store        = (*Store)(nil)
	_ issuer.Housekeeping = (*Store)(nil) // for the replay records and aggregate counts
)

// New returns a Store on c; c stays the caller's to close.
func New(c *redis.ClusterClient, opts Options) (*Store, error) {
	if c == nil {
		return nil, errors.New("redisstore: a cluster client is required")
	}
	if opts.EpochKeys == nil {
		return nil, errors.New("redisstore: EpochKeys is required")
	}
	if opts.Epoch == 0 {
		opts.Epoch = 24 * time.Hour
	}
	if opts.Epoch < 0 || opts.Epoch%time.Hour != 0 {
		return nil, fmt.Errorf("redisstore: Epoch must be a positive whole number of hours, got %s", opts.Epoch)
	}
	for _, r := range opts.Prefix {
		if r == '{' || r == '}' {
			return nil, fmt.Errorf("redisstore: Prefix must not contain '{' or '}' (a hash tag would put every record on one slot), got %q", opts.Prefix)
		}
	}
	if opts.WaitReplicas < 0 {
		return nil, fmt.Errorf("redisstore: WaitReplicas must not be negative, got %d", opts.WaitReplicas)
	}
	if opts.WaitTimeout < 0 || opts.MaxAttempts < 0 || opts.PersistTimeout < 0 {
		return nil, errors.New("redisstore: WaitTimeout, MaxAttempts and PersistTimeout must not be negative")
	}
	if opts.WaitTimeout == 0 {
		opts.WaitTimeout = time.Second
	}
	// New has filled in go-redis's defaults (5s for a cluster client);
	// a negative or zero timeout means none.
	if rt := c.Options().ReadTimeout; opts.WaitReplicas > 0 && rt > 0 && opts.WaitTimeout >= rt {
		// The client would give up reading WAIT's answer before WAIT does.
		return nil, fmt.Errorf("redisstore: WaitTimeout (%s) must be shorter than the client's ReadTimeout (%s)", opts.WaitTimeout, rt)
	}
	if opts.MaxAttempts == 0 {
		opts.MaxAttempts = 4
	}
	if opts.PersistTimeout == 0 {
		opts.PersistTimeout = 30 * time.Minute
	}
	if opts.Clock == nil {
		opts.Clock = issuer.SystemClock{}
	}
	return &Store{c: c, opts: opts, epochs: map[int64][]byte{}}, nil
}

// epochEnd is the end of the epoch a pair's records are filed under: the
// first epoch boundary at or after Accepted (Deadline if unknown).
func (s *Store) epochEnd(rk issuer.ReplayKey) time.Time {
	t := rk.Accepted
	if t.IsZero() {
		t = rk.Deadline
	}
	end := t.Truncate(s.opts.Epoch)
	if end.Before(t) {
		end = end.Add(s.opts.Epoch)
	}
	return end.UTC()
}

// epochKey returns the key of the epoch ending at end, from memory or
// from EpochKeys. Keys of epochs that have ended by now are dropped.
func (s *Store) epochKey(ctx context.Context, end, now time.Time) ([]byte, error) {
	s.mu.Lock()
	k, ok := s.epochs[end.Unix()]
	s.mu.Unlock()
	if ok {
		return k, nil
	}
	k, err := s.opts.EpochKeys.EpochKey(ctx, end)
	if err != nil {
		return nil, fmt.Errorf("epoch key: %w", err)
	}
	if len(k) != epochKeySize {
		return nil, fmt.Errorf("epoch key for %s is %d bytes, want %d", end.Format(time.RFC3339), len(k), epochKeySize)
	}
	k = slices.Clone(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.forgetLocked(now)
	if old, ok := s.epochs[end.Unix()]; ok {
		return old, nil
	}
	s.epochs[end.Unix()] = k
	return k, nil
}

// forget drops from memory the keys of epochs that have ended by now.
func (s *Store) forget(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.forgetLocked(now)
}

func (s *Store) forgetLocked(now time.Time) {
	for end := range s.epochs {
		if end <= now.Unix() {
			// Not zeroed: a request that read it a moment ago may still
			// be hashing with it.
			delete(s.epochs, end)
		}
	}
}

// pair writes attester and id length-prefixed, so no two pairs share an
// encoding.
func pair(m interface{ Write([]byte) (int, error) }, attester, id string) {
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(attester)))
	m.Write(n[:])
	m.Write([]byte(attester))
	m.Write([]byte(id))
}

// recordKey names the record of (attester, id) in the epoch ending at
// end: the epoch's end, then HMAC(epoch key, pair). One name per pair, so
// a lookup reads one key and two writers of one pair meet on one key.
func (s *Store) recordKey(epochKey []byte, end time.Time, attester, id string) string {
	m := hmac.New(sha256.New, epochKey)
	m.Write([]byte("replay\x00"))
	pair(m, attester, id)
	return s.opts.Prefix + "r:" + strconv.FormatInt(end.Unix(), 10) + ":" + hex.EncodeToString(m.Sum(nil)[:hashSize])
}

// secretHash is the keyed hash of a wallet's secret, bound to its
// attestation; "" for no secret.
func (s *Store) secretHash(epochKey []byte, attester, id string, secret []byte) string {
	if secret == nil {
		return ""
	}
	m := hmac.New(sha256.New, epochKey)
	m.Write([]byte("secret\x00"))
	pair(m, attester, id)
	m.Write(secret)
	return string(m.Sum(nil)[:hashSize])
}

// Aggregate counts: one hash per day, and an index of the days held (a
// sorted set: member the day, score its deadline in unix ms) that Sweep
// and Inventory read instead of scanning the keyspace. The hash tag puts
// them all on one slot, so one MULTI updates a day and the index; a day's
// count is one key on one slot anyway.
func (s *Store) countKey(day time.Time) string {
	return s.opts.Prefix + "{c}:" + strconv.FormatInt(day.Unix(), 10)
}

func (s *Store) countIndex() string { return s.opts.Prefix + "{c}:days" }

// Record fields: d deadline (unix ms), r retries, s secret hash ("" for
// none), m marker of the last writing request, mk what it did (new or
// retry), pm/pmk the same of the writer before it (to undo a retry).
const (
	kindRefused = 0
	kindRetry   = 1
	kindNew     = 3
)

// redeemScript: KEYS[1] record; ARGV now_ms, deadline_ms, secret hash,
// max retries, marker. Returns {kind, deadline_ms}.
const redeemSource = `
local v = redis.call('HMGET', KEYS[1], 'd', 'r', 's', 'm', 'mk')
if v[1] and tonumber(v[1]) > tonumber(ARGV[1]) then
  if v[4] == ARGV[5] then
    return {tonumber(v[5]), v[1]}
  end
  if ARGV[3] ~= '' and v[3] == ARGV[3] and tonumber(v[2]) < tonumber(ARGV[4]) then
    redis.call('HINCRBY', KEYS[1], 'r', 1)
    redis.call('HSET', KEYS[1], 'm', ARGV[5], 'mk', '1', 'pm', v[4], 'pmk', v[5])
    return {1, v[1]}
  end
  return {0, v[1]}
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'd', ARGV[2], 'r', '0', 's', ARGV[3], 'm', ARGV[5], 'mk', '3')
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
return {3, ARGV[2]}
`

var redeemScript = redis.NewScript(redeemSource)

// undoScript: KEYS[1] record; ARGV marker. Undoes this request's write if
// it is still the last one.
var undoScript = redis.NewScript(`
local v = redis.call('HMGET', KEYS[1], 'm', 'mk', 'pm', 'pmk')
if v[1] ~= ARGV[1] then
  return 0
end
if v[2] == '3' then
  redis.call('DEL', KEYS[1])
  return 1
end
redis.call('HINCRBY', KEYS[1], 'r', -1)
redis.call('HSET', KEYS[1], 'm', v[3] or '', 'mk', v[4] or '')
return 1
`)

// checked is one validated replay key.
type checked struct {
	index      int // in the request
	key        string
	secretHash string
	deadlineMs int64
}

func (s *Store) check(ctx context.Context, rks []issuer.ReplayKey, now time.Time, op string) ([]checked, error) {
	seen := make(map[string]bool, len(rks))
	out := make([]checked, len(rks))
	for i, rk := range rks {
		if rk.Attester == "" || rk.ID == "" {
			return nil, fmt.Errorf("redisstore: %s: attestation %d: attester and id are required", op, i)
		}
		if rk.Secret != nil && len(rk.Secret) != secretSize {
			return nil, fmt.Errorf("redisstore: %s: attestation %d: secret is %d bytes, want %d", op, i, len(rk.Secret), secretSize)
		}
		if !rk.Deadline.After(now) {
			return nil, fmt.Errorf("redisstore: %s: attestation %d: deadline %s is not after now (%s)", op, i,
				rk.Deadline.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
		}
		if !rk.Accepted.IsZero() && rk.Accepted.Before(rk.Deadline) {
			// Its epoch key could be gone while the record must still
			// refuse a replay.
			return nil, fmt.Errorf("redisstore: %s: attestation %d: accepted until %s, before its deadline %s", op, i,
				rk.Accepted.UTC().Format(time.RFC3339), rk.Deadline.UTC().Format(time.RFC3339))
		}
		end := s.epochEnd(rk)
		ek, err := s.epochKey(ctx, end, now)
		if err != nil {
			return nil, fmt.Errorf("redisstore: %s: attestation %d: %w", op, i, err)
		}
		key := s.recordKey(ek, end, rk.Attester, rk.ID)
		if seen[key] {
			return nil, &issuer.RedeemedError{Index: i}
		}
		seen[key] = true
		out[i] = checked{index: i, key: key, secretHash: s.secretHash(ek, rk.Attester, rk.ID, rk.Secret), deadlineMs: rk.Deadline.UnixMilli()}
	}
	return out, nil
}

// Redeemed returns *issuer.RedeemedError if any key has a live record this
// request may not retry. It only reads.
func (s *Store) Redeemed(ctx context.Context, rks []issuer.ReplayKey, maxRetries int) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	now := s.opts.Clock.Now()
	keys, err := s.check(ctx, rks, now, "redeemed")
	if err != nil {
		return err
	}
	i, err := s.firstRefused(ctx, keys, now, maxRetries)
	if err != nil {
		return fmt.Errorf("redisstore: redeemed: %w", err)
	}
	if i >= 0 {
		return &issuer.RedeemedError{Index: i}
	}
	return nil
}

// firstRefused reads keys (one pipeline) and returns the request index of
// the first whose live record refuses this request, or -1.
func (s *Store) firstRefused(ctx context.Context, keys []checked, now time.Time, maxRetries int) (int, error) {
	var cmds []*redis.SliceCmd
	err := s.retrying(ctx, func() error {
		cmds = cmds[:0]
		_, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, k := range keys {
				cmds = append(cmds, p.HMGet(ctx, k.key, "d", "r", "s"))
			}
			return nil
		})
		return err
	})
	if err != nil {
		return -1, err
	}
	for i, c := range cmds {
		v := c.Val()
		d, ok := v[0].(string)
		if !ok {
			continue // absent
		}
		deadline, err := strconv.ParseInt(d, 10, 64)
		if err != nil {
			return -1, fmt.Errorf("attestation %d: stored record is malformed", keys[i].index)
		}
		if deadline <= now.UnixMilli() {
			continue // expired: absent
		}
		retries, _ := strconv.Atoi(fmt.Sprint(v[1]))
		stored, _ := v[2].(string)
		if keys[i].secretHash == "" || !hmac.Equal([]byte(stored), []byte(keys[i].secretHash)) || retries >= maxRetries {
			return keys[i].index, nil
		}
	}
	return -1, nil
}

// Redeem records every key, all or none, or returns *issuer.RedeemedError
// and leaves nothing of this request behind.
func (s *Store) Redeem(ctx context.Context, r issuer.Redemption) (issuer.RedeemResult, error) {
	var res issuer.RedeemResult
	if err := ctx.Err(); err != nil {
		return res, err
	}
	if len(r.Replay) == 0 {
		return res, errors.New("redisstore: redeem: no attestations to record")
	}
	if r.MaxRetries < 0 {
		return res, fmt.Errorf("redisstore: redeem: MaxRetries must not be negative, got %d", r.MaxRetries)
	}
	if !r.Colour.Valid() {
		return res, fmt.Errorf("redisstore: redeem: colour %d is not a known colour", int(r.Colour))
	}
	if r.Day.IsZero() || r.Day.Nanosecond() != 0 || r.Day.Unix()%86400 != 0 {
		return res, fmt.Errorf("redisstore: redeem: day must be a UTC midnight, got %s", r.Day.UTC().Format("2006-01-02T15:04:05.999999999Z"))
	}
	now := s.opts.Clock.Now()
	if !r.CountDeadline.After(now) {
		return res, fmt.Errorf("redisstore: redeem: aggregate count deadline %s is not after now", r.CountDeadline.UTC().Format(time.RFC3339))
	}
	keys, err := s.check(ctx, r.Replay, now, "redeem")
	if err != nil {
		return res, err
	}
	var m [16]byte
	if _, err := rand.Read(m[:]); err != nil {
		return res, fmt.Errorf("redisstore: redeem: marker: %w", err)
	}
	marker := hex.EncodeToString(m[:])

	// One global order (by record key): of two requests racing for the
	// same keys, the one that takes the first shared key goes on.
	order := slices.Clone(keys)
	slices.SortFunc(order, func(a, b checked) int {
		if a.key < b.key {
			return -1
		}
		if a.key > b.key {
			return 1
		}
		return 0
	})
	res = issuer.RedeemResult{Retried: make([]bool, len(keys)), Deadlines: make([]time.Time, len(keys))}
	var written []checked
	fail := func(err error) (issuer.RedeemResult, error) {
		if uerr := s.undo(written, marker); uerr != nil {
			err = errors.Join(err, uerr)
		}
		return issuer.RedeemResult{}, err
	}
	for _, k := range order {
		kind, deadlineMs, err := s.write(ctx, k, now, r.MaxRetries, marker)
		if err != nil {
			// The write may have happened: undo it too (a no-op if not).
			written = append(written, k)
			return fail(fmt.Errorf("redisstore: redeem: attestation %d: %w", k.index, err))
		}
		if kind == kindRefused {
			if uerr := s.undo(written, marker); uerr != nil {
				return issuer.RedeemResult{}, errors.Join(&issuer.RedeemedError{Index: k.index}, uerr)
			}
			return issuer.RedeemResult{}, s.refusal(ctx, keys, k.index, now, r.MaxRetries)
		}
		written = append(written, k)
		res.Retried[k.index] = kind == kindRetry
		res.Deadlines[k.index] = time.UnixMilli(deadlineMs).UTC()
	}
	if err := s.count(ctx, r); err != nil {
		return fail(fmt.Errorf("redisstore: redeem: aggregate count: %w", err))
	}
	return res, nil
}

// write runs the redeem script for one key; with WaitReplicas, on the
// key's own master together with WAIT.
func (s *Store) write(ctx context.Context, k checked, now time.Time, maxRetries int, marker string) (int64, int64, error) {
	args := []any{now.UnixMilli(), k.deadlineMs, k.secretHash, maxRetries, marker}
	var out []any
	err := s.retrying(ctx, func() error {
		var err error
		if s.opts.WaitReplicas == 0 {
			out, err = redeemScript.Run(ctx, s.c, []string{k.key}, args...).Slice()
			return err
		}
		// ClusterClient.Wait would go to any master; WAIT counts the
		// replicas of the connection's own master, so both go to the
		// key's master in one pipeline. That path does not follow MOVED:
		// retrying reloads the layout and asks MasterForKey again.
		master, err := s.c.MasterForKey(ctx, k.key)
		if err != nil {
			return err
		}
		// The script by its hash (its body is sent once per node, not
		// with every write).
		var ev *redis.Cmd
		var wait *redis.Cmd
		for try := 0; ; try++ {
			p := master.Pipeline()
			ev = redeemScript.EvalSha(ctx, p, []string{k.key}, args...)
			wait = p.Do(ctx, "WAIT", s.opts.WaitReplicas, s.opts.WaitTimeout.Milliseconds())
			_, err := p.Exec(ctx)
			if try == 0 && redis.HasErrorPrefix(ev.Err(), "NOSCRIPT") {
				if err := redeemScript.Load(ctx, master).Err(); err != nil {
					return err
				}
				continue
			}
			if err != nil {
				return err
			}
			break
		}
		if out, err = ev.Slice(); err != nil {
			return err
		}
		acked, err := wait.Int()
		if err != nil {
			return err
		}
		if acked < s.opts.WaitReplicas {
			return &notReplicatedError{acked: acked, want: s.opts.WaitReplicas, timeout: s.opts.WaitTimeout}
		}
		return nil
	})
	if err != nil {
		return 0, 0, err
	}
	if len(out) != 2 {
		return 0, 0, fmt.Errorf("redeem script answered %d values", len(out))
	}
	kind, ok := out[0].(int64)
	if !ok {
		return 0, 0, fmt.Errorf("redeem script answered kind %v", out[0])
	}
	d, err := strconv.ParseInt(fmt.Sprint(out[1]), 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("redeem script answered deadline %v", out[1])
	}
	return kind, d, nil
}

// refusal is the error for a request refused at request index i (keys
// are taken in key order), once its writes are undone: the first refused
// attestation in request order, as a store that checks in request order
// says. The keys before i are read again, only on a refusal.
func (s *Store) refusal(ctx context.Context, keys []checked, i int, now time.Time, maxRetries int) error {
	if i == 0 {
		return &issuer.RedeemedError{Index: 0}
	}
	if j, err := s.firstRefused(ctx, keys[:i], now, maxRetries); err == nil && j >= 0 {
		i = j
	}
	return &issuer.RedeemedError{Index: i}
}

type notReplicatedError struct {
	acked, want int
	timeout     time.Duration
}

func (e *notReplicatedError) Error() string {
	return fmt.Sprintf("written but acknowledged by %d of %d replicas within %s", e.acked, e.want, e.timeout)
}

// undo takes back this request's writes. It runs on its own bounded
// context: a request cancelled half way must still clean up.
func (s *Store) undo(written []checked, marker string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var errs []error
	for _, k := range written {
		err := s.retrying(ctx, func() error {
			return undoScript.Run(ctx, s.c, []string{k.key}, marker).Err()
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("redisstore: undo attestation %d: %w", k.index, err))
		}
	}
	return errors.Join(errs...)
}

// count adds one to the day's count of the colour, with the count's
// deadline as the hash's absolute expiry and its score in the index (one
// slot, one MULTI). Counts are not replicated with WAIT: an aggregate may
// lose one on a failover.
func (s *Store) count(ctx context.Context, r issuer.Redemption) error {
	key := s.countKey(r.Day)
	return s.retrying(ctx, func() error {
		_, err := s.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.HIncrBy(ctx, key, strconv.Itoa(int(r.Colour)), 1)
			p.PExpireAt(ctx, key, r.CountDeadline)
			p.ZAdd(ctx, s.countIndex(), redis.Z{Score: float64(r.CountDeadline.UnixMilli()), Member: strconv.FormatInt(r.Day.Unix(), 10)})
			return nil
		})
		return err
	})
}

// Counts returns the day's aggregate counts per colour.
func (s *Store) Counts(ctx context.Context, day time.Time) (map[policy.Colour]int64, error) {
	var m map[string]string
	err := s.retrying(ctx, func() error {
		var err error
		m, err = s.c.HGetAll(ctx, s.countKey(day)).Result()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("redisstore: counts: %w", err)
	}
	out := make(map[policy.Colour]int64, len(m))
	for f, v := range m {
		c, err1 := strconv.Atoi(f)
		n, err2 := strconv.ParseInt(v, 10, 64)
		if err1 != nil || err2 != nil || !policy.Colour(c).Valid() {
			return nil, fmt.Errorf("redisstore: counts: stored count %q is malformed", f)
		}
		out[policy.Colour(c)] = n
	}
	return out, nil
}

// retrying runs f up to MaxAttempts times while it fails with a cluster
// error, reloading the cluster's layout in between: after a failover
// go-redis with default options was seen dialling the dead master for
// about a minute; a reload finds the promoted replica at once. An error
// that outlasts the attempts, or replicas that do not acknowledge a write
// (WAIT), is Redis not answering: issuer.ErrUnavailable.
func (s *Store) retrying(ctx context.Context, f func() error) error {
	var err error
	for attempt := 0; attempt < s.opts.MaxAttempts; attempt++ {
		if attempt > 0 {
			s.c.ReloadState(ctx)
			t := time.NewTimer(time.Duration(attempt) * 100 * time.Millisecond)
			select {
			case <-ctx.Done():
				t.Stop()
				return errors.Join(err, ctx.Err())
			case <-t.C:
			}
		}
		if err = f(); err == nil || !retryable(err) || ctx.Err() != nil {
			break
		}
	}
	var nr *notReplicatedError
	if err != nil && ctx.Err() == nil && (retryable(err) || errors.As(err, &nr)) {
		return issuer.Unavailable("redis", err)
	}
	return err
}

// retryable says whether err may pass once the cluster's layout is known
// again: anything but a refusal of the command itself, a script error or
// a cancelled context.
func retryable(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, redis.Nil) {
		return false
	}
	var nr *notReplicatedError
	if errors.As(err, &nr) {
		return false
	}
	var re redis.Error
	if errors.As(err, &re) {
		msg := re.Error()
		for _, p := range []string{"MOVED", "ASK", "CLUSTERDOWN", "TRYAGAIN", "LOADING", "READONLY", "MASTERDOWN"} {
			if len(msg) >= len(p) && msg[:len(p)] == p {
				return true
			}
		}
		return false
	}
	return true // network errors
}
