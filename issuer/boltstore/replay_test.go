package boltstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/healthcode/healthcode/issuer"
)

func withSecret(r issuer.Redemption, secret []byte, maxRetries int) issuer.Redemption {
	r.MaxRetries = maxRetries
	for i := range r.Replay {
		r.Replay[i].Secret = secret
	}
	return r
}

// The record is found by (attester, id) alone: the same attestation with
// another deadline, in this epoch or another, is refused while it lives.
func TestRedeemFindsRecordWhateverTheDeadline(t *testing.T) {
	s := openTest(t, t.TempDir(), nil)
	ctx := context.Background()
	first := t0.Add(3 * time.Hour)
	if err := errOf(s.Redeem(ctx, redemption("lab", first, "a"))); err != nil {
		t.Fatal(err)
	}
	for _, d := range []time.Time{first.Add(time.Hour), first.Add(-time.Hour), first.Add(72 * time.Hour), first.Add(30 * 24 * time.Hour)} {
		wantRedeemed(t, errOf(s.Redeem(ctx, redemption("lab", d, "a"))), 0)
		wantRedeemed(t, s.Redeemed(ctx, redemption("lab", d, "a").Replay, 0), 0)
	}
	// After a reopen too (the epoch keys are read back from disk).
	dir := s.dir
	s.Close()
	s = openTest(t, dir, nil)
	wantRedeemed(t, errOf(s.Redeem(ctx, redemption("lab", first.Add(50*time.Hour), "a"))), 0)
}

// An expired record counts as absent before any sweep: the next renewal
// period redeems again, and the new record is refused in its turn.
func TestRedeemExpiredRecordCountsAsAbsent(t *testing.T) {
	clock := &fakeClock{t: t0}
	s := openTest(t, t.TempDir(), clock)
	ctx := context.Background()
	d1 := t0.Add(2 * time.Hour)
	if err := errOf(s.Redeem(ctx, redemption("lab", d1, "a"))); err != nil {
		t.Fatal(err)
	}
	clock.Set(d1.Add(-time.Second))
	wantRedeemed(t, errOf(s.Redeem(ctx, redemption("lab", d1.Add(time.Hour), "a"))), 0)
	clock.Set(d1) // deadline <= now: expired
	if err := s.Redeemed(ctx, redemption("lab", d1.Add(time.Hour), "a").Replay, 0); err != nil {
		t.Fatalf("pre-check of an expired record: %v", err)
	}
	for _, d2 := range []time.Time{d1.Add(time.Hour), d1.Add(48 * time.Hour)} {
		res, err := s.Redeem(ctx, redemption("lab", d2, "a"))
		if err != nil {
			t.Fatalf("redeem after the record expired: %v", err)
		}
		if res.Retried[0] || !res.Deadlines[0].Equal(d2) {
			t.Fatalf("result %+v, want a new record until %v", res, d2)
		}
		wantRedeemed(t, errOf(s.Redeem(ctx, redemption("lab", d2, "a"))), 0)
		clock.Set(d2)
	}
}

