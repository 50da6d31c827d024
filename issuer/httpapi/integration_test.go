package httpapi_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/healthcode/healthcode/attestation"
	"github.com/healthcode/healthcode/bundle"
	"github.com/healthcode/healthcode/issuer/httpapi"
	"github.com/healthcode/healthcode/issuer/issuertest"
	"github.com/healthcode/healthcode/policy"
	"github.com/healthcode/healthcode/qr"
	"github.com/healthcode/healthcode/verifier"
)

// A fixed start keeps windows and deadlines reproducible.
var t0 = time.Date(2026, 3, 10, 9, 17, 0, 0, time.UTC)

func tokensResponse(t *testing.T, raw []byte) httpapi.TokensResponse {
	t.Helper()
	var r httpapi.TokensResponse
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatalf("%v: %s", err, raw)
	}
	return r
}

func errorCode(t *testing.T, raw []byte) (string, string) {
	t.Helper()
	var e httpapi.ErrorResponse
	if err := json.Unmarshal(raw, &e); err != nil || e.Error.Code == "" {
		t.Fatalf("not an error body: %s", raw)
	}
	return e.Error.Code, e.Error.Message
}

// The whole path: a lab signs, the resident redeems over HTTP against a
// real bbolt file, every token verifies offline with the verifier package
// under the pinned bundle, and every token's QR decodes back to it.
func TestRedeemVerifyAndScanEndToEnd(t *testing.T) {
	env := issuertest.Start(t, issuertest.WithTime(t0))
	p := env.Issuer.Policy()
	att := env.Attest(t, attestation.TestNegative, t0.Add(-2*time.Hour), "")

	status, raw := env.Post(t, "/v1/tokens", httpapi.TokensRequest{Attestations: []string{att}})
	if status != 200 {
		t.Fatalf("status %d: %s", status, raw)
	}
	resp := tokensResponse(t, raw)
	if resp.Colour != "green" {
		t.Fatalf("colour %q, want green", resp.Colour)
	}
	// Test sampled at t0-2h, green for 72h: evidence ends at t0+70h, i.e.
	// 2026-03-13 07:17 -> floor to the 1h grid: 07:00. Daily windows from
	// 2026-03-10 00:00: 10th, 11th, 12th, and the 13th until 07:00.
	wantWindows := 4
	if got := len(resp.Tokens); got != wantWindows*p.Tokens.Copies {
		t.Fatalf("%d tokens, want %d windows x %d copies", got, wantWindows, p.Tokens.Copies)
	}
	b, err := bundle.Open(env.BundleRaw(t), env.Pin)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	evidenceEnd := t0.Add(70 * time.Hour)
	for n, tk := range resp.Tokens {
		if seen[tk.Token] {
			t.Fatalf("token %d repeats an earlier one: copies must differ", n)
		}
		seen[tk.Token] = true
		at := time.Unix(tk.NotBefore, 0)
		if at.Before(t0) {
			at = t0
		}
		res, err := verifier.Verify(tk.Token, b, at)
		if err != nil {
			t.Fatalf("token %d does not verify at %s: %v", n, at, err)
		}
		if res.Colour != policy.Green || res.Expires.Unix() != tk.Expires || res.NotBefore.Unix() != tk.NotBefore {
			t.Fatalf("token %d: verifier says %+v, response says nbf %d exp %d", n, res, tk.NotBefore, tk.Expires)
		}
		// Invariant 6: never outliving the evidence, never longer than
		// the colour's lifetime; invariant 4: times on the grid.
		if time.Unix(tk.Expires, 0).After(evidenceEnd) {
			t.Fatalf("token %d expires %s, after the evidence ends %s", n, time.Unix(tk.Expires, 0).UTC(), evidenceEnd)
		}
		if d := time.Duration(tk.Expires-tk.NotBefore) * time.Second; d > p.Tokens.Lifetime.Green.D() {
			t.Fatalf("token %d is valid for %s, longer than green's lifetime", n, d)
		}
		g := int64(p.Tokens.Granularity.D() / time.Second)
		if tk.NotBefore%g != 0 || tk.Expires%g != 0 {
			t.Fatalf("token %d times %d..%d are not on the %s grid", n, tk.NotBefore, tk.Expires, p.Tokens.Granularity)
		}
		if n%p.Tokens.Copies == 0 { // one QR per window keeps the test quick
			png, err := qr.PNG(tk.Token, 512)
			if err != nil {
				t.Fatal(err)
			}
			got, err := qr.Decode(bytes.NewReader(png))
			if err != nil || got != tk.Token {
				t.Fatalf("token %d: QR decodes to %q, %v", n, got, err)
			}
		}
	}
	last := resp.Tokens[len(resp.Tokens)-1]
	if want := time.Date(2026, 3, 13, 7, 0, 0, 0, time.UTC).Unix(); last.Expires != want {
		t.Fatalf("last window ends %s, want %s", time.Unix(last.Expires, 0).UTC(), time.Unix(want, 0).UTC())
	}

	// Single redemption.
	status, raw = env.Post(t, "/v1/tokens", httpapi.TokensRequest{Attestations: []string{att}})
	if code, _ := errorCode(t, raw); status != http.StatusConflict || code != "already_redeemed" {
		t.Fatalf("second redemption: %d %s", status, raw)
	}
}

