package web_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"image"
	"image/draw"
	_ "image/png" // screenshots
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	cdpruntime "github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/makiuchi-d/gozxing"
	zxqr "github.com/makiuchi-d/gozxing/qrcode"

	"github.com/healthcode/healthcode/issuer/issuertest"
	"github.com/healthcode/healthcode/qr"
	"github.com/healthcode/healthcode/web/webtest"
)

// walletKey is the localStorage key app.js keeps the batch under.
const walletKey = "healthcode.wallet.v1"

// sentRequest is one request the page (or its service worker) started.
type sentRequest struct {
	Method, URL string
	Body        string
}

// walletPage is the wallet open in a real Chromium, with a log of every
// request the page makes and every uncaught script error.
type walletPage struct {
	*webtest.Browser
	env  *issuertest.Env
	base string // the origin the page is served from

	mu       sync.Mutex
	requests []sentRequest
	errors   []string
}

func openWallet(t *testing.T, env *issuertest.Env, opts ...webtest.Option) *walletPage {
	t.Helper()
	return openWalletAt(t, env, env.URL, opts...)
}

// openWalletAt opens the wallet served from base (a proxy in front of env).
func openWalletAt(t *testing.T, env *issuertest.Env, base string, opts ...webtest.Option) *walletPage {
	t.Helper()
	w := &walletPage{Browser: webtest.Start(t, opts...), env: env, base: base}
	if err := chromedp.Listen(w.Ctx, func(ev any) {
		w.mu.Lock()
		defer w.mu.Unlock()
		switch e := ev.(type) {
		case *network.EventRequestWillBeSent:
			var body bytes.Buffer
			for _, p := range e.Request.PostDataEntries {
				body.Write(p.Bytes)
			}
			w.requests = append(w.requests, sentRequest{e.Request.Method, e.Request.URL, body.String()})
		case *cdpruntime.EventExceptionThrown:
			msg := e.ExceptionDetails.Text
			if e.ExceptionDetails.Exception != nil {
				msg += " " + e.ExceptionDetails.Exception.Description
			}
			w.errors = append(w.errors, msg)
		}
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		for _, e := range w.errors {
			t.Errorf("uncaught error in the page: %s", e)
		}
	})
	w.load(t, base+"/wallet/")
	// The first load registers the service worker; offline reloads need it
	// in control.
	w.WaitFor(t, `navigator.serviceWorker.controller !== null`, 20*time.Second, `String(navigator.serviceWorker.controller)`)
	return w
}

func (w *walletPage) load(t *testing.T, u string) {
	t.Helper()
	w.Do(t, chromedp.Navigate(u))
	w.waitReady(t)
}

func (w *walletPage) reload(t *testing.T) {
	t.Helper()
	w.Do(t, chromedp.Reload())
	w.waitReady(t)
}

func (w *walletPage) waitReady(t *testing.T) {
	t.Helper()
	w.WaitFor(t, `document.body && document.body.dataset.ready === '1'`, 15*time.Second, `document.documentElement.outerHTML.slice(0, 300)`)
}

// sent returns a copy of the request log.
func (w *walletPage) sent() []sentRequest {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]sentRequest(nil), w.requests...)
}

// paste adds an attestation through the paste box.
func (w *walletPage) paste(t *testing.T, att string) {
	t.Helper()
	w.Do(t,
		chromedp.SetValue(chromedp.CSS("#paste"), att),
		chromedp.Click(chromedp.CSS("#paste-add")),
	)
}

// redeem presses "Get my codes" and returns the message the page shows
// when the answer is in: the second message after the click, "Sending…"
// being the first.
func (w *walletPage) redeem(t *testing.T) string {
	t.Helper()
	seq := webtest.Eval[int](t, w.Browser, `Number(document.getElementById('live').dataset.seq || 0)`)
	w.Do(t, chromedp.Click(chromedp.CSS("#redeem")))
	w.WaitFor(t, fmt.Sprintf(`Number(document.getElementById('live').dataset.seq || 0) >= %d && !document.getElementById('redeem').disabled`, seq+2),
		15*time.Second, `document.getElementById('live').textContent`)
	return w.text(t, "#live")
}

func (w *walletPage) text(t *testing.T, sel string) string {
	t.Helper()
	return webtest.Eval[string](t, w.Browser, fmt.Sprintf(`document.querySelector(%q).textContent`, sel))
}

// groupsKey is the localStorage key of the attestations the wallet keeps.
const groupsKey = "healthcode.attestations.v1"

