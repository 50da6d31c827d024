package httpapi_test

import (
	"testing"
	"time"

	"github.com/healthcode/healthcode/attestation"
	"github.com/healthcode/healthcode/issuer/httpapi"
	"github.com/healthcode/healthcode/issuer/issuertest"
	"github.com/healthcode/healthcode/policy"
)

// Issue 10 item 1: one redemption per (attester, jti), whatever else
// changes. The replay record is found by the attestation's attester and id
// alone, so neither a policy change nor a re-signed copy with another expiry
// reaches a record of its own.

func signReplay(t *testing.T, env *issuertest.Env, id string, exp time.Time) string {
	t.Helper()
	s, err := attestation.Sign(env.AttesterKey, attestation.Claims{Attester: env.AttesterID, Kind: attestation.TestNegative,
		At: t0.Add(-time.Hour).Unix(), Expires: exp.Unix(), ID: id})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func wantStatus(t *testing.T, env *issuertest.Env, att string, want int, wantCode string) {
	t.Helper()
	status, raw := env.Post(t, "/v1/tokens", httpapi.TokensRequest{Attestations: []string{att}})
	if status != want {
		t.Fatalf("POST /v1/tokens: %d %s, want %d", status, raw, want)
	}
	if wantCode != "" {
		if code, _ := errorCode(t, raw); code != wantCode {
			t.Fatalf("code %q (%s), want %q", code, raw, wantCode)
		}
	}
}

func TestReplayRefusedAfterEveryPolicyChange(t *testing.T) {
	env := issuertest.Start(t, issuertest.WithTime(t0))
	// Expiring at hh:58: with the default 5m skew its deadline rounds up
	// one hour further than with none, the attack of issue 10.
	att := signReplay(t, env, "policy-proof", t0.Add(48*time.Hour).Truncate(time.Hour).Add(58*time.Minute))
	wantStatus(t, env, att, 200, "")
	wantStatus(t, env, att, 409, "already_redeemed")
	changes := []struct {
		name string
		edit func(*policy.Policy)
	}{
		{"clock skew 0s", func(p *policy.Policy) { p.Tokens.ClockSkew = 0 }},
		{"clock skew 30m", func(p *policy.Policy) { p.Tokens.ClockSkew = policy.Duration(30 * time.Minute) }},
		{"token lifetimes", func(p *policy.Policy) {
			l := &p.Tokens.Lifetime
			l.Green, l.Yellow, l.Red = l.Green/2, l.Yellow/2, l.Red/2
		}},
		{"replay retention", func(p *policy.Policy) { p.Retention.Replay = p.Retention.Replay * 2 }},
		{"granularity", func(p *policy.Policy) { p.Tokens.Granularity = policy.Duration(30 * time.Minute) }},
	}
	for n, c := range changes {
		status, body := adminDo(t, env, "PUT", "/v1/admin/policy", policyJSON(t, func(p *policy.Policy) {
			c.edit(p)
			p.Version = n + 2
		}))
		if status != 200 {
			t.Fatalf("%s: policy refused: %d %s", c.name, status, body)
		}
		wantStatus(t, env, att, 409, "already_redeemed")
	}
}

func TestReplayRefusedForAReSignedCopy(t *testing.T) {
	env := issuertest.Start(t, issuertest.WithTime(t0))
	first := t0.Add(24 * time.Hour)
	wantStatus(t, env, signReplay(t, env, "resigned", first), 200, "")
	// The same (attester, jti) with another expiry: within the hour, other
	// hours, another day (another replay partition), earlier and later.
	for _, exp := range []time.Time{
		first.Add(time.Minute), first.Add(-time.Minute), first.Add(3 * time.Hour),
		first.Add(-20 * time.Hour), first.Add(40 * time.Hour),
	} {
		wantStatus(t, env, signReplay(t, env, "resigned", exp), 409, "already_redeemed")
	}
	// Another jti of the same attester is another attestation.
	wantStatus(t, env, signReplay(t, env, "resigned-2", first), 200, "")
}
