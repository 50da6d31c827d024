package issuer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/healthcode/healthcode/bundle"
	"github.com/healthcode/healthcode/policy"
)

// Replicas (DESIGN §8). An Issuer whose Config.State also implements
// Sharing is one of several replicas on that state, and acts so that they
// behave as one issuer:
//
//   - its schedule lock is the shared one (Sharing.LockSchedule), then
//     its own mutex, and under them the issuer first re-reads from the
//     state what it is about to decide on (policy, keys, withdrawals,
//     admin tokens, the published bundle): two replicas never publish two
//     keys for one slot, never install a lower policy version, never make
//     two admin tokens of one name;
//   - a bundle it signs is published through Sharing.PublishBundle (a
//     compare-and-set on the sequence), and Bundle serves the published
//     one, whoever signed it;
//   - New creates the bundle key, the policy and the first key only if
//     the state has none, under the lock: a replica that starts after
//     another adopts what is there;
//   - Refresh re-reads the state; the caller runs it whenever the state
//     changes (a watch), so that a change made through any replica is in
//     force on all of them;
//   - Run (sweeps, the key schedule, re-signing the bundle) runs on one
//     replica at a time, chosen by the caller (an election); the others
//     sign a bundle only for an admin action made through them, or at
//     their start when nothing is published yet.

// ScheduleLockWait bounds the wait for the replicas' schedule lock. A
// replica that dies holding it loses it when its etcd session lapses
// (seconds); a wait this long means the state is unreachable, and an
// admin call (whose context has no deadline) must fail rather than wait
// on.
const ScheduleLockWait = 30 * time.Second

// lockSchedule takes the schedule lock: i.sched, and on a shared state the
// replicas' lock first, after which what the lock guards is re-read from
// the state. unlock releases both.
//
// The replicas' lock comes first so that a wait for it (another replica
// holds it; one that died holding it keeps it until its session lapses)
// does not hold i.sched: the watch's Refresh takes i.sched, and a change
// that needs no lock (an attester removed, an admin token revoked) must
// still be in force within a second. Sharing excludes calls on one handle
// too, so the order is the same for every caller of this issuer.
func (i *Issuer) lockSchedule(ctx context.Context) (unlock func(), err error) {
	if i.sharing == nil {
		i.sched.Lock()
		return i.sched.Unlock, nil
	}
	wait, cancel := context.WithTimeout(ctx, ScheduleLockWait)
	release, err := i.sharing.LockSchedule(wait)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("issuer: schedule lock: %w", err)
	}
	i.sched.Lock()
	unlock = func() {
		i.sched.Unlock()
		release()
	}
	if err := i.reload(ctx); err != nil {
		unlock()
		return nil, err
	}
	return unlock, nil
}

// Refresh re-reads the policy, attesters, admin tokens, signing keys,
// withdrawals and (on a shared state) the published bundle from the state,
// and wakes Run if the policy's sweep interval changed. A replica's watch
// calls it on every change of the shared state. It never writes.
func (i *Issuer) Refresh(ctx context.Context) error {
	// The local mutex alone: reads are linearizable, and i.sched keeps two
	// reloads from installing an older read last.
	i.sched.Lock()
	defer i.sched.Unlock()
	return i.reload(ctx)
}

// reload re-reads everything the issuer holds in memory. Callers hold
// i.sched.
func (i *Issuer) reload(ctx context.Context) error {
	if err := i.reloadPolicy(ctx); err != nil {
		return err
	}
	if err := i.reloadAttesters(ctx); err != nil {
		return err
	}
	if err := i.reloadAdmins(ctx); err != nil {
		return err
	}
	if err := i.reloadKeys(ctx); err != nil {
		return err
	}
	return i.reloadBundle(ctx)
}

// reloadPolicy installs the stored policy if it is newer than the one in
// force (never an older one), and wakes Run when the sweep interval
// changed. Before any policy is stored it does nothing.
func (i *Issuer) reloadPolicy(ctx context.Context) error {
	rec, err := i.state.Policy(ctx)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("issuer: load policy: %w", err)
	}
	cur := i.Policy()
	if cur != nil && rec.Version <= cur.Version {
		return nil
	}
	p, err := policy.Parse(rec.Raw)
	if err != nil {
		return fmt.Errorf("issuer: stored policy version %d: %w", rec.Version, err)
	}
	i.mu.Lock()
	i.pol = p
	i.mu.Unlock()
	if cur != nil && cur.Retention.SweepInterval != p.Retention.SweepInterval {
		i.wakeRun()
	}
	return nil
}

// wakeRun tells Run that the sweep interval changed.
func (i *Issuer) wakeRun() {
	select {
	case i.sweepInterval <- struct{}{}:
	default: // Run has a wake-up pending already
	}
}

// reloadBundle installs the published bundle if it is newer than the one
// served. Without sharing, or before the bundle key is loaded, it does
// nothing.
func (i *Issuer) reloadBundle(ctx context.Context) error {
	if i.sharing == nil || i.bundleKey == nil {
		return nil
	}
	pb, err := i.sharing.PublishedBundle(ctx)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("issuer: load the published bundle: %w", err)
	}
	return i.installPublished(pb)
}

// installPublished checks pb against the bundle key and serves it, unless
// the bundle served is as new or newer.
func (i *Issuer) installPublished(pb PublishedBundle) error {
	b, err := bundle.Open(pb.Raw, i.Fingerprint())
	if err != nil {
		return fmt.Errorf("issuer: the published bundle %d: %w", pb.Sequence, err)
	}
	if b.Sequence != pb.Sequence {
		return fmt.Errorf("issuer: the published bundle is filed as sequence %d but signed as %d", pb.Sequence, b.Sequence)
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.bundle == nil || b.Sequence > i.bundle.Sequence {
		i.bundle, i.bundleRaw = b, pb.Raw
	}
	return nil
}

// publish makes a bundle just signed the one in force. On a shared state
// it is published first; if a newer one is published already (a replica
// that held the lock after this one lost it), that one is served instead.
func (i *Issuer) publish(ctx context.Context, b *bundle.Bundle, raw string) error {
	if i.sharing != nil {
		err := i.sharing.PublishBundle(ctx, PublishedBundle{Sequence: b.Sequence, Raw: raw})
		if errors.Is(err, ErrStale) {
			i.log.Warn("a newer bundle was published meanwhile; serving it", "bundle_sequence", b.Sequence)
			return i.reloadBundle(ctx)
		}
		if err != nil {
			return fmt.Errorf("issuer: publish bundle %d: %w", b.Sequence, err)
		}
	}
	i.mu.Lock()
	if i.bundle == nil || b.Sequence > i.bundle.Sequence {
		i.bundle, i.bundleRaw = b, raw
	}
	i.mu.Unlock()
	return nil
}
