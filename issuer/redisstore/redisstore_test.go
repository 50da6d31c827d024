package redisstore

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/healthcode/healthcode/internal/testcluster"
	"github.com/healthcode/healthcode/issuer"
	"github.com/healthcode/healthcode/issuer/storetest"
	"github.com/healthcode/healthcode/policy"
)

func clusterClient(t *testing.T, rc *testcluster.RedisCluster) *redis.ClusterClient {
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: rc.Addrs(), MaxRedirects: 8})
	t.Cleanup(func() { c.Close() })
	return c
}

var prefixes atomic.Int64

// freshPrefix keeps stores of one cluster apart.
func freshPrefix() string { return fmt.Sprintf("t%d:", prefixes.Add(1)) }

// TestConformance runs the issuer.Store suite on a real 3+3 Redis Cluster,
// with and without WAIT for a replica.
func TestConformance(t *testing.T) {
	rc := testcluster.StartRedis(t)
	c := clusterClient(t, rc)
	for _, wait := range []int{0, 1} {
		t.Run(fmt.Sprintf("WaitReplicas=%d", wait), func(t *testing.T) {
			storetest.Run(t, func(t *testing.T, clock issuer.Clock) issuer.Store {
				s, err := New(c, Options{EpochKeys: testKeys, Prefix: freshPrefix(), Clock: clock, WaitReplicas: wait, WaitTimeout: 3 * time.Second})
				if err != nil {
					t.Fatal(err)
				}
				return s
			})
		})
	}
	t.Run("CountsAndNoIdentifiersStored", func(t *testing.T) { testCountsAndNoIdentifiers(t, rc, c) })
}

// testCountsAndNoIdentifiers checks the aggregate count per colour and day,
// and that no key or value on any master holds an attester, an id or a
// secret as it was given.
func testCountsAndNoIdentifiers(t *testing.T, rc *testcluster.RedisCluster, c *redis.ClusterClient) {
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Hour)
	clock := &storetest.Clock{}
	clock.Set(now)
	prefix := freshPrefix()
	s, err := New(c, Options{EpochKeys: testKeys, Prefix: prefix, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	day := now.Truncate(24 * time.Hour)
	secret := bytes.Repeat([]byte("S"), 32)
	for i, colour := range []policy.Colour{policy.Green, policy.Green, policy.Red} {
		_, err := s.Redeem(ctx, issuer.Redemption{
			Replay: []issuer.ReplayKey{{Attester: "lab-identifier", ID: fmt.Sprintf("attestation-identifier-%d", i),
				Deadline: now.Add(72 * time.Hour), Secret: secret}},
			MaxRetries: 1, Colour: colour, Day: day, CountDeadline: now.Add(400 * 24 * time.Hour),
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	counts, err := s.Counts(ctx, day)
	if err != nil {
		t.Fatal(err)
	}
	if counts[policy.Green] != 2 || counts[policy.Red] != 1 || len(counts) != 2 {
		t.Fatalf("counts: %v, want green 2, red 1", counts)
	}
	ttl, err := c.PExpireTime(ctx, s.countKey(day)).Result()
	if err != nil || ttl <= 0 {
		t.Fatalf("count key has no absolute expiry: %v %v", ttl, err)
	}

	records := 0
	err = c.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		iter := m.Scan(ctx, 0, prefix+"*", 100).Iterator()
		for iter.Next(ctx) {
			k := iter.Val()
			if strings.Contains(k, "identifier") {
				return fmt.Errorf("key %q holds an identifier", k)
			}
			if !strings.HasPrefix(k, prefix+"r:") {
				continue
			}
			records++
			exp, err := m.PExpireTime(ctx, k).Result()
			if err != nil {
				return err
			}
			if want := now.Add(72 * time.Hour); exp != time.Duration(want.UnixMilli())*time.Millisecond {
				return fmt.Errorf("record %q expires at %v, want its deadline %s", k, exp, want)
			}
			vals, err := m.HGetAll(ctx, k).Result()
			if err != nil {
				return err
			}
			for f, v := range vals {
				if strings.Contains(v, "identifier") || strings.Contains(v, string(secret)) {
					return fmt.Errorf("record field %s holds an identifier or the secret", f)
				}
			}
		}
		return iter.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	if records != 3 {
		t.Fatalf("found %d records on the masters, want 3", records)
	}
}

func TestNewRefusesBadOptions(t *testing.T) {
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}})
	defer c.Close()
	for _, tc := range []struct {
		opts Options
		want string
	}{
		{Options{}, "redisstore: EpochKeys is required"},
		{Options{EpochKeys: testKeys, Epoch: 90 * time.Minute}, "redisstore: Epoch must be a positive whole number of hours, got 1h30m0s"},
		{Options{EpochKeys: testKeys, Epoch: -time.Hour}, "redisstore: Epoch must be a positive whole number of hours, got -1h0m0s"},
		{Options{EpochKeys: testKeys, Prefix: "{x}"}, `redisstore: Prefix must not contain '{' or '}' (a hash tag would put every record on one slot), got "{x}"`},
		{Options{EpochKeys: testKeys, WaitReplicas: -1}, "redisstore: WaitReplicas must not be negative, got -1"},
		{Options{EpochKeys: testKeys, WaitReplicas: 1, WaitTimeout: 5 * time.Second}, "redisstore: WaitTimeout (5s) must be shorter than the client's ReadTimeout (5s)"},
	} {
		if _, err := New(c, tc.opts); err == nil || err.Error() != tc.want {
			t.Errorf("New(%+v): %v, want %q", tc.opts, err, tc.want)
		}
	}
	if _, err := New(nil, Options{EpochKeys: testKeys}); err == nil || err.Error() != "redisstore: a cluster client is required" {
		t.Errorf("New(nil): %v", err)
	}
}