// Invariant 2 and the QR size goal (DESIGN §4): a token carries colour,
// window, policy version, kid and a per-copy nonce, nothing else, and fits
// QR version 10 at level M (11 with the hint on).
func TestTokenIsMinimalAndFitsTheQR(t *testing.T) {
	for _, hint := range []bool{false, true} {
		p := policy.Default()
		if hint {
			p.HolderHint = policy.HintOn
		}
		env := issuertest.Start(t, issuertest.WithTime(t0), issuertest.WithPolicy(p))
		_, toks := env.Redeem(t, env.Attest(t, attestation.TestNegative, t0, "AB1990"))
		for _, tk := range toks {
			parts := strings.Split(tk, ".")
			hdr := decodeJSON(t, parts[0])
			if len(hdr) != 2 || hdr["alg"] != "EdDSA" || hdr["kid"] == nil {
				t.Fatalf("header %v: want exactly alg EdDSA and kid", hdr)
			}
			claims := decodeJSON(t, parts[1])
			allowed := map[string]bool{"c": true, "exp": true, "n": true, "nbf": true, "v": true}
			if hint {
				allowed["h"] = true
				if claims["h"] != "AB1990" {
					t.Fatalf("hint on, claims %v", claims)
				}
			}
			for k := range claims {
				if !allowed[k] {
					t.Fatalf("token carries claim %q (hint %v): %v", k, hint, claims)
				}
			}
			if len(claims) != len(allowed) {
				t.Fatalf("claims %v, want exactly %v", claims, allowed)
			}
			v, err := qr.Version(tk)
			if err != nil {
				t.Fatal(err)
			}
			want := 10
			if hint {
				want = 11
			}
			if v > want {
				t.Fatalf("hint %v: token of %d characters needs QR version %d, want <= %d", hint, len(tk), v, want)
			}
		}
	}
}

