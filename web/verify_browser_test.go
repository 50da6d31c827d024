package web_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/healthcode/healthcode/attestation"
	"github.com/healthcode/healthcode/bundle"
	"github.com/healthcode/healthcode/issuer/issuertest"
	"github.com/healthcode/healthcode/policy"
	"github.com/healthcode/healthcode/qr"
	"github.com/healthcode/healthcode/token"
	"github.com/healthcode/healthcode/verifier"
	"github.com/healthcode/healthcode/web"
	"github.com/healthcode/healthcode/web/webtest"
)

// The browser tests run the real app in a real Chromium: the WebAssembly
// module must have been built first (make wasm), or web.Verify serves a
// notice and every test here fails saying so.
func requireBuilt(t testing.TB) {
	t.Helper()
	if err := web.VerifyBuilt(); err != nil {
		t.Fatal(err)
	}
}

// ---- a self-contained issuer stand-in for kiosk tests ----------------------

type fixture struct {
	bundleKey ed25519.PrivateKey
	signer    *token.Signer
	tokenPub  ed25519.PublicKey
	pin       string
	now       time.Time
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	_, bk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tpub, tk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := token.NewSigner(token.KeyID(tpub), tk)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{bundleKey: bk, signer: s, tokenPub: tpub, pin: bundle.Fingerprint(bk.Public().(ed25519.PublicKey)),
		// The browser reads the real clock, so the fixture does too.
		now: time.Now()}
}

type bundleTimes struct {
	issued, stale, expires time.Time
	hint, counting         bool
}

