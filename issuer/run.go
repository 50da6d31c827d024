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
// retention.sweep_interval, until ctx ends.
func (i *Issuer) Run(ctx context.Context) error {
	for {
		if _, err := i.Sweep(ctx); err != nil {
			i.log.Error("sweep failed", "err", err)
		}
		if err := i.Maintain(ctx); err != nil {
			i.log.Error("key maintenance failed", "err", err)
		}
		t := time.NewTimer(i.Policy().Retention.SweepInterval.D())
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// Category is one row of the public inventory.
type Category struct {
	Name         string     `json:"name"`
	Count        int        `json:"count"`
	Oldest       *time.Time `json:"-"`
	NextDeadline *time.Time `json:"-"`
	Retention    string     `json:"retention"`
}

// Inventory lists what is held, per category, with the policy's retention.
func (i *Issuer) Inventory(ctx context.Context) ([]Category, int, error) {
	stats, err := i.state.Inventory(ctx)
	if err != nil {
		return nil, 0, err
	}
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
