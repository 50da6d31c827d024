package web_test

// Browser tests of the wallet side of renewal, safe retry and key
// withdrawal (issue 12 items 1-3, contract 3), against a real issuer whose
// clock the test moves together with the page's.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/healthcode/healthcode/attestation"
	"github.com/healthcode/healthcode/issuer/httpapi"
	"github.com/healthcode/healthcode/issuer/issuertest"
	"github.com/healthcode/healthcode/verifier"
)

// vaccination signs a vaccination given 14 days before now (green from
// now, for 180 days under the default policy), its attestation living as
// long as that.
func vaccination(t *testing.T, env *issuertest.Env) string {
	t.Helper()
	now := env.Clock.Now()
	id := make([]byte, 9)
	rand.Read(id)
	s, err := attestation.Sign(env.AttesterKey, attestation.Claims{
		Attester: env.AttesterID, Kind: attestation.Vaccination, At: now.Add(-14 * 24 * time.Hour).Unix(),
		Expires: now.Add(180 * 24 * time.Hour).Unix(), ID: base64.RawURLEncoding.EncodeToString(id),
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// moveTo sets the issuer's clock and the page's to at, lets the issuer do
// its key housekeeping, and fires the page's periodic check.
func (w *walletPage) moveTo(t *testing.T, at time.Time) {
	t.Helper()
	w.env.Clock.Set(at)
	if err := w.env.Issuer.Maintain(context.Background()); err != nil {
		t.Fatal(err)
	}
	w.setNow(t, at)
}

// waitPosts waits until the page has made n POSTs and its answer is in.
func (w *walletPage) waitPosts(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for len(w.posts()) < n {
		if time.Now().After(deadline) {
			t.Fatalf("waited for POST %d; the page made %d (message %q)", n, len(w.posts()), w.text(t, "#live"))
		}
		time.Sleep(20 * time.Millisecond) // polling the request log, not waiting for time to pass
	}
	w.WaitFor(t, `!JSON.parse(localStorage.getItem('`+groupsKey+`') || '{"groups":[]}').groups.some((g) => g.sending)`, 15*time.Second, `localStorage.getItem('`+groupsKey+`')`)
}

func secretOf(t *testing.T, body string) string {
	t.Helper()
	var b struct{ Secret string }
	if err := json.Unmarshal([]byte(body), &b); err != nil {
		t.Fatal(err)
	}
	return b.Secret
}

// TestWalletRenewsThroughTheEvidence walks a 180-day vaccination through
// every renewal period in the browser: the wallet keeps the attestation,
// renews by itself once per period when its batch runs low (one request,
// a new secret each time), always holds a code for now, and deletes the
// attestation when the evidence ends. No clinic visit, no second paste.
func TestWalletRenewsThroughTheEvidence(t *testing.T) {
	env := issuertest.Start(t)
	w := openWallet(t, env)
	att := vaccination(t, env)
	w.paste(t, att)
	if msg := w.redeem(t); !strings.HasPrefix(msg, "Done.") || !strings.Contains(msg, "Green") {
		t.Fatalf("redeem: %q", msg)
	}
	g := w.groups(t)
	if len(g) != 1 || len(g[0].Atts) != 1 || g[0].Atts[0].Raw != att || g[0].Sending || g[0].RenewAfter <= env.Clock.Now().Unix() {
		t.Fatalf("kept after redeeming: %+v", g)
	}
	evidenceEnd := time.Unix(g[0].EvidenceUntil, 0)
	if d := evidenceEnd.Sub(env.Clock.Now()); d < 179*24*time.Hour || d > 181*24*time.Hour {
		t.Fatalf("evidence_until %v is %v away, want about 180 days", evidenceEnd, d)
	}
	secrets := map[string]bool{secretOf(t, w.posts()[0]): true}
	renewals := 0
	for {
		rec := w.stored(t)
		var last int64
		for _, c := range rec.Copies {
			last = max(last, c.Exp)
		}
		// The batch runs low (its codes end within a day) past renew_after.
		due := max(g[0].RenewAfter, last-24*3600)
		if due >= g[0].EvidenceUntil || g[0].RenewAfter >= g[0].EvidenceUntil {
			break
		}
		n := len(w.posts())
		// An hour before, nothing is sent.
		w.moveTo(t, time.Unix(due-3600, 0))
		if got := len(w.posts()); got != n {
			t.Fatalf("renewal %d: the page sent a request before the batch ran low past renew_after", renewals+1)
		}
		at := time.Unix(due+60, 0)
		w.moveTo(t, at)
		w.waitPosts(t, n+1)
		renewals++
		ng := w.groups(t)
		if len(ng) != 1 || ng[0].RenewAfter <= g[0].RenewAfter {
			t.Fatalf("renewal %d at %v: kept %+v (before %+v); page says %q", renewals, at, ng, g, w.text(t, "#live"))
		}
		if s := secretOf(t, w.posts()[n]); secrets[s] {
			t.Fatalf("renewal %d reused a secret", renewals)
		} else {
			secrets[s] = true
		}
		g = ng
		if got := w.text(t, "#live"); !strings.HasPrefix(got, "Your codes were renewed:") {
			t.Errorf("renewal %d: the page says %q", renewals, got)
		}
		if got := w.text(t, "#status-current"); !strings.HasPrefix(got, "Current code valid until") {
			t.Fatalf("renewal %d at %v: no current code (%q)", renewals, at, w.text(t, "#status-body"))
		}
		// Nothing more in the same period: the batch is full again.
		w.setNow(t, at.Add(2*time.Hour))
		if got := len(w.posts()); got != n+1 {
			t.Fatalf("renewal %d: %d requests in one period", renewals, got-n)
		}
	}
	// The last batch reaches the end of the evidence (to the hour).
	var last int64
	for _, c := range w.stored(t).Copies {
		last = max(last, c.Exp)
	}
	if end := evidenceEnd.Truncate(time.Hour); time.Unix(last, 0).Before(end) {
		t.Fatalf("the last batch ends %v, before the evidence (%v)", time.Unix(last, 0), evidenceEnd)
	}
	t.Logf("%d renewals from one attestation; the last batch ends %v, the evidence %v", renewals, time.Unix(last, 0).UTC(), evidenceEnd.UTC())
	if renewals < 20 {
		t.Fatalf("only %d renewals over 180 days of weekly periods", renewals)
	}
	w.Screenshot(t, "last-period")
	w.moveTo(t, evidenceEnd.Add(time.Minute))
	w.WaitFor(t, `localStorage.getItem('`+groupsKey+`') === null`, 5*time.Second, `localStorage.getItem('`+groupsKey+`')`)
	posts := w.posts()
	if len(posts) != renewals+1 {
		t.Fatalf("%d requests for %d renewals and the first redemption", len(posts), renewals)
	}
	for _, p := range posts {
		if got := redemptionBody(t, p); len(got) != 1 || got[0] != att {
			t.Fatalf("a request sent %q, want only the vaccination", got)
		}
	}
	w.checkOnlyRedemptions(t, []string{att})
}

// cutProxy stands in front of the issuer. For POST /v1/tokens it passes
// the request on (the issuer commits the redemption) and then, as told,
// loses the answer: "cut" closes the browser's connection without a
// byte, "502" answers a gateway error in its place. "503" does not pass it
// on and answers as a replica whose etcd or Redis does not answer.
type cutProxy struct {
	mode  atomic.Value // "cut", "502" or "503"
	loses atomic.Int64 // how many redemptions' answers to lose
	got   atomic.Int64 // answers the issuer gave that the browser never saw
}

func startCutProxy(t *testing.T, env *issuertest.Env) (*cutProxy, string) {
	t.Helper()
	target, err := url.Parse(env.URL)
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{}
	p.mode.Store("")
	rp := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		mode, _ := p.mode.Load().(string)
		if r.Method != "POST" || r.URL.Path != "/v1/tokens" || p.loses.Add(-1) < 0 {
			rp.ServeHTTP(rw, r)
			return
		}
		if mode == "503" {
			rw.Header().Set("Retry-After", "5")
			rw.Header().Set("Content-Type", "application/json")
			rw.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(rw, `{"error":{"code":"unavailable","message":"the issuer cannot reach its storage now; try again shortly"}}`)
			return
		}
		body, _ := io.ReadAll(r.Body)
		resp, err := http.Post(env.URL+"/v1/tokens", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Errorf("proxy: %v", err)
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 {
			p.got.Add(1)
		}
		if mode == "502" {
			http.Error(rw, "bad gateway", http.StatusBadGateway)
			return
		}
		conn, _, err := http.NewResponseController(rw).Hijack()
		if err != nil {
			t.Errorf("proxy: hijack: %v", err)
			return
		}
		conn.Close()
	}))
	t.Cleanup(srv.Close)
	return p, srv.URL
}

// TestWalletRetriesLostAnswer: the issuer committed the redemption but
// the answer never reached the phone (the connection cut; a 502 from a
// gateway), or a replica answered 503 `unavailable` (its etcd or Redis did
// not answer). The wallet retries by itself with the same secret and gets
// its codes; a stranger holding only the attestation gets 409.
func TestWalletRetriesLostAnswer(t *testing.T) {
	env := issuertest.Start(t)
	proxy, base := startCutProxy(t, env)
	w := openWalletAt(t, env, base)
	for _, mode := range []string{"cut", "502", "503"} {
		t.Run(mode, func(t *testing.T) {
			att := env.Attest(t, attestation.TestNegative, time.Time{}, "")
			before, lost := len(w.posts()), proxy.got.Load()
			proxy.mode.Store(mode)
			// A 502 once. A cut twice: Chromium itself sends a POST again,
			// once, when a kept-alive connection closes before any answer;
			// the wallet's own retry comes after that.
			proxy.loses.Store(map[string]int64{"cut": 2, "502": 1, "503": 1}[mode])
			w.paste(t, att)
			msg := w.redeem(t)
			w.Screenshot(t, "recovered")
			if mode != "503" && proxy.got.Load() < lost+1 {
				t.Fatalf("the issuer did not answer the lost request")
			}
			if !strings.HasPrefix(msg, "Done.") || w.stored(t) == nil {
				t.Fatalf("after a lost answer the page says %q", msg)
			}
			posts := w.posts()[before:]
			if len(posts) < 2 || secretOf(t, posts[0]) == "" {
				t.Fatalf("requests after the lost answer: %q, want the request again, with its secret", posts)
			}
			for _, p := range posts[1:] {
				if p != posts[0] {
					t.Fatalf("a retry differs from the first request: %q vs %q", p, posts[0])
				}
			}
			t.Logf("%s: %d requests from the page, %d answers the page never saw", mode, len(posts), proxy.got.Load()-lost)
			for _, secret := range []string{"", base64.RawURLEncoding.EncodeToString(make([]byte, 32))} {
				status, raw := env.Post(t, "/v1/tokens", httpapi.TokensRequest{Attestations: []string{att}, Secret: secret})
				if status != http.StatusConflict {
					t.Errorf("a stranger with secret %q: %d %s, want 409", secret, status, raw)
				}
			}
		})
	}
}

// TestWalletReplacesWithdrawnKeyCodes: after the issuer withdraws the key
// that signed the wallet's codes, the wallet's next refresh replaces them
// (the same attestation, the held secret: no new test), and the new codes
// verify under the new bundle.
func TestWalletReplacesWithdrawnKeyCodes(t *testing.T) {
	env := issuertest.Start(t)
	w := openWallet(t, env)
	w.paste(t, vaccination(t, env))
	if msg := w.redeem(t); !strings.HasPrefix(msg, "Done.") {
		t.Fatalf("redeem: %q", msg)
	}
	kids := func() map[string]int {
		out := map[string]int{}
		for _, c := range w.stored(t).Copies {
			if c.T != "" {
				out[kidOf(t, c.T)]++
			}
		}
		return out
	}
	first := kids()
	if len(first) != 1 {
		t.Fatalf("codes under %v, want one key", first)
	}
	var old string
	for k := range first {
		old = k
	}
	rev, err := env.Issuer.RevokeKey(context.Background(), "test", old)
	if err != nil {
		t.Fatal(err)
	}
	n := len(w.posts())
	// The next refresh: an hour on (the page looks at the bundle at most hourly).
	w.setNow(t, env.Clock.Now().Add(time.Hour))
	w.waitPosts(t, n+1)
	w.Screenshot(t, "replaced")
	after := kids()
	if len(after) != 1 || after[rev.Signing] == 0 || after[old] != 0 {
		t.Fatalf("codes after the refresh under %v, want all under the new key %s", after, rev.Signing)
	}
	if secretOf(t, w.posts()[n]) != secretOf(t, w.posts()[0]) {
		t.Error("the replacement did not use the held secret")
	}
	b := env.Bundle(t)
	now := env.Clock.Now().Add(time.Hour)
	valid := 0
	for _, c := range w.stored(t).Copies {
		if c.NBF <= now.Unix() && now.Unix() < c.Exp {
			if _, err := verifier.Verify(c.T, b, now); err != nil {
				t.Fatalf("a replacement code fails: %v", err)
			}
			valid++
		}
	}
	if valid == 0 {
		t.Fatal("no replacement code valid now")
	}
	if !strings.HasPrefix(w.text(t, "#live"), "Your codes were renewed:") {
		t.Errorf("page says %q", w.text(t, "#live"))
	}
}

func kidOf(t *testing.T, tok string) string {
	t.Helper()
	h, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
	if err != nil {
		t.Fatal(err)
	}
	var hd struct{ Kid string }
	if err := json.Unmarshal(h, &hd); err != nil {
		t.Fatal(err)
	}
	return hd.Kid
}

// TestWalletRetriesOnNextLoad: every answer lost while the page is open
// (the wallet gives up after its quick retries and says the answer was
// lost); the request stays on the phone, and the next time the page
// opens it is sent again, with its secret, and the codes arrive.
func TestWalletRetriesOnNextLoad(t *testing.T) {
	env := issuertest.Start(t)
	proxy, base := startCutProxy(t, env)
	w := openWalletAt(t, env, base)
	att := env.Attest(t, attestation.TestNegative, time.Time{}, "")
	proxy.mode.Store("502")
	proxy.loses.Store(100)
	w.paste(t, att)
	msg := w.redeem(t)
	if !strings.HasPrefix(msg, "The answer from the health-code service was lost on the way.") || w.stored(t) != nil {
		t.Fatalf("after every answer was lost the page says %q", msg)
	}
	g := w.groups(t)
	if len(g) != 1 || !g[0].Sending || g[0].Atts[0].Raw != att {
		t.Fatalf("kept for the retry: %+v", g)
	}
	sent := len(w.posts())
	proxy.loses.Store(0)
	w.reload(t)
	w.WaitFor(t, `localStorage.getItem('`+walletKey+`') !== null`, 15*time.Second, `document.getElementById('live').textContent + ' ' + localStorage.getItem('`+groupsKey+`') + ' ' + navigator.onLine + ' posts=`+fmt.Sprint(len(w.posts()))+`'`)
	w.Screenshot(t, "recovered-on-load")
	if got := w.text(t, "#live"); !strings.HasPrefix(got, "Your codes arrived after all:") {
		t.Errorf("on the next load the page says %q", got)
	}
	posts := w.posts()
	if len(posts) != sent+1 || posts[sent] != posts[0] {
		t.Fatalf("on the next load: %d requests, want the same one once more", len(posts)-sent)
	}
	if g := w.groups(t); len(g) != 1 || g[0].Sending {
		t.Fatalf("after the codes came: %+v", g)
	}
}
