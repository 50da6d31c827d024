// Package storetest is the conformance suite of the store interfaces: the
// behaviour the issuer relies on, tested once and run against every
// adapter, as SPIRE's datastore tests and gocloud's drivertest do.
//
//   - Run: issuer.Store, the replay records (bbolt, Redis Cluster).
//   - RunState: issuer.StateStore, everything else (bbolt, etcd).
//   - RunSharing: issuer.Sharing, two replicas on one shared state (etcd).
//
// An adapter's own tests keep only what is particular to it (file
// formats, crash recovery, error texts, durability).
//
// Use:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T, clock issuer.Clock) issuer.Store {
//			return openFresh(t, clock) // closed by t.Cleanup
//		})
//	}
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/healthcode/healthcode/issuer"
	"github.com/healthcode/healthcode/policy"
)

// Open returns a new, empty store that reads the time from clock. It
// registers the store's closing with t.Cleanup. Stores of one Run may
// share a backing server, but two calls must not see each other's
// records (e.g. a fresh key namespace per call).
type Open func(t *testing.T, clock issuer.Clock) issuer.Store

// Clock is the suite's settable clock. It starts at the current hour, not
// at a fixed date: an engine that expires records by the wall clock (Redis
// PXAT) must not drop them before the suite's clock says so.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Set moves the clock to t.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// env is one case's store and clock.
type env struct {
	t     *testing.T
	ctx   context.Context
	clock *Clock
	store issuer.Store
	t0    time.Time
}

func newEnv(t *testing.T, open Open) *env {
	t0 := time.Now().UTC().Truncate(time.Hour)
	c := &Clock{t: t0}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return &env{t: t, ctx: ctx, clock: c, store: open(t, c), t0: t0}
}

// acceptedHours is when, after t0, every attestation of the suite stops
// being accepted: after the furthest deadline the suite uses (30 days),
// and the same for every key, as issuer.ReplayKey.Accepted is the same for
// every redemption of one pair.
const acceptedHours = 24 * 31

// key is a replay key of attester "lab-1" with a deadline hours after t0.
func (e *env) key(id string, hours int, secret []byte) issuer.ReplayKey {
	return issuer.ReplayKey{Attester: "lab-1", ID: id, Deadline: e.t0.Add(time.Duration(hours) * time.Hour), Secret: secret,
		Accepted: e.t0.Add(acceptedHours * time.Hour)}
}

func (e *env) redemption(maxRetries int, keys ...issuer.ReplayKey) issuer.Redemption {
	return issuer.Redemption{
		Replay:        keys,
		MaxRetries:    maxRetries,
		Colour:        policy.Green,
		Day:           e.t0.Truncate(24 * time.Hour),
		CountDeadline: e.t0.Add(400 * 24 * time.Hour),
	}
}

func (e *env) redeem(maxRetries int, keys ...issuer.ReplayKey) (issuer.RedeemResult, error) {
	return e.store.Redeem(e.ctx, e.redemption(maxRetries, keys...))
}

// mustRedeem redeems and checks the result: retried per key, and each
// key's deadline as want.
func (e *env) mustRedeem(maxRetries int, keys []issuer.ReplayKey, retried []bool, deadlines []time.Time) {
	e.t.Helper()
	res, err := e.redeem(maxRetries, keys...)
	if err != nil {
		e.t.Fatalf("Redeem: %v", err)
	}
	if len(res.Retried) != len(keys) || len(res.Deadlines) != len(keys) {
		e.t.Fatalf("Redeem of %d keys: %d Retried, %d Deadlines", len(keys), len(res.Retried), len(res.Deadlines))
	}
	for i := range keys {
		if res.Retried[i] != retried[i] {
			e.t.Errorf("key %d: Retried %v, want %v", i, res.Retried[i], retried[i])
		}
		if !res.Deadlines[i].Equal(deadlines[i]) {
			e.t.Errorf("key %d: Deadline %s, want %s", i, res.Deadlines[i], deadlines[i])
		}
	}
}

// refused checks that err is *issuer.RedeemedError for index.
func refused(t *testing.T, what string, err error, index int) {
	t.Helper()
	var re *issuer.RedeemedError
	if !errors.As(err, &re) {
		t.Fatalf("%s: got %v, want *issuer.RedeemedError{Index: %d}", what, err, index)
	}
	if re.Index != index {
		t.Fatalf("%s: refused index %d, want %d", what, re.Index, index)
	}
}

