// Package issuer is the core of the Healthcode issuer: it turns verified
// attestations into short-lived colour tokens under the administrator's
// policy, keeps the signing-key schedule and the trust bundle, and applies
// retention. It imports neither fiber nor bbolt: transports and storage are
// adapters around it (issuer/httpapi, issuer/boltstore).
package issuer

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/healthcode/healthcode/attestation"
	"github.com/healthcode/healthcode/bundle"
	"github.com/healthcode/healthcode/policy"
	"github.com/healthcode/healthcode/token"
)

// Config wires an Issuer.
type Config struct {
	Store Store
	// State is the issuer's state. If it also implements Sharing, the
	// issuer is one of several replicas on it (see Refresh and the notes
	// in replica.go); otherwise it is the only issuer on it.
	State  StateStore
	Clock  Clock
	Logger *slog.Logger
	// Policy, if set, replaces the stored policy at start (audited as the
	// "startup" admin) unless its version is lower than the stored one.
	// With neither, the built-in default is stored.
	Policy *policy.Policy
	// InventoryRounding rounds the public inventory's resident counts to
	// a multiple of it (default DefaultInventoryRounding; 1: exact).
	InventoryRounding int
	// InventoryRefresh is how often at most the public inventory reads
	// the store (default DefaultInventoryRefresh).
	InventoryRefresh time.Duration
}

// Defaults of the public inventory: a single redemption moves neither a
// rounded count nor, within the hour, the snapshot.
const (
	DefaultInventoryRounding = 10
	DefaultInventoryRefresh  = time.Hour
)

// Issuer is safe for concurrent use.
type Issuer struct {
	store Store
	state StateStore
	clock Clock
	log   *slog.Logger

	// sched serialises the key schedule and the policy (SPIRE's CA
	// manager): creating, rotating, revoking and reloading keys, installing
	// a policy and signing a bundle happen one at a time, each check held
	// with its act, so no two keys are published for one slot and no
	// bundle is served with a lower sequence than one served before.
	// Taken through lockSchedule, which on a shared state adds the
	// replicas' lock.
	sched sync.Mutex
	// sharing is State as a Sharing, nil for a lone issuer.
	sharing Sharing

	mu        sync.RWMutex
	pol       *policy.Policy
	keys      []SigningKey // oldest first
	withdrawn []WithdrawnKey
	signers   map[string]*token.Signer
	attesters map[string]ed25519.PublicKey
	admins    []AdminToken
	bundleKey ed25519.PrivateKey
	bundleRaw string
	bundle    *bundle.Bundle

	// The public inventory's snapshot (see Inventory).
	invMu       sync.Mutex
	invRounding int
	invRefresh  time.Duration
	invAt       time.Time
	invStats    []CategoryStat

	// sweepInterval wakes Run when a policy changes the sweep interval;
	// sweepNow has it sweep at once (a key withdrawn on a shared state).
	sweepInterval chan struct{}
	sweepNow      chan struct{}
}

