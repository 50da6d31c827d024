package issuer

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"time"

	"github.com/healthcode/healthcode/policy"
)

// Clock is injected so that core logic never calls time.Now.
type Clock interface{ Now() time.Time }

// SystemClock is the real clock.
type SystemClock struct{}

func (SystemClock) Now() time.Time { return time.Now() }

// Data categories (invariant 5). Every record written belongs to one; all
// but Configuration carry a deadline set from the policy's retention.
const (
	CategoryReplay        = "replay_records"
	CategoryCounts        = "aggregate_counts"
	CategoryAudit         = "admin_audit"
	CategorySigningKeys   = "signing_keys" // deadline: key's naf + retention.retired_keys
	CategoryPolicyHistory = "policy_history"
	// Configuration (current policy, attesters, bundle key, admin token
	// hashes) is about operators, never residents; it lives until an
	// administrator replaces or removes it.
	CategoryConfiguration = "configuration"
)

// ReplayKey marks one attestation as redeemed. A replay record is found by
// (Attester, ID) alone: never by its deadline, the policy, or anything else
// that can change. Deadline says when the record may be deleted. The store
// never writes Attester, ID or Secret as they are: it derives unreadable
// keys and keeps only a keyed hash of the secret.
type ReplayKey struct {
	Attester string
	ID       string
	Deadline time.Time // end of the renewal period (hour-rounded); not part of the lookup
	Secret   []byte    // the wallet's per-attestation secret (32 bytes) or nil
	// Accepted is the last instant the attestation can be redeemed at all
	// under any policy (its expiry plus the largest clock skew a policy
	// may set, rounded up to the hour), the same for every redemption of
	// the pair whatever the policy in force; no lookup of the pair comes
	// after it, and it is never before Deadline.
	// A store may file every record of the pair by it (one epoch for all
	// its renewal periods). Zero: not known (the store uses Deadline).
	Accepted time.Time
}

// Redemption is the one durable write a redemption makes: every replay key,
// and the aggregate count of the colour issued, all or none.
type Redemption struct {
	Replay        []ReplayKey
	MaxRetries    int // how many times a record may be retried with the same secret
	Colour        policy.Colour
	Day           time.Time // UTC midnight of the day counted
	CountDeadline time.Time
}

// RedeemResult says per key whether it was a retry of a live record (same
// secret, retries left) and the deadline the record holds (the given one
// for new records).
type RedeemResult struct {
	Retried   []bool
	Deadlines []time.Time
}

// RedeemedError says which attestation (by its index in the request) was
// redeemed before. Nothing of the request was written.
type RedeemedError struct{ Index int }

func (e *RedeemedError) Error() string {
	return fmt.Sprintf("attestation %d has already been redeemed", e.Index)
}

// ErrNotFound is returned for a missing record.
var ErrNotFound = errors.New("not found")

// Store is what redemption needs: check-and-record, all or none, durable
// before it returns (step-ca's UseToken); and a read-only check that
// refuses a replay before any signature is spent on it.
type Store interface {
	// Redeem records every key, all or none, durably before it returns. A
	// key whose live record (deadline after the store clock's now) exists
	// is refused with *RedeemedError{Index} unless it is a valid retry
	// (same secret hash, retries left), in which case its retry count goes
	// up. An expired record counts as absent.
	Redeem(ctx context.Context, r Redemption) (RedeemResult, error)
	// Redeemed is the read-only pre-check with the same rules.
	Redeemed(ctx context.Context, keys []ReplayKey, maxRetries int) error
}

// SigningKey is a token-signing key. It is published from Created, signs
// from ActiveAt (SPIRE-style: published before use), and tokens it signs
// lie inside [NotBefore, NotAfter]; its private part is destroyed at
// DestroyAt.
type SigningKey struct {
	ID        string
	Private   ed25519.PrivateKey
	Created   time.Time
	ActiveAt  time.Time
	NotBefore time.Time
	NotAfter  time.Time
	DestroyAt time.Time
}

// Public returns the public half.
func (k SigningKey) Public() ed25519.PublicKey { return k.Private.Public().(ed25519.PublicKey) }

// WithdrawnKey is a revoked signing key: its private part is gone, and
// the bundle names it as withdrawn until Until, when every token it signed
// has expired.
type WithdrawnKey struct {
	ID    string
	At    time.Time
	Until time.Time
}

// Attester is a registered lab, clinic or health officer.
type Attester struct {
	ID     string
	Public ed25519.PublicKey
	Added  time.Time
}

// AdminToken is a named admin bearer token; only its SHA-256 is stored.
type AdminToken struct {
	Name    string
	Hash    [32]byte
	Created time.Time
}

// AuditEntry is one admin action. Admin is the token's name, never the token.
type AuditEntry struct {
	Time   time.Time
	Admin  string
	Action string
	Detail string
}

// PolicyRecord is a stored policy document.
type PolicyRecord struct {
	Version int
	Raw     []byte // canonical JSON
	Set     time.Time
}