type storedGroup struct {
	Atts []struct {
		Raw  string `json:"raw"`
		Kind string `json:"kind"`
	} `json:"atts"`
	Secret        string `json:"secret"`
	RenewAfter    int64  `json:"renewAfter"`
	EvidenceUntil int64  `json:"evidenceUntil"`
	Sending       bool   `json:"sending"`
}

// groups returns the redemptions the page keeps, nil when none.
func (w *walletPage) groups(t *testing.T) []storedGroup {
	t.Helper()
	raw := webtest.Eval[string](t, w.Browser, `localStorage.getItem('`+groupsKey+`') || ''`)
	if raw == "" {
		return nil
	}
	var g struct {
		V      int           `json:"v"`
		Groups []storedGroup `json:"groups"`
	}
	if err := json.Unmarshal([]byte(raw), &g); err != nil || g.V != 1 {
		t.Fatalf("attestations record: %v: %s", err, raw)
	}
	return g.Groups
}

// posts returns the bodies of the page's POST /v1/tokens so far.
func (w *walletPage) posts() []string {
	var out []string
	for _, r := range w.sent() {
		if r.Method == "POST" && strings.HasSuffix(r.URL, "/v1/tokens") {
			out = append(out, r.Body)
		}
	}
	return out
}

// storedCopy mirrors one copy in the page's record.
type storedCopy struct {
	T    string `json:"t"`
	NBF  int64  `json:"nbf"`
	Exp  int64  `json:"exp"`
	Used bool   `json:"used"`
}

type storedWallet struct {
	V      int          `json:"v"`
	Colour string       `json:"colour"`
	Copies []storedCopy `json:"copies"`
}

// stored returns the wallet record in localStorage, nil when there is none.
func (w *walletPage) stored(t *testing.T) *storedWallet {
	t.Helper()
	raw := webtest.Eval[string](t, w.Browser, `localStorage.getItem('`+walletKey+`') || ''`)
	if raw == "" {
		return nil
	}
	var s storedWallet
	if err := json.Unmarshal([]byte(raw), &s); err != nil {
		t.Fatalf("wallet record: %v: %s", err, raw)
	}
	return &s
}

// openDoor opens the door screen and waits for the QR to be drawn.
func (w *walletPage) openDoor(t *testing.T) {
	t.Helper()
	w.Do(t, chromedp.Click(chromedp.CSS("#show")))
	w.WaitFor(t, `!document.getElementById('door').hidden && (document.getElementById('qr-canvas').width > 0 || !document.getElementById('door-msg').hidden)`,
		5*time.Second, `document.getElementById('door').outerHTML.slice(0, 400)`)
}

func (w *walletPage) closeDoor(t *testing.T) {
	t.Helper()
	w.Do(t, chromedp.Click(chromedp.CSS("#door-close")))
	w.WaitFor(t, `document.getElementById('door').hidden`, 5*time.Second, "")
}

// doorToken opens the door screen, saves a screenshot as name, and decodes
// the QR from the screenshot's pixels.
func (w *walletPage) doorToken(t *testing.T, name string) string {
	t.Helper()
	w.openDoor(t)
	p := w.Screenshot(t, name)
	png, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	rect := webtest.Eval[[]float64](t, w.Browser, `(() => { const r = document.getElementById('qr-canvas').getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; })()`)
	tok, fooled, err := decodeScreenshot(png, image.Rect(int(rect[0]), int(rect[1]), int(rect[2]), int(rect[3])))
	if err != nil {
		t.Fatalf("%s: decode QR from screenshot: %v (door: %q)", name, err, w.text(t, "#door"))
	}
	if fooled != nil {
		t.Logf("%s: qr.Decode failed (%v); read module by module", name, fooled)
	}
	return tok
}

// decodeScreenshot reads the QR in a screenshot with qr.Decode, as
// `verifier scan` would. gozxing's detector is fooled by about 1 in 100
// valid version-10/11 codes, from go-qrcode as much as from the page's
// generator (measured on 300 random token-sized strings: 3 and 4 failures;
// jsQR read all of them), by taking a finder-like pattern in the data for a
// corner. Only then does it fall back to reading the QR's own square
// (qrBox, from the page's layout) module by module (ZXing's PURE_BARCODE),
// which still decodes the screenshot's pixels.
func decodeScreenshot(pngBytes []byte, qrBox image.Rectangle) (tok string, fooled, err error) {
	tok, fooled = qr.Decode(bytes.NewReader(pngBytes))
	if fooled == nil {
		return tok, nil, nil
	}
	img, _, err := image.Decode(bytes.NewReader(pngBytes))
	if err != nil {
		return "", fooled, err
	}
	crop := image.NewGray(qrBox)
	draw.Draw(crop, qrBox, img, qrBox.Min, draw.Src)
	bmp, err := gozxing.NewBinaryBitmapFromImage(crop)
	if err != nil {
		return "", fooled, err
	}
	res, err := zxqr.NewQRCodeReader().Decode(bmp, map[gozxing.DecodeHintType]any{gozxing.DecodeHintType_PURE_BARCODE: true})
	if err != nil {
		return "", fooled, fmt.Errorf("%w; module by module: %v", fooled, err)
	}
	return res.GetText(), fooled, nil
}

