package issuer

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/healthcode/healthcode/bundle"
	"github.com/healthcode/healthcode/internal/clip"
	"github.com/healthcode/healthcode/policy"
	"github.com/healthcode/healthcode/token"
)

// The signing-key schedule, after SPIRE's CA manager: a key is published in
// the bundle (as "next") at least one bundle lifetime before it signs, so
// every verifier holding an unexpired bundle already knows it; it signs for
// keys.rotation; it stays in the bundle ("retired") until the last token it
// could have signed has expired (NotAfter); its private part is destroyed
// retention.retired_keys later by the sweeper.

// reloadKeys reads the keys and withdrawals from the store. Callers hold
// i.sched: two reloads racing could install the older read last.
func (i *Issuer) reloadKeys(ctx context.Context) error {
	keys, err := i.state.SigningKeys(ctx)
	if err != nil {
		return fmt.Errorf("issuer: load signing keys: %w", err)
	}
	withdrawn, err := i.state.WithdrawnKeys(ctx)
	if err != nil {
		return fmt.Errorf("issuer: load withdrawn keys: %w", err)
	}
	sort.Slice(keys, func(a, b int) bool { return keyBefore(keys[a], keys[b]) })
	signers := make(map[string]*token.Signer, len(keys))
	for _, k := range keys {
		s, err := token.NewSigner(k.ID, k.Private)
		if err != nil {
			return fmt.Errorf("issuer: signing key %s: %w", k.ID, err)
		}
		signers[k.ID] = s
	}
	i.mu.Lock()
	known := make(map[string]bool, len(i.withdrawn))
	for _, w := range i.withdrawn {
		known[w.ID] = true
	}
	fresh := false
	for _, w := range withdrawn {
		fresh = fresh || !known[w.ID]
	}
	loaded := i.signers != nil
	i.keys, i.signers, i.withdrawn = keys, signers, withdrawn
	i.mu.Unlock()
	if fresh && loaded && i.sharing != nil {
		// A key revoked through any replica: the leader's Run sweeps at
		// once, so its sealed private part leaves etcd's history.
		select {
		case i.sweepNow <- struct{}{}:
		default:
		}
	}
	return nil
}

// keyBefore orders keys by activation, then by creation: an immediate
// rotation activates its key at the same instant as the key it replaces
// when the clock has not moved (a coarse or injected clock), and the newer
// key must win.
func keyBefore(a, b SigningKey) bool {
	if !a.ActiveAt.Equal(b.ActiveAt) {
		return a.ActiveAt.Before(b.ActiveAt)
	}
	return a.Created.Before(b.Created)
}

// current returns the key that signs at now: the latest activated key that
// has not ended. Callers hold i.mu.
func (i *Issuer) current(now time.Time) (SigningKey, bool) {
	var cur SigningKey
	ok := false
	for _, k := range i.keys {
		if !k.ActiveAt.After(now) && now.Before(k.NotAfter) && (!ok || !keyBefore(k, cur)) {
			cur, ok = k, true
		}
	}
	return cur, ok
}

func maxLifetime(p *policy.Policy) time.Duration {
	var m time.Duration
	for _, c := range policy.Colours {
		m = max(m, p.Tokens.Lifetime.Of(c))
	}
	return m
}

// newKey makes, stores and loads a key. Callers hold i.sched.
func (i *Issuer) newKey(ctx context.Context, now, activeAt time.Time) (SigningKey, error) {
	p := i.Policy()
	i.mu.RLock()
	taken := make(map[string]bool, len(i.keys))
	created := now.UTC()
	for _, k := range i.keys {
		taken[k.ID] = true
		// Creation order is the tie-break in keyBefore: keep it strict
		// even when the clock has not moved.
		if !created.After(k.Created) {
			created = k.Created.Add(time.Nanosecond)
		}
	}
	i.mu.RUnlock()
	var priv ed25519.PrivateKey
	var kid string
	for {
		pub, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return SigningKey{}, err
		}
		// Short kids can collide; draw again rather than confuse verifiers.
		if kid = token.KeyID(pub); !taken[kid] {
			priv = k
			break
		}
	}
	g := p.Tokens.Granularity.D()
	notAfter := activeAt.Add(p.Keys.Lifetime.D())
	k := SigningKey{
		ID:       kid,
		Private:  priv,
		Created:  created,
		ActiveAt: activeAt.UTC(),
		// Windows start on the grid, up to one token lifetime before the
		// key signs them.
		NotBefore: activeAt.Add(-maxLifetime(p)).Truncate(g).UTC(),
		NotAfter:  notAfter.UTC(),
		DestroyAt: notAfter.Add(p.Retention.RetiredKeys.D()).UTC(),
	}
	if err := i.state.PutSigningKey(ctx, k); err != nil {
		return SigningKey{}, fmt.Errorf("issuer: store signing key: %w", err)
	}
	return k, i.reloadKeys(ctx)
}

