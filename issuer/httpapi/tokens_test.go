package httpapi_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/healthcode/healthcode/attestation"
	"github.com/healthcode/healthcode/issuer"
	"github.com/healthcode/healthcode/issuer/boltstore"
	"github.com/healthcode/healthcode/issuer/httpapi"
	"github.com/healthcode/healthcode/issuer/issuertest"
)

func postRaw(t *testing.T, url, body string) (int, []byte) {
	t.Helper()
	resp, err := http.Post(url+"/v1/tokens", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, raw
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// Issue 11 item 5: the body is matched exactly. Each refusal is a 400 with
// its own message, and nothing is redeemed by a refused body.
func TestTokensBodyIsReadExactly(t *testing.T) {
	env := issuertest.Start(t, issuertest.WithTime(t0))
	att := env.Attest(t, attestation.TestNegative, time.Time{}, "")
	a, _ := json.Marshal(att)
	good := b64(bytes.Repeat([]byte{1}, 32))
	cases := []struct {
		name, body string
		code, msg  string
	}{
		{"name in another case", `{"Attestations":[` + string(a) + `]}`, "malformed_request",
			`unknown field "Attestations": field names are case-sensitive ("attestations")`},
		{"secret in another case", `{"attestations":[` + string(a) + `],"SECRET":"` + good + `"}`, "malformed_request",
			`unknown field "SECRET": field names are case-sensitive ("secret")`},
		{"duplicate attestations", `{"attestations":["x"],"attestations":[` + string(a) + `]}`, "malformed_request",
			`duplicate field "attestations"`},
		{"duplicate secret", `{"attestations":[` + string(a) + `],"secret":"` + good + `","secret":"` + good + `"}`, "malformed_request",
			`duplicate field "secret"`},
		{"unknown field", `{"attestations":[` + string(a) + `],"device":"phone-1"}`, "malformed_request", `unknown field "device"`},
		{"unknown field, long name cut", `{"attestations":[],"` + strings.Repeat("n", 40) + `":1}`, "malformed_request",
			`unknown field "` + strings.Repeat("n", 32) + `…"`},
		{"unknown field with control characters", `{"attestations":[],"\u001b[2K":1}`, "malformed_request",
			`unknown field "\\x1b[2K"`},
		{"no attestations field", `{"secret":"` + good + `"}`, "malformed_request", `body must be {"attestations": ["..."]}, with an optional "secret"`},
		{"attestations null", `{"attestations":null}`, "malformed_request", `body must be {"attestations": ["..."]}, with an optional "secret"`},
		{"not an object", `[` + string(a) + `]`, "malformed_request", `body must be {"attestations": ["..."]}, with an optional "secret"`},
		{"attestations not an array", `{"attestations":"x"}`, "malformed_request", "field attestations has the wrong type"},
		{"a null attestation", `{"attestations":[null]}`, "malformed_request", "field attestations[0] must be a string"},
		{"a number for an attestation", `{"attestations":[` + string(a) + `,7]}`, "malformed_request", "field attestations[1] must be a string"},
		{"secret too short", `{"attestations":[` + string(a) + `],"secret":"AAAA"}`, "malformed_request",
			"field secret must be 32 bytes in base64url (43 characters, no padding), got 4 characters"},
		{"secret padded", `{"attestations":[` + string(a) + `],"secret":"` + base64.URLEncoding.EncodeToString(bytes.Repeat([]byte{1}, 32)) + `"}`,
			"malformed_request", "field secret must be 32 bytes in base64url (43 characters, no padding), got 44 characters"},
		{"secret in standard base64", `{"attestations":[` + string(a) + `],"secret":"+` + good[1:] + `"}`, "malformed_request",
			"field secret is not base64url (A-Z, a-z, 0-9, '-', '_', no padding)"},
		{"secret with stray bits", `{"attestations":[` + string(a) + `],"secret":"` + good[:42] + `B"}`, "malformed_request",
			"field secret is not base64url (A-Z, a-z, 0-9, '-', '_', no padding)"},
		{"secret a number", `{"attestations":[` + string(a) + `],"secret":12}`, "malformed_request",
			"field secret must be a string of 43 base64url characters"},
		{"secret null", `{"attestations":[` + string(a) + `],"secret":null}`, "malformed_request",
			"field secret must be a string of 43 base64url characters"},
		{"a second value", `{"attestations":[` + string(a) + `]} {}`, "malformed_request", "request body holds more than one JSON value"},
		{"garbage after", `{"attestations":[` + string(a) + `]} x`, "malformed_request", "request body is not valid JSON"},
		{"cut short", `{"attestations":[` + string(a), "malformed_request", "request body is not valid JSON"},
		{"empty list", `{"attestations":[]}`, "no_attestations", "no attestations given"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, raw := postRaw(t, env.URL, c.body)
			code, msg := errorCode(t, raw)
			if status != 400 || code != c.code || msg != c.msg {
				t.Fatalf("got %d %s %q, want 400 %s %q", status, code, msg, c.code, c.msg)
			}
		})
	}
	// None of those spent the attestation.
	status, raw := postRaw(t, env.URL, `{"secret":"`+good+`","attestations":[`+string(a)+`]}`)
	if status != 200 {
		t.Fatalf("the attestation after the refusals: %d %s", status, raw)
	}
}

// Contract 3: the answer carries renew_after and evidence_until; a retry
// with the secret answers 200 in the same shape, a stranger 409.
func TestTokensRenewalFields(t *testing.T) {
	env := issuertest.Start(t, issuertest.WithTime(t0))
	exp := t0.Add(40 * time.Hour)
	att, err := attestation.Sign(env.AttesterKey, attestation.Claims{Attester: env.AttesterID, Kind: attestation.TestNegative,
		At: t0.Add(-time.Hour).Unix(), Expires: exp.Unix(), ID: "fields"})
	if err != nil {
		t.Fatal(err)
	}
	secret := b64(bytes.Repeat([]byte{9}, 32))
	status, raw := env.Post(t, "/v1/tokens", httpapi.TokensRequest{Attestations: []string{att}, Secret: secret})
	if status != 200 {
		t.Fatalf("%d %s", status, raw)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"colour", "tokens", "renew_after", "evidence_until"} {
		if _, ok := fields[f]; !ok {
			t.Fatalf("answer lacks %q: %s", f, raw)
		}
	}
	first := tokensResponse(t, raw)
	// The record goes when the attestation can no longer be accepted:
	// exp + 5m, up to the hour. The evidence ends with the attestation.
	if want := exp.Add(time.Hour).Truncate(time.Hour).Unix(); first.RenewAfter != want {
		t.Fatalf("renew_after %d, want %d", first.RenewAfter, want)
	}
	if first.EvidenceUntil != exp.Unix() {
		t.Fatalf("evidence_until %d, want %d", first.EvidenceUntil, exp.Unix())
	}
	env.Clock.Advance(time.Minute)
	status, raw = env.Post(t, "/v1/tokens", httpapi.TokensRequest{Attestations: []string{att}, Secret: secret})
	if status != 200 {
		t.Fatalf("retry: %d %s", status, raw)
	}
	again := tokensResponse(t, raw)
	if again.RenewAfter != first.RenewAfter || again.EvidenceUntil != first.EvidenceUntil || len(again.Tokens) != len(first.Tokens) ||
		again.Tokens[0].Token == first.Tokens[0].Token {
		t.Fatalf("retry answered %+v", again)
	}
	status, raw = env.Post(t, "/v1/tokens", httpapi.TokensRequest{Attestations: []string{att}})
	wantError(t, status, raw, 409, "already_redeemed")
}

// holdAfterCommit holds a redemption's answer back after its commit until
// the client has cut the connection.
type holdAfterCommit struct {
	issuer.Store
	committed chan struct{}
	cut       chan struct{}
}

func (s *holdAfterCommit) Redeem(ctx context.Context, r issuer.Redemption) (issuer.RedeemResult, error) {
	res, err := s.Store.Redeem(ctx, r)
	if err == nil && s.committed != nil {
		close(s.committed)
		<-s.cut
		s.committed = nil
	}
	return res, err
}

// Issue 12 item 2: the connection is cut after the commit, before the
// answer. The wallet retries with its secret and gets its codes; a
// stranger holding only the attestation gets 409.
func TestRetryAfterTheConnectionIsCutAfterTheCommit(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	clock := issuertest.NewClock(t0)
	db, err := boltstore.Open(dir, boltstore.Options{KEK: issuertest.KEKBeside(t, dir), Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	store := &holdAfterCommit{Store: db, committed: make(chan struct{}), cut: make(chan struct{})}
	iss, err := issuer.New(ctx, issuer.Config{Store: store, State: db, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	lab := fuzzAttester()
	if err := iss.AddAttester(ctx, "test", "fuzz-lab", lab.Public().(ed25519.PublicKey)); err != nil {
		t.Fatal(err)
	}
	opts := httpapi.DefaultOptions()
	opts.RedeemPerMinute, opts.AdminPerMinute = 0, 0
	srv := httpapi.New(iss, opts)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.App().Listener(ln) }()
	defer func() { _ = srv.Shutdown(ctx); <-done }()

	att, err := attestation.Sign(lab, attestation.Claims{Attester: "fuzz-lab", Kind: attestation.Recovery,
		At: t0.Add(-48 * time.Hour).Unix(), Expires: t0.Add(60 * 24 * time.Hour).Unix(), ID: "cut-1"})
	if err != nil {
		t.Fatal(err)
	}
	secret := b64(bytes.Repeat([]byte{0x33}, 32))
	body, _ := json.Marshal(httpapi.TokensRequest{Attestations: []string{att}, Secret: secret})

	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "POST /v1/tokens HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	<-store.committed
	conn.Close() // the answer has nowhere to go
	close(store.cut)
	// Nothing came back on the cut connection: it was closed before any
	// byte of the answer could be read.
	if _, err := bufio.NewReader(conn).ReadByte(); err == nil {
		t.Fatal("read from a closed connection")
	}

	url := "http://" + ln.Addr().String()
	status, raw := postRaw(t, url, `{"attestations":["`+att+`"]}`)
	if code, _ := errorCode(t, raw); status != 409 || code != "already_redeemed" {
		t.Fatalf("stranger: %d %s", status, raw)
	}
	status, raw = postRaw(t, url, `{"attestations":["`+att+`"],"secret":"`+b64(bytes.Repeat([]byte{0x34}, 32))+`"}`)
	if code, _ := errorCode(t, raw); status != 409 || code != "already_redeemed" {
		t.Fatalf("another secret: %d %s", status, raw)
	}
	status, raw = postRaw(t, url, string(body))
	if status != 200 {
		t.Fatalf("the wallet's retry: %d %s", status, raw)
	}
	tr := tokensResponse(t, raw)
	hour := t0.Truncate(time.Hour)
	p := iss.Policy()
	if tr.RenewAfter != hour.Add(p.Renewal.Period.D()).Unix() || tr.Tokens[len(tr.Tokens)-1].Expires != hour.Add(p.Reach()).Unix() {
		t.Fatalf("retry: renew_after %d, batch ends %d; want the lost batch's", tr.RenewAfter, tr.Tokens[len(tr.Tokens)-1].Expires)
	}
}
