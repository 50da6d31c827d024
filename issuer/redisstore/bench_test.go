package redisstore

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/healthcode/healthcode/internal/testcluster"
	"github.com/healthcode/healthcode/issuer"
	"github.com/healthcode/healthcode/issuer/storetest"
	"github.com/healthcode/healthcode/policy"
)

// roundTrips counts the commands and pipelines the node clients send:
// each is one network round trip to one node.
type roundTrips struct{ n atomic.Int64 }

func (r *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }
func (r *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { r.n.Add(1); return next(ctx, cmd) }
}
func (r *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error { r.n.Add(1); return next(ctx, cmds) }
}

// BenchmarkRedeem redeems one fresh attestation with a secret per
// operation, 16 at a time, on a real 3+3 cluster: the issuer's read-only
// pre-check (Redeemed) then Redeem, as one HTTP redemption does. It
// reports the round trips to Redis nodes per redemption.
func BenchmarkRedeem(b *testing.B) {
	rc := testcluster.StartRedis(b)
	for _, wait := range []int{0, 1} {
		b.Run(fmt.Sprintf("WaitReplicas=%d", wait), func(b *testing.B) {
			rt := &roundTrips{}
			c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: rc.Addrs(), MaxRedirects: 8,
				NewClient: func(opt *redis.Options) *redis.Client {
					n := redis.NewClient(opt)
					n.AddHook(rt)
					return n
				}})
			defer c.Close()
			now := time.Now().UTC().Truncate(time.Hour)
			clock := &storetest.Clock{}
			clock.Set(now)
			s, err := New(c, Options{EpochKeys: newEpochKeys(), Prefix: freshPrefix(), Clock: clock, WaitReplicas: wait, WaitTimeout: time.Second})
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			secret := make([]byte, secretSize)
			var ids atomic.Int64
			redeem := func() error {
				rk := []issuer.ReplayKey{{Attester: "lab-bench", ID: fmt.Sprint("att-", ids.Add(1)), Deadline: now.Add(72 * time.Hour),
					Accepted: now.Add(96 * time.Hour), Secret: secret}}
				if err := s.Redeemed(ctx, rk, 1); err != nil {
					return err
				}
				_, err := s.Redeem(ctx, issuer.Redemption{Replay: rk, MaxRetries: 1, Colour: policy.Green,
					Day: now.Truncate(24 * time.Hour), CountDeadline: now.Add(400 * 24 * time.Hour)})
				return err
			}
			// Warm up: the cluster's layout and the epoch key are fetched.
			if err := redeem(); err != nil {
				b.Fatal(err)
			}
			rt.n.Store(0)
			b.SetParallelism(8)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := redeem(); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(rt.n.Load())/float64(b.N), "roundtrips/op")
		})
	}
}

// BenchmarkSweep fills a 3+3 cluster with 100,000 records (written
// directly, in the store's format: half of them past their deadline by
// the sweep's now, all alive by Redis's clock) and times one Sweep per
// operation, refilling between operations.
func BenchmarkSweep(b *testing.B) {
	const records = 100_000
	rc := testcluster.StartRedis(b)
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: rc.Addrs(), MaxRedirects: 8})
	defer c.Close()
	now := time.Now().UTC().Truncate(time.Hour)
	clock := &storetest.Clock{}
	clock.Set(now)
	s, err := New(c, Options{EpochKeys: newEpochKeys(), Prefix: "bench:", Clock: clock})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	end := ceilDay(now.Add(96 * time.Hour))
	ek, err := s.epochKey(ctx, end, now)
	if err != nil {
		b.Fatal(err)
	}
	fill := func() {
		for i := 0; i < records; i += 1000 {
			_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
				for j := i; j < i+1000; j++ {
					d := now.Add(72 * time.Hour)
					if j%2 == 0 {
						d = now.Add(time.Hour)
					}
					k := s.recordKey(ek, end, "lab-bench", fmt.Sprint("att-", j))
					p.HSet(ctx, k, "d", d.UnixMilli(), "r", 0, "s", "", "m", "0123456789abcdef0123456789abcdef", "mk", 3)
					p.PExpireAt(ctx, k, now.Add(72*time.Hour))
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	var scanned time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		fill()
		b.StartTimer()
		started := time.Now()
		st, err := s.Sweep(ctx, now.Add(2*time.Hour))
		if err != nil {
			b.Fatal(err)
		}
		scanned += time.Since(started)
		if st.Deleted[issuer.CategoryReplay] != records/2 {
			b.Fatalf("deleted %d, want %d", st.Deleted[issuer.CategoryReplay], records/2)
		}
	}
	b.ReportMetric(float64(records*b.N)/scanned.Seconds(), "records/s")
}