// Maintain runs the key schedule and re-signs the trust bundle when its
// content changed or it is half-way to stale. It is called at start and by
// Run.
func (i *Issuer) Maintain(ctx context.Context) error {
	unlock, err := i.lockSchedule(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	return i.maintain(ctx)
}

// maintain is Maintain. Callers hold the schedule lock.
func (i *Issuer) maintain(ctx context.Context) error {
	now := i.clock.Now()
	p := i.Policy()
	i.mu.RLock()
	cur, hasCur := i.current(now)
	var pending *SigningKey
	for n := range i.keys {
		if i.keys[n].ActiveAt.After(now) {
			pending = &i.keys[n]
		}
	}
	i.mu.RUnlock()

	switch {
	case !hasCur || cur.NotAfter.Before(now.Add(p.Reach())) && pending == nil:
		// First start, or the schedule fell behind (long downtime): a key
		// must sign now. Verifiers learn it at their next sync.
		if _, err := i.newKey(ctx, now, now); err != nil {
			return err
		}
		if hasCur {
			i.log.Warn("signing key activated without advance publication", "reason", "schedule fell behind")
		}
	case pending == nil && !now.Before(cur.ActiveAt.Add(p.Keys.Rotation.D()-p.Bundle.Lifetime.D())):
		activeAt := cur.ActiveAt.Add(p.Keys.Rotation.D())
		if earliest := now.Add(p.Bundle.Lifetime.D()); activeAt.Before(earliest) {
			activeAt = earliest
		}
		if _, err := i.newKey(ctx, now, activeAt); err != nil {
			return err
		}
	}
	return i.refreshBundle(ctx, false)
}

// RotateKeys publishes a next key now. Unless immediate, it signs one
// bundle lifetime from now, when every verifier's bundle knows it; with
// immediate (for a compromised key) it signs at once and verifiers must
// sync. Returns the new key's id and activation time.
func (i *Issuer) RotateKeys(ctx context.Context, admin string, immediate bool) (string, time.Time, error) {
	unlock, err := i.lockSchedule(ctx)
	if err != nil {
		return "", time.Time{}, err
	}
	defer unlock()
	now := i.clock.Now()
	activeAt := now.Add(i.Policy().Bundle.Lifetime.D())
	if immediate {
		activeAt = now
	} else {
		i.mu.RLock()
		for _, k := range i.keys {
			if k.ActiveAt.After(now) {
				i.mu.RUnlock()
				return "", time.Time{}, &InputError{Code: "conflict", Kind: KindConflict,
					Message: fmt.Sprintf("key %s is already published and signs from %s", k.ID, k.ActiveAt.UTC().Format(time.RFC3339))}
			}
		}
		i.mu.RUnlock()
	}
	k, err := i.newKey(ctx, now, activeAt)
	if err != nil {
		return "", time.Time{}, err
	}
	if err := i.refreshBundle(ctx, true); err != nil {
		return "", time.Time{}, err
	}
	mode := "scheduled"
	if immediate {
		mode = "immediate"
	}
	return k.ID, k.ActiveAt, i.audit(ctx, admin, "keys.rotate", fmt.Sprintf("%s rotation: key %s signs from %s", mode, k.ID, k.ActiveAt.UTC().Format(time.RFC3339)))
}

// Revocation is what RevokeKey did.
type Revocation struct {
	Revoked string
	// Signing is the key that signs now: a new one if the revoked key was
	// signing.
	Signing string
	// Sequence is the bundle, signed at once, that withdraws the key.
	Sequence uint64
}

// RevokeKey withdraws signing key kid at once (a stolen key): its private
// part is deleted, a new bundle (a new sequence) is signed without it and
// names it as withdrawn until its naf, so verifiers that sync refuse its
// tokens; if it was signing, a new key signs from now. Tokens of other
// keys stay valid. The deletion is made physical by a sweep right after.
func (i *Issuer) RevokeKey(ctx context.Context, admin, kid string) (Revocation, error) {
	rev, detail, err := i.revoke(ctx, kid)
	if err != nil {
		return Revocation{}, err
	}
	if err := i.audit(ctx, admin, "keys.revoke", detail); err != nil {
		return rev, err
	}
	// Compact now rather than at the next scheduled sweep: until then the
	// sealed private key sits in a freed page. On a shared state a sweep
	// spans the cluster (etcd's compaction and defragmentation, every
	// Redis node's rewrite): the leader runs it at once instead, woken by
	// the withdrawal (reloadKeys), and the admin call does not wait.
	if i.sharing != nil {
		return rev, nil
	}
	if _, err := i.Sweep(ctx); err != nil {
		i.log.Error("sweep after a key revocation failed; the next sweep retries", "err", err)
	}
	return rev, nil
}

func (i *Issuer) revoke(ctx context.Context, kid string) (Revocation, string, error) {
	unlock, err := i.lockSchedule(ctx)
	if err != nil {
		return Revocation{}, "", err
	}
	defer unlock()
	now := i.clock.Now()
	i.mu.RLock()
	cur, hasCur := i.current(now)
	var target *SigningKey
	for n := range i.keys {
		if i.keys[n].ID == kid {
			target = &i.keys[n]
		}
	}
	already := false
	for _, w := range i.withdrawn {
		already = already || w.ID == kid
	}
	i.mu.RUnlock()
	if target == nil {
		if already {
			return Revocation{}, "", &InputError{Code: "conflict", Kind: KindConflict, Message: fmt.Sprintf("key %s is already revoked", kid)}
		}
		return Revocation{}, "", &InputError{Code: "not_found", Kind: KindNotFound, Message: fmt.Sprintf("no signing key %q", clip.String(kid, 64))}
	}
	k := *target
	status := keyStatus(k, cur, now)
	if err := i.state.WithdrawSigningKey(ctx, WithdrawnKey{ID: k.ID, At: now.UTC(), Until: k.NotAfter}); err != nil {
		return Revocation{}, "", fmt.Errorf("issuer: withdraw key %s: %w", k.ID, err)
	}
	if err := i.reloadKeys(ctx); err != nil {
		return Revocation{}, "", err
	}
	detail := fmt.Sprintf("key %s (%s) revoked", k.ID, status)
	signing := cur.ID
	if hasCur && cur.ID == k.ID {
		nk, err := i.newKey(ctx, now, now)
		if err != nil {
			return Revocation{}, "", err
		}
		signing = nk.ID
		detail += fmt.Sprintf("; key %s signs from %s", nk.ID, nk.ActiveAt.UTC().Format(time.RFC3339))
	}
	if err := i.refreshBundle(ctx, true); err != nil {
		return Revocation{}, "", err
	}
	i.mu.RLock()
	seq := i.bundle.Sequence
	i.mu.RUnlock()
	i.log.Warn("signing key revoked; verifiers must sync", "kid", k.ID, "bundle_sequence", seq)
	return Revocation{Revoked: k.ID, Signing: signing, Sequence: seq}, detail + fmt.Sprintf("; bundle %d withdraws it", seq), nil
}

// KeyInfo describes a signing key without its private part.
type KeyInfo struct {
	ID        string
	Status    string
	Created   time.Time
	ActiveAt  time.Time
	NotBefore time.Time
	NotAfter  time.Time
	DestroyAt time.Time
}

// Keys lists the signing keys held, with their status at now.
func (i *Issuer) Keys() []KeyInfo {
	now := i.clock.Now()
	i.mu.RLock()
	defer i.mu.RUnlock()
	cur, _ := i.current(now)
	out := make([]KeyInfo, 0, len(i.keys))
	for _, k := range i.keys {
		out = append(out, KeyInfo{ID: k.ID, Status: keyStatus(k, cur, now), Created: k.Created, ActiveAt: k.ActiveAt,
			NotBefore: k.NotBefore, NotAfter: k.NotAfter, DestroyAt: k.DestroyAt})
	}
	return out
}

func keyStatus(k, cur SigningKey, now time.Time) string {
	switch {
	case k.ID == cur.ID:
		return bundle.StatusCurrent
	case k.ActiveAt.After(now):
		return bundle.StatusNext
	case !now.Before(k.NotAfter):
		return "ended"
	}
	return bundle.StatusRetired
}

// refreshBundle re-signs the bundle if forced, if its keys or policy
// changed, or if it is half-way to stale. Callers hold the schedule lock,
// so the sequence drawn and the bundle installed go up together (on a
// shared state, compared with the published bundle, re-read under it).
func (i *Issuer) refreshBundle(ctx context.Context, force bool) error {
	now := i.clock.Now()
	p := i.Policy()
	i.mu.RLock()
	cur, _ := i.current(now)
	var keys []bundle.Key
	for _, k := range i.keys {
		if !now.Before(k.NotAfter) {
			continue // every token it signed has expired
		}
		keys = append(keys, bundle.Key{ID: k.ID, Public: k.Public(), NotBefore: k.NotBefore.Unix(), NotAfter: k.NotAfter.Unix(), Status: keyStatus(k, cur, now)})
	}
	var withdrawn []string
	for _, w := range i.withdrawn {
		if now.Before(w.Until) {
			withdrawn = append(withdrawn, w.ID)
		}
	}
	old := i.bundle
	i.mu.RUnlock()

	secs := func(d time.Duration) int64 { return int64(d / time.Second) }
	display := bundle.Display{Version: p.Version, SkewSeconds: secs(p.Tokens.ClockSkew.D()),
		HolderHint: p.HolderHint == policy.HintOn, Counting: p.Counting, Name: p.Name,
		// The caps verifiers hold every token to (DESIGN §9, forger).
		Lifetime: bundle.Lifetimes{Green: secs(p.Tokens.Lifetime.Green.D()), Yellow: secs(p.Tokens.Lifetime.Yellow.D()),
			Red: secs(p.Tokens.Lifetime.Red.D())},
		GranularitySeconds: secs(p.Tokens.Granularity.D())}
	if !force && old != nil && old.Policy == display && sameKeys(old.Keys, keys) && slices.Equal(old.Withdrawn, withdrawn) &&
		now.Unix() < old.IssuedAt+(old.StaleAfter-old.IssuedAt)/2 {
		return nil
	}
	seq, err := i.state.NextBundleSequence(ctx)
	if err != nil {
		return fmt.Errorf("issuer: bundle sequence: %w", err)
	}
	b := &bundle.Bundle{
		Sequence:   seq,
		IssuedAt:   now.Unix(),
		StaleAfter: now.Add(p.Bundle.StaleAfter.D()).Unix(),
		Expires:    now.Add(p.Bundle.Lifetime.D()).Unix(),
		Keys:       keys,
		Policy:     display,
		Withdrawn:  withdrawn,
	}
	raw, err := bundle.Sign(b, i.bundleKey)
	if err != nil {
		return fmt.Errorf("issuer: sign bundle: %w", err)
	}
	return i.publish(ctx, b, raw)
}

func sameKeys(a, b []bundle.Key) bool {
	if len(a) != len(b) {
		return false
	}
	for n := range a {
		if a[n].ID != b[n].ID || a[n].Status != b[n].Status || a[n].NotAfter != b[n].NotAfter {
			return false
		}
	}
	return true
}

// Bundle returns the signed trust bundle and its parsed form: on a shared
// state, the published one as of the last Refresh or schedule lock.
func (i *Issuer) Bundle() (string, *bundle.Bundle) {
	i.mu.RLock()
	defer i.mu.RUnlock()
	return i.bundleRaw, i.bundle
}

var errNoKey = errors.New("issuer: no signing key covers the window")