// invalid checks that err is a plain error: neither nil nor a refusal.
func invalid(t *testing.T, what string, err error) {
	t.Helper()
	var re *issuer.RedeemedError
	if err == nil || errors.As(err, &re) {
		t.Fatalf("%s: got %v, want an input error", what, err)
	}
}

func secret(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

// Run runs every case of the suite, each on a store of its own.
func Run(t *testing.T, open Open) {
	cases := []struct {
		name string
		f    func(*env)
	}{
		{"NewThenReplayRefused", testNewThenReplayRefused},
		{"FoundByAttesterAndIDAlone", testFoundByAttesterAndIDAlone},
		{"ExpiredCountsAsAbsent", testExpiredCountsAsAbsent},
		{"RetryWithSameSecret", testRetryWithSameSecret},
		{"RetryOfSeveralKeys", testRetryOfSeveralKeys},
		{"RetryNeedsTheSecret", testRetryNeedsTheSecret},
		{"RedeemedPreCheck", testRedeemedPreCheck},
		{"AllOrNone", testAllOrNone},
		{"AllOrNoneKeepsRetries", testAllOrNoneKeepsRetries},
		{"DuplicateInOneRequest", testDuplicateInOneRequest},
		{"InvalidInputWritesNothing", testInvalidInputWritesNothing},
		{"CancelledContext", testCancelledContext},
		{"ConcurrentSameKeyOneWins", testConcurrentSameKeyOneWins},
		{"ConcurrentOverlappingRequests", testConcurrentOverlappingRequests},
		{"ConcurrentRetriesBounded", testConcurrentRetriesBounded},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.f(newEnv(t, open)) })
	}
}

func testNewThenReplayRefused(e *env) {
	k := e.key("att-1", 72, nil)
	e.mustRedeem(0, []issuer.ReplayKey{k}, []bool{false}, []time.Time{k.Deadline})
	_, err := e.redeem(0, k)
	refused(e.t, "second Redeem", err, 0)
	refused(e.t, "Redeemed", e.store.Redeemed(e.ctx, []issuer.ReplayKey{k}, 0), 0)
}

func testFoundByAttesterAndIDAlone(e *env) {
	k := e.key("att-1", 72, nil)
	e.mustRedeem(0, []issuer.ReplayKey{k}, []bool{false}, []time.Time{k.Deadline})
	// Another deadline (a policy change) finds the same record.
	for _, hours := range []int{1, 71, 73, 24 * 30} {
		other := e.key("att-1", hours, nil)
		_, err := e.redeem(0, other)
		refused(e.t, fmt.Sprintf("same id, deadline +%dh", hours), err, 0)
		refused(e.t, fmt.Sprintf("Redeemed, deadline +%dh", hours), e.store.Redeemed(e.ctx, []issuer.ReplayKey{other}, 0), 0)
	}
	// Another attester's id, or another id, is another record.
	otherLab := k
	otherLab.Attester = "lab-2"
	otherID := e.key("att-2", 72, nil)
	// An attester that is a prefix of another, with the id shifted: the
	// pair, not the concatenation, identifies a record.
	shifted := issuer.ReplayKey{Attester: "lab-1a", ID: "tt-1", Deadline: k.Deadline}
	for _, o := range []issuer.ReplayKey{otherLab, otherID, shifted} {
		e.mustRedeem(0, []issuer.ReplayKey{o}, []bool{false}, []time.Time{o.Deadline})
	}
}

func testExpiredCountsAsAbsent(e *env) {
	k := e.key("att-1", 2, nil)
	e.mustRedeem(0, []issuer.ReplayKey{k}, []bool{false}, []time.Time{k.Deadline})
	e.clock.Set(k.Deadline.Add(-time.Second))
	_, err := e.redeem(0, e.key("att-1", 72, nil))
	refused(e.t, "a second before the deadline", err, 0)
	// At the deadline the record is dead: no sweep has run, yet the next
	// renewal period redeems again, as a new record.
	e.clock.Set(k.Deadline)
	next := e.key("att-1", 72, nil)
	if err := e.store.Redeemed(e.ctx, []issuer.ReplayKey{next}, 0); err != nil {
		e.t.Fatalf("Redeemed at the deadline: %v", err)
	}
	e.mustRedeem(0, []issuer.ReplayKey{next}, []bool{false}, []time.Time{next.Deadline})
	_, err = e.redeem(0, next)
	refused(e.t, "replay of the new record", err, 0)
	// The new record expires in its turn, and the period after it redeems.
	e.clock.Set(next.Deadline)
	third := e.key("att-1", 24*10, nil)
	e.mustRedeem(0, []issuer.ReplayKey{third}, []bool{false}, []time.Time{third.Deadline})
	_, err = e.redeem(0, third)
	refused(e.t, "replay of the third record", err, 0)
}