func decodeJSON(t *testing.T, seg string) map[string]any {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// Every bad input gets a 4xx with a code naming the problem, and neither
// a stack trace nor the input echoed back.
func TestRedeemRefusesBadInput(t *testing.T) {
	env := issuertest.Start(t, issuertest.WithTime(t0))
	_, otherKey, _ := ed25519.GenerateKey(rand.Reader)

	sign := func(key ed25519.PrivateKey, claims jwt.MapClaims) string {
		tk := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims)
		s, err := tk.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	base := func() jwt.MapClaims {
		return jwt.MapClaims{"iss": env.AttesterID, "kind": "test-negative", "at": t0.Unix(), "exp": t0.Add(time.Hour).Unix(), "jti": "x-" + time.Now().Format("150405.000000000")}
	}
	withName := base()
	withName["name"] = "Zhang San"
	withLocation := base()
	withLocation["loc"] = "Wuhan"
	unknownAttester := base()
	unknownAttester["iss"] = "nobody"
	expired := base()
	expired["at"], expired["exp"] = t0.Add(-48*time.Hour).Unix(), t0.Add(-time.Hour).Unix()
	future := base()
	future["at"] = t0.Add(2 * time.Hour).Unix()
	future["exp"] = t0.Add(3 * time.Hour).Unix()
	badKind := base()
	badKind["kind"] = "antibody"
	tooLong := base()
	tooLong["exp"] = t0.Add(30 * 24 * time.Hour).Unix()
	hs := jwt.NewWithClaims(jwt.SigningMethodHS256, base())
	hsTok, _ := hs.SignedString([]byte(env.AttesterKey.Public().(ed25519.PublicKey)))

	many := make([]string, 9)
	for n := range many {
		many[n] = env.Attest(t, attestation.TestNegative, t0, "")
	}

	cases := []struct {
		name, body string
		status     int
		code, msg  string
	}{
		{"claim outside the allow-list", req(sign(env.AttesterKey, withName)), 422, "claim_not_allowed", `claim "name" is not allowed`},
		{"location claim", req(sign(env.AttesterKey, withLocation)), 422, "claim_not_allowed", `claim "loc" is not allowed`},
		{"unknown attester", req(sign(env.AttesterKey, unknownAttester)), 422, "unknown_attester", `attester "nobody" is not registered`},
		{"bad signature", req(sign(otherKey, base())), 422, "bad_signature", "signature does not verify"},
		{"HS256 with the public key", req(hsTok), 422, "bad_signature", "not signed with EdDSA"},
		{"expired", req(sign(env.AttesterKey, expired)), 422, "attestation_expired", "attestation expired at"},
		{"future", req(sign(env.AttesterKey, future)), 422, "attestation_in_future", "in the future"},
		{"unknown kind", req(sign(env.AttesterKey, badKind)), 422, "unknown_kind", `kind "antibody" is not one of`},
		{"lifetime too long", req(sign(env.AttesterKey, tooLong)), 422, "attestation_lifetime_too_long", "expires more than 3d from now"},
		{"not a JWS", req("hello"), 422, "malformed_attestation", "not a compact JWS"},
		{"malformed JSON", `{"attestations": [`, 400, "malformed_request", "not valid JSON"},
		{"unknown field", `{"attestations": [], "name": "x"}`, 400, "malformed_request", `unknown field "name"`},
		{"wrong type", `{"attestations": "x"}`, 400, "malformed_request", "field attestations has the wrong type"},
		{"missing list", `{}`, 400, "malformed_request", `body must be {"attestations"`},
		{"empty list", `{"attestations": []}`, 400, "no_attestations", "no attestations given"},
		{"too many", req(many...), 400, "too_many_attestations", "9 attestations given; at most 8 per request"},
		// An oversized body is TestSizeLimits's: the server answers 413 from
		// Content-Length before reading, so a client still writing the body
		// can see a broken pipe instead of the answer.
		{"trailing data", `{"attestations": ["a"]} {}`, 400, "malformed_request", "more than one JSON value"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, err := http.Post(env.URL+"/v1/tokens", "application/json", strings.NewReader(c.body))
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			code, msg := errorCode(t, raw)
			if resp.StatusCode != c.status || code != c.code || !strings.Contains(msg, c.msg) {
				t.Fatalf("got %d %s %q, want %d %s containing %q", resp.StatusCode, code, msg, c.status, c.code, c.msg)
			}
			if len(c.body) > 40 && strings.Contains(string(raw), c.body[18:40]) {
				t.Fatalf("the answer echoes the input: %s", raw)
			}
			if strings.Contains(string(raw), "goroutine") || strings.Contains(string(raw), ".go:") {
				t.Fatalf("the answer leaks internals: %s", raw)
			}
		})
	}
	// Nothing refused was recorded: the good attestations still redeem.
	if colour, _ := env.Redeem(t, many[0]); colour != "green" {
		t.Fatalf("colour %s", colour)
	}
}

func req(atts ...string) string {
	b, _ := json.Marshal(httpapi.TokensRequest{Attestations: atts})
	return string(b)
}

// Red dominates: a positive test outweighs a negative one presented with
// it, and the batch is red.
func TestRedDominates(t *testing.T) {
	env := issuertest.Start(t, issuertest.WithTime(t0))
	colour, toks := env.Redeem(t,
		env.Attest(t, attestation.TestNegative, t0, ""),
		env.Attest(t, attestation.TestPositive, t0.Add(-time.Hour), ""))
	if colour != "red" || len(toks) == 0 {
		t.Fatalf("colour %s with %d tokens, want red", colour, len(toks))
	}
}