// setNow moves the page's clock (window.__healthcodeNow, Unix ms) and fires
// the focus event, which runs the same sweep as the page's timer.
func (w *walletPage) setNow(t *testing.T, at time.Time) {
	t.Helper()
	w.Do(t, chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`window.__healthcodeNow = %d; window.dispatchEvent(new Event('focus'))`, at.UnixMilli())))
}

// nowOnLoad makes every later page load start with the clock at at, before
// the page's own scripts run.
func (w *walletPage) nowOnLoad(t *testing.T, at time.Time) {
	t.Helper()
	if _, err := chromedp.Call(w.Ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{
		Source: fmt.Sprintf(`window.__healthcodeNow = %d;`, at.UnixMilli()),
	}); err != nil {
		t.Fatal(err)
	}
}

// online undoes webtest's Offline.
func (w *walletPage) online(t *testing.T) {
	t.Helper()
	no := false
	if _, err := chromedp.Call(w.Ctx, network.EmulateNetworkConditionsByRule, network.EmulateNetworkConditionsByRuleParams{
		EmulateOfflineServiceWorker: &no,
		MatchedNetworkConditions:    []*network.Conditions{{Offline: false, DownloadThroughput: -1, UploadThroughput: -1}},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(w.Ctx, network.OverrideNetworkState, network.OverrideNetworkStateParams{
		Offline: false, DownloadThroughput: -1, UploadThroughput: -1,
	}); err != nil {
		t.Fatal(err)
	}
}

// checkOnlyRedemptions fails unless every request went to the issuer's own
// origin and the only writes were POST /v1/tokens whose bodies are exactly
// {"attestations": [...], "secret": "<base64url of 32 bytes>"} with the
// given attestations, in order (a retry repeats a request: consecutive
// repeats count once).
func (w *walletPage) checkOnlyRedemptions(t *testing.T, want ...[]string) {
	t.Helper()
	origin, err := url.Parse(w.base)
	if err != nil {
		t.Fatal(err)
	}
	var posts [][]string
	for _, r := range w.sent() {
		u, err := url.Parse(r.URL)
		if err != nil {
			t.Errorf("request to unparsable URL %q", r.URL)
			continue
		}
		if u.Scheme != origin.Scheme || u.Host != origin.Host {
			t.Errorf("request to another origin: %s %s", r.Method, r.URL)
		}
		if r.Method == "GET" {
			continue
		}
		if r.Method != "POST" || u.Path != "/v1/tokens" {
			t.Errorf("unexpected %s %s", r.Method, u.Path)
			continue
		}
		atts := redemptionBody(t, r.Body)
		if len(posts) > 0 && slices.Equal(posts[len(posts)-1], atts) {
			continue
		}
		posts = append(posts, atts)
	}
	if fmt.Sprint(posts) != fmt.Sprint(want) {
		t.Errorf("page posted %q, want %q", posts, want)
	}
}

// redemptionBody checks one request body's exact shape and returns its
// attestations.
func redemptionBody(t *testing.T, body string) []string {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(body))
	dec.DisallowUnknownFields()
	var b struct {
		Attestations []string `json:"attestations"`
		Secret       *string  `json:"secret"`
	}
	if err := dec.Decode(&b); err != nil || dec.More() {
		t.Errorf("request body %q: %v", body, err)
		return nil
	}
	if !strings.HasPrefix(body, `{"attestations":[`) {
		t.Errorf("request body %q does not start with the attestations", body)
	}
	if b.Secret != nil {
		raw, err := base64.RawURLEncoding.DecodeString(*b.Secret)
		if err != nil || len(raw) != 32 {
			t.Errorf("secret %q is not base64url of 32 bytes (%v)", *b.Secret, err)
		}
	}
	return b.Attestations
}

// writeQRFile saves text as a QR PNG, as a photo of the lab's printout
// would be, and returns its path.
func writeQRFile(t *testing.T, text string) string {
	t.Helper()
	b, err := qr.PNG(text, 600)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "lab-qr.png")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