func testRetryWithSameSecret(e *env) {
	s := secret(7)
	k := e.key("att-1", 72, s)
	e.mustRedeem(2, []issuer.ReplayKey{k}, []bool{false}, []time.Time{k.Deadline})
	// A retry keeps the record's deadline, whatever the request says.
	later := e.key("att-1", 96, s)
	e.mustRedeem(2, []issuer.ReplayKey{later}, []bool{true}, []time.Time{k.Deadline})
	e.mustRedeem(2, []issuer.ReplayKey{k}, []bool{true}, []time.Time{k.Deadline})
	_, err := e.redeem(2, k)
	refused(e.t, "third retry with MaxRetries 2", err, 0)
	// A larger MaxRetries (a policy change) allows more on the same record.
	e.mustRedeem(3, []issuer.ReplayKey{k}, []bool{true}, []time.Time{k.Deadline})
	_, err = e.redeem(3, k)
	refused(e.t, "fourth retry with MaxRetries 3", err, 0)
}

func testRetryNeedsTheSecret(e *env) {
	withSecret := e.key("att-1", 72, secret(1))
	e.mustRedeem(5, []issuer.ReplayKey{withSecret}, []bool{false}, []time.Time{withSecret.Deadline})
	for name, k := range map[string]issuer.ReplayKey{
		"another secret": e.key("att-1", 72, secret(2)),
		"no secret":      e.key("att-1", 72, nil),
	} {
		_, err := e.redeem(5, k)
		refused(e.t, name, err, 0)
		refused(e.t, "Redeemed, "+name, e.store.Redeemed(e.ctx, []issuer.ReplayKey{k}, 5), 0)
	}
	// A record written without a secret cannot be retried with one.
	noSecret := e.key("att-2", 72, nil)
	e.mustRedeem(5, []issuer.ReplayKey{noSecret}, []bool{false}, []time.Time{noSecret.Deadline})
	_, err := e.redeem(5, e.key("att-2", 72, secret(1)))
	refused(e.t, "secret for a record without one", err, 0)
	// MaxRetries 0: no retry at all, even with the right secret.
	zero := e.key("att-3", 72, secret(3))
	e.mustRedeem(0, []issuer.ReplayKey{zero}, []bool{false}, []time.Time{zero.Deadline})
	_, err = e.redeem(0, zero)
	refused(e.t, "MaxRetries 0", err, 0)
	// The refusals used no retry: the right secret still retries.
	e.mustRedeem(5, []issuer.ReplayKey{withSecret}, []bool{true}, []time.Time{withSecret.Deadline})
}

func testRetryOfSeveralKeys(e *env) {
	// Two attestations of one request, retried together (another deadline
	// given): both are retries, each keeping its own deadline.
	s := secret(6)
	a, b := e.key("att-a", 72, s), e.key("att-b", 24*6, s)
	e.mustRedeem(2, []issuer.ReplayKey{a, b}, []bool{false, false}, []time.Time{a.Deadline, b.Deadline})
	if err := e.store.Redeemed(e.ctx, []issuer.ReplayKey{a, b}, 2); err != nil {
		e.t.Fatalf("Redeemed of two valid retries: %v", err)
	}
	// MaxRetries lowered to 0 (a policy change): no retry, none used.
	_, err := e.redeem(0, a, b)
	refused(e.t, "retry with MaxRetries 0", err, 0)
	refused(e.t, "Redeemed with MaxRetries 0", e.store.Redeemed(e.ctx, []issuer.ReplayKey{b}, 0), 0)
	for i := 0; i < 2; i++ {
		e.mustRedeem(2, []issuer.ReplayKey{e.key("att-a", 96, s), e.key("att-b", 96, s)}, []bool{true, true}, []time.Time{a.Deadline, b.Deadline})
	}
	_, err = e.redeem(2, a, b)
	refused(e.t, "both retries used", err, 0)
	refused(e.t, "Redeemed, both retries used", e.store.Redeemed(e.ctx, []issuer.ReplayKey{b}, 2), 0)
}

