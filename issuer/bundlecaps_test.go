package issuer_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/healthcode/healthcode/attestation"
	"github.com/healthcode/healthcode/bundle"
	"github.com/healthcode/healthcode/issuer/issuertest"
	"github.com/healthcode/healthcode/policy"
	"github.com/healthcode/healthcode/token"
	"github.com/healthcode/healthcode/verifier"
)

// The bundle carries the policy's token caps, a policy change re-signs it
// with the new ones, the issuer's own tokens keep them, and a month-long
// token made with the issuer's signing key (a stolen key) is refused.
func TestBundleCarriesTokenCaps(t *testing.T) {
	ctx := context.Background()
	env := issuertest.Start(t, issuertest.WithTime(t0))
	caps := func(p *policy.Policy) bundle.Display {
		s := func(d policy.Duration) int64 { return int64(d.D() / time.Second) }
		return bundle.Display{Version: p.Version, SkewSeconds: s(p.Tokens.ClockSkew), HolderHint: p.HolderHint == policy.HintOn,
			Counting: p.Counting, Name: p.Name, GranularitySeconds: s(p.Tokens.Granularity),
			Lifetime: bundle.Lifetimes{Green: s(p.Tokens.Lifetime.Green), Yellow: s(p.Tokens.Lifetime.Yellow), Red: s(p.Tokens.Lifetime.Red)}}
	}
	b := env.Bundle(t)
	if want := caps(env.Issuer.Policy()); b.Policy != want {
		t.Fatalf("bundle policy %+v, want %+v", b.Policy, want)
	}

	p := policy.Default()
	p.Version = 2
	p.Tokens.Granularity = policy.Duration(30 * time.Minute)
	p.Tokens.Lifetime.Red = policy.Duration(6 * time.Hour)
	p.Renewal.Overlap = 0 // six-hour windows over horizon + overlap (9d) would be too many
	if err := env.Issuer.SetPolicy(ctx, "test", p); err != nil {
		t.Fatal(err)
	}
	b2 := env.Bundle(t)
	if b2.Sequence <= b.Sequence || b2.Policy != caps(p) {
		t.Fatalf("after a policy change: sequence %d (was %d), policy %+v, want %+v", b2.Sequence, b.Sequence, b2.Policy, caps(p))
	}
	if b2.Policy.GranularitySeconds != 1800 || b2.Policy.Lifetime.Red != 6*3600 {
		t.Fatalf("caps %+v", b2.Policy)
	}

	now := env.Clock.Now()
	_, toks := env.Redeem(t, env.Attest(t, attestation.TestNegative, now, ""))
	checkBatch(t, toks, b2, kidOf(t, toks[0]), now)

	held, err := env.DB.SigningKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var signer *token.Signer
	for _, k := range held {
		if k.ID == kidOf(t, toks[0]) {
			if signer, err = token.NewSigner(k.ID, k.Private); err != nil {
				t.Fatal(err)
			}
		}
	}
	if signer == nil {
		t.Fatal("signing key not held")
	}
	nbf := now.Truncate(time.Hour)
	forged, err := signer.Sign(token.Claims{Colour: policy.Green.Code(), NotBefore: nbf.Unix(), Expires: nbf.Add(30 * 24 * time.Hour).Unix(), Version: p.Version})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := verifier.Verify(forged, b2, now); !errors.Is(err, verifier.ErrWindowTooLong) {
		t.Fatalf("month-long token from the signing key: %v, want ErrWindowTooLong", err)
	}
}
