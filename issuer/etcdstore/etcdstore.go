// Package etcdstore keeps the state of stateless issuer replicas in etcd
// (DESIGN §8): signing keys (sealed), the bundle key (sealed), the bundle
// sequence and the published bundle, the policy and its history,
// attesters, admin token hashes, the audit log and replay epoch keys
// (sealed). Replay records and aggregate counts live elsewhere (Redis).
//
// Every check-and-set is an etcd transaction with a compare. Records with
// a deadline (audit entries, policy history, signing keys, withdrawals,
// epoch keys) are attached to a lease that ends in the hour after the
// deadline, so etcd deletes them even if no sweep runs; a few leases are
// shared by every record and replica (one per hour). Sweep deletes at the
// precise deadline and makes the deletion physical (compaction and
// defragmentation of every member).
//
// Layout under Options.Prefix (P), with D a deadline in Unix seconds
// written as 20 digits so that keys sort by deadline:
//
//	P config/kek_check            sealed constant: proves the KEK
//	P config/bundle_key           sealed bundle key
//	P config/bundle_sequence      last sequence handed out
//	P config/published_bundle     the bundle in force
//	P config/policy               the policy in force
//	P config/attester/ID          a registered attester
//	P config/admin_token/NAME     an admin token's hash
//	P keys/D/ID                   a signing key (D: DestroyAt), private part sealed
//	P withdrawn/D/ID              a withdrawal (D: Until)
//	P policy_history/D/R          a replaced policy (R: random)
//	P audit/D/R                   an audit entry
//	P epoch/D                     a replay epoch key (D: its end), sealed
//	P leases/E                    the shared lease that ends at E
//	P leader/, P lock/schedule/   election and schedule lock (concurrency)
package etcdstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/healthcode/healthcode/internal/kek"
	"github.com/healthcode/healthcode/issuer"
)

// Options configure a Store.
type Options struct {
	// Prefix is the key namespace, ending in "/"; default "/healthcode/".
	Prefix string
	// KEK seals signing keys, the bundle key and epoch keys; the additional
	// data of each sealed blob names its record. Required.
	KEK *kek.Key
	// Clock is the store's clock (deadlines, write hours); default
	// issuer.SystemClock.
	Clock issuer.Clock
	// Logger receives summaries only, never a record's content.
	Logger *slog.Logger
	// OpTimeout bounds each request to etcd (default 5s): a request caught
	// on a member that died waits for it, so this bounds the gap while a
	// new etcd leader is elected.
	OpTimeout time.Duration
}

const (
	defaultPrefix    = "/healthcode/"
	defaultOpTimeout = 5 * time.Second
	// sessionTTL is the lease of the election and schedule-lock sessions,
	// in seconds: how long a dead replica keeps leadership or the lock.
	sessionTTL = 5
	// casAttempts bounds a compare-and-set loop that keeps losing.
	casAttempts = 64
)

// ErrClosed is returned by a Store after Close.
var ErrClosed = errors.New("etcdstore: store is closed")

// ErrBundleKeyExists is returned by PutBundleKey when a bundle key other
// than the one this store last read is stored (another replica made it
// first). It wraps issuer.ErrStale: the caller reads the stored one with
// BundleKey and uses it, so that every replica signs with one bundle key.
var ErrBundleKeyExists = fmt.Errorf("etcdstore: a bundle key this replica has not read is stored (read it with BundleKey): %w", issuer.ErrStale)

// Store is the issuer's state in etcd. It implements issuer.StateStore and
// issuer.Sharing and is safe for concurrent use.
type Store struct {
	c     *clientv3.Client
	opts  Options
	p     string // prefix
	clock issuer.Clock
	log   *slog.Logger

	leaseMu sync.Mutex
	leases  map[int64]clientv3.LeaseID // by expiry (Unix seconds)

	// sched is the local half of the schedule lock: one process does not
	// contend with itself (its sessions' lock keys are one per session).
	sched chan struct{}

	mu     sync.Mutex
	closed bool
	// bundleKeyRev is the ModRevision of the bundle key this store last
	// read or wrote, 0 for none: PutBundleKey replaces only that one.
	bundleKeyRev int64
	lockSess     *concurrency.Session
	sessions     map[*concurrency.Session]struct{} // open sessions, revoked at Close
	closing      chan struct{}                     // closed by Close: running watches end
}

var (
	_ issuer.StateStore = (*Store)(nil)
	_ issuer.Sharing    = (*Store)(nil)
)

// Sealing: the additional data names the record, as in boltstore, so a
// sealed blob moved to another record does not open there.
var (
	kekCheckAAD  = []byte("kek check")
	kekCheckText = []byte("healthcode: the keys of this store are sealed under this KEK")
	bundleKeyAAD = []byte("bundle key")
)

