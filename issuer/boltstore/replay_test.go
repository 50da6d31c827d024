package boltstore

import (
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
