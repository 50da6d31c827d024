package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/healthcode/healthcode/internal/testcluster"
	"github.com/healthcode/healthcode/issuer"
	"github.com/healthcode/healthcode/issuer/storetest"
	"github.com/healthcode/healthcode/policy"
)

// aofRewrites reads INFO persistence's aof_rewrites and rdb_saves of
// every node.
func persistCounters(t *testing.T, rc *testcluster.RedisCluster) map[string][2]int64 {
	t.Helper()
	out := map[string][2]int64{}
	for _, n := range rc.Nodes {
		c := redis.NewClient(&redis.Options{Addr: n.Addr})
		p, err := persistence(context.Background(), c)
		c.Close()
		if err != nil {
			t.Fatal(err)
		}
		a, _ := strconv.ParseInt(p["aof_rewrites"], 10, 64)
		r, _ := strconv.ParseInt(p["rdb_saves"], 10, 64)
		out[n.Name] = [2]int64{a, r}
	}
	return out
}

func inventoryOf(t *testing.T, s *Store) (replay, counts issuer.CategoryStat) {
	t.Helper()
	inv, err := s.Inventory(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(inv) != 2 || inv[0].Name != issuer.CategoryReplay || inv[1].Name != issuer.CategoryCounts {
		t.Fatalf("inventory %+v, want replay records then aggregate counts", inv)
	}
	return inv[0], inv[1]
}

// TestSweepAndInventory: on a cluster of its own (the inventory counts
// every key), Sweep deletes the records whose deadline has passed by the
// given now although Redis, going by its wall clock, still holds them;
// those of an ended epoch outright; and counts whose deadline passed. It
// rewrites the AOF and snapshots on every node, and the inventory follows.
func TestSweepAndInventory(t *testing.T) {
	rc := testcluster.StartRedis(t)
	c := clusterClient(t, rc)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	t0 := time.Now().UTC().Truncate(time.Hour)
	clock := &storetest.Clock{}
	clock.Set(t0)
	s, err := New(c, Options{EpochKeys: newEpochKeys(), Prefix: "sweep:", Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	replay, counts := inventoryOf(t, s)
	if replay.Count != 0 || counts.Count != 0 || counts.Oldest != nil || counts.NextDeadline != nil {
		t.Fatalf("empty store's inventory: %+v %+v", replay, counts)
	}

	today := t0.Truncate(24 * time.Hour)
	yesterday := today.Add(-24 * time.Hour)
	const n = 10
	// Ten records due in 24h, accepted until 48h; ten due and accepted
	// until 100h.
	soon := func(i int) issuer.ReplayKey {
		return issuer.ReplayKey{Attester: "lab-1", ID: fmt.Sprint("soon-", i), Deadline: t0.Add(24 * time.Hour), Accepted: t0.Add(48 * time.Hour)}
	}
	later := func(i int) issuer.ReplayKey {
		return issuer.ReplayKey{Attester: "lab-1", ID: fmt.Sprint("later-", i), Deadline: t0.Add(100 * time.Hour), Accepted: t0.Add(100 * time.Hour)}
	}
	for i := 0; i < n; i++ {
		r := issuer.Redemption{Replay: []issuer.ReplayKey{soon(i), later(i)}, Colour: policy.Green, Day: today, CountDeadline: t0.Add(400 * 24 * time.Hour)}
		if i == 0 {
			r.Day, r.CountDeadline = yesterday, t0.Add(30*time.Hour)
		}
		if _, err := s.Redeem(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	replay, counts = inventoryOf(t, s)
	if replay.Count != 2*n || counts.Count != 2 || !counts.Oldest.Equal(yesterday) || !counts.NextDeadline.Equal(t0.Add(30*time.Hour)) {
		t.Fatalf("inventory after %d records on two days: %+v %+v", 2*n, replay, counts)
	}

	before := persistCounters(t, rc)
	sweep := func(now time.Time, wantReplay, wantCounts int) {
		t.Helper()
		st, err := s.Sweep(ctx, now)
		if err != nil {
			t.Fatal(err)
		}
		if st.Deleted[issuer.CategoryReplay] != wantReplay || st.Deleted[issuer.CategoryCounts] != wantCounts || !st.Compacted {
			t.Fatalf("Sweep at t0+%s: %+v, want %d replay records and %d counts deleted, compacted", now.Sub(t0), st, wantReplay, wantCounts)
		}
	}
	// Nothing is due yet.
	sweep(t0.Add(time.Hour), 0, 0)
	after := persistCounters(t, rc)
	for name, b := range before {
		if a := after[name]; a[0] <= b[0] || a[1] <= b[1] {
			t.Errorf("%s: aof_rewrites %d→%d, rdb_saves %d→%d: want both up after a sweep", name, b[0], a[0], b[1], a[1])
		}
	}
	// The soon records' deadline, not their epoch's end: read and deleted.
	sweep(t0.Add(24*time.Hour), n, 0)
	clock.Set(t0.Add(24 * time.Hour))
	for i := 0; i < n; i++ {
		if err := s.Redeemed(ctx, []issuer.ReplayKey{soon(i)}, 0); err == nil {
			t.Fatal("soon: a deadline at now was accepted")
		}
		if exists, err := c.Exists(ctx, recordKeyOf(t, s, soon(i))).Result(); err != nil || exists != 0 {
			t.Fatalf("soon-%d still held after the sweep (%v)", i, err)
		}
		var re *issuer.RedeemedError
		if err := s.Redeemed(ctx, []issuer.ReplayKey{later(i)}, 0); !errors.As(err, &re) {
			t.Fatalf("later-%d after the sweep: %v, want refused", i, err)
		}
	}
	if replay, _ := inventoryOf(t, s); replay.Count != n {
		t.Fatalf("replay records held after the sweep: %d, want %d", replay.Count, n)
	}
	// Yesterday's count.
	sweep(t0.Add(30*time.Hour), 0, 1)
	if _, counts := inventoryOf(t, s); counts.Count != 1 || !counts.Oldest.Equal(today) {
		t.Fatalf("counts after their sweep: %+v", counts)
	}
	if m, err := s.Counts(ctx, yesterday); err != nil || len(m) != 0 {
		t.Fatalf("yesterday's counts after the sweep: %v %v", m, err)
	}
	// The later records' epoch has ended: deleted without reading them.
	end := ceilDay(t0.Add(100 * time.Hour))
	sweep(end, n, 0)
	if replay, _ := inventoryOf(t, s); replay.Count != 0 {
		t.Fatalf("replay records held after the last sweep: %d", replay.Count)
	}
	s.mu.Lock()
	held := len(s.epochs)
	s.mu.Unlock()
	if held != 0 {
		t.Fatalf("%d epoch keys in memory after the sweep at the end of the last epoch", held)
	}
}
