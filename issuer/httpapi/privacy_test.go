package httpapi_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/healthcode/healthcode/attestation"
	"github.com/healthcode/healthcode/issuer/httpapi"
	"github.com/healthcode/healthcode/issuer/issuertest"
	"github.com/healthcode/healthcode/policy"
)

// syncBuffer is a log sink that handlers on several goroutines share.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Invariant 7: the whole flow runs through a real issuer logging JSON at
// debug level: redemptions with holder hints, replays, refusals of every
// kind, admin calls with good and bad tokens, a key rotation, a policy
// change, a sweep that deletes, and finally internal errors (the store
// closed under the server), which are logged with their detail. No log line
// and no metric holds a token, an attestation, an attestation id, a hint,
// an admin token or the client's address.
func TestNothingPersonalInLogsOrMetrics(t *testing.T) {
	ctx := context.Background()
	var logs syncBuffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	p := policy.Default()
	p.HolderHint = policy.HintOn
	env := issuertest.Start(t, issuertest.WithTime(t0), issuertest.WithPolicy(p), issuertest.WithLogger(log))

	var secrets []string // everything that must not show
	attest := func(kind attestation.Kind, id, hint string, key ed25519.PrivateKey, attester string, exp time.Time) string {
		now := env.Clock.Now()
		s, err := attestation.Sign(key, attestation.Claims{Attester: attester, Kind: kind, At: now.Add(-2 * time.Hour).Unix(), Expires: exp.Unix(), ID: id, Hint: hint})
		if err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, s, id)
		if hint != "" {
			secrets = append(secrets, hint)
		}
		return s
	}
	day := t0.Add(24 * time.Hour)

	// Redemptions, one with two attestations, and a replay.
	a1 := attest(attestation.TestNegative, "jti-privacy-0001", "QX1987", env.AttesterKey, env.AttesterID, day)
	_, toks := env.Redeem(t, a1)
	a2 := attest(attestation.Vaccination, "jti-privacy-0002", "", env.AttesterKey, env.AttesterID, day)
	a3 := attest(attestation.ExposureNotice, "jti-privacy-0003", "QX1987", env.AttesterKey, env.AttesterID, day)
	_, more := env.Redeem(t, a2, a3)
	secrets = append(secrets, toks...)
	secrets = append(secrets, more...)
	status, raw := env.Post(t, "/v1/tokens", httpapi.TokensRequest{Attestations: []string{a1}})
	wantError(t, status, raw, http.StatusConflict, "already_redeemed")

	// Refusals: unknown attester, bad signature, expired, conflicting
	// hints, malformed bodies.
	_, stranger, _ := ed25519.GenerateKey(rand.Reader)
	for _, tc := range []struct {
		atts []string
		code string
	}{
		{[]string{attest(attestation.TestNegative, "jti-privacy-0004", "ZZ2001", stranger, "ghost-lab-Mrs-Smith", day)}, attestation.CodeUnknownAttester},
		{[]string{attest(attestation.TestNegative, "jti-privacy-0005", "", stranger, env.AttesterID, day)}, attestation.CodeBadSignature},
		{[]string{attest(attestation.TestNegative, "jti-privacy-0006", "", env.AttesterKey, env.AttesterID, t0.Add(-time.Hour))}, attestation.CodeExpired},
		{[]string{
			attest(attestation.TestNegative, "jti-privacy-0007", "AA1111", env.AttesterKey, env.AttesterID, day),
			attest(attestation.TestNegative, "jti-privacy-0008", "BB2222", env.AttesterKey, env.AttesterID, day),
		}, "hint_conflict"},
	} {
		status, raw := env.Post(t, "/v1/tokens", httpapi.TokensRequest{Attestations: tc.atts})
		if code, _ := errorCode(t, raw); code != tc.code || status < 400 || status >= 500 {
			t.Fatalf("want %s, got %d %s", tc.code, status, raw)
		}
	}
	secrets = append(secrets, "ghost-lab-Mrs-Smith")
	status, raw = env.Post(t, "/v1/tokens", map[string]any{"attestations": []string{a1}, "name": "Jane Q Public"})
	wantError(t, status, raw, http.StatusBadRequest, "malformed_request")
	secrets = append(secrets, "Jane Q Public")

	// Admin calls, good and bad.
	tok := createAdminToken(t, env, "ops-privacy")
	secrets = append(secrets, tok, env.AdminToken)
	if status, raw, _ := call(t, env, "POST", "/v1/admin/keys/rotate", tok, nil); status != http.StatusOK {
		t.Fatalf("rotate: %d %s", status, raw)
	}
	status, raw, _ = call(t, env, "GET", "/v1/admin/audit", tok+"x", nil)
	wantError(t, status, raw, http.StatusUnauthorized, "unauthorized")
	secrets = append(secrets, tok+"x")
	p2 := *p
	p2.Version++
	body, _ := json.Marshal(&p2)
	if status, raw, _ := call(t, env, "PUT", "/v1/admin/policy", tok, body); status != http.StatusOK {
		t.Fatalf("policy: %d %s", status, raw)
	}

	// A sweep that deletes replay records and counts, and the key schedule.
	env.Clock.Advance(40 * 24 * time.Hour)
	if err := env.Issuer.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := env.Issuer.Sweep(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Deleted["replay_records"] == 0 {
		t.Fatalf("the sweep deleted no replay records: %+v", st)
	}

	status, metrics := getMetrics(t, env)
	if status != http.StatusOK || !strings.Contains(string(metrics), "healthcode_redemptions_total") {
		t.Fatalf("metrics: %d %.300s", status, metrics)
	}

	// Internal errors, logged with their detail.
	a9 := attest(attestation.TestNegative, "jti-privacy-0009", "QX1987", env.AttesterKey, env.AttesterID, env.Clock.Now().Add(24*time.Hour))
	if err := env.DB.Close(); err != nil {
		t.Fatal(err)
	}
	status, raw = env.Post(t, "/v1/tokens", httpapi.TokensRequest{Attestations: []string{a9}})
	wantError(t, status, raw, http.StatusInternalServerError, "internal")
	status, raw, _ = call(t, env, "GET", "/v1/admin/audit", tok, nil)
	wantError(t, status, raw, http.StatusInternalServerError, "internal")

	out := logs.String()
	// The test is only worth something if the logs say things.
	for _, want := range []string{`"msg":"request failed"`, `"msg":"admin action"`, `"admin":"ops-privacy"`, `"msg":"sweep"`, `"msg":"sweep finished"`, `"path":"/v1/tokens"`} {
		if !strings.Contains(out, want) {
			t.Fatalf("logs lack %s:\n%s", want, out)
		}
	}
	secrets = append(secrets, "127.0.0.1", "[::1]", "localhost")
	for _, s := range secrets {
		for _, where := range []struct{ name, text string }{{"log", out}, {"metrics", string(metrics)}} {
			if i := strings.Index(where.text, s); i >= 0 {
				line := where.text[strings.LastIndex(where.text[:i], "\n")+1:]
				line, _, _ = strings.Cut(line, "\n")
				t.Fatalf("%s holds %.40q: %s", where.name, s, line)
			}
		}
	}
	// Metric labels come from fixed sets.
	for _, line := range strings.Split(string(metrics), "\n") {
		if strings.HasPrefix(line, "healthcode_redemptions_total{") {
			label := strings.TrimSuffix(strings.SplitN(strings.TrimPrefix(line, `healthcode_redemptions_total{outcome="`), `"`, 2)[0], "")
			if !knownOutcome[label] {
				t.Fatalf("outcome label %q is not from the fixed set", label)
			}
		}
	}
}