func TestRedeemRetryWithSecret(t *testing.T) {
	s := openTest(t, t.TempDir(), nil)
	ctx := context.Background()
	d := t0.Add(5 * time.Hour)
	secret := bytes.Repeat([]byte{7}, 32)
	other := bytes.Repeat([]byte{8}, 32)
	res, err := s.Redeem(ctx, withSecret(redemption("lab", d, "a", "b"), secret, 2))
	if err != nil {
		t.Fatal(err)
	}
	if res.Retried[0] || res.Retried[1] {
		t.Fatalf("first redemption reported as retry: %+v", res)
	}
	// No secret, another secret, or MaxRetries 0: refused.
	wantRedeemed(t, errOf(s.Redeem(ctx, redemption("lab", d, "a"))), 0)
	wantRedeemed(t, errOf(s.Redeem(ctx, withSecret(redemption("lab", d, "b"), other, 2))), 0)
	wantRedeemed(t, errOf(s.Redeem(ctx, withSecret(redemption("lab", d, "a"), secret, 0))), 0)
	wantRedeemed(t, s.Redeemed(ctx, withSecret(redemption("lab", d, "a"), other, 2).Replay, 2), 0)
	if err := s.Redeemed(ctx, withSecret(redemption("lab", d, "a"), secret, 2).Replay, 2); err != nil {
		t.Fatalf("pre-check of a valid retry: %v", err)
	}
	// Two retries, with another deadline given: the record keeps its own.
	for n := range 2 {
		res, err := s.Redeem(ctx, withSecret(redemption("lab", d.Add(24*time.Hour), "a", "b"), secret, 2))
		if err != nil {
			t.Fatalf("retry %d: %v", n+1, err)
		}
		if !res.Retried[0] || !res.Retried[1] || !res.Deadlines[0].Equal(d) || !res.Deadlines[1].Equal(d) {
			t.Fatalf("retry %d: %+v, want retried until %v", n+1, res, d)
		}
	}
	wantRedeemed(t, errOf(s.Redeem(ctx, withSecret(redemption("lab", d, "a"), secret, 2))), 0)
	wantRedeemed(t, s.Redeemed(ctx, withSecret(redemption("lab", d, "b"), secret, 2).Replay, 2), 0)
	// A refused request writes nothing: "c" is new, "a" is spent.
	wantRedeemed(t, errOf(s.Redeem(ctx, withSecret(redemption("lab", d, "c", "a"), secret, 2))), 1)
	if err := errOf(s.Redeem(ctx, redemption("lab", d, "c"))); err != nil {
		t.Fatalf("c after a refused request: %v", err)
	}
}

func TestRedeemRejectsBadSecret(t *testing.T) {
	s := openTest(t, t.TempDir(), nil)
	err := errOf(s.Redeem(context.Background(), withSecret(redemption("lab", t0.Add(time.Hour), "a"), []byte("short"), 1)))
	if want := "boltstore: redeem: attestation 0: secret is 5 bytes, want 32"; err == nil || err.Error() != want {
		t.Fatalf("got %v, want %q", err, want)
	}
	err = errOf(s.Redeem(context.Background(), withSecret(redemption("lab", t0.Add(time.Hour), "a"), nil, -1)))
	if want := "boltstore: redeem: MaxRetries must not be negative, got -1"; err == nil || err.Error() != want {
		t.Fatalf("got %v, want %q", err, want)
	}
}

// The check-and-set is race-free across partitions: copies of one
// attestation with deadlines in different epochs, redeemed at once, alone
// or beside other attestations, give exactly one success.
func TestRedeemConcurrentAcrossPartitions(t *testing.T) {
	s := openTest(t, t.TempDir(), nil)
	ctx := context.Background()
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok, refused, winner := 0, 0, -1
	for g := range 32 {
		wg.Go(func() {
			r := redemption("lab", t0.Add(time.Duration(1+g%5)*24*time.Hour), "shared")
			if g%2 == 1 {
				// With a companion in another partition (the intent path).
				r.Replay = append(r.Replay, issuer.ReplayKey{Attester: "lab", ID: fmt.Sprint("companion-", g), Deadline: t0.Add(200 * time.Hour)})
			}
			err := errOf(s.Redeem(ctx, r))
			mu.Lock()
			defer mu.Unlock()
			var re *issuer.RedeemedError
			switch {
			case err == nil:
				ok++
				winner = g
			case errors.As(err, &re) && re.Index == 0:
				refused++
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if ok != 1 || refused != 31 {
		t.Fatalf("%d succeeded, %d refused; want 1 and 31", ok, refused)
	}
	// Refused requests wrote nothing: the shared record and the winner's
	// companion, if it had one, are held.
	if n, want := replayCount(t, s), 1+winner%2; n != want {
		t.Fatalf("%d replay records held, want %d (request %d won)", n, want, winner)
	}
	if n := intents(t, s); n != 0 {
		t.Fatalf("%d intents left", n)
	}
}
