package httpapi_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/healthcode/healthcode/attestation"
	"github.com/healthcode/healthcode/internal/keyfile"
	"github.com/healthcode/healthcode/issuer"
	"github.com/healthcode/healthcode/issuer/httpapi"
	"github.com/healthcode/healthcode/issuer/issuertest"
)

// call sends one request to the running issuer; tok, if set, is the admin
// bearer token.
func call(t *testing.T, env *issuertest.Env, method, path, tok string, body []byte) (int, []byte, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, env.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, raw, resp.Header
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func wantError(t *testing.T, status int, raw []byte, wantStatus int, wantCode string) {
	t.Helper()
	code, msg := errorCode(t, raw)
	if status != wantStatus || code != wantCode {
		t.Fatalf("got %d %s (%s), want %d %s", status, code, msg, wantStatus, wantCode)
	}
}

func createAdminToken(t *testing.T, env *issuertest.Env, name string) string {
	t.Helper()
	status, raw, h := call(t, env, "POST", "/v1/admin/tokens", env.AdminToken, mustJSON(map[string]string{"name": name}))
	if status != http.StatusCreated {
		t.Fatalf("create admin token: %d %s", status, raw)
	}
	if h.Get("Cache-Control") != "no-store" {
		t.Fatalf("new admin token served with Cache-Control %q", h.Get("Cache-Control"))
	}
	var out struct{ Name, Token string }
	if err := json.Unmarshal(raw, &out); err != nil || out.Name != name || !strings.HasPrefix(out.Token, issuer.AdminTokenPrefix) {
		t.Fatalf("create admin token: %s", raw)
	}
	return out.Token
}

func dataFiles(t *testing.T, dir string) []byte {
	t.Helper()
	var all []byte
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		all = append(all, b...)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return all
}

// Admin tokens are stored as their SHA-256 only: the bytes of the data
// directory hold the hash and never the token, nor its random part.
func TestAdminTokensStoredHashed(t *testing.T) {
	env := issuertest.Start(t, issuertest.WithTime(t0))
	tok := createAdminToken(t, env, "ops-hashed")
	files := dataFiles(t, env.Dir)
	for _, tk := range []string{tok, env.AdminToken} {
		secret := strings.TrimPrefix(tk, issuer.AdminTokenPrefix)
		raw, err := base64.RawURLEncoding.DecodeString(secret)
		if err != nil {
			t.Fatal(err)
		}
		for name, needle := range map[string][]byte{"token": []byte(tk), "secret part": []byte(secret), "raw secret": raw} {
			if bytes.Contains(files, needle) {
				t.Fatalf("the data directory holds the admin token's %s", name)
			}
		}
		sum := sha256.Sum256([]byte(tk))
		if !bytes.Contains(files, []byte(base64.StdEncoding.EncodeToString(sum[:]))) {
			t.Fatal("the data directory does not hold the admin token's SHA-256: where is it kept?")
		}
	}
}

// Authentication compares SHA-256 hashes with crypto/subtle against every
// stored one, with no early exit (Issuer.AuthenticateAdmin). What a test can
// show is the outcome: a revoked token stops working at once, a token one
// character off never works, and the name of a token is not a token.
func TestAdminTokenRevocationAndMismatch(t *testing.T) {
	env := issuertest.Start(t, issuertest.WithTime(t0))
	tok := createAdminToken(t, env, "ops-temp")
	if status, raw, _ := call(t, env, "GET", "/v1/admin/keys", tok, nil); status != http.StatusOK {
		t.Fatalf("new token: %d %s", status, raw)
	}
	last := tok[len(tok)-1]
	flipped := tok[:len(tok)-1] + map[bool]string{true: "A", false: "B"}[last != 'A']
	for name, bad := range map[string]string{
		"one character off": flipped,
		"prefix only":       issuer.AdminTokenPrefix,
		"the token's name":  "ops-temp",
		"its hash":          base64.StdEncoding.EncodeToString(func() []byte { s := sha256.Sum256([]byte(tok)); return s[:] }()),
	} {
		status, raw, h := call(t, env, "GET", "/v1/admin/keys", bad, nil)
		wantError(t, status, raw, http.StatusUnauthorized, "unauthorized")
		if !strings.Contains(h.Get("WWW-Authenticate"), `error="invalid_token"`) {
			t.Fatalf("%s: WWW-Authenticate %q", name, h.Get("WWW-Authenticate"))
		}
	}
	status, raw, h := call(t, env, "GET", "/v1/admin/keys", "", nil)
	wantError(t, status, raw, http.StatusUnauthorized, "unauthorized")
	if h.Get("WWW-Authenticate") != `Bearer realm="healthcode-admin"` {
		t.Fatalf("no token: WWW-Authenticate %q", h.Get("WWW-Authenticate"))
	}

	if status, raw, _ := call(t, env, "DELETE", "/v1/admin/tokens/ops-temp", env.AdminToken, nil); status != http.StatusNoContent {
		t.Fatalf("revoke: %d %s", status, raw)
	}
	status, raw, _ = call(t, env, "GET", "/v1/admin/keys", tok, nil)
	wantError(t, status, raw, http.StatusUnauthorized, "unauthorized")
	status, raw, _ = call(t, env, "DELETE", "/v1/admin/tokens/ops-temp", env.AdminToken, nil)
	wantError(t, status, raw, http.StatusNotFound, "not_found")
	// The other token is untouched, and the list no longer names the
	// revoked one.
	status, raw, _ = call(t, env, "GET", "/v1/admin/tokens", env.AdminToken, nil)
	if status != http.StatusOK || strings.Contains(string(raw), "ops-temp") {
		t.Fatalf("list after revoke: %d %s", status, raw)
	}
}

// The audit log names the token that acted, by its name, and never holds a
// token.
func TestAuditNamesTokensNeverHoldsThem(t *testing.T) {
	env := issuertest.Start(t, issuertest.WithTime(t0))
	tok := createAdminToken(t, env, "ops-alice")
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	body := mustJSON(httpapi.AttesterJSON{ID: "clinic-9", Key: keyfile.EncodePublic(pub)})
	if status, raw, _ := call(t, env, "POST", "/v1/admin/attesters", tok, body); status != http.StatusCreated {
		t.Fatalf("add attester: %d %s", status, raw)
	}
	if status, raw, _ := call(t, env, "POST", "/v1/admin/keys/rotate", tok, nil); status != http.StatusOK {
		t.Fatalf("rotate: %d %s", status, raw)
	}
	second := createAdminToken(t, env, "ops-bob") // created by the harness's token
	if status, raw, _ := call(t, env, "DELETE", "/v1/admin/tokens/ops-bob", tok, nil); status != http.StatusNoContent {
		t.Fatalf("revoke: %d %s", status, raw)
	}

	status, raw, _ := call(t, env, "GET", "/v1/admin/audit", env.AdminToken, nil)
	if status != http.StatusOK {
		t.Fatalf("audit: %d %s", status, raw)
	}
	for _, secret := range []string{tok, second, env.AdminToken, strings.TrimPrefix(tok, issuer.AdminTokenPrefix)} {
		if strings.Contains(string(raw), secret) {
			t.Fatalf("the audit log holds an admin token: %s", raw)
		}
	}
	var out struct{ Entries []httpapi.AuditEntryJSON }
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{ // action and detail -> who
		"attester.add attester clinic-9":           "ops-alice",
		"keys.rotate ":                             "ops-alice",
		"admin_token.create admin token ops-alice": env.AdminName,
		"admin_token.create admin token ops-bob":   env.AdminName,
		"admin_token.revoke admin token ops-bob":   "ops-alice",
	}
	for _, e := range out.Entries {
		for what, who := range want {
			action, detail, _ := strings.Cut(what, " ")
			if e.Action == action && strings.HasPrefix(e.Detail, detail) {
				if e.Admin != who {
					t.Fatalf("%s %q by %q, want %q", e.Action, e.Detail, e.Admin, who)
				}
				delete(want, what)
			}
		}
	}
	if len(want) != 0 {
		t.Fatalf("audit lacks %v: %s", want, raw)
	}
}

// Small limits: the request after the limit gets 429 rate_limited as JSON,
// with Retry-After. Admin calls authenticate first: failed attempts are
// limited per client and never block a valid token; valid calls are
// limited per admin token. Redemptions are counted whatever their outcome,
// and the public inventory is limited too.
func TestRateLimits(t *testing.T) {
	o := httpapi.DefaultOptions()
	o.RedeemPerMinute, o.AdminPerMinute, o.AdminFailuresPerMinute, o.InventoryPerMinute = 3, 3, 2, 2
	env := issuertest.Start(t, issuertest.WithTime(t0), issuertest.WithHTTPOptions(o))
	second, err := env.Issuer.CreateAdminToken(context.Background(), "test", "second")
	if err != nil {
		t.Fatal(err)
	}

	// A flood of wrong tokens: limited after two, per client...
	for n := 0; n < 2; n++ {
		status, raw, _ := call(t, env, "GET", "/v1/admin/keys", "hcadm_guess", nil)
		wantError(t, status, raw, http.StatusUnauthorized, "unauthorized")
	}
	for n := 0; n < 5; n++ {
		status, raw, h := call(t, env, "GET", "/v1/admin/keys", "hcadm_guess", nil)
		wantError(t, status, raw, http.StatusTooManyRequests, "rate_limited")
		if h.Get("Retry-After") != "60" {
			t.Fatalf("429 with Retry-After %q, want 60", h.Get("Retry-After"))
		}
	}
	status, raw, _ := call(t, env, "GET", "/v1/admin/keys", "", nil)
	wantError(t, status, raw, http.StatusTooManyRequests, "rate_limited")
	// ...and the valid token, from the same client, is not blocked by it.
	for n := 0; n < 3; n++ {
		if status, raw, _ := call(t, env, "GET", "/v1/admin/keys", env.AdminToken, nil); status != http.StatusOK {
			t.Fatalf("valid token during a flood of wrong ones: %d %s", status, raw)
		}
	}
	// Valid calls are limited per token: the fourth is refused, another
	// token still works.
	env.Clock.Advance(30 * time.Second)
	status, raw, h := call(t, env, "GET", "/v1/admin/keys", env.AdminToken, nil)
	wantError(t, status, raw, http.StatusTooManyRequests, "rate_limited")
	if !strings.Contains(string(raw), "too many admin calls with this token") || h.Get("Retry-After") != "30" {
		t.Fatalf("per-token limit: %s, Retry-After %q", raw, h.Get("Retry-After"))
	}
	if status, raw, _ := call(t, env, "GET", "/v1/admin/keys", second, nil); status != http.StatusOK {
		t.Fatalf("another admin token: %d %s", status, raw)
	}
	// The window ends by the issuer's clock.
	env.Clock.Advance(30 * time.Second)
	if status, raw, _ := call(t, env, "GET", "/v1/admin/keys", env.AdminToken, nil); status != http.StatusOK {
		t.Fatalf("valid token in the next minute: %d %s", status, raw)
	}
	status, raw, _ = call(t, env, "GET", "/v1/admin/keys", "hcadm_guess", nil)
	wantError(t, status, raw, http.StatusUnauthorized, "unauthorized")

	// The public inventory: two a minute per client.
	for n := 0; n < 2; n++ {
		if status, raw, _ := call(t, env, "GET", "/v1/inventory", "", nil); status != http.StatusOK {
			t.Fatalf("inventory: %d %s", status, raw)
		}
	}
	status, raw, _ = call(t, env, "GET", "/v1/inventory", "", nil)
	wantError(t, status, raw, http.StatusTooManyRequests, "rate_limited")

	status, raw = env.Post(t, "/v1/tokens", httpapi.TokensRequest{Attestations: []string{env.Attest(t, attestation.TestNegative, time.Time{}, "")}})
	if status != http.StatusOK {
		t.Fatalf("first redemption: %d %s", status, raw)
	}
	for n := 0; n < 2; n++ {
		status, raw = env.Post(t, "/v1/tokens", map[string]any{"attestations": []string{"not.an.attestation"}})
		wantError(t, status, raw, http.StatusUnprocessableEntity, attestation.CodeMalformed)
	}
	status, raw = env.Post(t, "/v1/tokens", httpapi.TokensRequest{Attestations: []string{env.Attest(t, attestation.TestNegative, time.Time{}, "")}})
	wantError(t, status, raw, http.StatusTooManyRequests, "rate_limited")

	// The limits are separate: public endpoints are not limited at all.
	if status, raw, _ := call(t, env, "GET", "/.well-known/healthcode/bundle", "", nil); status != http.StatusOK {
		t.Fatalf("bundle while limited: %d %s", status, raw)
	}
}

// A body over 64 KiB gets 413 and headers over 8 KiB get 431, both as the
// API's JSON errors.
func TestSizeLimits(t *testing.T) {
	env := issuertest.Start(t, issuertest.WithTime(t0))

	// The server answers from Content-Length, before the body: a client
	// still writing may see its connection closed, so send the head only.
	for _, route := range []string{"POST /v1/tokens", "PUT /v1/admin/policy"} {
		status, raw := rawRequest(t, env, route+" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+env.AdminToken+
			"\r\nContent-Type: application/json\r\nContent-Length: "+strconv.Itoa(httpapi.BodyLimit+1)+"\r\n\r\n{")
		wantError(t, status, raw, http.StatusRequestEntityTooLarge, "body_too_large")
	}
	// Just under the limit is read and refused for its content.
	fits := []byte(`{"attestations":["` + strings.Repeat("a", httpapi.BodyLimit-100) + `"]}`)
	status, raw, _ := call(t, env, "POST", "/v1/tokens", "", fits)
	wantError(t, status, raw, http.StatusUnprocessableEntity, attestation.CodeMalformed)

	req, err := http.NewRequest("GET", env.URL+"/healthz", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Padding", strings.Repeat("p", httpapi.HeaderLimit+1))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	wantError(t, resp.StatusCode, raw, http.StatusRequestHeaderFieldsTooLarge, "headers_too_large")
}

// fiber's default error handler sends err.Error() to the client; ours
// sends a fixed message for anything that is not an API error. A handler
// that returns a plain error (the store is closed under it) answers 500
// {"error":{"code":"internal","message":"internal error"}}, exactly.
func TestPlainErrorsAreInternal(t *testing.T) {
	env := issuertest.Start(t, issuertest.WithTime(t0))
	att := env.Attest(t, attestation.TestNegative, time.Time{}, "")
	if err := env.DB.Close(); err != nil {
		t.Fatal(err)
	}
	const want = `{"error":{"code":"internal","message":"internal error"}}`
	status, raw, h := call(t, env, "GET", "/v1/inventory", "", nil)
	if status != http.StatusInternalServerError || string(raw) != want {
		t.Fatalf("inventory on a closed store: %d %s", status, raw)
	}
	if !strings.HasPrefix(h.Get("Content-Type"), "application/json") {
		t.Fatalf("Content-Type %q", h.Get("Content-Type"))
	}
	status, raw = env.Post(t, "/v1/tokens", httpapi.TokensRequest{Attestations: []string{att}})
	if status != http.StatusInternalServerError || string(raw) != want {
		t.Fatalf("redeem on a closed store: %d %s", status, raw)
	}
	// fiber's own errors keep their status with our codes.
	status, raw, _ = call(t, env, "PATCH", "/v1/tokens", "", nil)
	if code, _ := errorCode(t, raw); status >= 500 || code == "" {
		t.Fatalf("PATCH: %d %s", status, raw)
	}
}

// rawRequest writes head on a new connection and reads one response.
func rawRequest(t *testing.T, env *issuertest.Env, head string) (int, []byte) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(env.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(conn, head); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	// Past the client, so checked here: the answer must be one the
	// document describes (a head the server refused is no valid request).
	if req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(head))); err == nil {
		if err := apiCheck.Check(req, nil, resp, raw); err != nil {
			t.Fatal(err)
		}
	}
	return resp.StatusCode, raw
}
