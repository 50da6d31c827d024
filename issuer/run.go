package issuer

import (
	"context"
	"fmt"
	"time"
)

// Sweep deletes everything past its deadline now (invariant 5), then runs
// the key schedule so that keys whose private part was destroyed leave the
// issuer's memory too.
func (i *Issuer) Sweep(ctx context.Context) (SweepStats, error) {
	st, err := i.state.Sweep(ctx, i.clock.Now())
	if err != nil {
		return st, fmt.Errorf("issuer: sweep: %w", err)
	}
	i.sched.Lock()
	err = i.reloadKeys(ctx)
	i.sched.Unlock()
	if err != nil {
		return st, err
	}
	total := 0
	for _, n := range st.Deleted {
		total += n
	}
	i.log.Info("sweep", "deleted", total, "compacted", st.Compacted)
	return st, nil
}

// Run is the issuer's background work: a sweep at once (catching up after
// downtime), then the key schedule, bundle refresh and sweep every
// retention.sweep_interval, until ctx ends. A policy that changes the
// interval takes effect at once: the next sweep is due one new interval
// after the last one (at once if that has passed). On a shared state, a
// key withdrawn through any replica has it sweep at once.
func (i *Issuer) Run(ctx context.Context) error {
	select {
	case <-i.sweepNow: // the first sweep covers it
	default:
	}
	for {
		last := i.clock.Now() // intervals run from the start of a sweep
		if _, err := i.Sweep(ctx); err != nil {
			i.log.Error("sweep failed", "err", err)
		}
		if err := i.Maintain(ctx); err != nil {
			i.log.Error("key maintenance failed", "err", err)
		}
	wait:
		for {
			next := last.Add(i.Policy().Retention.SweepInterval.D())
			if !i.clock.Now().Before(next) {
				break
			}
			fired, stop := i.wakeAt(next)
			select {
			case <-ctx.Done():
				stop()
				return nil
			case <-i.sweepInterval:
				stop() // the interval changed: recompute next
			case <-i.sweepNow:
				stop()
				break wait
			case <-fired:
				break wait
			}
		}
	}
}

// Waker is a Clock that can also wake a caller at an instant of its own
// time (tests' settable clock); Run uses it when the clock has it, so that
// tests move time instead of sleeping.
type Waker interface {
	// WakeAt returns a channel that receives once the clock reaches t, and
	// a function that abandons the wait.
	WakeAt(t time.Time) (<-chan struct{}, func())
}

func (i *Issuer) wakeAt(t time.Time) (<-chan struct{}, func()) {
	if w, ok := i.clock.(Waker); ok {
		return w.WakeAt(t)
	}
	ch := make(chan struct{}, 1)
	timer := time.AfterFunc(time.Until(t), func() { ch <- struct{}{} })
	return ch, func() { timer.Stop() }
}

// Category is one row of the public inventory.
type Category struct {
	Name         string
	Count        int
	Oldest       *time.Time
	NextDeadline *time.Time
	Retention    string
}

// Inventory is the public inventory: what is held, per category, with the
// policy's retention. So that it cannot reveal a single redemption, the
// categories a redemption writes (replay records, aggregate counts) show
// their counts rounded to the nearest multiple of Config.InventoryRounding,
// and every figure read from the store is a snapshot taken at most once
// per Config.InventoryRefresh (an hour by default). Retention and the
// policy version are always current.
func (i *Issuer) Inventory(ctx context.Context) ([]Category, int, error) {
	now := i.clock.Now()
	i.invMu.Lock()
	defer i.invMu.Unlock()
	if i.invStats == nil || !now.Before(i.invAt.Add(i.invRefresh)) || now.Before(i.invAt) {
		stats, err := i.state.Inventory(ctx)
		if err != nil {
			return nil, 0, err
		}
		for n := range stats {
			if stats[n].Name == CategoryReplay || stats[n].Name == CategoryCounts {
				stats[n].Count = RoundCount(stats[n].Count, i.invRounding)
			}
		}
		i.invStats, i.invAt = stats, now
	}
	return i.categories(i.invStats)
}

// ExactInventory is the inventory as it is now, counts unrounded: for the
// operator, never for the public endpoint.
func (i *Issuer) ExactInventory(ctx context.Context) ([]Category, int, error) {
	stats, err := i.state.Inventory(ctx)
	if err != nil {
		return nil, 0, err
	}
	return i.categories(stats)
}

// RoundCount rounds n to the nearest multiple of r (r <= 1: n itself).
func RoundCount(n, r int) int {
	if r <= 1 {
		return n
	}
	return (n + r/2) / r * r
}

func (i *Issuer) categories(stats []CategoryStat) ([]Category, int, error) {
	p := i.Policy()
	ret := map[string]string{
		CategoryReplay:        p.Retention.Replay.String(),
		CategoryCounts:        p.Retention.Counts.String(),
		CategoryAudit:         p.Retention.Audit.String(),
		CategorySigningKeys:   "key lifetime + " + p.Retention.RetiredKeys.String(),
		CategoryPolicyHistory: p.Retention.PolicyHistory.String(),
		CategoryConfiguration: "until removed by an administrator",
	}
	out := make([]Category, 0, len(stats))
	for _, s := range stats {
		out = append(out, Category{Name: s.Name, Count: s.Count, Oldest: s.Oldest, NextDeadline: s.NextDeadline, Retention: ret[s.Name]})
	}
	return out, p.Version, nil
}