func testRedeemedPreCheck(e *env) {
	s := secret(9)
	a, b := e.key("att-a", 72, s), e.key("att-b", 72, nil)
	// Redeemed only reads: asking many times records nothing.
	for i := 0; i < 3; i++ {
		if err := e.store.Redeemed(e.ctx, []issuer.ReplayKey{a, b}, 1); err != nil {
			e.t.Fatalf("Redeemed of fresh keys: %v", err)
		}
	}
	e.mustRedeem(1, []issuer.ReplayKey{a}, []bool{false}, []time.Time{a.Deadline})
	// A retry left: not refused, and asking does not use it.
	for i := 0; i < 3; i++ {
		if err := e.store.Redeemed(e.ctx, []issuer.ReplayKey{b, a}, 1); err != nil {
			e.t.Fatalf("Redeemed with a retry left: %v", err)
		}
	}
	e.mustRedeem(1, []issuer.ReplayKey{a}, []bool{true}, []time.Time{a.Deadline})
	refused(e.t, "Redeemed, retries used", e.store.Redeemed(e.ctx, []issuer.ReplayKey{b, a}, 1), 1)
}

func testAllOrNone(e *env) {
	// Deadlines far apart, so the keys fall in different partitions or
	// shards in adapters that spread them.
	done := e.key("att-done", 24*20, nil)
	e.mustRedeem(0, []issuer.ReplayKey{done}, []bool{false}, []time.Time{done.Deadline})
	var fresh []issuer.ReplayKey
	for i := 0; i < 8; i++ {
		fresh = append(fresh, e.key(fmt.Sprintf("att-%d", i), 24*(i+1), nil))
	}
	for pos := 0; pos <= len(fresh); pos++ {
		req := append(append(append([]issuer.ReplayKey{}, fresh[:pos]...), done), fresh[pos:]...)
		_, err := e.redeem(0, req...)
		refused(e.t, fmt.Sprintf("redeemed key at %d", pos), err, pos)
	}
	// None of the fresh keys was recorded by the refused requests.
	want := make([]bool, len(fresh))
	deadlines := make([]time.Time, len(fresh))
	for i, k := range fresh {
		deadlines[i] = k.Deadline
	}
	if err := e.store.Redeemed(e.ctx, fresh, 0); err != nil {
		e.t.Fatalf("Redeemed after refusals: %v", err)
	}
	e.mustRedeem(0, fresh, want, deadlines)
	for i := range fresh {
		_, err := e.redeem(0, fresh[i])
		refused(e.t, fmt.Sprintf("replay of key %d", i), err, 0)
	}
}

func testAllOrNoneKeepsRetries(e *env) {
	s := secret(4)
	a := e.key("att-a", 72, s)
	done := e.key("att-done", 24*9, nil)
	e.mustRedeem(1, []issuer.ReplayKey{a}, []bool{false}, []time.Time{a.Deadline})
	e.mustRedeem(1, []issuer.ReplayKey{done}, []bool{false}, []time.Time{done.Deadline})
	for i := 0; i < 3; i++ {
		_, err := e.redeem(1, a, done)
		refused(e.t, "retry with a redeemed key", err, 1)
	}
	// The refused requests used none of a's one retry.
	e.mustRedeem(1, []issuer.ReplayKey{a}, []bool{true}, []time.Time{a.Deadline})
	_, err := e.redeem(1, a)
	refused(e.t, "after its one retry", err, 0)
}

func testDuplicateInOneRequest(e *env) {
	k, other := e.key("att-1", 72, nil), e.key("att-0", 72, nil)
	// The second copy has another deadline: the same attestation still.
	_, err := e.redeem(0, other, k, e.key("att-1", 48, nil))
	refused(e.t, "same attestation twice", err, 2)
	// Nothing of the request was written.
	e.mustRedeem(0, []issuer.ReplayKey{k, other}, []bool{false, false}, []time.Time{k.Deadline, other.Deadline})
}

func testInvalidInputWritesNothing(e *env) {
	good := e.key("att-good", 72, nil)
	cases := map[string]issuer.Redemption{
		"no keys":            e.redemption(0),
		"empty attester":     e.redemption(0, good, issuer.ReplayKey{ID: "x", Deadline: good.Deadline}),
		"empty id":           e.redemption(0, good, issuer.ReplayKey{Attester: "lab-1", Deadline: good.Deadline}),
		"short secret":       e.redemption(0, good, e.key("att-s", 72, []byte("short"))),
		"deadline at now":    e.redemption(0, good, e.key("att-d", 0, nil)),
		"no deadline":        e.redemption(0, good, issuer.ReplayKey{Attester: "lab-1", ID: "att-z", Accepted: good.Accepted}),
		"no count deadline":  func() issuer.Redemption { r := e.redemption(0, good); r.CountDeadline = time.Time{}; return r }(),
		"deadline before":    e.redemption(0, good, e.key("att-d", -1, nil)),
		"negative retries":   e.redemption(-1, good),
		"unknown colour":     func() issuer.Redemption { r := e.redemption(0, good); r.Colour = 99; return r }(),
		"day not a midnight": func() issuer.Redemption { r := e.redemption(0, good); r.Day = r.Day.Add(time.Hour); return r }(),
	}
	for name, r := range cases {
		_, err := e.store.Redeem(e.ctx, r)
		invalid(e.t, name, err)
	}
	e.mustRedeem(0, []issuer.ReplayKey{good}, []bool{false}, []time.Time{good.Deadline})
}