func TestWellKnownEndpoints(t *testing.T) {
	env := issuertest.Start(t, issuertest.WithTime(t0))
	get := func(path string) (int, string) {
		resp, err := http.Get(env.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if s, body := get("/healthz"); s != 200 || !strings.Contains(body, "ok") {
		t.Fatalf("healthz: %d %s", s, body)
	}
	if s, body := get("/.well-known/healthcode/pin"); s != 200 || strings.TrimSpace(body) != env.Pin {
		t.Fatalf("pin: %d %s", s, body)
	}
	s, body := get("/.well-known/jwks.json")
	var jwks struct {
		Keys []struct{ Kty, Crv, X, Kid, Alg string }
	}
	if err := json.Unmarshal([]byte(body), &jwks); s != 200 || err != nil || len(jwks.Keys) < 1 {
		t.Fatalf("jwks: %d %s", s, body)
	}
	b := env.Bundle(t)
	for _, k := range jwks.Keys {
		bk, ok := b.Find(k.Kid)
		if !ok || k.Kty != "OKP" || k.Crv != "Ed25519" || k.Alg != "EdDSA" || k.X != base64.RawURLEncoding.EncodeToString(bk.Public) {
			t.Fatalf("jwks key %+v does not match the bundle", k)
		}
	}
	if _, err := bundle.Open(env.BundleRaw(t), "sha256:"+strings.Repeat("0", 64)); err == nil {
		t.Fatal("bundle opened under a wrong pin")
	}
	if s, body := get("/no/such/thing"); s != 404 || !strings.Contains(body, `"not_found"`) {
		t.Fatalf("404: %d %s", s, body)
	}
}

// The embedded apps revalidate by ETag, so a service worker's refresh
// costs a 304, not the whole wasm module again.
func TestStaticAppsRevalidateByETag(t *testing.T) {
	env := issuertest.Start(t, issuertest.WithTime(t0))
	for _, path := range []string{"/wallet/", "/verify/"} {
		resp, err := http.Get(env.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		tag := resp.Header.Get("ETag")
		if resp.StatusCode != 200 || tag == "" {
			t.Fatalf("%s: %d, ETag %q", path, resp.StatusCode, tag)
		}
		req, _ := http.NewRequest("GET", env.URL+path, nil)
		req.Header.Set("If-None-Match", tag)
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotModified {
			t.Fatalf("%s with If-None-Match: %d, want 304", path, resp.StatusCode)
		}
	}
}

// Invariant 4: two residents whose tests were taken at different times of
// the same hour (04:02 and 04:57; the policy's granularity is 1h) get tokens
// that differ only in the random nonce, so venues
// comparing the tokens they saw learn nothing that links a visit to a
// person; and one resident's copies differ from each other only there too.
func TestTokensOfDifferentResidentsAreIndistinguishable(t *testing.T) {
	env := issuertest.Start(t, issuertest.WithTime(t0))
	_, a := env.Redeem(t, env.Attest(t, attestation.TestNegative, t0.Add(-5*time.Hour-15*time.Minute), ""))
	env.Clock.Advance(41 * time.Minute) // redeemed later the same hour
	_, b := env.Redeem(t, env.Attest(t, attestation.TestNegative, t0.Add(-5*time.Hour+40*time.Minute), ""))
	if len(a) != len(b) {
		t.Fatalf("batches of %d and %d tokens", len(a), len(b))
	}
	strip := func(tok string) string {
		c := decodeJSON(t, strings.Split(tok, ".")[1])
		if n, _ := c["n"].(string); len(n) < 8 {
			t.Fatalf("nonce %q too short to tell copies apart", n)
		}
		delete(c, "n")
		out, _ := json.Marshal(c)
		return string(out)
	}
	nonces := map[string]bool{}
	for i := range a {
		if strip(a[i]) != strip(b[i]) {
			t.Fatalf("token %d: resident A %s, resident B %s: something besides the nonce differs", i, strip(a[i]), strip(b[i]))
		}
		for _, tok := range []string{a[i], b[i]} {
			n := decodeJSON(t, strings.Split(tok, ".")[1])["n"].(string)
			if nonces[n] {
				t.Fatalf("nonce %s repeats", n)
			}
			nonces[n] = true
		}
	}
}
