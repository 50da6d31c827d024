package httpapi_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/healthcode/healthcode/attestation"
	"github.com/healthcode/healthcode/issuer/httpapi"
	"github.com/healthcode/healthcode/issuer/issuertest"
)

// fuzzAttester has a fixed key so that seed bodies hold attestations that
// really verify: the fuzzer then mutates around the signing path as well as
// the parser.
func fuzzAttester() ed25519.PrivateKey {
	seed := bytes.Repeat([]byte{7}, ed25519.SeedSize)
	return ed25519.NewKeyFromSeed(seed)
}

func fuzzAttestation(f *testing.F, kind attestation.Kind, id, hint string) string {
	s, err := attestation.Sign(fuzzAttester(), attestation.Claims{Attester: "fuzz-lab", Kind: kind,
		At: t0.Add(-time.Hour).Unix(), Expires: t0.Add(24 * time.Hour).Unix(), ID: id, Hint: hint})
	if err != nil {
		f.Fatal(err)
	}
	return s
}

// FuzzRedeemBody sends arbitrary bodies (and Content-Type values) to POST
// /v1/tokens on a Server over a real bbolt file, through fiber's app.Test.
// Whatever comes in, the answer is a 200 with tokens or a 4xx with a JSON
// error body whose message is short and does not echo the input: never a
// panic, never a 5xx.
func FuzzRedeemBody(f *testing.F) {
	env := issuertest.Start(f, issuertest.WithTime(t0))
	if err := env.Issuer.AddAttester(context.Background(), "fuzz", "fuzz-lab", fuzzAttester().Public().(ed25519.PublicKey)); err != nil {
		f.Fatal(err)
	}
	app := env.Server.App()

	body := func(atts ...string) []byte {
		b, _ := json.Marshal(httpapi.TokensRequest{Attestations: atts})
		return b
	}
	neg := fuzzAttestation(f, attestation.TestNegative, "seed-1", "")
	pos := fuzzAttestation(f, attestation.TestPositive, "seed-2", "AB1990")
	f.Add(body(neg), "application/json")
	f.Add(body(neg, pos), "application/json; charset=utf-8")
	f.Add(body(neg, neg), "")
	f.Add(body(), "application/json")
	f.Add([]byte(`{"attestations":null}`), "application/json")
	f.Add([]byte(`{"attestations":["a.b.c"],"name":"Alice"}`), "application/json")
	f.Add([]byte(`{"attestations":["x"]}{"attestations":["y"]}`), "application/json")
	f.Add([]byte(`{"attestations":[1,2]}`), "text/plain")
	f.Add([]byte(`{"attestations":["`+strings.Repeat("a", 3000)+`"]}`), "APPLICATION/JSON")
	f.Add([]byte(`["attestations"]`), "application/json")
	f.Add([]byte{0xff, 0xfe, '{'}, "application/json")
	// Issue 11 item 5: the body is matched exactly.
	secret := base64.RawURLEncoding.EncodeToString(bytes.Repeat([]byte{3}, 32))
	withSecret, _ := json.Marshal(httpapi.TokensRequest{Attestations: []string{fuzzAttestation(f, attestation.Recovery, "seed-3", "")}, Secret: secret})
	f.Add(withSecret, "application/json")
	f.Add([]byte(`{"Attestations":["`+neg+`"]}`), "application/json")
	f.Add([]byte(`{"attestations":["`+neg+`"],"attestations":["`+pos+`"]}`), "application/json")
	f.Add([]byte(`{"attestations":["`+neg+`"],"secret":"`+secret+`","secret":"`+secret+`"}`), "application/json")
	f.Add([]byte(`{"attestations":["`+neg+`"],"secret":null}`), "application/json")
	f.Add([]byte(`{"attestations":["`+neg+`"],"secret":"`+secret+`=="}`), "application/json")
	f.Add([]byte(`{"attestations":[null],"secret":"`+secret[:42]+`"}`), "application/json")
	f.Add([]byte(`{"attestation\u0073":["`+neg+`"]}`), "application/json")

	f.Fuzz(func(t *testing.T, body []byte, contentType string) {
		req := httptest.NewRequest(http.MethodPost, "/v1/tokens", bytes.NewReader(body))
		if contentType != "" {
			if !validHeaderValue(contentType) {
				return // net/http would refuse to send it
			}
			req.Header.Set("Content-Type", contentType)
		}
		resp, err := app.Test(req, 10_000)
		if err != nil {
			t.Fatalf("app.Test: %v", err)
		}
		defer resp.Body.Close()
		raw, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		if err := apiCheck.Check(req, body, resp, raw); err != nil {
			t.Fatal(err)
		}
		// A body whose members are not exactly "attestations" and an
		// optional "secret", each once, is a 400 malformed_request.
		keys, isObject := topLevelKeys(body)
		strict := isObject && !exactMembers(keys)
		if resp.StatusCode == http.StatusOK {
			var tr httpapi.TokensResponse
			if err := json.Unmarshal(raw, &tr); err != nil || len(tr.Tokens) == 0 || tr.RenewAfter <= 0 || tr.EvidenceUntil <= 0 {
				t.Fatalf("200 without tokens, renew_after or evidence_until: %s", raw)
			}
			if strict {
				t.Fatalf("members %q accepted", keys)
			}
			return
		}
		if resp.StatusCode < 400 || resp.StatusCode >= 500 {
			t.Fatalf("status %d: %s", resp.StatusCode, raw)
		}
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			t.Fatalf("status %d with Content-Type %q", resp.StatusCode, ct)
		}
		var e httpapi.ErrorResponse
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&e); err != nil || e.Error.Code == "" || e.Error.Message == "" {
			t.Fatalf("status %d, not an error body: %s", resp.StatusCode, raw)
		}
		if len(e.Error.Message) > 300 {
			t.Fatalf("status %d, message of %d bytes: %.200q", resp.StatusCode, len(e.Error.Message), e.Error.Message)
		}
		if strict && (resp.StatusCode != http.StatusBadRequest || e.Error.Code != "malformed_request") && resp.StatusCode != http.StatusUnsupportedMediaType {
			t.Fatalf("members %q: status %d %s, want 400 malformed_request", keys, resp.StatusCode, e.Error.Code)
		}
	})
}

// topLevelKeys lists the member names of a body that is one well-formed
// JSON object (as decoded, escapes resolved); ok is false for anything else.
func topLevelKeys(body []byte) (keys []string, ok bool) {
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, false
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, false
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, false
		}
		keys = append(keys, tok.(string))
	}
	if _, err := dec.Token(); err != nil {
		return nil, false
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, false
	}
	return keys, true
}

// exactMembers reports whether keys are "attestations" and at most one
// "secret", each once, names exactly so.
func exactMembers(keys []string) bool {
	att, sec := 0, 0
	for _, k := range keys {
		switch k {
		case "attestations":
			att++
		case "secret":
			sec++
		default:
			return false
		}
	}
	return att == 1 && sec <= 1
}

// validHeaderValue reports whether net/http's client would send v.
func validHeaderValue(v string) bool {
	if !utf8.ValidString(v) {
		return false
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}
