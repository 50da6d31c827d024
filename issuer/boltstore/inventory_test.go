package boltstore

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/healthcode/healthcode/issuer"
)

// scanned is what a full scan finds for a category: the inventory the
// store keeps instead must equal it.
type scanned struct {
	count  int
	oldest int64
}

func scanMain(t *testing.T, s *DB) map[string]scanned {
	t.Helper()
	out := map[string]scanned{}
	if err := s.view(context.Background(), func(tx *bolt.Tx) error {
		for _, name := range append(append([]string(nil), smallCategories...), issuer.CategoryConfiguration) {
			sc := scanned{oldest: -1}
			if err := tx.Bucket([]byte(name)).ForEach(func(_, v []byte) error {
				h, _, err := splitValue(v)
				if sc.oldest < 0 || h < sc.oldest {
					sc.oldest = h
				}
				sc.count++
				return err
			}); err != nil {
				return err
			}
			out[name] = sc
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	sc := scanned{oldest: -1}
	for _, p := range s.partitions() {
		if err := p.db.View(func(tx *bolt.Tx) error {
			return tx.Bucket([]byte(issuer.CategoryReplay)).ForEach(func(_, v []byte) error {
				r, err := decodeRecord(v)
				if sc.oldest < 0 || r.hour < sc.oldest {
					sc.oldest = r.hour
				}
				sc.count++
				return err
			})
		}); err != nil {
			t.Fatal(err)
		}
	}
	out[issuer.CategoryReplay] = sc
	return out
}

func wantInventoryMatchesScan(t *testing.T, s *DB, when string) {
	t.Helper()
	inv, err := s.Inventory(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	scan := scanMain(t, s)
	for _, c := range inv {
		want := scan[c.Name]
		oldest := int64(-1)
		if c.Oldest != nil {
			oldest = c.Oldest.Unix()
		}
		if c.Count != want.count || oldest != want.oldest {
			t.Fatalf("%s: %s kept count %d oldest %d, a scan finds %d and %d", when, c.Name, c.Count, oldest, want.count, want.oldest)
		}
	}
}

// The inventory is kept by the writes and the sweeps, never scanned; after
// every kind of change, a compaction and a reopen, it says what a full scan
// would.
func TestInventoryKeptMatchesAScan(t *testing.T) {
	dir := t.TempDir()
	clock := &fakeClock{t: t0}
	s := openTest(t, dir, clock)
	ctx := context.Background()
	wantInventoryMatchesScan(t, s, "empty")
	for h := range 6 {
		clock.Set(t0.Add(time.Duration(h) * time.Hour))
		now := clock.Now()
		// Two partitions, retries, an expired record replaced in place.
		r := withSecret(redemption("lab", now.Add(2*time.Hour), fmt.Sprint("a", h), fmt.Sprint("b", h)), secretOf(h), 3)
		r.Replay[1].Deadline = now.Add(50 * time.Hour)
		if err := errOf(s.Redeem(ctx, r)); err != nil {
			t.Fatal(err)
		}
		if err := errOf(s.Redeem(ctx, r)); err != nil { // a retry
			t.Fatal(err)
		}
		if h > 2 {
			// a(h-3) expired an hour ago: redeemed anew in its partition.
			if err := errOf(s.Redeem(ctx, redemption("lab", now.Add(3*time.Hour), fmt.Sprint("a", h-3)))); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.AppendAudit(ctx, issuer.AuditEntry{Time: now, Admin: "ops", Action: "x"}, now.Add(90*time.Minute)); err != nil {
			t.Fatal(err)
		}
		putKey(t, s, fmt.Sprint("k", h%2), now.Add(time.Duration(h+2)*time.Hour)) // replaces k0/k1
		putPolicy(t, s, h+1, now.Add(2*time.Hour))
		if err := s.PutAttester(ctx, issuer.Attester{ID: fmt.Sprint("lab", h%3), Public: make(ed25519.PublicKey, 32), Added: now}); err != nil {
			t.Fatal(err)
		}
		if h == 4 {
			if err := s.DeleteAttester(ctx, "lab0"); err != nil {
				t.Fatal(err)
			}
		}
		wantInventoryMatchesScan(t, s, fmt.Sprint("hour ", h))
		if _, err := s.Sweep(ctx, now); err != nil {
			t.Fatal(err)
		}
		wantInventoryMatchesScan(t, s, fmt.Sprint("after the sweep of hour ", h))
	}
	end := time.Unix(s.epochOf(clock.Now().Add(5*time.Hour).Unix()), 0)
	clock.Set(end)
	if _, err := s.Sweep(ctx, end); err != nil {
		t.Fatal(err)
	}
	wantInventoryMatchesScan(t, s, "after a partition was dropped")
	s.Close()
	s = openTest(t, dir, clock)
	wantInventoryMatchesScan(t, s, "after a reopen")
}

func secretOf(n int) []byte {
	b := make([]byte, 32)
	b[0] = byte(n + 1)
	return b
}