var knownOutcome = map[string]bool{
	"ok": true, "internal": true, "malformed_request": true, "unsupported_media_type": true,
	"already_redeemed": true, "hint_conflict": true, "too_many_attestations": true, "no_attestations": true,
	"duplicate_attestation": true, "evidence_window_ended": true,
	attestation.CodeMalformed: true, attestation.CodeMissingClaim: true, attestation.CodeClaimNotAllowed: true,
	attestation.CodeBadKind: true, attestation.CodeUnknownAttester: true, attestation.CodeBadSignature: true,
	attestation.CodeExpired: true, attestation.CodeFuture: true, attestation.CodeTooLong: true,
}

func getMetrics(t *testing.T, env *issuertest.Env) (int, []byte) {
	t.Helper()
	resp, err := http.Get(env.MetricsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, raw
}

// /metrics is for operators: the public listener does not serve it, the
// operator's own listener does.
func TestMetricsNotPublic(t *testing.T) {
	env := issuertest.Start(t, issuertest.WithTime(t0))
	// The document says so too: /metrics is 404 on the public listener.
	status, raw, _ := call(t, env, "GET", "/metrics", "", nil)
	wantError(t, status, raw, http.StatusNotFound, "not_found")
	if status, raw := getMetrics(t, env); status != http.StatusOK || !strings.Contains(string(raw), "# TYPE go_goroutines gauge") {
		t.Fatalf("metrics listener: %d %.200s", status, raw)
	}
}
