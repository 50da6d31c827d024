package redisstore

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/healthcode/healthcode/internal/testcluster"
	"github.com/healthcode/healthcode/issuer"
	"github.com/healthcode/healthcode/issuer/storetest"
	"github.com/healthcode/healthcode/policy"
)

// TestRecordsSurviveEveryNodeKilled: with appendfsync always, a record
// Redeem answered is on disk; SIGKILL every node at once, start them again
// from their AOF and nodes.conf, and each answered attestation is refused
// (with its retry still usable by its secret, and its deadline kept).
func TestRecordsSurviveEveryNodeKilled(t *testing.T) {
	rc := testcluster.StartRedis(t)
	c := clusterClient(t, rc)
	now := time.Now().UTC().Truncate(time.Hour)
	clock := &storetest.Clock{}
	clock.Set(now)
	s, err := New(c, Options{EpochKeys: testKeys, Prefix: freshPrefix(), Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	secret := []byte("0123456789abcdef0123456789abcdef")
	red := func(id string, sec []byte) issuer.Redemption {
		return issuer.Redemption{
			Replay:     []issuer.ReplayKey{{Attester: "lab-1", ID: id, Deadline: now.Add(72 * time.Hour), Secret: sec}},
			MaxRetries: 1, Colour: policy.Yellow, Day: now.Truncate(24 * time.Hour), CountDeadline: now.Add(400 * 24 * time.Hour),
		}
	}
	const n = 30
	for i := 0; i < n; i++ {
		if _, err := s.Redeem(ctx, red(fmt.Sprint("att-", i), secret)); err != nil {
			t.Fatal(err)
		}
	}
	for _, node := range rc.Nodes {
		if err := node.Kill(); err != nil {
			t.Fatal(err)
		}
	}
	for _, node := range rc.Nodes {
		if err := rc.Restart(node); err != nil {
			t.Fatal(err)
		}
	}
	if err := rc.WaitHealthy(); err != nil {
		t.Fatal(err)
	}
	// The client's layout may point at old connections: retries reload it.
	c.ReloadState(ctx)
	for i := 0; i < n; i++ {
		id := fmt.Sprint("att-", i)
		var re *issuer.RedeemedError
		if _, err := s.Redeem(ctx, red(id, nil)); !errors.As(err, &re) {
			t.Fatalf("%s after every node was killed: %v, want refused", id, err)
		}
		res, err := s.Redeem(ctx, red(id, secret))
		if err != nil {
			t.Fatalf("%s: retry with its secret: %v", id, err)
		}
		if !res.Retried[0] || !res.Deadlines[0].Equal(now.Add(72*time.Hour)) {
			t.Fatalf("%s: retry result %+v", id, res)
		}
	}
	counts, err := s.Counts(ctx, now.Truncate(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if counts[policy.Yellow] != 2*n {
		t.Fatalf("yellow count %d, want %d", counts[policy.Yellow], 2*n)
	}
}