func signingKeyAAD(id string) []byte { return []byte("signing key " + id) }
func epochKeyAAD(end int64) []byte   { return []byte("epoch key " + strconv.FormatInt(end, 10)) }

// New opens the state under o.Prefix on c, which stays the caller's to
// close. It proves the KEK against the store's KEK check (writing one on
// a fresh store) and refuses a KEK the store was not sealed under.
func New(ctx context.Context, c *clientv3.Client, o Options) (*Store, error) {
	if c == nil {
		return nil, errors.New("etcdstore: an etcd client is required")
	}
	if o.KEK == nil {
		return nil, errors.New("etcdstore: a KEK is required (it seals the signing keys, the bundle key and epoch keys)")
	}
	if o.Prefix == "" {
		o.Prefix = defaultPrefix
	}
	if !strings.HasSuffix(o.Prefix, "/") {
		return nil, fmt.Errorf("etcdstore: prefix %q must end with \"/\" (else another prefix's keys fall under it)", o.Prefix)
	}
	if o.OpTimeout < 0 {
		return nil, fmt.Errorf("etcdstore: operation timeout must not be negative, got %s", o.OpTimeout)
	}
	if o.OpTimeout == 0 {
		o.OpTimeout = defaultOpTimeout
	}
	if o.Clock == nil {
		o.Clock = issuer.SystemClock{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Store{
		c: c, opts: o, p: o.Prefix, clock: o.Clock, log: o.Logger,
		leases:   map[int64]clientv3.LeaseID{},
		sched:    make(chan struct{}, 1),
		sessions: map[*concurrency.Session]struct{}{},
		closing:  make(chan struct{}),
	}
	if err := s.checkKEK(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// checkKEK writes the KEK check on a fresh store, or opens the one held.
func (s *Store) checkKEK(ctx context.Context) error {
	sealed, err := s.opts.KEK.Seal(kekCheckText, kekCheckAAD)
	if err != nil {
		return err
	}
	v, err := s.encode(storedSecret{W: s.writeHour(), Sealed: sealed})
	if err != nil {
		return err
	}
	k := s.key(keyKEKCheck)
	resp, err := s.txn(ctx, func(t clientv3.Txn) clientv3.Txn {
		return t.If(absent(k)).Then(clientv3.OpPut(k, v)).Else(clientv3.OpGet(k))
	})
	if err != nil {
		return fmt.Errorf("etcdstore: KEK check: %w", err)
	}
	if resp.Succeeded {
		return nil
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) != 1 {
		return errors.New("etcdstore: KEK check vanished while read")
	}
	var held storedSecret
	if err := json.Unmarshal(kvs[0].Value, &held); err != nil {
		return errors.New("etcdstore: stored KEK check is malformed")
	}
	if _, err := s.opts.KEK.Open(held.Sealed, kekCheckAAD); err != nil {
		return fmt.Errorf("etcdstore: cannot open the keys under %s: %w", s.p, err)
	}
	return nil
}

// Close revokes the store's sessions (its schedule lock and leadership
// pass at once to another replica) and makes every later call fail with
// ErrClosed. The etcd client stays open.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.closing)
	sessions := s.sessions
	s.sessions = nil
	s.lockSess = nil
	s.mu.Unlock()
	var errs []error
	for sess := range sessions {
		if err := sess.Close(); err != nil && !isLeaseGone(err) {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("etcdstore: close: revoke sessions: %w", errors.Join(errs...))
	}
	return nil
}

func (s *Store) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// newSession grants a session lease within OpTimeout and tracks the
// session so Close revokes it. The session's keep-alive runs until it is
// closed or the client is.
func (s *Store) newSession(ctx context.Context) (*concurrency.Session, error) {
	if s.isClosed() {
		return nil, ErrClosed
	}
	op, cancel := s.op(ctx)
	g, err := s.c.Grant(op, sessionTTL)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("etcdstore: session lease: %w", unavailable(ctx, err))
	}
	sess, err := concurrency.NewSession(s.c, concurrency.WithLease(g.ID), concurrency.WithTTL(sessionTTL))
	if err != nil {
		return nil, fmt.Errorf("etcdstore: session: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		go sess.Close()
		return nil, ErrClosed
	}
	s.sessions[sess] = struct{}{}
	return sess, nil
}

// endSession revokes a session (whatever it held is released at once).
func (s *Store) endSession(sess *concurrency.Session) {
	s.mu.Lock()
	_, tracked := s.sessions[sess]
	delete(s.sessions, sess)
	if s.lockSess == sess {
		s.lockSess = nil
	}
	s.mu.Unlock()
	if tracked {
		if err := sess.Close(); err != nil && !isLeaseGone(err) {
			s.log.Warn("etcdstore: revoking a session failed; it lapses by itself", "ttl_seconds", sessionTTL, "err", err)
		}
	}
}

// --- requests ---------------------------------------------------------------

// op is a context for one request: ctx bounded by OpTimeout.
func (s *Store) op(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.opts.OpTimeout)
}

// unavailable marks err as etcd's failure to answer (issuer.ErrUnavailable)
// when it is one: a request's own timeout (OpTimeout) ran out while ctx,
// the caller's, had not, or etcd said it cannot serve now (no leader, no
// member reachable). Anything else, the caller's own end among them, is
// returned as it is.
func unavailable(ctx context.Context, err error) error {
	if err == nil || ctx.Err() != nil {
		return err
	}
	var ee rpctypes.EtcdError
	code := status.Code(err)
	if errors.As(err, &ee) {
		code = ee.Code()
	}
	if errors.Is(err, context.DeadlineExceeded) || code == codes.Unavailable || code == codes.DeadlineExceeded {
		return issuer.Unavailable("etcd", err)
	}
	return err
}

func (s *Store) get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	if s.isClosed() {
		return nil, ErrClosed
	}
	op, cancel := s.op(ctx)
	defer cancel()
	resp, err := s.c.Get(op, key, opts...)
	return resp, unavailable(ctx, err)
}

func (s *Store) txn(ctx context.Context, build func(clientv3.Txn) clientv3.Txn) (*clientv3.TxnResponse, error) {
	if s.isClosed() {
		return nil, ErrClosed
	}
	op, cancel := s.op(ctx)
	defer cancel()
	resp, err := build(s.c.Txn(op)).Commit()
	return resp, unavailable(ctx, err)
}

func absent(k string) clientv3.Cmp { return clientv3.Compare(clientv3.CreateRevision(k), "=", 0) }

// unchanged compares k against the ModRevision it was read at (0: absent).
func unchanged(k string, modRev int64) clientv3.Cmp {
	if modRev == 0 {
		return absent(k)
	}
	return clientv3.Compare(clientv3.ModRevision(k), "=", modRev)
}

// --- keys and values --------------------------------------------------------

const (
	keyKEKCheck        = "config/kek_check"
	keyBundleKey       = "config/bundle_key"
	keyBundleSequence  = "config/bundle_sequence"
	keyPublishedBundle = "config/published_bundle"
	keyPolicy          = "config/policy"
	prefixConfig       = "config/"
	prefixAttester     = "config/attester/"
	prefixAdminToken   = "config/admin_token/"
	prefixKeys         = "keys/"
	prefixWithdrawn    = "withdrawn/"
	prefixPolicyHist   = "policy_history/"
	prefixAudit        = "audit/"
	prefixEpoch        = "epoch/"
	prefixLeases       = "leases/"
	prefixLeader       = "leader/"
	prefixScheduleLock = "lock/schedule/"
)

func (s *Store) key(rel string) string { return s.p + rel }

// deadlineKey is prefix || D || "/" || name; D sorts as the deadline does.
func (s *Store) deadlineKey(prefix string, sec int64, name string) string {
	return s.p + prefix + pad(sec) + "/" + name
}

func pad(sec int64) string { return fmt.Sprintf("%020d", sec) }

// splitDeadlineKey returns the deadline and name of a deadline key under
// prefix.
func (s *Store) splitDeadlineKey(prefix string, k []byte) (int64, string, error) {
	rest, ok := strings.CutPrefix(string(k), s.p+prefix)
	if !ok || len(rest) < 21 || rest[20] != '/' {
		return 0, "", fmt.Errorf("etcdstore: stored key under %s%s is malformed", s.p, prefix)
	}
	sec, err := strconv.ParseInt(rest[:20], 10, 64)
	if err != nil {
		return 0, "", fmt.Errorf("etcdstore: stored key under %s%s is malformed", s.p, prefix)
	}
	return sec, rest[21:], nil
}

// deadlineSeconds is t in whole seconds, rounded up (a record is never
// deleted before its deadline).
func deadlineSeconds(t time.Time, what string) (int64, error) {
	if t.IsZero() {
		return 0, fmt.Errorf("etcdstore: %s: deadline is required", what)
	}
	sec := t.Unix()
	if t.Nanosecond() > 0 {
		sec++
	}
	if sec <= 0 {
		return 0, fmt.Errorf("etcdstore: %s: deadline %s is not after 1970", what, t.UTC().Format(time.RFC3339))
	}
	return sec, nil
}

// writeHour is the hour a record is written in, kept in every value for
// the inventory's Oldest.
func (s *Store) writeHour() int64 { return s.clock.Now().Truncate(time.Hour).Unix() }

// encode is a record's stored form: its own JSON (the core's types and
// tags are not the store's format).
func (s *Store) encode(v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("etcdstore: encode: %w", err)
	}
	return string(b), nil
}

func randomName() (string, error) {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("etcdstore: random: %w", err)
	}
	return hex.EncodeToString(b), nil
}
