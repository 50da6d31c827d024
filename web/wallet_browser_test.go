package web_test

// Browser tests of the resident wallet (web/wallet) in real headless
// Chromium against a real issuer (issuertest: bbolt in a temp dir, fiber on
// 127.0.0.1). Screenshots go to $HEALTHCODE_ARTIFACTS/<test> or
// ./artifacts/<test>.
//
// The page reads the clock through now() in app.js, which honours
// window.__healthcodeNow (Unix ms). Tests set it with chromedp.Evaluate and
// fire "focus" (the periodic sweep's code path), or install it before the
// page's scripts with Page.addScriptToEvaluateOnNewDocument (the sweep on
// load).

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/healthcode/healthcode/attestation"
	"github.com/healthcode/healthcode/issuer/issuertest"
	"github.com/healthcode/healthcode/policy"
	"github.com/healthcode/healthcode/verifier"
	"github.com/healthcode/healthcode/web/webtest"
)

// The main path: redeem through the page, cut the network, reload, show
// the door screen, and check what a venue's verifier makes of the pixels.
func TestWalletRedeemOfflineDoor(t *testing.T) {
	env := issuertest.Start(t)
	w := openWallet(t, env)

	inst, err := chromedp.Call(w.Ctx, page.GetInstallabilityErrors, cdp.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range inst.InstallabilityErrors {
		t.Errorf("not installable: %s %v", e.ErrorID, e.ErrorArguments)
	}

	att := env.Attest(t, attestation.TestNegative, time.Time{}, "")
	w.paste(t, att)
	if got := w.text(t, "#pending"); !strings.Contains(got, "Negative test") {
		t.Fatalf("pending list %q does not name the negative test", got)
	}
	w.Screenshot(t, "01-added")
	msg := w.redeem(t)
	if !strings.HasPrefix(msg, "Done.") || !strings.Contains(msg, "Green") {
		t.Fatalf("after redeeming, the page says %q", msg)
	}
	w.Screenshot(t, "02-redeemed")
	rec := w.stored(t)
	if rec == nil || rec.Colour != "green" || len(rec.Copies) == 0 {
		t.Fatalf("stored wallet: %+v", rec)
	}
	if w.text(t, "#pending") != "" {
		t.Errorf("attestation still pending after redemption")
	}
	t.Logf("batch: %d copies", len(rec.Copies))

	// Airplane mode: the page's and the service worker's network are cut.
	w.Offline(t)
	if got := webtest.Eval[string](t, w.Browser, `fetch('/healthz', {cache: 'no-store'}).then(() => 'reached', () => 'unreachable')`); got != "unreachable" {
		t.Fatalf("network still up after Offline: %s", got)
	}
	w.reload(t)
	w.Screenshot(t, "03-offline-home")
	if got := w.text(t, "#status-body"); !strings.Contains(got, "Green") {
		t.Fatalf("offline home shows %q", got)
	}

	b := env.Bundle(t)
	now := env.Clock.Now()
	first := w.doorToken(t, "04-door-first")
	label := webtest.Eval[string](t, w.Browser, `document.getElementById('door-qr').getAttribute('role') + '|' + document.getElementById('door-qr').getAttribute('aria-label')`)
	if !strings.HasPrefix(label, "img|Health code: Green. Current code valid until ") || !strings.Contains(label, "left") {
		t.Errorf("QR text alternative %q", label)
	}
	if got := w.text(t, "#door-banner"); got != "✓ Green" && strings.Join(strings.Fields(got), " ") != "✓ Green" {
		t.Errorf("door banner %q, want the symbol and the word", got)
	}
	res, err := verifier.Verify(first, b, now)
	if err != nil {
		t.Fatalf("verifier rejects the first door QR: %v", err)
	}
	if res.Colour != policy.Green {
		t.Fatalf("first door token is %v", res.Colour)
	}
	w.closeDoor(t)
	second := w.doorToken(t, "05-door-second")
	if second == first {
		t.Fatal("the door screen showed the same token twice")
	}
	if _, err := verifier.Verify(second, b, now); err != nil {
		t.Fatalf("verifier rejects the second door QR: %v", err)
	}

	// Shown copies are gone from the phone: only their windows remain.
	rec = w.stored(t)
	for _, c := range rec.Copies {
		if c.T == first || c.T == second {
			t.Fatal("a shown copy is still stored")
		}
	}

	// Use up the current window; every copy is new, then the page says so.
	s := now.Unix()
	inWindow := 0
	for _, c := range rec.Copies {
		if c.NBF <= s && s < c.Exp {
			inWindow++
		}
	}
	seen := []string{first, second}
	for i := 2; i < inWindow; i++ {
		w.closeDoor(t)
		tok := w.doorToken(t, fmt.Sprintf("06-door-copy-%d", i+1))
		if slices.Contains(seen, tok) {
			t.Fatalf("copy %d repeats an earlier token", i+1)
		}
		seen = append(seen, tok)
	}
	w.closeDoor(t)
	w.openDoor(t)
	w.Screenshot(t, "07-door-used-up")
	if got := w.text(t, "#door-msg"); !strings.Contains(got, "You have shown all") {
		t.Fatalf("after %d copies the door screen says %q", inWindow, got)
	}
	if webtest.Eval[int](t, w.Browser, `document.getElementById('qr-canvas').width`) != 0 {
		t.Fatal("a QR is still drawn after the copies ran out")
	}
	w.closeDoor(t)

	// The clock passes the end of the batch: the periodic sweep deletes it.
	var last int64
	for _, c := range rec.Copies {
		last = max(last, c.Exp)
	}
	w.setNow(t, time.Unix(last-3600, 0))
	if got := w.text(t, "#warning"); !strings.Contains(got, "run out in 1 hour") || !strings.Contains(got, "Get a new test") {
		t.Errorf("an hour before the end the warning says %q", got)
	}
	w.Screenshot(t, "08-running-out")
	w.setNow(t, time.Unix(last, 0))
	w.WaitFor(t, `localStorage.getItem('`+walletKey+`') === null`, 5*time.Second, `localStorage.getItem('`+walletKey+`')`)
	if got := w.text(t, "#status-body"); !strings.Contains(got, "no codes") {
		t.Errorf("after expiry the status says %q", got)
	}
	w.openDoor(t)
	if got := w.text(t, "#door-msg"); !strings.Contains(got, "no valid code") {
		t.Errorf("door screen after expiry says %q", got)
	}
	w.Screenshot(t, "09-expired")

	w.checkOnlyRedemptions(t, []string{att})
}

// The sweep on load: a batch whose end has passed is gone before the page
// shows anything.
func TestWalletDeletesExpiredOnLoad(t *testing.T) {
	env := issuertest.Start(t)
	w := openWallet(t, env)
	w.paste(t, env.Attest(t, attestation.TestNegative, time.Time{}, ""))
	if msg := w.redeem(t); !strings.HasPrefix(msg, "Done.") {
		t.Fatalf("redeem: %q", msg)
	}
	rec := w.stored(t)
	var last int64
	for _, c := range rec.Copies {
		last = max(last, c.Exp)
	}
	w.nowOnLoad(t, time.Unix(last+1, 0))
	w.reload(t)
	if rec := w.stored(t); rec != nil {
		t.Fatalf("expired batch still stored after load: %d copies", len(rec.Copies))
	}
	if got := w.text(t, "#status-body"); !strings.Contains(got, "no codes") {
		t.Errorf("status after load: %q", got)
	}
}

// Redemption errors are explained in words, never as codes, and nothing is
// stored.
func TestWalletRedemptionErrors(t *testing.T) {
	env := issuertest.Start(t)
	w := openWallet(t, env)

	used := env.Attest(t, attestation.TestNegative, time.Time{}, "")
	env.Redeem(t, used)

	_, stranger, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := env.Clock.Now()
	unknown, err := attestation.Sign(stranger, attestation.Claims{
		Attester: "unregistered-lab", Kind: attestation.TestNegative, At: now.Unix(), Expires: now.Add(24 * time.Hour).Unix(), ID: "w-unknown-1",
	})
	if err != nil {
		t.Fatal(err)
	}

	check := func(name, att, want string) {
		t.Helper()
		w.paste(t, att)
		msg := w.redeem(t)
		w.Screenshot(t, name)
		if !strings.Contains(msg, want) {
			t.Errorf("%s: page says %q, want it to contain %q", name, msg, want)
		}
		if strings.Contains(msg, "_") {
			t.Errorf("%s: message shows a code: %q", name, msg)
		}
		if !webtest.Eval[bool](t, w.Browser, `document.getElementById('live').classList.contains('error')`) {
			t.Errorf("%s: not shown as an error", name)
		}
		if rec := w.stored(t); rec != nil {
			t.Errorf("%s: a batch was stored", name)
		}
		// Clear the list for the next case.
		w.Do(t, chromedp.Evaluate[chromedp.Void](`document.querySelectorAll('#pending button').forEach((b) => b.click())`))
	}
	check("already-redeemed", used, "already been used")
	check("unknown-lab", unknown, "lab the health-code service doesn't recognise")

	// Chinese, from the switch.
	w.Do(t, chromedp.Click(chromedp.CSS("#lang")))
	check("already-redeemed-zh", used, "只能使用一次")
	w.Do(t, chromedp.Click(chromedp.CSS("#lang")))

	// Unreachable: the network is cut.
	w.Offline(t)
	check("unreachable", env.Attest(t, attestation.TestNegative, time.Time{}, ""), "Could not reach the health-code service")
	w.online(t)

	// Expired: the issuer's clock moves past the attestation's expiry.
	old := env.Attest(t, attestation.TestNegative, time.Time{}, "")
	env.Clock.Advance(25 * time.Hour)
	check("attestation-expired", old, "too old to use")
	env.Clock.Set(now)

	// Not an attestation at all: refused by the page, nothing sent.
	w.paste(t, "hello")
	w.WaitFor(t, `document.getElementById('live').textContent.includes('not a test result from a lab')`, 5*time.Second, `document.getElementById('live').textContent`)
	if n := webtest.Eval[int](t, w.Browser, `document.querySelectorAll('#pending li').length`); n != 0 {
		t.Errorf("rubbish was added to the list (%d items)", n)
	}
}

// Language follows the browser, the switch overrides it, and the choice
// survives a reload.
func TestWalletChinese(t *testing.T) {
	env := issuertest.Start(t)
	w := openWallet(t, env, webtest.Language("zh-CN"))
	if got := webtest.Eval[string](t, w.Browser, `document.documentElement.lang + '|' + document.title`); got != "zh-Hans|健康码" {
		t.Fatalf("lang|title = %q", got)
	}
	w.paste(t, env.Attest(t, attestation.TestNegative, time.Time{}, ""))
	if msg := w.redeem(t); !strings.Contains(msg, "绿码") {
		t.Fatalf("redeem in Chinese: %q", msg)
	}
	w.openDoor(t)
	w.Screenshot(t, "door-zh")
	if got := webtest.Eval[string](t, w.Browser, `document.getElementById('door-qr').getAttribute('aria-label')`); !strings.HasPrefix(got, "健康码：绿码。当前码有效期至") {
		t.Errorf("QR label in Chinese: %q", got)
	}
	w.closeDoor(t)
	w.Do(t, chromedp.Click(chromedp.CSS("#lang")))
	w.reload(t)
	if got := webtest.Eval[string](t, w.Browser, `document.documentElement.lang + '|' + document.getElementById('show').textContent`); got != "en|Show my code at the door" {
		t.Fatalf("after switching to English and reloading: %q", got)
	}
}

// The lab's QR read by the (fake) camera, and from a picked image.
func TestWalletScanAndPick(t *testing.T) {
	env := issuertest.Start(t)
	att := env.Attest(t, attestation.TestNegative, time.Time{}, "")
	w := openWallet(t, env, webtest.Camera(webtest.CameraFile(t, att)))
	w.Do(t, chromedp.Click(chromedp.CSS("#scan")))
	w.WaitFor(t, `document.querySelectorAll('#pending li').length === 1`, 20*time.Second, `document.getElementById('live').textContent`)
	w.Screenshot(t, "scanned")
	if !webtest.Eval[bool](t, w.Browser, `document.getElementById('camera').hidden`) {
		t.Error("camera still open after a code was read")
	}
	if msg := w.redeem(t); !strings.HasPrefix(msg, "Done.") {
		t.Fatalf("redeem scanned attestation: %q", msg)
	}

	att2 := env.Attest(t, attestation.Vaccination, time.Time{}, "")
	img := writeQRFile(t, att2)
	w.Do(t, chromedp.SetUploadFiles(chromedp.CSS("#file"), []string{img}))
	w.WaitFor(t, `document.querySelectorAll('#pending li').length === 1`, 20*time.Second, `document.getElementById('live').textContent`)
	if got := w.text(t, "#pending"); !strings.Contains(got, "Vaccination") {
		t.Errorf("picked image gave %q", got)
	}
	if msg := w.redeem(t); !strings.HasPrefix(msg, "Done.") || !strings.Contains(msg, "replace the old ones") {
		t.Fatalf("redeem picked attestation: %q", msg)
	}
	w.checkOnlyRedemptions(t, []string{att}, []string{att2})
}
