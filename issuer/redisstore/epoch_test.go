package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/healthcode/healthcode/internal/testcluster"
	"github.com/healthcode/healthcode/issuer"
	"github.com/healthcode/healthcode/issuer/storetest"
	"github.com/healthcode/healthcode/policy"
)

// countingKeys counts the calls to the EpochKeys it wraps, and can be
// told to answer with a key of the wrong size or an error.
type countingKeys struct {
	inner *memEpochKeys
	calls atomic.Int64
	short atomic.Bool
	fail  atomic.Bool
}

func (c *countingKeys) EpochKey(ctx context.Context, end time.Time) ([]byte, error) {
	c.calls.Add(1)
	if c.fail.Load() {
		return nil, errors.New("etcd unreachable")
	}
	k, err := c.inner.EpochKey(ctx, end)
	if c.short.Load() {
		return k[:16], err
	}
	return k, err
}

// ceilDay is t rounded up to a UTC midnight (the default epoch's end).
func ceilDay(t time.Time) time.Time {
	if d := t.Truncate(24 * time.Hour); !d.Equal(t) {
		return d.Add(24 * time.Hour)
	}
	return t
}

// TestEpochFiling: every record of a pair is filed under the epoch ending
// at or after its Accepted, whatever its deadline; the epoch's key is
// fetched once and forgotten once the epoch has ended; bad input is
// refused before anything is written.
func TestEpochFiling(t *testing.T) {
	rc := testcluster.StartRedis(t)
	c := clusterClient(t, rc)
	ctx := context.Background()
	t0 := time.Now().UTC().Truncate(time.Hour)
	clock := &storetest.Clock{}
	clock.Set(t0)
	keys := &countingKeys{inner: newEpochKeys()}
	prefix := freshPrefix()
	s, err := New(c, Options{EpochKeys: keys, Prefix: prefix, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	day := t0.Truncate(24 * time.Hour)
	accepted := t0.Add(50 * time.Hour)
	end := ceilDay(accepted)
	red := func(rks ...issuer.ReplayKey) issuer.Redemption {
		return issuer.Redemption{Replay: rks, MaxRetries: 1, Colour: policy.Green, Day: day, CountDeadline: t0.Add(400 * 24 * time.Hour)}
	}
	rk := func(id string, hours int) issuer.ReplayKey {
		return issuer.ReplayKey{Attester: "lab-1", ID: id, Deadline: t0.Add(time.Duration(hours) * time.Hour), Accepted: accepted}
	}
	if _, err := s.Redeem(ctx, red(rk("a", 2), rk("b", 50))); err != nil {
		t.Fatal(err)
	}
	if n := keys.calls.Load(); n != 1 {
		t.Fatalf("EpochKeys called %d times for two pairs of one epoch, want 1", n)
	}
	// Both records are under the epoch's end, each expiring at its own
	// deadline.
	for _, k := range []issuer.ReplayKey{rk("a", 2), rk("b", 50)} {
		name := recordKeyOf(t, s, k)
		if want := fmt.Sprintf("%sr:%d:", prefix, end.Unix()); !strings.HasPrefix(name, want) {
			t.Fatalf("record key %q, want it under %q", name, want)
		}
		exp, err := c.PExpireTime(ctx, name).Result()
		if err != nil || exp != time.Duration(k.Deadline.UnixMilli())*time.Millisecond {
			t.Fatalf("record %s expires at %v (%v), want its deadline %s", k.ID, exp, err, k.Deadline)
		}
	}
	// The next renewal period of "a" (another deadline, the same
	// Accepted) finds its record.
	var re *issuer.RedeemedError
	if _, err := s.Redeem(ctx, red(rk("a", 40))); !errors.As(err, &re) {
		t.Fatalf("a, another deadline: %v, want refused", err)
	}

	// Without Accepted the deadline picks the epoch.
	bare := issuer.ReplayKey{Attester: "lab-1", ID: "c", Deadline: t0.Add(30 * time.Hour)}
	if name, want := recordKeyOf(t, s, bare), fmt.Sprintf("%sr:%d:", prefix, ceilDay(bare.Deadline).Unix()); !strings.HasPrefix(name, want) {
		t.Fatalf("record key without Accepted %q, want it under %q", name, want)
	}

	// Bad input: a clear error, nothing written.
	before := keys.calls.Load()
	late := rk("d", 51)
	_, err = s.Redeem(ctx, red(rk("e", 3), late))
	if want := fmt.Sprintf("redisstore: redeem: attestation 1: accepted until %s, before its deadline %s",
		accepted.Format(time.RFC3339), late.Deadline.Format(time.RFC3339)); err == nil || err.Error() != want {
		t.Fatalf("Accepted before Deadline: %v, want %q", err, want)
	}
	other := issuer.ReplayKey{Attester: "lab-1", ID: "f", Deadline: t0.Add(5 * time.Hour), Accepted: t0.Add(24 * 9 * time.Hour)}
	keys.short.Store(true)
	_, err = s.Redeem(ctx, red(rk("e", 3), other))
	if err == nil || !strings.Contains(err.Error(), "is 16 bytes, want 32") {
		t.Fatalf("a short epoch key: %v", err)
	}
	keys.short.Store(false)
	keys.fail.Store(true)
	if err := s.Redeemed(ctx, []issuer.ReplayKey{other}, 1); err == nil || !strings.Contains(err.Error(), "epoch key: etcd unreachable") {
		t.Fatalf("EpochKeys failing: %v", err)
	}
	keys.fail.Store(false)
	if keys.calls.Load() != before+2 {
		t.Fatalf("EpochKeys called %d times for the refused requests, want 2 (the bad key is not kept)", keys.calls.Load()-before)
	}
	if err := s.Redeemed(ctx, []issuer.ReplayKey{rk("e", 3)}, 0); err != nil {
		t.Fatalf("e after refused requests: %v (a refused request left a record)", err)
	}

	// Once the epoch has ended its key leaves memory.
	clock.Set(end)
	if _, err := s.Redeem(ctx, red(other)); err == nil {
		t.Fatal("deadline before now redeemed")
	}
	s.mu.Lock()
	_, held := s.epochs[end.Unix()]
	s.mu.Unlock()
	if !held {
		// Nothing fetched since the clock moved: still held until the
		// next fetch or sweep.
		t.Fatal("epoch key dropped before any fetch or sweep")
	}
	late2 := issuer.ReplayKey{Attester: "lab-1", ID: "g", Deadline: end.Add(5 * time.Hour), Accepted: end.Add(5 * time.Hour)}
	if _, err := s.Redeem(ctx, red(late2)); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	_, held = s.epochs[end.Unix()]
	s.mu.Unlock()
	if held {
		t.Fatal("the key of an ended epoch is still in memory after the next fetch")
	}
}
