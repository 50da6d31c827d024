// Package migrate moves a bbolt issuer's configuration to the shared state
// of issuer replicas in etcd ('issuer migrate', README "Running it at
// scale"): the bundle key, so that verifiers' pins stay valid, the signing
// keys and withdrawals, the bundle sequence, continued above the bbolt
// one so that no verifier sees a rollback, the policy in force, the
// attesters, the admin tokens' hashes and the audit log.
//
// Replay records and aggregate counts are not moved: a replay record is
// filed under a name derived with the bbolt store's epoch keys from the
// attestation's identity, which the store never keeps, so no other store
// can file it under its own name. An attestation redeemed on the bbolt
// issuer in the renewal period in progress can therefore be redeemed once
// more on the replicas until that period ends.
package migrate

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/healthcode/healthcode/bundle"
	"github.com/healthcode/healthcode/issuer"
	"github.com/healthcode/healthcode/issuer/boltstore"
	"github.com/healthcode/healthcode/issuer/etcdstore"
	"github.com/healthcode/healthcode/policy"
)

// Report is what FromBolt did.
type Report struct {
	// Written says something reached the target (an error after it leaves
	// the prefix partly written).
	Written     bool
	Fingerprint string // the bundle key's, which verifiers pinned
	Sequence    uint64 // the bbolt store's last bundle sequence
	Keys        int    // signing keys copied
	Withdrawals int
	Policy      int // the policy version in force
	Attesters   int
	AdminTokens int
	Audit       int // audit entries copied
	Expired     int // records past their deadline, left out
}

// FromBolt copies src's configuration into dst, a prefix no issuer has
// run on (else it refuses and writes nothing). Records whose deadline is
// at or before now are left out. It reads everything before it writes (a
// read error writes nothing), and writes the bundle key first: a replica
// started too early on a partial copy adopts it rather than making a new
// one that would break the verifiers' pins.
func FromBolt(ctx context.Context, src *boltstore.DB, dst *etcdstore.Store, now time.Time) (Report, error) {
	var m Report
	if held, err := dst.HeldState(ctx); err != nil {
		return m, err
	} else if held != "" {
		return m, fmt.Errorf("the etcd prefix already holds an issuer's state (%s): migrate copies into a fresh prefix only; nothing was written", strings.TrimSuffix(held, "/"))
	}

	bk, err := src.BundleKey(ctx)
	if errors.Is(err, issuer.ErrNotFound) {
		return m, errors.New("the data directory holds no bundle key (the issuer never started on it): nothing to migrate")
	}
	if err != nil {
		return m, err
	}
	seq, err := src.BundleSequence(ctx)
	if err != nil {
		return m, err
	}
	keys, err := src.SigningKeys(ctx)
	if err != nil {
		return m, err
	}
	withdrawn, err := src.WithdrawnKeys(ctx)
	if err != nil {
		return m, err
	}
	pol, err := src.Policy(ctx)
	if err != nil {
		return m, fmt.Errorf("the stored policy: %w", err)
	}
	parsed, err := policy.Parse(pol.Raw)
	if err != nil {
		return m, fmt.Errorf("the stored policy: %w", err)
	}
	attesters, err := src.Attesters(ctx)
	if err != nil {
		return m, err
	}
	tokens, err := src.AdminTokens(ctx)
	if err != nil {
		return m, err
	}
	audit, err := src.AuditRecords(ctx)
	if err != nil {
		return m, err
	}

	m.Written = true
	if err := dst.PutBundleKey(ctx, bk); err != nil {
		return m, fmt.Errorf("bundle key: %w", err)
	}
	m.Fingerprint = bundle.Fingerprint(bk.Public().(ed25519.PublicKey))
	if err := dst.RaiseBundleSequence(ctx, seq); err != nil {
		return m, fmt.Errorf("bundle sequence: %w", err)
	}
	m.Sequence = seq
	for _, k := range keys {
		if !k.DestroyAt.After(now) {
			m.Expired++
			continue
		}
		if err := dst.PutSigningKey(ctx, k); err != nil {
			return m, fmt.Errorf("signing key %s: %w", k.ID, err)
		}
		m.Keys++
	}
	for _, w := range withdrawn {
		if !w.Until.After(now) {
			m.Expired++
			continue
		}
		if err := dst.ImportWithdrawal(ctx, w); err != nil {
			return m, fmt.Errorf("withdrawal of %s: %w", w.ID, err)
		}
		m.Withdrawals++
	}
	// Nothing is replaced, so the history deadline is unused.
	if err := dst.PutPolicy(ctx, pol, now.Add(parsed.Retention.PolicyHistory.D())); err != nil {
		return m, fmt.Errorf("policy: %w", err)
	}
	m.Policy = pol.Version
	for _, a := range attesters {
		if err := dst.PutAttester(ctx, a); err != nil {
			return m, fmt.Errorf("attester %s: %w", a.ID, err)
		}
		m.Attesters++
	}
	for _, t := range tokens {
		if err := dst.PutAdminToken(ctx, t); err != nil {
			return m, fmt.Errorf("admin token %s: %w", t.Name, err)
		}
		m.AdminTokens++
	}
	for _, a := range audit {
		if !a.Deadline.After(now) {
			m.Expired++
			continue
		}
		if err := dst.AppendAudit(ctx, a.Entry, a.Deadline); err != nil {
			return m, fmt.Errorf("audit entry: %w", err)
		}
		m.Audit++
	}
	e := issuer.AuditEntry{Time: now, Admin: "migrate", Action: "migrate",
		Detail: fmt.Sprintf("configuration copied from a bbolt data directory: %d signing keys, %d attesters, %d admin tokens, bundle sequence above %d", m.Keys, m.Attesters, m.AdminTokens, seq)}
	if err := dst.AppendAudit(ctx, e, now.Add(parsed.Retention.Audit.D())); err != nil {
		return m, fmt.Errorf("audit entry: %w", err)
	}
	return m, nil
}
