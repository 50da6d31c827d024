package preload_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/healthcode/healthcode/internal/kek"
	"github.com/healthcode/healthcode/internal/preload"
	"github.com/healthcode/healthcode/issuer"
	"github.com/healthcode/healthcode/issuer/boltstore"
)

// Every preloaded record is live in a real store: redeeming any of them
// again is refused, the inventory counts them all, and a key past the end
// is still free.
func TestReplayRecordsEveryKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	k, _, err := kek.LoadOrCreate(dir + ".kek")
	if err != nil {
		t.Fatal(err)
	}
	db, err := boltstore.Open(dir, boltstore.Options{KEK: k})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	now := time.Now()
	spread := preload.Spread(now, 3)
	if err := preload.Replay(ctx, db, now, 2500, 1000, "lab", "p-", spread); err != nil {
		t.Fatal(err)
	}
	if d0, d3 := spread(0), spread(3); !d0.Equal(d3) || !d0.Equal(now.Add(24*time.Hour).Truncate(time.Hour)) {
		t.Fatalf("deadlines %s %s", d0, d3)
	}
	for _, i := range []string{"p-0", "p-999", "p-1000", "p-2499"} {
		err := db.Redeemed(ctx, []issuer.ReplayKey{{Attester: "lab", ID: i, Deadline: spread(0)}}, 0)
		var re *issuer.RedeemedError
		if !errors.As(err, &re) {
			t.Errorf("%s: %v, want it redeemed", i, err)
		}
	}
	if err := db.Redeemed(ctx, []issuer.ReplayKey{{Attester: "lab", ID: "p-2500", Deadline: spread(0)}}, 0); err != nil {
		t.Fatalf("p-2500: %v", err)
	}
	inv, err := db.Inventory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range inv {
		if c.Name == issuer.CategoryReplay && c.Count != 2500 {
			t.Fatalf("inventory holds %d replay records, want 2500", c.Count)
		}
	}
	if err := preload.Replay(ctx, db, now, -1, 0, "lab", "x", spread); err == nil || err.Error() != "preload: counts must not be negative" {
		t.Fatalf("negative count: %v", err)
	}
}
