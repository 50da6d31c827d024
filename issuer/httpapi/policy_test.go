package httpapi_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/healthcode/healthcode/attestation"
	"github.com/healthcode/healthcode/issuer/httpapi"
	"github.com/healthcode/healthcode/issuer/issuertest"
	"github.com/healthcode/healthcode/policy"
)

func adminDo(t *testing.T, env *issuertest.Env, method, path, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, env.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+env.AdminToken)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func policyJSON(t *testing.T, edit func(*policy.Policy)) string {
	t.Helper()
	p := policy.Default()
	p.Version = 2
	edit(p)
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Retention is changed through the admin API; invalid retention is refused
// with the field named, the stored policy stays as it was, and every
// accepted change is in the audit log under the admin token's name.
func TestPolicyRetentionChangesAreValidatedAndAudited(t *testing.T) {
	env := issuertest.Start(t, issuertest.WithTime(t0))
	day := policy.Duration(24 * time.Hour)
	bad := []struct {
		name string
		edit func(*policy.Policy)
		msg  string
	}{
		{"zero", func(p *policy.Policy) { p.Retention.Counts = 0 }, "retention.counts: must be positive, got 0s"},
		{"negative", func(p *policy.Policy) { p.Retention.Audit = -day }, "retention.audit: must be positive, got -24h"},
		{"replay shorter than the renewal period", func(p *policy.Policy) { p.Retention.Replay = day },
			"retention.replay: must be at least renewal.period (7d), got 1d"},
	}
	for _, c := range bad {
		t.Run(c.name, func(t *testing.T) {
			status, body := adminDo(t, env, "PUT", "/v1/admin/policy", policyJSON(t, c.edit))
			if status != 422 || !strings.Contains(body, `"invalid_policy"`) || !strings.Contains(body, c.msg) {
				t.Fatalf("got %d %s, want 422 naming %q", status, body, c.msg)
			}
			if v := env.Issuer.Policy().Version; v != 1 {
				t.Fatalf("policy version %d after a refused change", v)
			}
		})
	}

	status, body := adminDo(t, env, "PUT", "/v1/admin/policy", policyJSON(t, func(p *policy.Policy) { p.Retention.Counts = 7 * day }))
	if status != 200 {
		t.Fatalf("valid policy refused: %d %s", status, body)
	}
	if got := env.Issuer.Policy().Retention.Counts; got != 7*day {
		t.Fatalf("counts retention %s after set", got)
	}
	// The public inventory shows the new retention.
	resp, err := http.Get(env.URL + "/v1/inventory")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(raw), `"name":"aggregate_counts","count":0,"oldest":null,"next_deadline":null,"retention":"7d"`) ||
		!strings.Contains(string(raw), `"policy_version":2`) {
		t.Fatalf("inventory: %s", raw)
	}

	// Same version again: refused, naming the field.
	status, body = adminDo(t, env, "PUT", "/v1/admin/policy", policyJSON(t, func(*policy.Policy) {}))
	if status != 422 || !strings.Contains(body, "version: must be greater than the current version (2), got 2") {
		t.Fatalf("same version: %d %s", status, body)
	}

	status, body = adminDo(t, env, "GET", "/v1/admin/audit", "")
	if status != 200 {
		t.Fatalf("audit: %d %s", status, body)
	}
	var audit struct {
		Entries []struct{ Admin, Action, Detail string }
	}
	if err := json.Unmarshal([]byte(body), &audit); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range audit.Entries {
		if e.Action == "policy.set" && e.Detail == "policy version 2 replaced version 1" {
			found = true
			if !strings.HasPrefix(e.Admin, "test-admin-") {
				t.Fatalf("audit names admin %q", e.Admin)
			}
		}
	}
	if !found || strings.Contains(body, env.AdminToken) {
		t.Fatalf("audit log: %s", body)
	}

	// Without a token, or with a wrong one: 401, nothing changes.
	req, _ := http.NewRequest("PUT", env.URL+"/v1/admin/policy", strings.NewReader(policyJSON(t, func(p *policy.Policy) { p.Version = 3 })))
	req.Header.Set("Authorization", "Bearer hcadm_wrong")
	r2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r2.Body.Close()
	if r2.StatusCode != 401 || env.Issuer.Policy().Version != 2 {
		t.Fatalf("wrong token: %d, version %d", r2.StatusCode, env.Issuer.Policy().Version)
	}
}

// With retention.replay at its bare minimum, an attestation whose replay
// record (deadline rounded up to the hour) would outlive it is refused:
// the deadline depends on the attestation alone, so capping it would let
// a later replay miss the record.
func TestReplayRecordNeverOutlivesRetention(t *testing.T) {
	p := policy.Default()
	// Every kind lives 72h at most (as in a policy from before per-kind
	// lifetimes), so retention may be that short.
	l := policy.Duration(72 * time.Hour)
	p.Attestations.Lifetimes = policy.KindLifetimes{TestNegative: l, TestPositive: l, Vaccination: l, Recovery: l, ExposureNotice: l, IsolationOrder: l}
	p.Retention.Replay = policy.Duration(72*time.Hour + 10*time.Minute)
	env := issuertest.Start(t, issuertest.WithTime(t0), issuertest.WithPolicy(p))
	sign := func(id string, ttl time.Duration) string {
		s, err := attestation.Sign(env.AttesterKey, attestation.Claims{Attester: env.AttesterID, Kind: attestation.TestNegative,
			At: t0.Unix(), Expires: t0.Add(ttl).Unix(), ID: id})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	// t0 is 09:17; exp + skew = 09:22 three days on, rounded up: 10:00,
	// past t0 + 72h10m = 09:27.
	status, raw := env.Post(t, "/v1/tokens", httpapi.TokensRequest{Attestations: []string{sign("late", 72*time.Hour+5*time.Minute)}})
	if code, msg := errorCode(t, raw); status != 422 || code != "attestation_lifetime_too_long" || !strings.Contains(msg, "outlive retention.replay") {
		t.Fatalf("got %d %s", status, raw)
	}
	if colour, _ := env.Redeem(t, sign("early", 70*time.Hour)); colour != "green" {
		t.Fatalf("colour %s", colour)
	}
}