func testCancelledContext(e *env) {
	ctx, cancel := context.WithCancel(e.ctx)
	cancel()
	k := e.key("att-1", 72, nil)
	if _, err := e.store.Redeem(ctx, e.redemption(0, k)); !errors.Is(err, context.Canceled) {
		e.t.Fatalf("Redeem with a cancelled context: %v", err)
	}
	if err := e.store.Redeemed(ctx, []issuer.ReplayKey{k}, 0); !errors.Is(err, context.Canceled) {
		e.t.Fatalf("Redeemed with a cancelled context: %v", err)
	}
	e.mustRedeem(0, []issuer.ReplayKey{k}, []bool{false}, []time.Time{k.Deadline})
}

// race runs f(i) for i < n at once and collects the errors.
func race(n int, f func(i int) error) []error {
	errs := make([]error, n)
	var start, wg sync.WaitGroup
	start.Add(1)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start.Wait()
			errs[i] = f(i)
		}()
	}
	start.Done()
	wg.Wait()
	return errs
}

const racers = 16

func testConcurrentSameKeyOneWins(e *env) {
	for round := 0; round < 3; round++ {
		k := e.key(fmt.Sprintf("att-%d", round), 72, nil)
		errs := race(racers, func(int) error { _, err := e.redeem(0, k); return err })
		wins := 0
		for _, err := range errs {
			if err == nil {
				wins++
			} else {
				refused(e.t, "loser", err, 0)
			}
		}
		if wins != 1 {
			e.t.Fatalf("round %d: %d of %d concurrent redemptions won, want exactly 1", round, wins, racers)
		}
	}
}

func testConcurrentOverlappingRequests(e *env) {
	// Each request holds a key of its own and one shared key, the shared
	// one with deadlines days apart (partitions or shards apart in
	// adapters that spread them): exactly one wins, and every loser's own
	// key stays unrecorded.
	shared := func(i int) issuer.ReplayKey { return e.key("att-shared", 24*(1+i%5), nil) }
	own := func(i int) issuer.ReplayKey { return e.key(fmt.Sprintf("att-own-%d", i), 24*(1+i%7), nil) }
	errs := race(racers, func(i int) error {
		keys := []issuer.ReplayKey{own(i), shared(i)}
		if i%2 == 1 {
			keys = []issuer.ReplayKey{shared(i), own(i)}
		}
		_, err := e.redeem(0, keys...)
		return err
	})
	winner := -1
	for i, err := range errs {
		if err == nil {
			if winner >= 0 {
				e.t.Fatalf("requests %d and %d both won the shared key", winner, i)
			}
			winner = i
			continue
		}
		index := 1
		if i%2 == 1 {
			index = 0
		}
		refused(e.t, fmt.Sprintf("request %d", i), err, index)
	}
	if winner < 0 {
		e.t.Fatalf("no request won the shared key: %v", errs)
	}
	for i := 0; i < racers; i++ {
		_, err := e.redeem(0, own(i))
		if i == winner {
			refused(e.t, "the winner's own key", err, 0)
		} else if err != nil {
			e.t.Fatalf("loser %d's own key: %v (a refused request left a record)", i, err)
		}
	}
}

func testConcurrentRetriesBounded(e *env) {
	const maxRetries = 3
	s := secret(5)
	k := e.key("att-1", 72, s)
	var mu sync.Mutex
	news, retries := 0, 0
	errs := race(racers, func(int) error {
		res, err := e.redeem(maxRetries, k)
		if err == nil {
			mu.Lock()
			if res.Retried[0] {
				retries++
			} else {
				news++
			}
			mu.Unlock()
		}
		return err
	})
	for _, err := range errs {
		if err != nil {
			refused(e.t, "beyond the retries", err, 0)
		}
	}
	if news != 1 || retries != maxRetries {
		e.t.Fatalf("%d concurrent redemptions with one secret: %d new and %d retries, want 1 and %d", racers, news, retries, maxRetries)
	}
}
