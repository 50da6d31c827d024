package issuer_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/healthcode/healthcode/internal/kek"
	"github.com/healthcode/healthcode/issuer"
	"github.com/healthcode/healthcode/issuer/boltstore"
	"github.com/healthcode/healthcode/issuer/issuertest"
	"github.com/healthcode/healthcode/policy"
)

// sweepSignal is a log handler that reports each of the issuer's "sweep"
// lines: the test learns that Run swept without polling or sleeping.
type sweepSignal struct{ ch chan struct{} }

func (h sweepSignal) Enabled(context.Context, slog.Level) bool { return true }
func (h sweepSignal) Handle(_ context.Context, r slog.Record) error {
	if r.Message == "sweep" {
		h.ch <- struct{}{}
	}
	return nil
}
func (h sweepSignal) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h sweepSignal) WithGroup(string) slog.Handler      { return h }

// A policy that shortens retention.sweep_interval applies at once: the
// next sweep is due one new interval after the last, not when the old
// timer would have fired (issue 10: eight minutes late). Time moves only
// by the injected clock.
func TestSweepIntervalChangeAppliesAtOnce(t *testing.T) {
	ctx := context.Background()
	k, _, err := kek.Generate()
	if err != nil {
		t.Fatal(err)
	}
	clock := issuertest.NewClock(t0)
	db, err := boltstore.Open(filepath.Join(t.TempDir(), "data"), boltstore.Options{KEK: k, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	swept := sweepSignal{make(chan struct{}, 16)}
	p := policy.Default()
	p.Retention.SweepInterval = policy.Duration(6 * time.Hour)
	iss, err := issuer.New(ctx, issuer.Config{Store: db, State: db, Clock: clock, Policy: p, Logger: slog.New(swept)})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- iss.Run(runCtx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	waitSweep := func(what string) {
		t.Helper()
		select {
		case <-swept.ch:
		case <-time.After(20 * time.Second): // a failure bound, not a wait for time to pass
			t.Fatalf("no sweep %s", what)
		}
	}
	noSweep := func(what string) {
		t.Helper()
		select {
		case <-swept.ch:
			t.Fatalf("a sweep %s", what)
		default:
		}
	}
	waitSweep("at start")

	// Under the 6h interval, 1h passes without a sweep.
	clock.Advance(time.Hour)
	noSweep("one hour into a six-hour interval")

	p2 := policy.Default()
	p2.Version = p.Version + 1
	p2.Retention.SweepInterval = policy.Duration(90 * time.Minute)
	if err := iss.SetPolicy(ctx, "ops", p2); err != nil {
		t.Fatal(err)
	}
	// Due 90 minutes after the last sweep: 30 minutes from now.
	clock.Advance(29 * time.Minute)
	noSweep("before the new interval ended")
	clock.Advance(time.Minute)
	waitSweep("when the new interval ended")

	// A longer interval also applies at once: no sweep at the old one.
	p3 := policy.Default()
	p3.Version = p2.Version + 1
	p3.Retention.SweepInterval = policy.Duration(12 * time.Hour)
	if err := iss.SetPolicy(ctx, "ops", p3); err != nil {
		t.Fatal(err)
	}
	clock.Advance(90 * time.Minute)
	clock.Advance(9 * time.Hour)
	noSweep("at the old interval")
	clock.Advance(90 * time.Minute)
	waitSweep("twelve hours after the last")
}

func countOf(t *testing.T, cats []issuer.Category, name string) int {
	t.Helper()
	for _, c := range cats {
		if c.Name == name {
			return c.Count
		}
	}
	t.Fatalf("no category %s", name)
	return 0
}

// The public inventory cannot reveal a single redemption: resident counts
// are rounded to 10, and what it reads from the store is a snapshot at
// most an hour old. The exact inventory, for operators, is exact.
func TestPublicInventoryRoundedAndHourly(t *testing.T) {
	ctx := context.Background()
	c := newCore(t, nil)
	inv := func() int {
		cats, _, err := c.iss.Inventory(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return countOf(t, cats, issuer.CategoryReplay)
	}
	exact := func() int {
		cats, _, err := c.iss.ExactInventory(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return countOf(t, cats, issuer.CategoryReplay)
	}
	if got := inv(); got != 0 {
		t.Fatalf("empty store: %d", got)
	}
	c.redeem()
	if got, ex := inv(), exact(); got != 0 || ex != 1 {
		t.Fatalf("one redemption: public %d, exact %d; want 0 and 1", got, ex)
	}
	// Within the hour, even many redemptions do not move the snapshot.
	for range 6 {
		c.redeem()
	}
	c.clock.Advance(59 * time.Minute)
	if got, ex := inv(), exact(); got != 0 || ex != 7 {
		t.Fatalf("within the hour: public %d, exact %d; want 0 and 7", got, ex)
	}
	c.clock.Advance(time.Minute)
	if got := inv(); got != 10 {
		t.Fatalf("an hour later, 7 records: public %d, want 10", got)
	}
	// Retention and the policy version are never stale.
	p := policy.Default()
	p.Version = c.iss.Policy().Version + 1
	p.Retention.Audit = policy.Duration(400 * 24 * time.Hour)
	if err := c.iss.SetPolicy(ctx, "ops", p); err != nil {
		t.Fatal(err)
	}
	cats, version, err := c.iss.Inventory(ctx)
	if err != nil || version != p.Version {
		t.Fatalf("version %d, %v", version, err)
	}
	for _, cat := range cats {
		if cat.Name == issuer.CategoryAudit && cat.Retention != p.Retention.Audit.String() {
			t.Fatalf("audit retention %q, want %q", cat.Retention, p.Retention.Audit)
		}
	}
	for n, want := range map[int]int{0: 0, 4: 0, 5: 10, 14: 10, 15: 20, 123: 120} {
		if got := issuer.RoundCount(n, 10); got != want {
			t.Errorf("RoundCount(%d, 10) = %d, want %d", n, got, want)
		}
	}
}