// CategoryStat is one row of the public inventory: counts only.
type CategoryStat struct {
	Name         string
	Count        int
	Oldest       *time.Time // earliest write time (rounded to the hour) of a record held
	NextDeadline *time.Time
}

// SweepStats counts what a sweep deleted, per category.
type SweepStats struct {
	Deleted   map[string]int
	Compacted bool
}

// The state the issuer keeps besides replay records, split by the part of
// the issuer that consumes it (step-ca's small interfaces). An adapter
// implements them all as a StateStore; a part that needs one asks for one.

// KeyStore holds the signing-key schedule.
type KeyStore interface {
	SigningKeys(ctx context.Context) ([]SigningKey, error)
	PutSigningKey(ctx context.Context, k SigningKey) error
	// WithdrawSigningKey deletes signing key id at once (a revocation) and,
	// in the same transaction, records its withdrawal until w.Until (the
	// key's naf). ErrNotFound if no such key is held.
	WithdrawSigningKey(ctx context.Context, w WithdrawnKey) error
	WithdrawnKeys(ctx context.Context) ([]WithdrawnKey, error)
}

// BundleKeyStore holds the long-lived bundle key and the bundle sequence.
type BundleKeyStore interface {
	BundleKey(ctx context.Context) (ed25519.PrivateKey, error) // ErrNotFound before the first start
	// PutBundleKey stores the bundle key. A store shared by replicas
	// keeps the first one and refuses another with an error wrapping
	// ErrStale.
	PutBundleKey(ctx context.Context, k ed25519.PrivateKey) error
	// NextBundleSequence returns a sequence number above every one it
	// returned before, across restarts and across issuers sharing it.
	NextBundleSequence(ctx context.Context) (uint64, error)
}

// AttesterStore holds the registered attesters.
type AttesterStore interface {
	Attesters(ctx context.Context) ([]Attester, error)
	PutAttester(ctx context.Context, a Attester) error
	DeleteAttester(ctx context.Context, id string) error // ErrNotFound if absent
}

// AdminTokenStore holds the admin tokens' hashes.
type AdminTokenStore interface {
	AdminTokens(ctx context.Context) ([]AdminToken, error)
	PutAdminToken(ctx context.Context, t AdminToken) error
	DeleteAdminToken(ctx context.Context, name string) error // ErrNotFound if absent
}

// PolicyStore holds the policy in force and its history.
type PolicyStore interface {
	Policy(ctx context.Context) (PolicyRecord, error) // ErrNotFound before one is set
	// PutPolicy makes rec current; the one it replaces moves to policy
	// history until historyDeadline.
	PutPolicy(ctx context.Context, rec PolicyRecord, historyDeadline time.Time) error
}

// AuditLog holds the admin audit log.
type AuditLog interface {
	AppendAudit(ctx context.Context, e AuditEntry, deadline time.Time) error
	Audit(ctx context.Context) ([]AuditEntry, error) // oldest first
}

// Housekeeping is retention: the inventory of what is held, and the sweep
// that deletes what is due.
type Housekeeping interface {
	Inventory(ctx context.Context) ([]CategoryStat, error)
	// Sweep deletes every record whose deadline is at or before now, in
	// bounded transactions, and makes the deletion physical.
	Sweep(ctx context.Context, now time.Time) (SweepStats, error)
}

// StateStore holds everything else the issuer keeps. Every write of a
// category with retention takes its deadline.
type StateStore interface {
	KeyStore
	BundleKeyStore
	AttesterStore
	AdminTokenStore
	PolicyStore
	AuditLog
	Housekeeping
}

// --- several issuers on one shared state (DESIGN §8) -----------------------

// PublishedBundle is a signed trust bundle and its sequence.
type PublishedBundle struct {
	Sequence uint64
	Raw      string // the signed bundle, as served
}

// ErrStale is returned by PublishBundle for a bundle whose sequence is not
// above the one published.
var ErrStale = errors.New("a newer bundle is published")

// Sharing is what a StateStore shared by several issuer replicas (etcd)
// adds, so that they act as one issuer: one key schedule at a time, and
// one trust bundle that every replica serves. A single issuer (bbolt) has
// none of it.
type Sharing interface {
	// LockSchedule takes the lock that serialises the key schedule and the
	// policy across replicas; unlock releases it. Two calls on one handle
	// exclude each other too (the issuer takes it before its own mutex).
	// It fails when ctx ends or the store is unreachable.
	LockSchedule(ctx context.Context) (unlock func(), err error)
	// PublishedBundle returns the bundle in force; ErrNotFound before the
	// first one.
	PublishedBundle(ctx context.Context) (PublishedBundle, error)
	// PublishBundle makes b the bundle in force if its sequence is above
	// the published one's (compare-and-set), else returns ErrStale.
	PublishBundle(ctx context.Context, b PublishedBundle) error
}
