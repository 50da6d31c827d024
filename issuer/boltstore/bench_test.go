package boltstore

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/healthcode/healthcode/internal/preload"
	"github.com/healthcode/healthcode/issuer"
)

// spreadReplay records n replay records whose deadlines spread over span
// after first, in twelve hour-apart steps, through the store's own Redeem
// in large calls (setup only: not the hot path).
func spreadReplay(b *testing.B, s *DB, n int, first time.Time, span time.Duration) {
	b.Helper()
	const steps = 12
	prefix := fmt.Sprintf("spread-%d-", first.Unix())
	deadline := func(i int) time.Time { return first.Add(time.Duration(i%steps+1) * span / steps).Truncate(time.Hour) }
	if err := preload.Replay(context.Background(), s, s.clock.Now(), n, 0, "bench-lab", prefix, deadline); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkSweep1M sweeps 1,000,000 expired replay records (with 50,000
// live ones that compaction must copy).
func BenchmarkSweep1M(b *testing.B) {
	const n, live = 1_000_000, 50_000
	ctx := context.Background()
	var total, deleting time.Duration
	for range b.N {
		b.StopTimer()
		s, err := Open(b.TempDir(), Options{KEK: testKEK, Clock: &fakeClock{t: t0}})
		if err != nil {
			b.Fatal(err)
		}
		spreadReplay(b, s, n, t0, 12*time.Hour)
		spreadReplay(b, s, live, t0.Add(48*time.Hour), 12*time.Hour)
		var start, destroyed time.Time
		testHook = func(stage string) {
			if stage == "partition-dropped" {
				destroyed = time.Now()
			}
		}
		b.StartTimer()
		start = time.Now()
		st, err := s.Sweep(ctx, t0.Add(24*time.Hour))
		total += time.Since(start)
		b.StopTimer()
		testHook = nil
		deleting += destroyed.Sub(start)
		if err != nil {
			b.Fatal(err)
		}
		if st.Deleted[issuer.CategoryReplay] != n {
			b.Fatalf("sweep = %+v", st)
		}
		s.Close()
	}
	b.ReportMetric(float64(n*b.N)/total.Seconds(), "records/s")
	b.ReportMetric(float64(n*b.N)/deleting.Seconds(), "delete-only-records/s")
	b.ReportMetric(float64((total-deleting).Milliseconds())/float64(b.N), "compact-ms")
}

// preloadLive is the live replay records the "live=1M" benchmarks hold
// before the clock starts, as a city's issuer does (issue 10).
const preloadLive = 1_000_000

// BenchmarkRedeemParallel redeems one fresh attestation per operation from
// 64 goroutines, each durable before it returns, on an empty store and on
// one holding 1M live replay records (written through Redeem, not timed),
// for three batch delays.
func BenchmarkRedeemParallel(b *testing.B) {
	// Filled once, on first use, in the parent's directory: the
	// sub-benchmarks run several times each (b.N).
	full, filled := b.TempDir(), false
	fullStore := func(b *testing.B) string {
		if !filled {
			s, err := Open(full, Options{KEK: testKEK, Clock: &fakeClock{t: t0}})
			if err != nil {
				b.Fatal(err)
			}
			if err := preload.Replay(context.Background(), s, t0, preloadLive, 0, "preload-lab", "", preload.Spread(t0, 3)); err != nil {
				b.Fatal(err)
			}
			if err := s.Close(); err != nil {
				b.Fatal(err)
			}
			filled = true
		}
		return full
	}
	for _, pl := range []struct {
		name string
		dir  func(b *testing.B) string
	}{{"live=0", func(b *testing.B) string { return b.TempDir() }}, {"live=1M", fullStore}} {
		b.Run(pl.name, func(b *testing.B) {
			for _, delay := range []time.Duration{time.Millisecond, 2 * time.Millisecond, 10 * time.Millisecond} {
				b.Run("delay="+delay.String(), func(b *testing.B) { redeemParallel(b, pl.dir(b), delay) })
			}
		})
	}
}

func redeemParallel(b *testing.B, dir string, delay time.Duration) {
	s, err := Open(dir, Options{KEK: testKEK, Clock: &fakeClock{t: t0}, MaxBatchDelay: delay})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	d := t0.Add(72 * time.Hour)
	var next atomic.Int64
	// Fresh ids on every run: the 1M store is reused across runs.
	prefix := strconv.FormatInt(time.Now().UnixNano(), 36) + "-"
	b.SetParallelism((64 + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id := prefix + strconv.FormatInt(next.Add(1), 10)
			if err := errOf(s.Redeem(ctx, redemption("lab", d, id))); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkRedeemDuringSweep measures redemption latency from 16 writers,
// first with no sweep, then while 300,000 expired records are swept and
// the file compacted (with 100,000 live records to copy).
// (Sub-benchmarks compare sweep transaction sizes.)
func BenchmarkRedeemDuringSweep(b *testing.B) {
	for _, chunk := range []int{defaultSweepChunk, 2000} {
		b.Run("chunk="+strconv.Itoa(chunk), func(b *testing.B) { redeemDuringSweep(b, chunk) })
	}
}

func redeemDuringSweep(b *testing.B, chunk int) {
	const expired, live, writers = 300_000, 100_000, 16
	ctx := context.Background()
	var idle, during []time.Duration
	var sweepTime time.Duration
	for round := range b.N {
		b.StopTimer()
		s, err := Open(b.TempDir(), Options{KEK: testKEK, Clock: &fakeClock{t: t0}, SweepChunk: chunk})
		if err != nil {
			b.Fatal(err)
		}
		spreadReplay(b, s, expired, t0, 12*time.Hour)
		spreadReplay(b, s, live, t0.Add(48*time.Hour), 12*time.Hour)
		d := t0.Add(72 * time.Hour)
		var next atomic.Int64
		// run redeems from writers, each doing limit redemptions, or (if
		// stop is not nil) as many as it can until stop is closed.
		run := func(stop <-chan struct{}, limit int) []time.Duration {
			var mu sync.Mutex
			var lat []time.Duration
			var wg sync.WaitGroup
			for range writers {
				wg.Go(func() {
					var mine []time.Duration
				loop:
					for i := 0; ; i++ {
						if stop == nil && i >= limit {
							break
						}
						if stop != nil {
							select {
							case <-stop:
								break loop
							default:
							}
						}
						id := fmt.Sprintf("r%d-%d", round, next.Add(1))
						start := time.Now()
						if err := errOf(s.Redeem(ctx, redemption("lab", d, id))); err != nil {
							b.Error(err)
							return
						}
						mine = append(mine, time.Since(start))
					}
					mu.Lock()
					lat = append(lat, mine...)
					mu.Unlock()
				})
			}
			wg.Wait()
			return lat
		}
		idle = append(idle, run(nil, 200)...)

		b.StartTimer()
		stop := make(chan struct{})
		var st issuer.SweepStats
		var sweepErr error
		go func() {
			defer close(stop)
			start := time.Now()
			st, sweepErr = s.Sweep(ctx, t0.Add(24*time.Hour))
			sweepTime += time.Since(start)
		}()
		during = append(during, run(stop, 0)...)
		b.StopTimer()
		if sweepErr != nil {
			b.Fatal(sweepErr)
		}
		if st.Deleted[issuer.CategoryReplay] != expired {
			b.Fatalf("sweep = %+v", st)
		}
		s.Close()
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	slices.Sort(idle)
	slices.Sort(during)
	pct := func(l []time.Duration, p float64) time.Duration { return l[int(float64(len(l)-1)*p)] }
	b.ReportMetric(ms(pct(idle, 0.50)), "idle-p50-ms")
	b.ReportMetric(ms(pct(idle, 0.99)), "idle-p99-ms")
	b.ReportMetric(ms(pct(during, 0.50)), "sweep-p50-ms")
	b.ReportMetric(ms(pct(during, 0.99)), "sweep-p99-ms")
	b.ReportMetric(ms(during[len(during)-1]), "sweep-max-ms")
	b.ReportMetric(float64(len(during))/float64(b.N), "redeems-during-sweep")
	b.ReportMetric(ms(sweepTime)/float64(b.N), "sweep-ms")
}
