package web_test

// Browser tests of the wallet's fixes (issue 12 item 5), in Chromium on a
// phone-sized screen (360×640), against a real issuer.

import (
	"encoding/base64"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/healthcode/healthcode/attestation"
	"github.com/healthcode/healthcode/issuer/issuertest"
	"github.com/healthcode/healthcode/web/webtest"
)

// TestWalletRefusedLeavesList: a refused result leaves the send list with
// a message naming it, so the next press sends the others; a code-shaped
// string the issuer refuses (422) is named as refused, not as an
// unreadable answer.
func TestWalletRefusedLeavesList(t *testing.T) {
	env := issuertest.Start(t)
	w := openWallet(t, env)
	used := env.Attest(t, attestation.TestNegative, time.Time{}, "")
	env.Redeem(t, used)
	fresh := env.Attest(t, attestation.Vaccination, time.Time{}, "")
	w.paste(t, used)
	w.paste(t, fresh)
	msg := w.redeem(t)
	w.Screenshot(t, "refused")
	if !strings.HasPrefix(msg, "Not accepted: Negative test, ") || !strings.Contains(msg, "already been used") || !strings.HasSuffix(msg, "It is off the list now.") {
		t.Fatalf("after one refused result the page says %q", msg)
	}
	if got := w.text(t, "#pending"); !strings.HasPrefix(got, "Vaccination") || strings.Contains(got, "Negative") {
		t.Fatalf("send list after the refusal: %q, want only the vaccination", got)
	}
	if msg := w.redeem(t); !strings.HasPrefix(msg, "Done.") {
		t.Fatalf("the fresh result alone: %q", msg)
	}

	// Well-formed JWS whose header the issuer refuses: 422.
	enc := func(v any) string { b, _ := json.Marshal(v); return base64.RawURLEncoding.EncodeToString(b) }
	now := env.Clock.Now().Unix()
	bad := enc(map[string]any{"alg": "HS256", "typ": "JWT"}) + "." +
		enc(map[string]any{"iss": env.AttesterID, "kind": "test-negative", "at": now, "exp": now + 3600, "jti": "x-1"}) + "." + enc("sig")
	w.paste(t, bad)
	msg = w.redeem(t)
	if !strings.HasPrefix(msg, "Not accepted: Negative test, ") || strings.Contains(msg, "could not be read. Try again later") || strings.Contains(msg, "_") {
		t.Fatalf("a 422: page says %q", msg)
	}
	if n := webtest.Eval[int](t, w.Browser, `document.querySelectorAll('#pending li').length`); n != 0 {
		t.Fatalf("the refused string is still on the list (%d items)", n)
	}
	t.Logf("422 shown as %q", msg)
}

// TestWalletStatusStory: with no code the door button does not look like
// an action; after redeeming, the colour card is in view and names the
// current code's end and the batch's, labelled, and the door screen's
// "current code valid until" is the card's.
func TestWalletStatusStory(t *testing.T) {
	env := issuertest.Start(t)
	w := openWallet(t, env)
	button := func() string {
		return webtest.Eval[string](t, w.Browser, `(() => { const b = document.getElementById('show');
			return [b.classList.contains('inactive'), b.getAttribute('aria-disabled'), b.textContent, getComputedStyle(b).backgroundColor].join('|'); })()`)
	}
	if got := button(); got != "true|true|No code to show yet|rgb(230, 230, 230)" {
		t.Fatalf("door button with no code: %q", got)
	}
	w.paste(t, env.Attest(t, attestation.TestNegative, time.Time{}, ""))
	msg := w.redeem(t)
	w.Screenshot(t, "after-redeem")
	inView := webtest.Eval[string](t, w.Browser, `(() => { const r = document.getElementById('status-chip').getBoundingClientRect();
		return [r.top >= 0 && r.bottom <= innerHeight, document.activeElement.id].join('|'); })()`)
	if inView != "true|status" {
		t.Fatalf("after redeeming, colour card in view and focused: %q", inView)
	}
	if got := button(); got != "false|false|Show my code at the door|rgb(11, 61, 46)" {
		t.Fatalf("door button with codes: %q", got)
	}
	current := w.text(t, "#status-current")
	batch := w.text(t, "#status-batch")
	cur := regexp.MustCompile(`^Current code valid until (.+)\.$`).FindStringSubmatch(current)
	bat := regexp.MustCompile(`^Codes on this phone last until (.+)\.$`).FindStringSubmatch(batch)
	if cur == nil || bat == nil {
		t.Fatalf("status card: %q / %q", current, batch)
	}
	if !strings.Contains(msg, "Codes on this phone last until "+bat[1]+".") {
		t.Errorf("success message %q names another end than the card's %q", msg, bat[1])
	}
	w.openDoor(t)
	if got := w.text(t, "#door-until"); got != "Current code valid until "+cur[1] {
		t.Errorf("door screen says %q, card says the current code ends %q", got, cur[1])
	}
	w.closeDoor(t)
	for _, s := range []string{current, batch} {
		if !clock24.MatchString(s) || ampm.MatchString(s) {
			t.Errorf("%q: want a 24-hour time, no AM/PM", s)
		}
	}
}

// TestWalletLocaleTimesAndOffline: dates and times in the locale's own
// format, 24-hour (zh-CN, en-GB); an offline notice.
func TestWalletLocaleTimesAndOffline(t *testing.T) {
	env := issuertest.Start(t)
	for _, c := range []struct {
		lang    string
		batch   *regexp.Regexp
		offline string
	}{
		{"en-GB", regexp.MustCompile(`^Codes on this phone last until \d{1,2} [A-Z][a-z]{2,3}, \d{2}:\d{2}\.$`), "You are offline."},
		{"zh-CN", regexp.MustCompile(`^本机的码可用至 \d{1,2}月\d{1,2}日 \d{2}:\d{2}。$`), "当前离线。"},
	} {
		t.Run(c.lang, func(t *testing.T) {
			w := openWallet(t, env, webtest.Language(c.lang))
			w.paste(t, env.Attest(t, attestation.TestNegative, time.Time{}, ""))
			w.redeem(t)
			if got := w.text(t, "#status-batch"); !c.batch.MatchString(got) || ampm.MatchString(got) {
				t.Errorf("batch end %q, want %s", got, c.batch)
			}
			if got := w.text(t, "#status-current"); !clock24.MatchString(got) || ampm.MatchString(got) {
				t.Errorf("current code's end %q: want a 24-hour time", got)
			}
			if !webtest.Eval[bool](t, w.Browser, `document.getElementById('offline').hidden`) {
				t.Error("offline notice shown online")
			}
			w.Offline(t)
			w.WaitFor(t, `!document.getElementById('offline').hidden`, 5*time.Second, `String(navigator.onLine)`)
			if got := w.text(t, "#offline"); !strings.HasPrefix(got, c.offline) {
				t.Errorf("offline notice %q", got)
			}
			w.Screenshot(t, "offline")
			w.online(t)
			w.WaitFor(t, `document.getElementById('offline').hidden`, 5*time.Second, `String(navigator.onLine)`)
		})
	}
}
