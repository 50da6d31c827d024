package issuer_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/healthcode/healthcode/issuer"
	"github.com/healthcode/healthcode/issuer/issuertest"
)

// Eight concurrent Maintain calls at the instant a rotation falls due
// publish exactly one next key: the check (no key pending) and the act
// (make one) happen under one lock.
func TestConcurrentMaintainPublishesOneNextKey(t *testing.T) {
	ctx := context.Background()
	for round := range 10 {
		env := issuertest.Start(t, issuertest.WithTime(t0))
		iss := env.Issuer
		p := iss.Policy()
		cur := iss.Keys()[0]
		// The first instant at which Maintain publishes the next key.
		env.Clock.Set(cur.ActiveAt.Add(p.Keys.Rotation.D() - p.Bundle.Lifetime.D()))
		var wg sync.WaitGroup
		start := make(chan struct{})
		errs := make(chan error, 8)
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				errs <- iss.Maintain(ctx)
			}()
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		now := env.Clock.Now()
		pending := 0
		for _, k := range iss.Keys() {
			if k.ActiveAt.After(now) {
				pending++
			}
		}
		held, err := env.DB.SigningKeys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if pending != 1 || len(held) != 2 {
			t.Fatalf("round %d: %d pending keys, %d keys stored after 8 concurrent Maintain calls; want 1 and 2", round, pending, len(held))
		}
	}
}

// Concurrent rotations never make the issuer serve a bundle whose sequence
// is lower than one it served before (verifiers refuse that as a rollback),
// and the last bundle served names the key that signs.
func TestConcurrentRotationsNeverServeALowerSequence(t *testing.T) {
	ctx := context.Background()
	env := issuertest.Start(t, issuertest.WithTime(t0))
	iss := env.Issuer
	done := make(chan struct{})
	var watch sync.WaitGroup
	watch.Add(1)
	var lowered []string
	go func() {
		defer watch.Done()
		var highest uint64
		for {
			select {
			case <-done:
				return
			default:
			}
			_, b := iss.Bundle()
			if b.Sequence < highest {
				lowered = append(lowered, fmt.Sprintf("served %d after %d", b.Sequence, highest))
			}
			highest = max(highest, b.Sequence)
		}
	}()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 8 {
				if _, _, err := iss.RotateKeys(ctx, "race", g%2 == 0); err != nil && g%2 == 0 {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	close(done)
	watch.Wait()
	if len(lowered) > 0 {
		t.Fatalf("bundle sequence went down %d times, first: %s", len(lowered), lowered[0])
	}
	_, b := iss.Bundle()
	signing := ""
	for _, k := range iss.Keys() {
		if k.Status == "current" {
			signing = k.ID
		}
	}
	if k, ok := b.Find(signing); !ok || k.Status != "current" {
		t.Fatalf("the last bundle (seq %d) does not name the signing key %s as current: %+v", b.Sequence, signing, k)
	}
}

// Revocations racing rotations: every bundle served after a revocation
// returned lacks the key and withdraws it, sequences never go down, and a
// key always signs.
func TestConcurrentRevocationsAndRotations(t *testing.T) {
	ctx := context.Background()
	env := issuertest.Start(t, issuertest.WithTime(t0))
	iss := env.Issuer
	var mu sync.Mutex
	revoked := map[string]bool{}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 6 {
				if g%2 == 0 {
					if _, _, err := iss.RotateKeys(ctx, "race", true); err != nil {
						t.Error(err)
					}
					continue
				}
				var kid string
				for _, k := range iss.Keys() {
					if k.Status == "current" {
						kid = k.ID
					}
				}
				rev, err := iss.RevokeKey(ctx, "race", kid)
				if err != nil {
					// Another goroutine revoked it first: refused as input
					// (409), never an internal failure.
					var ie *issuer.InputError
					if !errors.As(err, &ie) || ie.Kind != issuer.KindConflict {
						t.Errorf("revoke %s: %v", kid, err)
					}
					continue
				}
				_, b := iss.Bundle()
				if b.Sequence < rev.Sequence {
					t.Errorf("bundle %d served after revocation in bundle %d", b.Sequence, rev.Sequence)
				}
				mu.Lock()
				revoked[rev.Revoked] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	_, b := iss.Bundle()
	if len(revoked) == 0 {
		t.Fatal("no revocation went through")
	}
	for kid := range revoked {
		if _, ok := b.Find(kid); ok {
			t.Fatalf("revoked key %s in the final bundle %d", kid, b.Sequence)
		}
		if !slices.Contains(b.Withdrawn, kid) {
			t.Fatalf("final bundle withdraws %v, lacks %s", b.Withdrawn, kid)
		}
	}
	signing := ""
	for _, k := range iss.Keys() {
		if k.Status == "current" {
			signing = k.ID
		}
	}
	if k, ok := b.Find(signing); signing == "" || !ok || k.Status != "current" || revoked[signing] {
		t.Fatalf("after the race the signing key is %q (in bundle: %v)", signing, ok)
	}
}
