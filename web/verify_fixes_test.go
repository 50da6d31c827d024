package web_test

// Browser tests of the verifier app's fixes (issue 12 item 5, issue 14
// item 4, issue 11's web parts), on a phone-sized screen (360×640).

import (
	"fmt"
	"image"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/healthcode/healthcode/policy"
	"github.com/healthcode/healthcode/qr"
	"github.com/healthcode/healthcode/verifier"
	"github.com/healthcode/healthcode/web/webtest"
)

// TestKioskSmallCodes: a code filling 20, 25 or 30 % of the frame's width
// (quiet zone included, box-filtered as a sensor would) is read from the
// live camera; and on a 1280×720 camera, whose frames are scaled down to
// 640 before decoding, a code filling 12 % (154 px) is read from the
// frame's centre at full resolution, which the whole frame cannot give.
func TestKioskSmallCodes(t *testing.T) {
	requireBuilt(t)
	f := newFixture(t)
	base := kiosk(t, f.freshBundle(t, false, false), f.pin)
	tok := f.token(t, policy.Green, f.now.Add(-time.Hour), f.now.Add(time.Hour), "")
	for _, c := range []struct {
		fill       float64
		w, h       int
		wantRegion string // "" when either may read it
	}{
		{0.20, 640, 480, ""}, {0.25, 640, 480, ""}, {0.30, 640, 480, ""},
		{0.12, 1280, 720, "centre"},
	} {
		t.Run(fmt.Sprintf("%.0f%%-of-%d", c.fill*100, c.w), func(t *testing.T) {
			b := webtest.Start(t, webtest.Camera(webtest.CameraFileFillSize(t, tok, c.fill, c.w, c.h)))
			open(t, b, base)
			v := waitVerdict(t, b, 20*time.Second)
			m := metrics(t, b)
			region := webtest.Eval[string](t, b, `healthcodeMetrics.lastRegion`)
			b.Screenshot(t, "read")
			px := int(c.fill * float64(c.w))
			if v.Kind != "green" {
				t.Fatalf("a %d-pixel code in %d×%d: verdict %+v, want green", px, c.w, c.h, v)
			}
			if c.wantRegion != "" && region != c.wantRegion {
				t.Errorf("a %d-pixel code in %d×%d read from the %s, want the %s", px, c.w, c.h, region, c.wantRegion)
			}
			t.Logf("a code filling %.0f%% of a %d×%d frame's width (%d px) read after %d frames (from the %s), %.1f ms decode per frame",
				c.fill*100, c.w, c.h, px, m.Frames, region, m.DecodeMsTotal/float64(m.Frames))
		})
	}
}

