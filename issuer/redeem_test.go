package issuer_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/healthcode/healthcode/attestation"
	"github.com/healthcode/healthcode/issuer"
	"github.com/healthcode/healthcode/issuer/boltstore"
	"github.com/healthcode/healthcode/issuer/issuertest"
	"github.com/healthcode/healthcode/policy"
	"github.com/healthcode/healthcode/verifier"
)

// Redemption through the core, on a real bbolt file in a temp dir, with
// the clock injected: no HTTP in the path (issuertest also serves HTTP;
// these tests never call it).

// rt0 is off the hour, so hour rounding shows.
var rt0 = time.Date(2026, 3, 10, 9, 17, 0, 0, time.UTC)

func attestAt(t *testing.T, env *issuertest.Env, kind attestation.Kind, at, exp time.Time, id, hint string) string {
	t.Helper()
	s, err := attestation.Sign(env.AttesterKey, attestation.Claims{Attester: env.AttesterID, Kind: kind,
		At: at.Unix(), Expires: exp.Unix(), ID: id, Hint: hint})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func secret(b byte) []byte { return bytes.Repeat([]byte{b}, issuer.SecretSize) }

func redeem(env *issuertest.Env, secret []byte, atts ...string) (*issuer.Batch, error) {
	return env.Issuer.Redeem(context.Background(), issuer.Request{Attestations: atts, Secret: secret})
}

// wantRefused checks the error is the RedeemError named.
func wantRefused(t *testing.T, err error, kind issuer.Kind, code string, index int, msg string) {
	t.Helper()
	var re *issuer.RedeemError
	if !errors.As(err, &re) {
		t.Fatalf("got %v (%T), want a RedeemError %s", err, err, code)
	}
	if re.Kind != kind || re.Code != code || re.Index != index || !strings.Contains(re.Message, msg) {
		t.Fatalf("got %v %s index %d %q, want %v %s index %d containing %q", re.Kind, re.Code, re.Index, re.Message, kind, code, index, msg)
	}
}

type span struct{ nbf, exp time.Time }

// windowsOf lists a batch's windows, each once, checking it holds Copies
// tokens per window that all verify under the published bundle.
func windowsOf(t *testing.T, env *issuertest.Env, b *issuer.Batch) []span {
	t.Helper()
	copies := env.Issuer.Policy().Tokens.Copies
	if len(b.Tokens)%copies != 0 {
		t.Fatalf("%d tokens, not a multiple of %d copies", len(b.Tokens), copies)
	}
	bun := env.Bundle(t)
	var ws []span
	verified := 0
	for n, tok := range b.Tokens {
		if n%copies == 0 {
			ws = append(ws, span{tok.NotBefore, tok.Expires})
		} else if w := ws[len(ws)-1]; !tok.NotBefore.Equal(w.nbf) || !tok.Expires.Equal(w.exp) {
			t.Fatalf("token %d is not a copy of its window", n)
		}
		at := tok.NotBefore
		if now := env.Clock.Now(); now.After(at) {
			at = now
		}
		if at.Unix() >= bun.Expires {
			continue // a verifier checks it with a later bundle
		}
		if _, err := verifier.Verify(tok.Token, bun, at); err != nil {
			t.Fatalf("token %d does not verify: %v", n, err)
		}
		verified++
	}
	if verified == 0 {
		t.Fatal("no token of the batch could be checked")
	}
	return ws
}

func ceilHour(t time.Time) time.Time {
	if r := t.Truncate(time.Hour); r.Equal(t) {
		return r
	} else {
		return r.Add(time.Hour)
	}
}

// Issue 12 item 1: a 180-day vaccination serves its whole period without a
// clinic visit. The wallet renews at each renew_after with the same
// attestation: every renewal succeeds once, a second one in the same
// period is refused, the codes never run out between renewals, and they
// end with the evidence.
func TestRenewalWalksAVaccination(t *testing.T) {
	ctx := context.Background()
	dose := rt0.Add(-14 * 24 * time.Hour) // green from now on, for 180 days
	env := issuertest.Start(t, issuertest.WithTime(rt0))
	p := env.Issuer.Policy()
	evidenceEnd := dose.Add(194 * 24 * time.Hour)
	att := attestAt(t, env, attestation.Vaccination, dose, evidenceEnd, "dose-1", "")

	var covered time.Time // end of the codes the wallet holds
	renewals := 0
	for {
		now := env.Clock.Now()
		b, err := redeem(env, secret(1), att)
		if !now.Before(evidenceEnd.Add(p.Tokens.ClockSkew.D())) {
			// After the final period the attestation itself has expired.
			wantRefused(t, err, issuer.KindRefused, attestation.CodeExpired, 0, "expired")
			break
		}
		if err != nil {
			t.Fatalf("renewal %d at %s: %v", renewals+1, now, err)
		}
		renewals++
		if b.Colour != policy.Green || b.Retry {
			t.Fatalf("renewal %d: colour %s, retry %v", renewals, b.Colour, b.Retry)
		}
		ws := windowsOf(t, env, b)
		hour := now.Truncate(time.Hour)
		// The period's end; in the final period, when the attestation can
		// no longer be accepted.
		want := hour.Add(p.Renewal.Period.D())
		if accepted := ceilHour(evidenceEnd.Add(p.Tokens.ClockSkew.D())); accepted.Before(want) {
			want = accepted
		}
		if !b.RenewAfter.Equal(want) {
			t.Fatalf("renewal %d at %s: renew_after %s, want %s", renewals, now, b.RenewAfter, want)
		}
		if !b.EvidenceUntil.Equal(evidenceEnd) {
			t.Fatalf("evidence_until %s, want %s", b.EvidenceUntil, evidenceEnd)
		}
		last := ws[len(ws)-1].exp
		if want := hour.Add(p.Reach()); last.After(want) || last.After(evidenceEnd) {
			t.Fatalf("renewal %d: batch ends %s, past the reach %s or the evidence %s", renewals, last, want, evidenceEnd)
		}
		// The wallet renewing at renew_after still holds the overlap.
		if want := b.RenewAfter.Add(p.Renewal.Overlap.D()); last.Before(want) && last.Before(evidenceEnd.Truncate(time.Hour)) {
			t.Fatalf("renewal %d: batch ends %s, before renew_after + overlap %s", renewals, last, want)
		}
		// No gap: this batch begins where the codes held run out, or before.
		if !covered.IsZero() && ws[0].nbf.After(covered) {
			t.Fatalf("renewal %d: gap from %s to %s", renewals, covered, ws[0].nbf)
		}
		covered = last

		// A second redemption in the same period, without the secret, or
		// with another one, is refused; the period's last second too.
		_, err = redeem(env, nil, att)
		wantRefused(t, err, issuer.KindConflict, issuer.CodeAlreadyRedeemed, 0, "already been redeemed in this renewal period")
		if b.RenewAfter.Before(evidenceEnd) {
			env.Clock.Set(b.RenewAfter.Add(-time.Second))
			_, err = redeem(env, secret(2), att)
			wantRefused(t, err, issuer.KindConflict, issuer.CodeAlreadyRedeemed, 0, "already been redeemed")
		}

		// The wallet comes back at the end of the period (a few minutes
		// late, as phones are); the issuer keeps its schedule as Run would.
		env.Clock.Set(b.RenewAfter.Add(7 * time.Minute))
		if err := env.Issuer.Maintain(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := env.DB.Sweep(ctx, env.Clock.Now()); err != nil {
			t.Fatal(err)
		}
	}
	// 180 days of green in weekly periods: 26 renewals (the first is the
	// first redemption), and the codes reached the evidence's end.
	if renewals != 26 {
		t.Fatalf("%d renewals, want 26", renewals)
	}
	if covered.Before(evidenceEnd.Add(-time.Hour)) || covered.After(evidenceEnd) {
		t.Fatalf("codes end %s, want within the hour before the evidence ends %s", covered, evidenceEnd)
	}
}

// Issue 11 item 9: every way a redemption is refused, through the core.
func TestRedeemRefusals(t *testing.T) {
	hintOn := policy.Default()
	hintOn.HolderHint = policy.HintOn
	env := issuertest.Start(t, issuertest.WithTime(rt0), issuertest.WithPolicy(hintOn))
	now := rt0
	day := 24 * time.Hour
	neg := func(id string) string {
		return attestAt(t, env, attestation.TestNegative, now.Add(-time.Hour), now.Add(day), id, "")
	}
	spent := neg("spent")
	if _, err := redeem(env, nil, spent); err != nil {
		t.Fatal(err)
	}
	nine := make([]string, 9)
	for n := range nine {
		nine[n] = neg("nine-" + string(rune('a'+n)))
	}
	other, _ := attestation.Sign(env.AttesterKey, attestation.Claims{Attester: "stranger-lab", Kind: attestation.TestNegative,
		At: now.Unix(), Expires: now.Add(day).Unix(), ID: "x"})

	cases := []struct {
		name   string
		secret []byte
		atts   []string
		kind   issuer.Kind
		code   string
		index  int
		msg    string
	}{
		{"none", nil, nil, issuer.KindInvalid, issuer.CodeNoAttestations, -1, "no attestations given"},
		{"more than max_per_request", nil, nine, issuer.KindInvalid, issuer.CodeTooMany, -1, "9 attestations given; at most 8 per request"},
		{"secret too short", secret(1)[:31], []string{neg("s31")}, issuer.KindInvalid, issuer.CodeMalformed, -1, "secret must be 32 bytes, got 31"},
		{"secret too long", append(secret(1), 0), []string{neg("s33")}, issuer.KindInvalid, issuer.CodeMalformed, -1, "secret must be 32 bytes, got 33"},
		{"not a JWS", nil, []string{"a.b.c"}, issuer.KindRefused, attestation.CodeMalformed, 0, ""},
		{"unknown attester", nil, []string{other}, issuer.KindRefused, attestation.CodeUnknownAttester, 0, `"stranger-lab" is not registered`},
		{"expired", nil, []string{attestAt(t, env, attestation.TestNegative, now.Add(-2*day), now.Add(-time.Hour), "old", "")},
			issuer.KindRefused, attestation.CodeExpired, 0, "expired at"},
		{"beyond every kind's lifetime", nil, []string{attestAt(t, env, attestation.Vaccination, now, now.Add(200*day), "v200", "")},
			issuer.KindRefused, attestation.CodeTooLong, 0, "expires more than"},
		{"a test beyond its kind's three days", nil, []string{attestAt(t, env, attestation.TestNegative, now, now.Add(4*day), "t4", "")},
			issuer.KindRefused, attestation.CodeTooLong, 0, "the policy allows at most that for a test-negative attestation"},
		{"the same attestation twice", nil, []string{neg("twice"), neg("twice")}, issuer.KindInvalid, issuer.CodeDuplicateInBatch, 1, "the same attestation as attestation 0"},
		{"holder hints disagree", nil, []string{
			attestAt(t, env, attestation.TestNegative, now, now.Add(day), "h1", "AB 1990"),
			attestAt(t, env, attestation.Recovery, now, now.Add(day), "h2", "CD 1985")},
			issuer.KindRefused, issuer.CodeHintConflict, 1, "different holder hints"},
		{"evidence ends within the hour", nil, []string{attestAt(t, env, attestation.TestNegative, now.Add(-72*time.Hour+30*time.Minute), now.Add(day), "late", "")},
			issuer.KindRefused, issuer.CodeNothingToIssue, -1, "no longer covers any validity window"},
		{"redeemed before in this period", nil, []string{spent}, issuer.KindConflict, issuer.CodeAlreadyRedeemed, 0, "already been redeemed in this renewal period"},
		{"a fresh one beside a spent one", nil, []string{neg("fresh"), spent}, issuer.KindConflict, issuer.CodeAlreadyRedeemed, 1, "already been redeemed"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b, err := redeem(env, c.secret, c.atts...)
			if b != nil {
				t.Fatalf("got a batch of %d tokens", len(b.Tokens))
			}
			wantRefused(t, err, c.kind, c.code, c.index, c.msg)
		})
	}
	// All or none: the fresh attestation refused beside a spent one was not
	// recorded, so it redeems now.
	if _, err := redeem(env, nil, neg("fresh")); err != nil {
		t.Fatalf("the fresh attestation was spent by a refused request: %v", err)
	}
	// Each kind has its own bound: a 100-day vaccination is fine.
	if _, err := redeem(env, nil, attestAt(t, env, attestation.Vaccination, now.Add(-20*day), now.Add(100*day), "v100", "")); err != nil {
		t.Fatal(err)
	}
}

// Issue 12 item 2: a retry with the secret gets a fresh batch for the same
// windows, a few times per period; without it, or with another, 409.
func TestRetryWithTheSecret(t *testing.T) {
	env := issuertest.Start(t, issuertest.WithTime(rt0))
	att := attestAt(t, env, attestation.Recovery, rt0.Add(-24*time.Hour), rt0.Add(30*24*time.Hour), "rec-1", "")
	first, err := redeem(env, secret(7), att)
	if err != nil {
		t.Fatal(err)
	}
	want := windowsOf(t, env, first)
	// Later in the same hour, and later in the period: the same windows
	// from the current one on, fresh tokens.
	for n, later := range []time.Duration{10 * time.Minute, 26 * time.Hour, 6 * 24 * time.Hour} {
		env.Clock.Set(rt0.Add(later))
		b, err := redeem(env, secret(7), att)
		if err != nil {
			t.Fatalf("retry %d: %v", n+1, err)
		}
		if !b.Retry || !b.RenewAfter.Equal(first.RenewAfter) || !b.EvidenceUntil.Equal(first.EvidenceUntil) {
			t.Fatalf("retry %d: retry %v, renew_after %s (first %s)", n+1, b.Retry, b.RenewAfter, first.RenewAfter)
		}
		got := windowsOf(t, env, b)
		i := slices.IndexFunc(want, func(w span) bool { return w.nbf.Equal(got[0].nbf) })
		if i < 0 || !slices.Equal(got, want[i:]) {
			t.Fatalf("retry %d: windows %v, want the first batch's from the current one: %v", n+1, got, want)
		}
		if b.Tokens[len(b.Tokens)-1].Token == first.Tokens[len(first.Tokens)-1].Token {
			t.Fatalf("retry %d: the same token again, not a fresh one", n+1)
		}
		// A stranger holding only the attestation gets nothing.
		_, err = redeem(env, nil, att)
		wantRefused(t, err, issuer.KindConflict, issuer.CodeAlreadyRedeemed, 0, "already been redeemed")
		_, err = redeem(env, secret(8), att)
		wantRefused(t, err, issuer.KindConflict, issuer.CodeAlreadyRedeemed, 0, "already been redeemed")
	}
	// RetriesPerPeriod used up: even the secret is refused now.
	_, err = redeem(env, secret(7), att)
	wantRefused(t, err, issuer.KindConflict, issuer.CodeAlreadyRedeemed, 0, "already been redeemed")
	// The next period starts afresh, with a new secret if the wallet likes.
	env.Clock.Set(first.RenewAfter)
	if b, err := redeem(env, secret(9), att); err != nil || b.Retry {
		t.Fatalf("next period: %v", err)
	}
	if b, err := redeem(env, secret(9), att); err != nil || !b.Retry {
		t.Fatalf("retry in the next period: %v", err)
	}
}

// Redeemed without a secret, an attestation can never be retried, and a
// secret given only later does not open it.
func TestNoSecretNoRetry(t *testing.T) {
	env := issuertest.Start(t, issuertest.WithTime(rt0))
	att := attestAt(t, env, attestation.TestNegative, rt0, rt0.Add(24*time.Hour), "plain", "")
	if _, err := redeem(env, nil, att); err != nil {
		t.Fatal(err)
	}
	_, err := redeem(env, secret(1), att)
	wantRefused(t, err, issuer.KindConflict, issuer.CodeAlreadyRedeemed, 0, "already been redeemed")
}

// In its final period the record goes when the attestation can no longer
// be accepted (exp + skew, up to the hour), not at the period's end; a
// retry still works until then, and after it the attestation is expired.
func TestRenewalFinalPeriod(t *testing.T) {
	env := issuertest.Start(t, issuertest.WithTime(rt0))
	p := env.Issuer.Policy()
	exp := rt0.Add(50 * time.Hour)
	att := attestAt(t, env, attestation.TestNegative, rt0.Add(-2*time.Hour), exp, "final", "")
	b, err := redeem(env, secret(3), att)
	if err != nil {
		t.Fatal(err)
	}
	want := ceilHour(exp.Add(p.Tokens.ClockSkew.D()))
	if !b.RenewAfter.Equal(want) {
		t.Fatalf("renew_after %s, want exp + skew rounded up %s", b.RenewAfter, want)
	}
	if !b.EvidenceUntil.Equal(exp) {
		t.Fatalf("evidence_until %s, want the attestation's exp %s", b.EvidenceUntil, exp)
	}
	// The batch covers the evidence (72h from sampling), past the
	// attestation's own expiry.
	if ws := windowsOf(t, env, b); !ws[len(ws)-1].exp.Equal(rt0.Add(70 * time.Hour).Truncate(time.Hour)) {
		t.Fatalf("batch ends %s", ws[len(ws)-1].exp)
	}
	// Still accepted within the skew: the record is still there.
	env.Clock.Set(exp.Add(p.Tokens.ClockSkew.D() - time.Second))
	_, err = redeem(env, nil, att)
	wantRefused(t, err, issuer.KindConflict, issuer.CodeAlreadyRedeemed, 0, "already been redeemed")
	if b, err := redeem(env, secret(3), att); err != nil || !b.Retry {
		t.Fatalf("retry at exp + skew: %v", err)
	}
	env.Clock.Set(want)
	_, err = redeem(env, secret(3), att)
	wantRefused(t, err, issuer.KindRefused, attestation.CodeExpired, 0, "expired")
}

// Issue 12 item 3: after the signing key is replaced at once (a withdrawn
// key), a retry with the same attestation and secret replaces the codes:
// same windows, signed by the new current key.
func TestRetryAfterKeyReplacedSignsWithNewKey(t *testing.T) {
	ctx := context.Background()
	env := issuertest.Start(t, issuertest.WithTime(rt0))
	att := attestAt(t, env, attestation.Vaccination, rt0.Add(-30*24*time.Hour), rt0.Add(150*24*time.Hour), "vax", "")
	first, err := redeem(env, secret(5), att)
	if err != nil {
		t.Fatal(err)
	}
	oldKid := kidOf(t, first.Tokens[0].Token)
	env.Clock.Advance(3 * time.Hour)
	newKid, _, err := env.Issuer.RotateKeys(ctx, "test", true)
	if err != nil {
		t.Fatal(err)
	}
	if newKid == oldKid {
		t.Fatal("rotation kept the key")
	}
	b, err := redeem(env, secret(5), att)
	if err != nil {
		t.Fatal(err)
	}
	for n, tok := range b.Tokens {
		if kid := kidOf(t, tok.Token); kid != newKid {
			t.Fatalf("token %d signed by %s, want the new key %s", n, kid, newKid)
		}
	}
	if !b.Retry || windowsOf(t, env, b)[len(windowsOf(t, env, b))-1] != windowsOf(t, env, first)[len(windowsOf(t, env, first))-1] {
		t.Fatalf("the retry's batch does not end where the first did")
	}
}

// Key-window trimming: the next key was published late (the issuer was
// down), so the current key ends inside the batch's reach. No token
// outlives the key, and the period ends early enough that the wallet may
// renew, under the next key, while it still holds the overlap.
func TestRedeemTrimsToTheKeyAndEndsThePeriodEarly(t *testing.T) {
	ctx := context.Background()
	p := policy.Default()
	p.Keys.Lifetime = p.Keys.Rotation + p.Tokens.Horizon + p.Renewal.Overlap // the least Validate allows
	env := issuertest.Start(t, issuertest.WithTime(rt0), issuertest.WithPolicy(p))
	k1 := env.Issuer.Keys()[0]
	env.Clock.Advance(5 * 24 * time.Hour) // down for five days
	if err := env.Issuer.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	var next issuer.KeyInfo
	for _, k := range env.Issuer.Keys() {
		if k.ActiveAt.After(env.Clock.Now()) {
			next = k
		}
	}
	env.Clock.Set(next.ActiveAt.Add(-time.Hour))
	now := env.Clock.Now()
	att := attestAt(t, env, attestation.Vaccination, now.Add(-30*24*time.Hour), now.Add(150*24*time.Hour), "vax", "")
	b, err := redeem(env, secret(4), att)
	if err != nil {
		t.Fatal(err)
	}
	ws := windowsOf(t, env, b)
	last := ws[len(ws)-1].exp
	if last.After(k1.NotAfter) || !last.After(k1.NotAfter.Add(-p.Tokens.Lifetime.Green.D())) {
		t.Fatalf("batch ends %s, want within one window before the key's naf %s", last, k1.NotAfter)
	}
	if !now.Truncate(time.Hour).Add(p.Reach()).After(k1.NotAfter) {
		t.Fatal("the key does not cut the batch: the test checks nothing")
	}
	if want := last.Add(-p.Renewal.Overlap.D()).Truncate(time.Hour); !b.RenewAfter.Equal(want) {
		t.Fatalf("renew_after %s, want the batch's end less the overlap %s", b.RenewAfter, want)
	}
	// At renew_after the next key signs, and the renewal is a full batch.
	env.Clock.Set(b.RenewAfter)
	if err := env.Issuer.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	b2, err := redeem(env, secret(4), att)
	if err != nil || b2.Retry {
		t.Fatalf("renewal at renew_after: %v", err)
	}
	if kid := kidOf(t, b2.Tokens[0].Token); kid != next.ID {
		t.Fatalf("renewal signed by %s, want the next key %s", kid, next.ID)
	}
	if ws2 := windowsOf(t, env, b2); !ws2[len(ws2)-1].exp.Equal(b.RenewAfter.Add(p.Reach())) {
		t.Fatalf("renewal ends %s, want a full reach", ws2[len(ws2)-1].exp)
	}
}

// The self-check verifies a new token with the published bundle, and
// refreshes a bundle that went stale (a clock jump, Run not yet around).
func TestRedeemSelfCheckRefreshesAStaleBundle(t *testing.T) {
	env := issuertest.Start(t, issuertest.WithTime(rt0))
	before := env.Bundle(t)
	env.Clock.Advance(env.Issuer.Policy().Bundle.StaleAfter.D() + time.Minute)
	if _, bun := env.Issuer.Bundle(); !bun.Stale(env.Clock.Now()) {
		t.Fatal("the bundle is not stale: the test checks nothing")
	}
	b, err := redeem(env, nil, attestAt(t, env, attestation.TestNegative, env.Clock.Now(), env.Clock.Now().Add(24*time.Hour), "n", ""))
	if err != nil {
		t.Fatal(err)
	}
	after := env.Bundle(t)
	if after.Sequence <= before.Sequence || after.Stale(env.Clock.Now()) {
		t.Fatalf("bundle sequence %d -> %d, stale %v", before.Sequence, after.Sequence, after.Stale(env.Clock.Now()))
	}
	windowsOf(t, env, b) // every token verifies under the fresh bundle
}

// With retention.replay at its bare minimum (every kind living 72h, as in
// an older policy), an attestation whose record would outlive it is
// refused rather than kept longer than the policy says.
func TestRedeemRefusesARecordOutlivingRetention(t *testing.T) {
	p := policy.Default()
	l := policy.Duration(72 * time.Hour)
	p.Attestations.Lifetimes = policy.KindLifetimes{TestNegative: l, TestPositive: l, Vaccination: l, Recovery: l, ExposureNotice: l, IsolationOrder: l}
	p.Retention.Replay = l + policy.Duration(10*time.Minute)
	env := issuertest.Start(t, issuertest.WithTime(rt0), issuertest.WithPolicy(p))
	// exp + skew = 09:22 three days on, rounded up to 10:00, past
	// rt0 + 72h10m = 09:27.
	_, err := redeem(env, nil, attestAt(t, env, attestation.TestNegative, rt0, rt0.Add(72*time.Hour+5*time.Minute), "late", ""))
	wantRefused(t, err, issuer.KindRefused, attestation.CodeTooLong, 0, "outlive retention.replay")
	if _, err := redeem(env, nil, attestAt(t, env, attestation.TestNegative, rt0, rt0.Add(70*time.Hour), "early", "")); err != nil {
		t.Fatal(err)
	}
}

// Issue 12 item 3: after the signing key is revoked, the wallet replaces
// its codes by retrying with the same attestation and secret in the same
// period: the old codes are refused as withdrawn, the new ones are signed
// by the key that signs now and cover the same windows.
func TestRetryAfterRevocationReplacesTheCodes(t *testing.T) {
	ctx := context.Background()
	env := issuertest.Start(t, issuertest.WithTime(rt0))
	att := attestAt(t, env, attestation.Vaccination, rt0.Add(-30*24*time.Hour), rt0.Add(150*24*time.Hour), "vax-r", "")
	first, err := redeem(env, secret(6), att)
	if err != nil {
		t.Fatal(err)
	}
	want := windowsOf(t, env, first)
	revoked := kidOf(t, first.Tokens[0].Token)
	env.Clock.Advance(5 * time.Hour)
	rev, err := env.Issuer.RevokeKey(ctx, "test", revoked)
	if err != nil {
		t.Fatal(err)
	}
	if rev.Signing == revoked || rev.Signing == "" {
		t.Fatalf("revocation left %q signing", rev.Signing)
	}
	bun := env.Bundle(t)
	if _, err := verifier.Verify(first.Tokens[0].Token, bun, env.Clock.Now()); !errors.Is(err, verifier.ErrKeyWithdrawn) {
		t.Fatalf("an old code after the revocation: %v, want withdrawn", err)
	}
	b, err := redeem(env, secret(6), att)
	if err != nil {
		t.Fatalf("retry after the revocation: %v", err)
	}
	for n, tok := range b.Tokens {
		if kid := kidOf(t, tok.Token); kid != rev.Signing {
			t.Fatalf("token %d signed by %s, want %s", n, kid, rev.Signing)
		}
	}
	got := windowsOf(t, env, b) // each verifies under the bundle that withdrew the old key
	if !b.Retry || !b.RenewAfter.Equal(first.RenewAfter) || got[len(got)-1] != want[len(want)-1] {
		t.Fatalf("retry %v, renew_after %s (first %s), ends %v (first %v)", b.Retry, b.RenewAfter, first.RenewAfter, got[len(got)-1], want[len(want)-1])
	}
	// A stranger holding the attestation still gets nothing.
	_, err = redeem(env, nil, att)
	wantRefused(t, err, issuer.KindConflict, issuer.CodeAlreadyRedeemed, 0, "already been redeemed")
}

// recordingStore keeps the replay keys of every redemption it records.
type recordingStore struct {
	issuer.Store
	mu   sync.Mutex
	keys []issuer.ReplayKey
}

func (s *recordingStore) Redeem(ctx context.Context, r issuer.Redemption) (issuer.RedeemResult, error) {
	s.mu.Lock()
	s.keys = append(s.keys, r.Replay...)
	s.mu.Unlock()
	return s.Store.Redeem(ctx, r)
}

// coreLab is an issuer at rt0 on a bbolt file, its replay records going
// through a wrapper of the file (a store under test), with attester "lab"
// registered.
type coreLab struct {
	db    *boltstore.DB
	clock *issuertest.Clock
	lab   ed25519.PrivateKey
}

func newCoreLab(t *testing.T) *coreLab {
	t.Helper()
	dir := t.TempDir()
	clock := issuertest.NewClock(rt0)
	db, err := boltstore.Open(dir, boltstore.Options{Clock: clock, KEK: issuertest.KEKBeside(t, dir)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	seed := make([]byte, ed25519.SeedSize)
	seed[0] = 7
	return &coreLab{db: db, clock: clock, lab: ed25519.NewKeyFromSeed(seed)}
}

// issuer starts an issuer whose replay store is replay, logging to log
// (nil: nowhere).
func (c *coreLab) issuer(t *testing.T, replay issuer.Store, log *slog.Logger) *issuer.Issuer {
	t.Helper()
	ctx := context.Background()
	iss, err := issuer.New(ctx, issuer.Config{Store: replay, State: c.db, Clock: c.clock, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if err := iss.AddAttester(ctx, "test", "lab", c.lab.Public().(ed25519.PublicKey)); err != nil {
		t.Fatal(err)
	}
	return iss
}

// attest signs a recovery attestation of "lab" expiring at exp.
func (c *coreLab) attest(t *testing.T, id string, exp time.Time) string {
	t.Helper()
	att, err := attestation.Sign(c.lab, attestation.Claims{Attester: "lab", Kind: attestation.Recovery,
		At: rt0.Add(-24 * time.Hour).Unix(), Expires: exp.Unix(), ID: id})
	if err != nil {
		t.Fatal(err)
	}
	return att
}

// A replay key's Accepted does not follow the clock skew of the policy in
// force: a store that names a pair's record by it (redisstore files it
// under the epoch ending at or after Accepted) must find the first
// redemption's record after a policy changed the skew, and on a replica
// that has not seen the change yet, or the attestation would redeem twice
// in one period.
func TestReplayKeyAcceptedIgnoresThePolicysSkew(t *testing.T) {
	ctx := context.Background()
	c := newCoreLab(t)
	rec := &recordingStore{Store: c.db}
	iss := c.issuer(t, rec, nil)
	// Expiring at 09:40: plus 5 minutes it rounds up to 10:00, plus 30
	// minutes to 11:00.
	exp := rt0.Add(29*24*time.Hour + 23*time.Minute)
	att := c.attest(t, "rec-skew", exp)
	if _, err := iss.Redeem(ctx, issuer.Request{Attestations: []string{att}, Secret: secret(7)}); err != nil {
		t.Fatal(err)
	}
	p := policy.Default()
	p.Version = 2
	p.Tokens.ClockSkew = policy.Duration(30 * time.Minute)
	if err := iss.SetPolicy(ctx, "test", p); err != nil {
		t.Fatal(err)
	}
	b, err := iss.Redeem(ctx, issuer.Request{Attestations: []string{att}, Secret: secret(7)})
	if err != nil || !b.Retry {
		t.Fatalf("the owner's retry after the skew changed: %v", err)
	}
	if len(rec.keys) != 2 {
		t.Fatalf("%d replay keys recorded, want 2", len(rec.keys))
	}
	first, again := rec.keys[0], rec.keys[1]
	if !first.Accepted.Equal(again.Accepted) {
		t.Fatalf("Accepted %s at skew 5m, %s at skew 30m: want one instant for the pair", first.Accepted, again.Accepted)
	}
	if want := ceilHour(exp.Add(policy.MaxClockSkew)); !first.Accepted.Equal(want) || first.Accepted.Before(first.Deadline) {
		t.Fatalf("Accepted %s (deadline %s), want %s", first.Accepted, first.Deadline, want)
	}
}

// undoFailingStore refuses every redemption as a store that writes key by
// key does when it also failed to take back its own writes.
type undoFailingStore struct{ issuer.Store }

func (undoFailingStore) Redeem(context.Context, issuer.Redemption) (issuer.RedeemResult, error) {
	return issuer.RedeemResult{}, errors.Join(&issuer.RedeemedError{Index: 0}, errors.New("undo attestation 0: connection refused"))
}

// The client is told its attestation is refused; the operator hears that
// the store failed besides (records of the request may be left behind).
func TestRedeemRefusalWithAStoreFailureIsLogged(t *testing.T) {
	ctx := context.Background()
	c := newCoreLab(t)
	var logged bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logged, nil))
	iss := c.issuer(t, undoFailingStore{c.db}, log)
	att := c.attest(t, "rec-undo", rt0.Add(20*24*time.Hour))
	_, err := iss.Redeem(ctx, issuer.Request{Attestations: []string{att}})
	wantRefused(t, err, issuer.KindConflict, issuer.CodeAlreadyRedeemed, 0, "already been redeemed")
	if got := logged.String(); !strings.Contains(got, "level=ERROR") || !strings.Contains(got, "undo attestation 0: connection refused") {
		t.Fatalf("log %q: want an error naming the store's failure", got)
	}
	// A plain refusal logs nothing.
	iss2 := c.issuer(t, c.db, log)
	if _, err := iss2.Redeem(ctx, issuer.Request{Attestations: []string{att}}); err != nil {
		t.Fatal(err)
	}
	logged.Reset()
	_, err = iss2.Redeem(ctx, issuer.Request{Attestations: []string{att}})
	wantRefused(t, err, issuer.KindConflict, issuer.CodeAlreadyRedeemed, 0, "already been redeemed")
	if strings.Contains(logged.String(), "level=ERROR") {
		t.Fatalf("a plain refusal logged %q", logged.String())
	}
}