func (f *fixture) bundle(t testing.TB, bt bundleTimes) string {
	t.Helper()
	b := &bundle.Bundle{
		Sequence: 1, IssuedAt: bt.issued.Unix(), StaleAfter: bt.stale.Unix(), Expires: bt.expires.Unix(),
		Keys: []bundle.Key{{ID: f.signer.KeyID(), Public: f.tokenPub, NotBefore: f.now.Add(-30 * 24 * time.Hour).Unix(),
			NotAfter: f.now.Add(30 * 24 * time.Hour).Unix(), Status: bundle.StatusCurrent}},
		Policy: bundle.Display{Version: 1, SkewSeconds: 60, HolderHint: bt.hint, Counting: bt.counting,
			// The fixture signs on the real clock: a one-second grid.
			Lifetime: bundle.Lifetimes{Green: 24 * 3600, Yellow: 24 * 3600, Red: 24 * 3600}, GranularitySeconds: 1},
	}
	s, err := bundle.Sign(b, f.bundleKey)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// freshBundle is issued an hour ago, stale in a day, expired in a week.
func (f *fixture) freshBundle(t testing.TB, hint, counting bool) string {
	return f.bundle(t, bundleTimes{issued: f.now.Add(-time.Hour), stale: f.now.Add(24 * time.Hour),
		expires: f.now.Add(7 * 24 * time.Hour), hint: hint, counting: counting})
}

func (f *fixture) token(t testing.TB, colour policy.Colour, nbf, exp time.Time, hint string) string {
	t.Helper()
	s, err := f.signer.Sign(token.Claims{Colour: colour.Code(), NotBefore: nbf.Unix(), Expires: exp.Unix(), Version: 1, Hint: hint})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// kiosk serves the app and jws/pin the way `verifier serve` does.
func kiosk(t testing.TB, jws, pin string) string {
	t.Helper()
	srv := httptest.NewServer(web.Kiosk(func() (string, string, error) { return jws, pin, nil }))
	t.Cleanup(srv.Close)
	return srv.URL
}

// ---- page helpers ------------------------------------------------------------

// open loads the app and waits until its module and bundle are loaded.
func open(t testing.TB, b *webtest.Browser, base string) {
	t.Helper()
	b.Do(t, chromedp.Navigate(base+"/verify/"))
	b.WaitFor(t, `document.body.dataset.engine === 'ready' && document.body.dataset.bundle !== 'loading'`,
		30*time.Second, `document.body.dataset.engine + ' ' + document.body.dataset.bundle + ' ' + document.body.innerText`)
}

// openThenOffline loads the app, waits for its service worker to control the
// page, cuts the network and reloads: from then on everything must come
// from the service worker's cache.
func openThenOffline(t testing.TB, b *webtest.Browser, base string) {
	t.Helper()
	open(t, b, base)
	goOffline(t, b)
}

// goOffline is the second half of openThenOffline, for a test that acts on
// the page online first.
func goOffline(t testing.TB, b *webtest.Browser) {
	t.Helper()
	b.WaitFor(t, `navigator.serviceWorker.controller !== null`, 30*time.Second, `String(navigator.serviceWorker.controller)`)
	b.Offline(t)
	b.Do(t, chromedp.Reload())
	b.WaitFor(t, `document.body.dataset.engine === 'ready' && document.body.dataset.bundle !== 'loading'`,
		30*time.Second, `document.body.dataset.engine + ' ' + document.body.dataset.bundle`)
	if on := webtest.Eval[bool](t, b, `navigator.onLine`); on {
		t.Fatal("navigator.onLine is still true after cutting the network")
	}
	// The network really is cut: a request the service worker does not
	// answer fails.
	if got := webtest.Eval[string](t, b, `fetch('/healthz', {cache: 'no-store'}).then(() => 'reached', () => 'failed')`); got != "failed" {
		t.Fatalf("fetch /healthz offline: %s", got)
	}
	b.WaitFor(t, `document.readyState === 'complete'`, 10*time.Second, `document.readyState`)
}

type verdict struct {
	Kind, Reason, Word, Symbol, Detail, Hint, Warning string
}

// waitVerdict waits for a verdict and reads it in the same evaluation, so
// a slow machine cannot miss it to the page's own clearing timer.
func waitVerdict(t testing.TB, b *webtest.Browser, d time.Duration) verdict {
	t.Helper()
	d = max(d, 30*time.Second) // a bound on a loaded machine, as in webtest.WaitFor
	raw, err := chromedp.Run(b.Ctx, chromedp.Poll[string](`(() => {
		const r = document.getElementById('result');
		if (!r.dataset.verdict) return false;
		const text = (id) => document.getElementById(id).textContent;
		return JSON.stringify({Kind: r.dataset.verdict, Reason: r.dataset.reason, Word: text('result-word'),
			Symbol: text('result-symbol'), Detail: text('result-detail'), Hint: text('result-hint'), Warning: text('result-warning')});
	})()`, chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(d)))
	if err != nil {
		state, _ := chromedp.Run(b.Ctx, chromedp.Evaluate[string](`document.body.dataset.camera + ' frames=' + healthcodeMetrics.frames + ' ' + document.body.innerText`))
		b.Screenshot(t, "timeout")
		t.Fatalf("no verdict within %s: %v; page: %s", d, err, state)
	}
	var v verdict
	if err := json.Unmarshal([]byte(raw), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// setPageClock sets the page's clock (common/clock.js) to at, standing still.
func setPageClock(t testing.TB, b *webtest.Browser, at time.Time) {
	t.Helper()
	webtest.Eval[chromedp.Void](t, b, fmt.Sprintf(`window.__healthcodeNow = %d`, at.UnixMilli()))
}

// clearVerdict taps the result away (a no-op if it already cleared itself).
func clearVerdict(t testing.TB, b *webtest.Browser) {
	t.Helper()
	webtest.Eval[chromedp.Void](t, b, `document.getElementById('result').click()`)
	b.WaitFor(t, `document.getElementById('result').hidden`, 5*time.Second, "")
}

func paste(t testing.TB, b *webtest.Browser, text string) verdict {
	t.Helper()
	b.Do(t, chromedp.SetValue(chromedp.ID("paste"), text), chromedp.Click(chromedp.ID("check")))
	return waitVerdict(t, b, 5*time.Second)
}

type scanMetrics struct {
	Frames              int     `json:"frames"`
	DecodeMsTotal       float64 `json:"decodeMsTotal"`
	DecodeMsMax         float64 `json:"decodeMsMax"`
	LastScanToVerdictMs float64 `json:"lastScanToVerdictMs"`
	LastGrabMs          float64 `json:"lastGrabMs"`
	LastDecodeMs        float64 `json:"lastDecodeMs"`
	LastVerifyMs        float64 `json:"lastVerifyMs"`
	Verdicts            int     `json:"verdicts"`
}

func metrics(t testing.TB, b *webtest.Browser) scanMetrics {
	t.Helper()
	var m scanMetrics
	if err := json.Unmarshal([]byte(webtest.Eval[string](t, b, `JSON.stringify(healthcodeMetrics)`)), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// storage lists everything the page's origin holds: localStorage, cookies,
// IndexedDB databases and every Cache Storage entry.
type storage struct {
	Local   map[string]string `json:"local"`
	Cookies string            `json:"cookies"`
	IDB     []string          `json:"idb"`
	Caches  map[string][]string
}

func readStorage(t testing.TB, b *webtest.Browser) storage {
	t.Helper()
	raw := webtest.Eval[string](t, b, `(async () => {
		const local = {};
		for (let i = 0; i < localStorage.length; i++) { const k = localStorage.key(i); local[k] = localStorage.getItem(k); }
		const idb = (await indexedDB.databases()).map((d) => d.name);
		const caches_ = {};
		for (const name of await caches.keys()) {
			const c = await caches.open(name);
			caches_[name] = [];
			for (const req of await c.keys()) {
				const resp = await c.match(req);
				caches_[name].push(new URL(req.url).pathname + ' ' + (resp.headers.get('content-type') || '') + ' ' +
					(new URL(req.url).pathname.startsWith('/.well-known/') ? await resp.text() : ''));
			}
		}
		return JSON.stringify({local, cookies: document.cookie, idb, Caches: caches_});
	})()`)
	var s storage
	if err := json.Unmarshal([]byte(raw), &s); err != nil {
		t.Fatal(err)
	}
	return s
}

// assertNothingKept checks invariant 3 in the browser: the only things
// stored are the bundle, its pin and, when the policy allows counting, the
// venue's counting setting and per-day counts, and none of the secrets
// appears anywhere.
func assertNothingKept(t testing.TB, b *webtest.Browser, countingAllowed bool, secrets ...string) {
	t.Helper()
	s := readStorage(t, b)
	for k, v := range s.Local {
		switch k {
		case "healthcode.bundle", "healthcode.pin":
		case "healthcode.fetched":
			if _, err := strconv.ParseInt(v, 10, 64); err != nil {
				t.Errorf("localStorage holds fetched = %q, want this device's clock in Unix ms", v)
			}
		case "healthcode.counts":
			if !countingAllowed {
				t.Errorf("localStorage holds counts although the policy has counting off: %q", v)
			}
			if s.Local["healthcode.counting"] != "on" {
				t.Errorf("localStorage holds counts although the venue has counting off: %q", v)
			}
		case "healthcode.counting":
			if !countingAllowed || v != "on" {
				t.Errorf("localStorage holds the counting setting %q with the policy's counting allowed=%v; only \"on\", and only when allowed", v, countingAllowed)
			}
		default:
			t.Errorf("localStorage holds %q = %q; only the bundle, pin, counting setting and counts may be stored", k, v)
		}
	}
	if s.Cookies != "" {
		t.Errorf("cookies set: %q", s.Cookies)
	}
	if len(s.IDB) != 0 {
		t.Errorf("IndexedDB databases: %v", s.IDB)
	}
	all, _ := json.Marshal(s)
	for _, sec := range secrets {
		if sec != "" && strings.Contains(string(all), sec) {
			t.Errorf("storage holds a scanned value %q", sec)
		}
	}
	for name, entries := range s.Caches {
		for _, e := range entries {
			path := strings.Fields(e)[0]
			if name == "healthcode-verify-bundle" && path != web.BundlePath && path != web.PinPath {
				t.Errorf("bundle cache holds %s", path)
			}
			if name == "healthcode-verify-app" && !strings.HasPrefix(path, "/verify/") {
				t.Errorf("app cache holds %s", path)
			}
		}
	}
}

// ---- tests against a running issuer ------------------------------------------

// issuerToken redeems an attestation of kind and returns a token valid now.
func issuerToken(t testing.TB, env *issuertest.Env, kind attestation.Kind, hint string) (string, string) {
	t.Helper()
	colour, toks := env.Redeem(t, env.Attest(t, kind, time.Time{}, hint))
	b := env.Bundle(t)
	for _, tok := range toks {
		if _, err := verifier.Verify(tok, b, time.Now()); err == nil {
			return colour, tok
		}
	}
	t.Fatalf("no token of %d is valid now", len(toks))
	return "", ""
}

func TestIssuerScanOfflineShowsColour(t *testing.T) {
	requireBuilt(t)
	p := policy.Default()
	p.HolderHint = policy.HintOn
	p.Counting = true
	env := issuertest.Start(t, issuertest.WithPolicy(p))
	colour, tok := issuerToken(t, env, attestation.TestNegative, "AB90")
	if colour != "green" {
		t.Fatalf("issuer gave %s for a negative test, want green", colour)
	}

	b := webtest.Start(t, webtest.Camera(webtest.CameraFile(t, tok)))
	open(t, b, env.URL)
	// Online, before the venue turns counting on: the policy allows it, so
	// the switch is offered, off, and a scan stores no counts.
	if v := waitVerdict(t, b, 20*time.Second); v.Kind != "green" {
		t.Fatalf("online verdict %+v, want green", v)
	}
	countingView := func() string {
		t.Helper()
		return webtest.Eval[string](t, b, `(() => { const s = document.getElementById('counting-switch');
			return (s.hidden ? 'hidden' : 'shown') + ' ' + document.getElementById('counting').checked + ' ' +
				localStorage.getItem('healthcode.counting') + ' ' + localStorage.getItem('healthcode.counts'); })()`)
	}
	if got := countingView(); got != "shown false null null" {
		t.Fatalf("online, switch not touched: %q, want the switch shown and off, no setting, no counts", got)
	}
	if l := webtest.Eval[string](t, b, `document.getElementById('counting-switch').textContent.trim()`); l != "Count visitors per colour today (on this device only)" {
		t.Fatalf("switch label %q", l)
	}
	goOffline(t, b)
	if got := webtest.Eval[string](t, b, `localStorage.getItem('healthcode.pin')`); got != env.Pin {
		t.Fatalf("pinned %q, issuer's pin is %q", got, env.Pin)
	}
	afterLoad := b.Requests()
	loaded := time.Now()

	v := waitVerdict(t, b, 20*time.Second)
	wall := time.Since(loaded)
	b.Screenshot(t, "green")
	if v.Kind != "green" || v.Word != "GREEN" || v.Symbol != "✓" {
		t.Fatalf("verdict %+v, want green ✓ GREEN", v)
	}
	if !strings.HasPrefix(v.Detail, "Valid until ") || v.Hint != "Holder: AB90" || v.Warning != "" {
		t.Fatalf("verdict %+v: want the validity end and the hint, nothing else", v)
	}
	m := metrics(t, b)
	t.Logf("scan to verdict: %.1f ms in page (frame grab to verdict shown); %.0f ms from offline load to verdict seen by the test", m.LastScanToVerdictMs, float64(wall.Milliseconds()))
	if got := countingView(); got != "shown false null null" {
		t.Fatalf("offline scan with the switch off: %q, want no setting and no counts", got)
	}

	// The venue turns counting on, offline: the tap clears the verdict, the
	// same code held up is read again once it is no longer ignored (4 s on
	// the page's clock, which the test holds still and then moves by 5 s),
	// and that scan is counted.
	frozen := time.Now()
	setPageClock(t, b, frozen)
	clearVerdict(t, b)
	b.Do(t, chromedp.Click(chromedp.ID("counting")))
	if got := countingView(); got != "shown true on null" {
		t.Fatalf("after clicking the switch: %q, want it on, the setting stored, no counts yet", got)
	}
	setPageClock(t, b, frozen.Add(5*time.Second))
	if v := waitVerdict(t, b, 20*time.Second); v.Kind != "green" {
		t.Fatalf("verdict after switching counting on %+v, want green", v)
	}

	// The verdict clears itself, scanning goes on, and still nothing leaves the page.
	m = metrics(t, b)
	b.WaitFor(t, `document.getElementById('result').hidden`, 8*time.Second, `document.getElementById('result').dataset.verdict`)
	b.WaitFor(t, fmt.Sprintf(`healthcodeMetrics.frames >= %d`, m.Frames+5), 10*time.Second, `String(healthcodeMetrics.frames)`)
	if n := b.Requests() - afterLoad; n != 0 {
		t.Fatalf("%d network requests while scanning, want 0", n)
	}
	m = metrics(t, b)
	t.Logf("QR decode in wasm: %.1f ms/frame mean, %.1f ms max, over %d frames (640×480)", m.DecodeMsTotal/float64(m.Frames), m.DecodeMsMax, m.Frames)
	// Counting is allowed and switched on: exactly one green today (the
	// page's clock stands still, so the same code is never read again),
	// nothing else about the scan.
	counts := webtest.Eval[string](t, b, `localStorage.getItem('healthcode.counts')`)
	var c map[string]map[string]int
	if err := json.Unmarshal([]byte(counts), &c); err != nil || len(c) != 1 {
		t.Fatalf("counts %q: want one day", counts)
	}
	for _, day := range c {
		if day["green"] != 1 || day["yellow"]+day["red"]+day["invalid"] != 0 {
			t.Fatalf("counts %q, want exactly one green", counts)
		}
	}
	assertNothingKept(t, b, true, tok, "AB90")
}

// tamper extends a token's validity and makes it green, keeping the
// issuer's signature: what a forger would try.
func tamper(t testing.TB, tok string) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	p, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c token.Claims
	if err := json.Unmarshal(p, &c); err != nil {
		t.Fatal(err)
	}
	c.Colour = "g"
	c.Expires += 7 * 24 * 3600
	p, err = json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return parts[0] + "." + base64.RawURLEncoding.EncodeToString(p) + "." + parts[2]
}

func TestIssuerTamperedTokenShowsInvalid(t *testing.T) {
	requireBuilt(t)
	env := issuertest.Start(t)
	colour, tok := issuerToken(t, env, attestation.TestPositive, "")
	if colour != "red" {
		t.Fatalf("issuer gave %s for a positive test, want red", colour)
	}
	forged := tamper(t, tok)
	b := webtest.Start(t, webtest.Camera(webtest.CameraFile(t, forged)))
	openThenOffline(t, b, env.URL)
	v := waitVerdict(t, b, 20*time.Second)
	b.Screenshot(t, "invalid-signature")
	if v.Kind != "invalid" || v.Reason != verifier.ReasonBadSignature || v.Symbol != "✕" || v.Word != "NOT VALID" {
		t.Fatalf("verdict %+v, want invalid with reason %s", v, verifier.ReasonBadSignature)
	}
	assertNothingKept(t, b, false, forged)
}

// TestIssuerExpiredBundleRefuses: an issuer whose clock stood eight days
// back serves a bundle that expired yesterday (bundles live a week); the
// page holds it, says so, and refuses to show a colour for the issuer's
// token.
func TestIssuerExpiredBundleRefuses(t *testing.T) {
	requireBuilt(t)
	env := issuertest.Start(t, issuertest.WithTime(time.Now().Add(-8*24*time.Hour)))
	_, toks := env.Redeem(t, env.Attest(t, attestation.TestNegative, time.Time{}, ""))
	b := webtest.Start(t, webtest.Camera(webtest.CameraFile(t, toks[0])))
	open(t, b, env.URL)
	if got := webtest.Eval[string](t, b, `document.body.dataset.bundle`); got != "expired" {
		t.Fatalf("bundle state %q, want expired", got)
	}
	v := waitVerdict(t, b, 20*time.Second)
	b.Screenshot(t, "expired-bundle")
	if v.Kind != "refused" || v.Reason != verifier.ReasonBundleExpired || v.Symbol != "⚠" {
		t.Fatalf("verdict %+v, want refused for an expired bundle", v)
	}
}

// ---- kiosk tests (self-signed bundle, no issuer) ------------------------------

func TestKioskExpiredBundleRefusesGreen(t *testing.T) {
	requireBuilt(t)
	f := newFixture(t)
	expired := f.bundle(t, bundleTimes{issued: f.now.Add(-9 * 24 * time.Hour), stale: f.now.Add(-8 * 24 * time.Hour), expires: f.now.Add(-time.Hour)})
	// A token that would be green under a current bundle.
	tok := f.token(t, policy.Green, f.now.Add(-time.Hour), f.now.Add(time.Hour), "")
	base := kiosk(t, expired, f.pin)

	b := webtest.Start(t, webtest.Camera(webtest.CameraFile(t, tok)))
	open(t, b, base)
	if got := webtest.Eval[string](t, b, `document.body.dataset.bundle`); got != "expired" {
		t.Fatalf("bundle state %q, want expired", got)
	}
	v := waitVerdict(t, b, 20*time.Second)
	b.Screenshot(t, "expired-bundle")
	if v.Kind != "refused" || v.Reason != verifier.ReasonBundleExpired || v.Word != "CANNOT CHECK" {
		t.Fatalf("verdict %+v, want refused for an expired bundle", v)
	}
	status := webtest.Eval[string](t, b, `document.getElementById('bundle-status').textContent`)
	if !strings.Contains(status, "The trust list has expired") || !strings.Contains(status, "Trust list fetched just now") {
		t.Fatalf("bundle status %q: want its age and that it expired", status)
	}
}

// TestKioskStates walks the states staff must tell apart, through the
// no-camera fallback (paste), in one browser with no camera at all.
func TestKioskStates(t *testing.T) {
	requireBuilt(t)
	f := newFixture(t)
	base := kiosk(t, f.freshBundle(t, false, false), f.pin)
	b := webtest.Start(t)
	open(t, b, base)

	b.WaitFor(t, `document.body.dataset.camera === 'none'`, 10*time.Second, `document.body.dataset.camera`)
	if msg := webtest.Eval[string](t, b, `document.getElementById('camera-message').textContent`); !strings.HasPrefix(msg, "No camera found.") {
		t.Fatalf("camera message %q", msg)
	}
	b.Screenshot(t, "no-camera")
	if s := webtest.Eval[string](t, b, `document.getElementById('bundle-status').textContent`); s != "Trust list fetched just now." {
		t.Fatalf("bundle status %q", s)
	}
	if !webtest.Eval[bool](t, b, `document.getElementById('counting-switch').hidden && document.getElementById('counts').hidden`) {
		t.Fatal("counting switch or counts shown although the policy has counting off")
	}

	other := newFixture(t) // a key the bundle does not hold
	now := f.now
	cases := []struct {
		name, tok, kind, reason, word, symbol string
	}{
		{"yellow", f.token(t, policy.Yellow, now.Add(-time.Hour), now.Add(time.Hour), ""), "yellow", "", "YELLOW", "!"},
		{"red", f.token(t, policy.Red, now.Add(-time.Hour), now.Add(time.Hour), ""), "red", "", "RED", "✕"},
		{"expired", f.token(t, policy.Green, now.Add(-3*time.Hour), now.Add(-2*time.Hour), ""), "invalid", verifier.ReasonExpired, "NOT VALID", "✕"},
		{"not-yet-valid", f.token(t, policy.Green, now.Add(2*time.Hour), now.Add(3*time.Hour), ""), "invalid", verifier.ReasonNotYetValid, "NOT VALID", "✕"},
		{"unknown-key", other.token(t, policy.Green, now.Add(-time.Hour), now.Add(time.Hour), ""), "invalid", verifier.ReasonUnknownKey, "NOT VALID", "✕"},
		{"invalid-signature", tamper(t, f.token(t, policy.Red, now.Add(-time.Hour), now.Add(time.Hour), "")), "invalid", verifier.ReasonBadSignature, "NOT VALID", "✕"},
		{"not-a-code", "hello", "invalid", verifier.ReasonMalformed, "NOT VALID", "✕"},
		// A hint the policy does not allow is never shown.
		{"hint-not-allowed", f.token(t, policy.Green, now.Add(-time.Hour), now.Add(time.Hour), "ZZ99"), "invalid", verifier.ReasonMalformed, "NOT VALID", "✕"},
	}
	var secrets []string
	for _, c := range cases {
		v := paste(t, b, c.tok)
		b.Screenshot(t, c.name)
		if v.Kind != c.kind || v.Reason != c.reason || v.Word != c.word || v.Symbol != c.symbol {
			t.Errorf("%s: verdict %+v, want %s/%s %s %s", c.name, v, c.kind, c.reason, c.symbol, c.word)
		}
		if v.Hint != "" {
			t.Errorf("%s: hint %q shown with hints off", c.name, v.Hint)
		}
		clearVerdict(t, b)
		secrets = append(secrets, c.tok)
	}
	secrets = append(secrets, "ZZ99")

	// The other fallback: a photo of the code.
	photo := filepath.Join(t.TempDir(), "photo.png")
	tok := f.token(t, policy.Green, now.Add(-time.Hour), now.Add(time.Hour), "")
	if p, err := qr.PNG(tok, 500); err != nil {
		t.Fatal(err)
	} else if err := os.WriteFile(photo, p, 0o600); err != nil {
		t.Fatal(err)
	}
	b.Do(t, chromedp.SetUploadFiles(chromedp.ID("file"), []string{photo}))
	if v := waitVerdict(t, b, 10*time.Second); v.Kind != "green" {
		t.Fatalf("photo: verdict %+v, want green", v)
	}
	b.Screenshot(t, "photo-green")
	secrets = append(secrets, tok)
	assertNothingKept(t, b, false, secrets...)
}

// TestKioskBundleTrustOnFirstUse: the page pins the first origin's key and
// then refuses an older bundle, and one signed by another key, keeping the
// one it holds.
func TestKioskBundleTrustOnFirstUse(t *testing.T) {
	requireBuilt(t)
	f := newFixture(t)
	mk := func(key ed25519.PrivateKey, seq uint64) string {
		bd := &bundle.Bundle{Sequence: seq, IssuedAt: f.now.Add(-time.Hour).Unix(), StaleAfter: f.now.Add(time.Hour).Unix(),
			Expires: f.now.Add(2 * time.Hour).Unix(), Keys: []bundle.Key{{ID: f.signer.KeyID(), Public: f.tokenPub,
				NotBefore: f.now.Add(-time.Hour).Unix(), NotAfter: f.now.Add(time.Hour).Unix(), Status: bundle.StatusCurrent}},
			Policy: bundle.Display{Lifetime: bundle.Lifetimes{Green: 24 * 3600, Yellow: 24 * 3600, Red: 24 * 3600}, GranularitySeconds: 1}}
		s, err := bundle.Sign(bd, key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	_, otherKey, _ := ed25519.GenerateKey(rand.Reader)
	otherPin := bundle.Fingerprint(otherKey.Public().(ed25519.PublicKey))
	var mu sync.Mutex
	jws, pin := mk(f.bundleKey, 5), f.pin
	srv := httptest.NewServer(web.Kiosk(func() (string, string, error) { mu.Lock(); defer mu.Unlock(); return jws, pin, nil }))
	defer srv.Close()
	serve := func(j, p string) { mu.Lock(); jws, pin = j, p; mu.Unlock() }
	held := mk(f.bundleKey, 5)
	serve(held, f.pin)

	b := webtest.Start(t)
	open(t, b, srv.URL)
	heldNow := func() string { return webtest.Eval[string](t, b, `localStorage.getItem('healthcode.bundle')`) }
	if heldNow() != held {
		t.Fatal("first bundle not kept")
	}
	for _, c := range []struct{ name, jws, pin string }{
		{"rollback", mk(f.bundleKey, 4), f.pin},
		{"other key, other pin", mk(otherKey, 6), otherPin},
		{"other key, old pin", mk(otherKey, 7), f.pin},
	} {
		serve(c.jws, c.pin)
		open(t, b, srv.URL)
		if heldNow() != held || webtest.Eval[string](t, b, `localStorage.getItem('healthcode.pin')`) != f.pin {
			t.Fatalf("%s: page replaced its bundle or pin", c.name)
		}
		if st := webtest.Eval[string](t, b, `document.body.dataset.bundle`); st != "ok" {
			t.Fatalf("%s: bundle state %q, want ok with the held bundle", c.name, st)
		}
	}
	newer := mk(f.bundleKey, 8)
	serve(newer, f.pin)
	open(t, b, srv.URL)
	if heldNow() != newer {
		t.Fatal("newer bundle under the pin not taken")
	}
}

// TestKioskCountingSwitch: with the policy allowing counting, the venue's
// switch decides; turning it off deletes the counts at once, and a policy
// that stops allowing counting drops the counts and the setting.
func TestKioskCountingSwitch(t *testing.T) {
	requireBuilt(t)
	f := newFixture(t)
	var mu sync.Mutex
	jws := f.freshBundle(t, false, true)
	srv := httptest.NewServer(web.Kiosk(func() (string, string, error) { mu.Lock(); defer mu.Unlock(); return jws, f.pin, nil }))
	defer srv.Close()
	b := webtest.Start(t)
	open(t, b, srv.URL)

	type view struct {
		Shown, Checked, CountsShown bool
		Label, Counts, Setting      string
		Stored                      *string
	}
	look := func() view {
		t.Helper()
		var v view
		raw := webtest.Eval[string](t, b, `JSON.stringify({Shown: !document.getElementById('counting-switch').hidden,
			Checked: document.getElementById('counting').checked, CountsShown: !document.getElementById('counts').hidden,
			Label: document.getElementById('counting-switch').textContent.trim(), Counts: document.getElementById('counts').textContent,
			Setting: localStorage.getItem('healthcode.counting') || '', Stored: localStorage.getItem('healthcode.counts')})`)
		if err := json.Unmarshal([]byte(raw), &v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	green := f.token(t, policy.Green, f.now.Add(-time.Hour), f.now.Add(time.Hour), "")
	yellow := f.token(t, policy.Yellow, f.now.Add(-time.Hour), f.now.Add(time.Hour), "")

	// Allowed, off by default: offered, and a scan counts nothing.
	if v := look(); !v.Shown || v.Checked || v.CountsShown || v.Label != "Count visitors per colour today (on this device only)" {
		t.Fatalf("fresh page: %+v, want the switch shown, off and labelled, no counts", v)
	}
	paste(t, b, green)
	clearVerdict(t, b)
	if v := look(); v.Stored != nil || v.Setting != "" || v.CountsShown {
		t.Fatalf("scan with the switch off: %+v, want nothing stored", v)
	}

	// On: the next scan is counted, and shown.
	b.Do(t, chromedp.Click(chromedp.ID("counting")))
	paste(t, b, yellow)
	clearVerdict(t, b)
	v := look()
	if !v.Checked || v.Setting != "on" || v.Stored == nil || !v.CountsShown || v.Counts != "Today: ✓ 0  ! 1  ✕ 0  · not valid 0" {
		t.Fatalf("scan with the switch on: %+v, want one yellow counted and shown", v)
	}
	var c map[string]map[string]int
	if err := json.Unmarshal([]byte(*v.Stored), &c); err != nil || len(c) != 1 {
		t.Fatalf("counts %q: want one day", *v.Stored)
	}
	for _, day := range c {
		if day["yellow"] != 1 || day["green"]+day["red"]+day["invalid"] != 0 {
			t.Fatalf("counts %q, want one yellow", *v.Stored)
		}
	}

	// The setting and the counts survive a reload; the label follows the language.
	open(t, b, srv.URL)
	if v := look(); !v.Checked || v.Setting != "on" || v.Stored == nil || !v.CountsShown {
		t.Fatalf("after a reload: %+v, want counting still on with its counts", v)
	}
	b.Do(t, chromedp.Click(chromedp.ID("lang")))
	if v := look(); v.Label != "在本设备统计今日各颜色人数" || v.Counts != "今日：✓ 0  ! 1  ✕ 0  · 无效 0" {
		t.Fatalf("in Chinese: %+v", v)
	}
	b.Screenshot(t, "counting-on-zh")

	// Off: the counts go at once, and so does the setting.
	b.Do(t, chromedp.Click(chromedp.ID("counting")))
	if v := look(); !v.Shown || v.Checked || v.CountsShown || v.Stored != nil || v.Setting != "" {
		t.Fatalf("after switching off: %+v, want the switch off and nothing stored", v)
	}
	assertNothingKept(t, b, true, green, yellow)

	// On again, then the city stops allowing counting: counts and setting go.
	b.Do(t, chromedp.Click(chromedp.ID("counting")))
	paste(t, b, green)
	clearVerdict(t, b)
	if v := look(); v.Stored == nil || v.Setting != "on" {
		t.Fatalf("switched on again: %+v, want a count stored", v)
	}
	mu.Lock()
	jws = f.freshBundle(t, false, false)
	mu.Unlock()
	open(t, b, srv.URL)
	if v := look(); v.Shown || v.CountsShown || v.Stored != nil || v.Setting != "" {
		t.Fatalf("policy without counting: %+v, want no switch and nothing stored", v)
	}
	paste(t, b, yellow)
	clearVerdict(t, b)
	assertNothingKept(t, b, false, green, yellow)
}

func TestKioskResultClearsItself(t *testing.T) {
	requireBuilt(t)
	f := newFixture(t)
	base := kiosk(t, f.freshBundle(t, false, false), f.pin)
	b := webtest.Start(t)
	open(t, b, base)
	v := paste(t, b, f.token(t, policy.Green, f.now.Add(-time.Hour), f.now.Add(time.Hour), ""))
	if v.Kind != "green" {
		t.Fatalf("verdict %+v", v)
	}
	// No sleeping: the page's own timer clears it within RESULT_MS (5s).
	b.WaitFor(t, `document.getElementById('result').hidden && !document.body.dataset.verdict`, 8*time.Second, "")
	if txt := webtest.Eval[string](t, b, `document.getElementById('result').textContent.trim()`); txt != "" {
		t.Fatalf("cleared result still holds %q", txt)
	}
}

func TestKioskCameraDenied(t *testing.T) {
	requireBuilt(t)
	f := newFixture(t)
	base := kiosk(t, f.freshBundle(t, false, false), f.pin)
	b := webtest.Start(t, webtest.DenyCamera())
	open(t, b, base)
	b.WaitFor(t, `document.body.dataset.camera === 'denied'`, 10*time.Second, `document.body.dataset.camera`)
	b.Screenshot(t, "camera-denied")
	msg := webtest.Eval[string](t, b, `document.getElementById('camera-message').textContent`)
	if !strings.HasPrefix(msg, "Camera permission was denied.") {
		t.Fatalf("camera message %q", msg)
	}
	if hidden := webtest.Eval[bool](t, b, `document.getElementById('fallback').hidden`); hidden {
		t.Fatal("no image or paste fallback offered after a denial")
	}
}

// TestKioskStaleBundleChinese: a browser set to Chinese gets the Chinese
// page; a stale bundle still gives colours, with a warning; the switch
// turns the page to English without storing the choice.
func TestKioskStaleBundleChinese(t *testing.T) {
	requireBuilt(t)
	f := newFixture(t)
	stale := f.bundle(t, bundleTimes{issued: f.now.Add(-3 * 24 * time.Hour), stale: f.now.Add(-time.Hour),
		expires: f.now.Add(4 * 24 * time.Hour), hint: true})
	base := kiosk(t, stale, f.pin)
	b := webtest.Start(t, webtest.Language("zh-CN"))
	open(t, b, base)
	if got := webtest.Eval[string](t, b, `document.body.dataset.bundle`); got != "stale" {
		t.Fatalf("bundle state %q, want stale", got)
	}
	if title := webtest.Eval[string](t, b, `document.querySelector('h1').textContent`); title != "健康码核验" {
		t.Fatalf("title %q, want Chinese", title)
	}
	status := webtest.Eval[string](t, b, `document.getElementById('bundle-status').textContent`)
	if !strings.Contains(status, "信任列表已过旧") || !strings.Contains(status, "信任列表获取于刚刚") {
		t.Fatalf("bundle status %q: want its age and the stale warning", status)
	}
	b.Screenshot(t, "stale-zh")
	v := paste(t, b, f.token(t, policy.Green, f.now.Add(-time.Hour), f.now.Add(time.Hour), "CD81"))
	b.Screenshot(t, "green-stale-zh")
	if v.Kind != "green" || v.Word != "绿码" || v.Hint != "持有人：CD81" || !strings.Contains(v.Warning, "信任列表已过旧") {
		t.Fatalf("verdict %+v", v)
	}
	clearVerdict(t, b)
	b.Do(t, chromedp.Click(chromedp.ID("lang")))
	if title := webtest.Eval[string](t, b, `document.querySelector('h1').textContent`); title != "Health code check" {
		t.Fatalf("after the switch, title %q", title)
	}
	if lang := webtest.Eval[string](t, b, `new URL(location.href).searchParams.get('lang')`); lang != "en" {
		t.Fatalf("switch did not put the language in the URL: %q", lang)
	}
	assertNothingKept(t, b, false, "CD81")
}

// BenchmarkScanToVerdict measures, in Chromium, the time from grabbing a
// camera frame to the verdict on screen (decode in wasm, verify in wasm,
// render), as reported by the page. The camera alternates two tokens, so
// each iteration is a new code.
func BenchmarkScanToVerdict(b *testing.B) {
	requireBuilt(b)
	f := newFixture(b)
	base := kiosk(b, f.freshBundle(b, false, false), f.pin)
	t1 := f.token(b, policy.Green, f.now.Add(-time.Hour), f.now.Add(time.Hour), "")
	t2 := f.token(b, policy.Yellow, f.now.Add(-time.Hour), f.now.Add(time.Hour), "")
	cam := twoCodeCamera(b, t1, t2)
	br := webtest.Start(b, webtest.Camera(cam), webtest.Timeout(10*time.Minute))
	open(b, br, base)
	waitVerdict(b, br, 20*time.Second)
	clearVerdict(b, br)
	var total, decode float64
	var frames int
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		before := metrics(b, br)
		waitVerdict(b, br, 20*time.Second)
		m := metrics(b, br)
		total += m.LastScanToVerdictMs
		b.Logf("scan to verdict %.1f ms: grab %.1f, decode %.1f, verify %.1f", m.LastScanToVerdictMs, m.LastGrabMs, m.LastDecodeMs, m.LastVerifyMs)
		decode += m.DecodeMsTotal - before.DecodeMsTotal
		frames += m.Frames - before.Frames
		clearVerdict(b, br)
	}
	b.StopTimer()
	b.ReportMetric(total/float64(b.N), "ms/op")
	if frames > 0 {
		b.ReportMetric(decode/float64(frames), "decode-ms/frame")
	}
}

func twoCodeCamera(t testing.TB, a, b string) string {
	t.Helper()
	// One second of each code at 2 fps: a new code is never more than a
	// second away.
	return webtest.CameraFileFrames(t, 2, webtest.QRImage(t, a, 400), webtest.QRImage(t, a, 400), webtest.QRImage(t, b, 400), webtest.QRImage(t, b, 400))
}