// pngFile writes text as a QR PNG (a photo of a poster or a code).
func pngFile(t testing.TB, text string) string {
	t.Helper()
	p, err := qr.PNG(text, 500)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "photo.png")
	if err := os.WriteFile(path, p, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

var (
	ampm    = regexp.MustCompile(`(?i)\b[AP]\.?M\.?\b|上午|下午|凌晨|中午|晚上`)
	clock24 = regexp.MustCompile(`\b([01]\d|2[0-3]):[0-5]\d\b`)
)

// TestKioskTimesInLocale: the validity end is written in the reader's own
// locale with a 24-hour clock (en-GB, zh-CN), and never with an AM/PM
// (en-US too).
func TestKioskTimesInLocale(t *testing.T) {
	requireBuilt(t)
	f := newFixture(t)
	base := kiosk(t, f.freshBundle(t, false, false), f.pin)
	// A token ending within the hour and one ending in 22 hours (on most
	// days of the test, another day: the date is shown).
	for _, c := range []struct {
		lang string
		want *regexp.Regexp
	}{
		{"en-GB", regexp.MustCompile(`^Valid until (\d{1,2} [A-Z][a-z]{2,3}, )?\d{2}:\d{2}$`)},
		{"zh-CN", regexp.MustCompile(`^有效期至 (\d{1,2}月\d{1,2}日 )?\d{2}:\d{2}$`)},
		{"en-US", regexp.MustCompile(`^Valid until ([A-Z][a-z]{2,3} \d{1,2}, )?\d{2}:\d{2}$`)},
	} {
		t.Run(c.lang, func(t *testing.T) {
			b := webtest.Start(t, webtest.Language(c.lang))
			open(t, b, base)
			for _, exp := range []time.Time{f.now.Add(time.Hour), f.now.Add(22 * time.Hour)} {
				v := paste(t, b, f.token(t, policy.Green, f.now.Add(-time.Hour), exp, ""))
				if v.Kind != "green" || !c.want.MatchString(v.Detail) || !clock24.MatchString(v.Detail) || ampm.MatchString(v.Detail) {
					t.Errorf("%s: detail %q, want it to match %s with a 24-hour time", c.lang, v.Detail, c.want)
				}
				clearVerdict(t, b)
			}
		})
	}
}

// TestKioskTrustListFetchedAndOffline: the trust list's age counts from
// this device's last fetch (the bundle was signed three days before), by
// the page's clock; offline, the page says so and keeps that age.
func TestKioskTrustListFetchedAndOffline(t *testing.T) {
	requireBuilt(t)
	f := newFixture(t)
	old := f.bundle(t, bundleTimes{issued: f.now.Add(-3 * 24 * time.Hour), stale: f.now.Add(24 * time.Hour), expires: f.now.Add(4 * 24 * time.Hour)})
	base := kiosk(t, old, f.pin)
	b := webtest.Start(t)
	open(t, b, base)
	status := func() string {
		return webtest.Eval[string](t, b, `document.getElementById('bundle-status').textContent`)
	}
	if s := status(); s != "Trust list fetched just now." {
		t.Fatalf("status after a fetch: %q", s)
	}
	if !webtest.Eval[bool](t, b, `document.getElementById('offline').hidden`) {
		t.Fatal("offline notice shown online")
	}
	setPageClock(t, b, time.Now().Add(2*time.Hour))
	webtest.Eval[chromedp.Void](t, b, `window.dispatchEvent(new Event('focus'))`)
	if s := status(); s != "Trust list fetched 2 hours ago." {
		t.Fatalf("two hours later by the page's clock: %q", s)
	}
	webtest.Eval[chromedp.Void](t, b, `window.__healthcodeNow = undefined`)
	goOffline(t, b)
	b.Screenshot(t, "offline")
	off := webtest.Eval[string](t, b, `(() => { const o = document.getElementById('offline'); return (o.hidden ? 'hidden' : 'shown') + ' ' + o.textContent; })()`)
	if off != "shown Offline. Codes are checked with the trust list saved on this device." {
		t.Fatalf("offline notice: %q", off)
	}
	if s := status(); !strings.HasPrefix(s, "Trust list fetched ") || strings.Contains(s, "3 days") || !strings.Contains(s, "Offline: using the saved trust list.") {
		t.Fatalf("offline status %q: want the last fetch's age and the offline note", s)
	}
	v := paste(t, b, f.token(t, policy.Green, f.now.Add(-time.Hour), f.now.Add(time.Hour), ""))
	if v.Kind != "green" {
		t.Fatalf("offline verdict %+v", v)
	}
}

// TestKioskPinPoster: the settings screen shows the pin; the pin poster's
// QR (text exactly sha256:<hex>, contract 5) confirms it, or flags a
// different one and replaces it only when asked; and where the origin
// served a wrong pin at first use, the poster read by the camera sets the
// right one.
func TestKioskPinPoster(t *testing.T) {
	requireBuilt(t)
	f := newFixture(t)
	jws := f.freshBundle(t, false, false)
	b := webtest.Start(t)
	open(t, b, kiosk(t, jws, f.pin))
	b.Do(t, chromedp.Click(chromedp.ID("settings-toggle")))
	pinView := func() string {
		return webtest.Eval[string](t, b, `(() => { const v = (id) => document.getElementById(id);
			return [v('settings').hidden ? 'closed' : 'open', v('pin-held').textContent, v('pin-value').textContent,
				v('pin-status').dataset.result || '', v('pin-status').textContent, v('pin-replace').hidden ? '' : 'replace offered'].join('|'); })()`)
	}
	if got, want := pinView(), "open|This device trusts trust lists signed by the key with fingerprint:|"+f.pin+"|||"; got != want {
		t.Fatalf("settings: %q, want %q", got, want)
	}
	b.Screenshot(t, "settings")
	b.Do(t, chromedp.SetUploadFiles(chromedp.ID("file"), []string{pngFile(t, f.pin)}))
	b.WaitFor(t, `document.getElementById('pin-status').dataset.result === 'pinMatch'`, 10*time.Second, `document.getElementById('pin-status').textContent`)
	if got := pinView(); !strings.Contains(got, "|pinMatch|✓ The poster matches this device’s pin.|") {
		t.Fatalf("after the right poster: %q", got)
	}
	if !webtest.Eval[bool](t, b, `document.getElementById('result').hidden`) {
		t.Fatal("a poster was checked as a health code")
	}

	other := newFixture(t).pin
	paste := func(text string) {
		b.Do(t, chromedp.SetValue(chromedp.ID("paste"), text), chromedp.Click(chromedp.ID("check")))
	}
	paste(other)
	b.WaitFor(t, `document.getElementById('pin-status').dataset.result === 'pinDiffers'`, 10*time.Second, `document.getElementById('pin-status').textContent`)
	if got := pinView(); !strings.Contains(got, "|"+f.pin+"|pinDiffers|") || !strings.HasSuffix(got, "replace offered") {
		t.Fatalf("after another poster: %q, want the held pin kept and a replacement offered", got)
	}
	if held := webtest.Eval[string](t, b, `localStorage.getItem('healthcode.pin')`); held != f.pin {
		t.Fatalf("pin changed to %q without being asked", held)
	}
	b.Screenshot(t, "poster-differs")
	b.Do(t, chromedp.Click(chromedp.ID("pin-replace")))
	b.WaitFor(t, `document.getElementById('pin-status').dataset.result === 'pinReplaced' && document.body.dataset.bundle === 'invalid'`, 10*time.Second, `document.body.dataset.bundle`)
	if held := webtest.Eval[string](t, b, `localStorage.getItem('healthcode.pin') + ' ' + localStorage.getItem('healthcode.bundle')`); held != other+" null" {
		t.Fatalf("after replacing: pin and bundle %q, want the poster's pin and no bundle (the origin's does not open under it)", held)
	}

	// First use through an origin that serves a wrong pin: nothing is
	// trusted; the poster, held to the camera, sets the pin.
	c := webtest.Start(t, webtest.Camera(webtest.CameraFile(t, f.pin)))
	open(t, c, kiosk(t, jws, other))
	c.WaitFor(t, `document.getElementById('pin-status').dataset.result === 'pinSet' && document.body.dataset.bundle === 'ok'`, 20*time.Second,
		`document.body.dataset.bundle + ' ' + document.getElementById('pin-status').textContent`)
	c.Screenshot(t, "poster-sets-pin")
	if held := webtest.Eval[string](t, c, `localStorage.getItem('healthcode.pin')`); held != f.pin {
		t.Fatalf("pin set from the camera: %q, want %q", held, f.pin)
	}
}

// TestKioskFallbackAlwaysThere: paste and photo are on screen with the
// camera running, and with a camera that never answers (the page stays on
// "Starting the camera…"), where pasting still checks a code.
func TestKioskFallbackAlwaysThere(t *testing.T) {
	requireBuilt(t)
	f := newFixture(t)
	base := kiosk(t, f.freshBundle(t, false, false), f.pin)
	visible := `['paste', 'check'].every((id) => document.getElementById(id).offsetParent !== null) && document.querySelector('label[for=file]').offsetParent !== null`

	blank := image.NewRGBA(image.Rect(0, 0, 64, 64))
	b := webtest.Start(t, webtest.Camera(webtest.CameraFileImage(t, blank)))
	open(t, b, base)
	b.WaitFor(t, `document.body.dataset.camera === 'on'`, 10*time.Second, `document.body.dataset.camera`)
	if !webtest.Eval[bool](t, b, visible) {
		t.Fatal("with the camera on, paste or photo is not on screen")
	}
	b.Screenshot(t, "camera-on")

	s := webtest.Start(t, webtest.Camera(webtest.CameraFileImage(t, blank)))
	if _, err := chromedp.Call(s.Ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{
		Source: `navigator.mediaDevices.getUserMedia = () => new Promise(() => {});`,
	}); err != nil {
		t.Fatal(err)
	}
	open(t, s, base)
	if got := webtest.Eval[string](t, s, `document.body.dataset.camera + ' ' + document.getElementById('scan-hint').textContent`); got != "starting Starting the camera…" {
		t.Fatalf("stuck camera: %q", got)
	}
	if !webtest.Eval[bool](t, s, visible) {
		t.Fatal("with the camera stuck, paste or photo is not on screen")
	}
	s.Screenshot(t, "camera-stuck")
	if v := paste(t, s, f.token(t, policy.Yellow, f.now.Add(-time.Hour), f.now.Add(time.Hour), "")); v.Kind != "yellow" {
		t.Fatalf("paste with the camera stuck: %+v", v)
	}
}

// TestKioskForeignCode: a code signed by a key the bundle cannot know (it
// starts before the bundle was issued) is "from an issuer this device does
// not trust", in both languages; a code from a key newer than the bundle
// still says to update it.
func TestKioskForeignCode(t *testing.T) {
	requireBuilt(t)
	f := newFixture(t)
	base := kiosk(t, f.freshBundle(t, false, false), f.pin) // issued an hour ago
	other := newFixture(t)
	b := webtest.Start(t)
	open(t, b, base)
	// Its window began more than a token lifetime (24 h) and a granule
	// before the bundle was issued and was still open then: a key that old
	// would be in the bundle, had it been this issuer's.
	foreign := other.token(t, policy.Green, f.now.Add(-27*time.Hour), f.now.Add(time.Hour), "")
	v := paste(t, b, foreign)
	b.Screenshot(t, "foreign")
	if v.Kind != "invalid" || v.Reason != verifier.ReasonUnknownIssuer || v.Detail != "From an issuer this device does not trust. This is not a code from this health-code service." {
		t.Fatalf("foreign code: %+v", v)
	}
	clearVerdict(t, b)
	newer := other.token(t, policy.Green, f.now, f.now.Add(time.Hour), "")
	if v := paste(t, b, newer); v.Reason != verifier.ReasonUnknownKey || !strings.Contains(v.Detail, "Update the trust list") {
		t.Fatalf("code from a key newer than the bundle: %+v", v)
	}
	clearVerdict(t, b)
	b.Do(t, chromedp.Click(chromedp.ID("lang")))
	if v := paste(t, b, foreign); v.Detail != "此码来自本设备不信任的签发方，不是本健康码服务的码。" {
		t.Fatalf("foreign code in Chinese: %+v", v)
	}
}

// TestKioskHintPrintedAsText: whatever a token's hint holds reaches the
// screen as text: markup stays characters, nothing runs.
func TestKioskHintPrintedAsText(t *testing.T) {
	requireBuilt(t)
	f := newFixture(t)
	base := kiosk(t, f.freshBundle(t, true, false), f.pin)
	b := webtest.Start(t)
	open(t, b, base)
	for _, hint := range []string{`<img src=x onerror="window.__pwned=1">`, "AB 90", "\x1b[1A\rGREEN"} {
		v := paste(t, b, f.token(t, policy.Red, f.now.Add(-time.Hour), f.now.Add(time.Hour), hint))
		elems := webtest.Eval[int](t, b, `document.getElementById('result').querySelectorAll('*').length`)
		if elems != 5 || webtest.Eval[bool](t, b, `window.__pwned === 1`) {
			t.Fatalf("hint %q: the result holds %d elements (want its 5), pwned=%v", hint, elems, webtest.Eval[bool](t, b, `window.__pwned === 1`))
		}
		if v.Kind == "red" && v.Hint != "Holder: "+hint {
			t.Errorf("hint %q shown as %q", hint, v.Hint)
		}
		t.Logf("hint %q: verdict %s %s, shown %q", hint, v.Kind, v.Reason, v.Hint)
		clearVerdict(t, b)
	}
}
