// Package preload fills a store with live replay records through the
// store's own API, so that benchmarks measure an issuer holding what a
// city's holds (1.4–4.3 million live records) rather than an empty file.
// It is set-up, not the hot path: records go in large calls.
package preload

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/healthcode/healthcode/issuer"
	"github.com/healthcode/healthcode/policy"
)

// DefaultCall is how many replay keys one Redeem call records.
const DefaultCall = 20_000

// Replay records n replay keys through s.Redeem, perCall keys a call (0:
// DefaultCall). Key i is (attester, prefix+i) with deadline deadline(i),
// no secret; each call counts one green redemption on now's day.
func Replay(ctx context.Context, s issuer.Store, now time.Time, n, perCall int, attester, prefix string, deadline func(i int) time.Time) error {
	if n < 0 || perCall < 0 {
		return errors.New("preload: counts must not be negative")
	}
	if perCall == 0 {
		perCall = DefaultCall
	}
	day := now.UTC().Truncate(24 * time.Hour)
	for done := 0; done < n; {
		m := min(perCall, n-done)
		keys := make([]issuer.ReplayKey, m)
		for k := range keys {
			i := done + k
			keys[k] = issuer.ReplayKey{Attester: attester, ID: prefix + strconv.Itoa(i), Deadline: deadline(i)}
		}
		if _, err := s.Redeem(ctx, issuer.Redemption{Replay: keys, Colour: policy.Green, Day: day,
			CountDeadline: day.Add(24*time.Hour + policy.Default().Retention.Counts.D())}); err != nil {
			return fmt.Errorf("preload: records %d to %d: %w", done, done+m-1, err)
		}
		done += m
	}
	return nil
}

// Spread gives record i of n one of days deadlines, whole hours 1..days
// days after now: live records spread over their renewal periods as a
// city's are.
func Spread(now time.Time, days int) func(i int) time.Time {
	ds := make([]time.Time, days)
	for d := range ds {
		ds[d] = now.Add(time.Duration(d+1) * 24 * time.Hour).Truncate(time.Hour)
	}
	return func(i int) time.Time { return ds[i%days] }
}