// New loads the issuer's state, creating keys and the default policy on
// first start.
func New(ctx context.Context, cfg Config) (*Issuer, error) {
	if cfg.Store == nil || cfg.State == nil {
		return nil, errors.New("issuer: Store and State are required")
	}
	if cfg.Clock == nil {
		cfg.Clock = SystemClock{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.InventoryRounding < 0 || cfg.InventoryRefresh < 0 {
		return nil, errors.New("issuer: InventoryRounding and InventoryRefresh must not be negative")
	}
	if cfg.InventoryRounding == 0 {
		cfg.InventoryRounding = DefaultInventoryRounding
	}
	if cfg.InventoryRefresh == 0 {
		cfg.InventoryRefresh = DefaultInventoryRefresh
	}
	i := &Issuer{store: cfg.Store, state: cfg.State, clock: cfg.Clock, log: cfg.Logger,
		invRounding: cfg.InventoryRounding, invRefresh: cfg.InventoryRefresh, sweepInterval: make(chan struct{}, 1), sweepNow: make(chan struct{}, 1)}
	i.sharing, _ = cfg.State.(Sharing)

	// All of the start under the schedule lock: replicas starting together
	// create one bundle key, one policy and one first key, and a later one
	// adopts them.
	unlock, err := i.lockSchedule(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()
	changed := false // whether this start installed a policy or a bundle key

	rec, err := i.state.Policy(ctx)
	stored := err == nil
	if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("issuer: load policy: %w", err)
	}
	switch {
	case cfg.Policy != nil && stored:
		if changed, err = i.startPolicy(ctx, cfg.Policy, rec); err != nil {
			return nil, err
		}
	case cfg.Policy != nil:
		if err := i.putPolicy(ctx, "startup", cfg.Policy, false); err != nil {
			return nil, err
		}
		changed = true
	case stored:
		p, err := policy.Parse(rec.Raw)
		if err != nil {
			return nil, fmt.Errorf("issuer: stored policy: %w", err)
		}
		i.pol = p
	default:
		if err := i.putPolicy(ctx, "startup", policy.Default(), false); err != nil {
			return nil, err
		}
		changed = true
	}

	bk, err := i.state.BundleKey(ctx)
	if errors.Is(err, ErrNotFound) {
		_, bk, err = ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		switch err := i.state.PutBundleKey(ctx, bk); {
		case errors.Is(err, ErrStale):
			// Another replica stored one first (its schedule lock lapsed
			// under it): every replica signs with the stored one.
			if bk, err = i.state.BundleKey(ctx); err != nil {
				return nil, fmt.Errorf("issuer: load bundle key: %w", err)
			}
		case err != nil:
			return nil, fmt.Errorf("issuer: store bundle key: %w", err)
		default:
			changed = true
		}
	} else if err != nil {
		return nil, fmt.Errorf("issuer: load bundle key: %w", err)
	}
	i.bundleKey = bk

	if err := i.reloadAttesters(ctx); err != nil {
		return nil, err
	}
	if err := i.reloadAdmins(ctx); err != nil {
		return nil, err
	}
	if err := i.reloadKeys(ctx); err != nil {
		return nil, err
	}
	if err := i.reloadBundle(ctx); err != nil {
		return nil, err
	}
	i.mu.RLock()
	_, hasKey := i.current(i.clock.Now())
	published := i.bundle != nil
	i.mu.RUnlock()
	// A replica runs the key schedule at its start only if the state lacks
	// a signing key or a bundle, or it has just changed the state; else it
	// adopts what the others made (the leader keeps the schedule).
	if i.sharing == nil || !hasKey || !published || changed {
		if err := i.maintain(ctx); err != nil {
			return nil, err
		}
	}
	return i, nil
}

// Policy returns the policy in force. Callers must not modify it.
func (i *Issuer) Policy() *policy.Policy {
	i.mu.RLock()
	defer i.mu.RUnlock()
	return i.pol
}

// Fingerprint is the bundle key fingerprint that verifiers pin.
func (i *Issuer) Fingerprint() string {
	return bundle.Fingerprint(i.bundleKey.Public().(ed25519.PublicKey))
}

// Now is the issuer's clock.
func (i *Issuer) Now() time.Time { return i.clock.Now() }

// --- attesters -------------------------------------------------------------

type attesterKeys map[string]ed25519.PublicKey

func (a attesterKeys) AttesterKey(id string) (ed25519.PublicKey, bool) {
	k, ok := a[id]
	return k, ok
}

func (i *Issuer) reloadAttesters(ctx context.Context) error {
	list, err := i.state.Attesters(ctx)
	if err != nil {
		return fmt.Errorf("issuer: load attesters: %w", err)
	}
	m := make(map[string]ed25519.PublicKey, len(list))
	for _, a := range list {
		m[a.ID] = a.Public
	}
	i.mu.Lock()
	i.attesters = m
	i.mu.Unlock()
	return nil
}

// Attesters lists the registered attesters.
func (i *Issuer) Attesters(ctx context.Context) ([]Attester, error) {
	list, err := i.state.Attesters(ctx)
	if err != nil {
		return nil, err
	}
	sort.Slice(list, func(a, b int) bool { return list[a].ID < list[b].ID })
	return list, nil
}

// ValidAttesterID reports whether id is a usable attester id: 1 to 64
// characters of [A-Za-z0-9._-].
func ValidAttesterID(id string) error { return validName("attester id", id) }

func validName(what, s string) error {
	if s == "" || len(s) > attestation.MaxAttesterLen {
		return fmt.Errorf("%s must be 1 to %d characters", what, attestation.MaxAttesterLen)
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_') {
			return fmt.Errorf("%s may contain only letters, digits, '.', '-' and '_'", what)
		}
	}
	return nil
}

// AddAttester registers (or replaces the key of) an attester.
func (i *Issuer) AddAttester(ctx context.Context, admin, id string, pub ed25519.PublicKey) error {
	if err := ValidAttesterID(id); err != nil {
		return &InputError{Code: "invalid_attester", Message: err.Error()}
	}
	if len(pub) != ed25519.PublicKeySize {
		return &InputError{Code: "invalid_attester", Message: "attester key must be a 32-byte Ed25519 public key"}
	}
	if err := i.state.PutAttester(ctx, Attester{ID: id, Public: pub, Added: i.clock.Now().UTC()}); err != nil {
		return err
	}
	if err := i.reloadAttesters(ctx); err != nil {
		return err
	}
	sum := sha256.Sum256(pub)
	return i.audit(ctx, admin, "attester.add", fmt.Sprintf("attester %s, key sha256:%x", id, sum[:8]))
}

// RemoveAttester unregisters an attester; its attestations are refused from
// then on.
func (i *Issuer) RemoveAttester(ctx context.Context, admin, id string) error {
	if err := i.state.DeleteAttester(ctx, id); err != nil {
		if errors.Is(err, ErrNotFound) {
			return &InputError{Code: "not_found", Message: fmt.Sprintf("no attester %q", id), Kind: KindNotFound}
		}
		return err
	}
	if err := i.reloadAttesters(ctx); err != nil {
		return err
	}
	return i.audit(ctx, admin, "attester.remove", "attester "+id)
}

// --- policy ----------------------------------------------------------------

// SetPolicy validates and installs p. The replaced document goes to policy
// history for retention.policy_history.
func (i *Issuer) SetPolicy(ctx context.Context, admin string, p *policy.Policy) error {
	if err := p.Validate(); err != nil {
		return &InputError{Code: "invalid_policy", Message: err.Error(), Kind: KindRefused}
	}
	unlock, err := i.lockSchedule(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	cur := i.Policy()
	if cur != nil && p.Version <= cur.Version {
		return &InputError{Code: "invalid_policy", Message: fmt.Sprintf("version: must be greater than the current version (%d), got %d", cur.Version, p.Version), Kind: KindRefused}
	}
	if err := i.putPolicy(ctx, admin, p, true); err != nil {
		return err
	}
	if cur == nil || cur.Retention.SweepInterval != p.Retention.SweepInterval {
		i.wakeRun()
	}
	// Lifetimes and display data may have changed.
	return i.refreshBundle(ctx, true)
}

func (i *Issuer) putPolicy(ctx context.Context, admin string, p *policy.Policy, hadOne bool) error {
	if err := p.Validate(); err != nil {
		return fmt.Errorf("issuer: policy: %w", err)
	}
	raw, err := p.Canonical()
	if err != nil {
		return err
	}
	now := i.clock.Now().UTC()
	if err := i.state.PutPolicy(ctx, PolicyRecord{Version: p.Version, Raw: raw, Set: now}, now.Add(p.Retention.PolicyHistory.D())); err != nil {
		return fmt.Errorf("issuer: store policy: %w", err)
	}
	i.mu.Lock()
	old := i.pol
	i.pol = p
	i.mu.Unlock()
	detail := fmt.Sprintf("policy version %d installed", p.Version)
	if old != nil {
		detail = fmt.Sprintf("policy version %d replaced version %d", p.Version, old.Version)
	}
	return i.audit(ctx, admin, "policy.set", detail)
}

// startPolicy installs the policy given at start over the stored one,
// never rolling it back: a lower version, or the same version with another
// document, is refused (a restart with an old file once silently replaced
// a newer policy set through the admin API).
func (i *Issuer) startPolicy(ctx context.Context, p *policy.Policy, rec PolicyRecord) (installed bool, err error) {
	switch {
	case p.Version < rec.Version:
		return false, fmt.Errorf("issuer: the policy given at start has version %d, lower than the stored version %d: a start never rolls the policy back (give it a version above %d, or start without one to keep version %d)",
			p.Version, rec.Version, rec.Version, rec.Version)
	case p.Version == rec.Version:
		raw, err := p.Canonical()
		if err != nil {
			return false, err
		}
		if !bytes.Equal(raw, rec.Raw) {
			return false, fmt.Errorf("issuer: the policy given at start has version %d, the stored version, but another content: give it a version above %d", p.Version, rec.Version)
		}
		i.mu.Lock()
		i.pol = p // the same document: nothing to install
		i.mu.Unlock()
		return false, nil
	}
	return true, i.putPolicy(ctx, "startup", p, true)
}

// --- audit -----------------------------------------------------------------

func (i *Issuer) audit(ctx context.Context, admin, action, detail string) error {
	now := i.clock.Now().UTC()
	e := AuditEntry{Time: now.Truncate(time.Second), Admin: admin, Action: action, Detail: detail}
	if err := i.state.AppendAudit(ctx, e, now.Add(i.Policy().Retention.Audit.D())); err != nil {
		return fmt.Errorf("issuer: audit: %w", err)
	}
	i.log.Info("admin action", "admin", admin, "action", action)
	return nil
}

// Audit lists the audit log, oldest first.
func (i *Issuer) Audit(ctx context.Context) ([]AuditEntry, error) { return i.state.Audit(ctx) }

// --- admin tokens ----------------------------------------------------------

// AdminTokenPrefix starts every admin token, so that secret scanners can
// find leaked ones.
const AdminTokenPrefix = "hcadm_"

func (i *Issuer) reloadAdmins(ctx context.Context) error {
	list, err := i.state.AdminTokens(ctx)
	if err != nil {
		return fmt.Errorf("issuer: load admin tokens: %w", err)
	}
	i.mu.Lock()
	i.admins = list
	i.mu.Unlock()
	return nil
}

// HasAdminTokens reports whether any admin token exists.
func (i *Issuer) HasAdminTokens() bool {
	i.mu.RLock()
	defer i.mu.RUnlock()
	return len(i.admins) > 0
}

// CreateAdminToken makes a new named admin token and returns it; only its
// hash is stored.
func (i *Issuer) CreateAdminToken(ctx context.Context, admin, name string) (string, error) {
	if err := validName("admin token name", name); err != nil {
		return "", &InputError{Code: "invalid_name", Message: err.Error()}
	}
	// Under the schedule lock, which on a shared state re-reads the
	// tokens: two replicas never make two tokens of one name.
	unlock, err := i.lockSchedule(ctx)
	if err != nil {
		return "", err
	}
	defer unlock()
	i.mu.RLock()
	for _, a := range i.admins {
		if a.Name == name {
			i.mu.RUnlock()
			return "", &InputError{Code: "conflict", Message: fmt.Sprintf("an admin token named %q exists", name), Kind: KindConflict}
		}
	}
	i.mu.RUnlock()
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	tok := AdminTokenPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	if err := i.state.PutAdminToken(ctx, AdminToken{Name: name, Hash: sha256.Sum256([]byte(tok)), Created: i.clock.Now().UTC()}); err != nil {
		return "", err
	}
	if err := i.reloadAdmins(ctx); err != nil {
		return "", err
	}
	return tok, i.audit(ctx, admin, "admin_token.create", "admin token "+name)
}

// RevokeAdminToken deletes the named admin token.
func (i *Issuer) RevokeAdminToken(ctx context.Context, admin, name string) error {
	if err := i.state.DeleteAdminToken(ctx, name); err != nil {
		if errors.Is(err, ErrNotFound) {
			return &InputError{Code: "not_found", Message: fmt.Sprintf("no admin token named %q", name), Kind: KindNotFound}
		}
		return err
	}
	if err := i.reloadAdmins(ctx); err != nil {
		return err
	}
	return i.audit(ctx, admin, "admin_token.revoke", "admin token "+name)
}

// AdminTokens lists admin token names.
func (i *Issuer) AdminTokens() []string {
	i.mu.RLock()
	defer i.mu.RUnlock()
	names := make([]string, len(i.admins))
	for n, a := range i.admins {
		names[n] = a.Name
	}
	sort.Strings(names)
	return names
}

// AuthenticateAdmin returns the name of the admin token tok, comparing
// hashes in constant time against every stored one.
func (i *Issuer) AuthenticateAdmin(tok string) (string, bool) {
	h := sha256.Sum256([]byte(tok))
	i.mu.RLock()
	defer i.mu.RUnlock()
	name, found := "", 0
	for _, a := range i.admins {
		if subtle.ConstantTimeCompare(h[:], a.Hash[:]) == 1 {
			name, found = a.Name, 1
		}
	}
	return name, found == 1
}

// --- errors ----------------------------------------------------------------

// InputError is a refusal caused by the caller's input: a code and a
// message fit for the client, and its Kind (KindInvalid if not set).
type InputError struct {
	Code    string
	Message string
	Kind    Kind
}

func (e *InputError) Error() string { return e.Message }
