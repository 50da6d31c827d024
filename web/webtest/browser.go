// Package webtest runs the web apps in a real headless Chromium for tests:
// a fresh profile per browser, a fake camera fed from a Y4M file, offline
// emulation, a count of the page's network requests, and screenshots saved
// as test artifacts. Shared by the verifier and wallet browser tests.
package webtest

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/healthcode/healthcode/qr"
)

// ChromiumPath finds the browser: $HEALTHCODE_CHROMIUM, else the Debian
// package's /usr/bin/chromium, else chromium or google-chrome on PATH. A
// missing browser fails the test: CI must install it (apt-get install
// chromium), never quietly skip.
func ChromiumPath(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("HEALTHCODE_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("webtest: no Chromium found; install it (apt-get install chromium) or set HEALTHCODE_CHROMIUM")
	return ""
}

type config struct {
	camera   string // y4m/mjpeg file for the fake camera
	fakeDev  bool
	denyCam  bool
	lang     string
	w, h     int
	timeout  time.Duration
	extraEnv []string
}

// Option configures Start.
type Option func(*config)

// Camera feeds file (.y4m or .mjpeg) to the page as its camera, with the
// permission granted.
func Camera(file string) Option {
	return func(c *config) { c.camera, c.fakeDev = file, true }
}

// DenyCamera gives the page a camera but answers its permission request with
// a denial, as a person tapping "Block" would.
func DenyCamera() Option { return func(c *config) { c.fakeDev, c.denyCam = true, true } }

// Language sets the browser's UI and Accept-Language language, e.g. "zh-CN".
func Language(lang string) Option { return func(c *config) { c.lang = lang } }

// Viewport sets the window size; the default is a small phone, 360×640.
func Viewport(w, h int) Option { return func(c *config) { c.w, c.h = w, h } }

// minWait is the least WaitFor waits before it fails.
const minWait = 30 * time.Second

// Timeout bounds the whole browser session; the default is 180s.
func Timeout(d time.Duration) Option { return func(c *config) { c.timeout = d } }

// Browser is one Chromium process with one tab.
type Browser struct {
	Ctx      context.Context
	requests atomic.Int64
	failed   atomic.Int64
	dir      string // artifacts
}

// Start launches Chromium with the project's headless flags and a fresh
// profile in t.TempDir(). Without Camera or DenyCamera the browser has no
// camera at all (the machine has none and no fake device is added).
func Start(t testing.TB, opts ...Option) *Browser {
	t.Helper()
	cfg := config{w: 360, h: 640, timeout: 180 * time.Second, lang: "en-US"}
	for _, o := range opts {
		o(&cfg)
	}
	flags := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(ChromiumPath(t)),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("autoplay-policy", "no-user-gesture-required"),
		chromedp.Flag("lang", cfg.lang),
		chromedp.Flag("accept-lang", cfg.lang),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(cfg.w, cfg.h),
	)
	if cfg.fakeDev {
		flags = append(flags, chromedp.Flag("use-fake-device-for-media-stream", true))
	}
	if cfg.camera != "" {
		flags = append(flags, chromedp.Flag("use-file-for-fake-video-capture", cfg.camera))
	}
	if cfg.denyCam {
		flags = append(flags, chromedp.Flag("use-fake-ui-for-media-stream", "deny"))
	} else {
		flags = append(flags, chromedp.Flag("use-fake-ui-for-media-stream", true))
	}

	ctx, cancelTimeout := context.WithTimeout(context.Background(), cfg.timeout)
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, flags...)
	bctx, cancelCtx := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancelCtx()
		cancelAlloc()
		cancelTimeout()
	})
	b := &Browser{Ctx: bctx, dir: ArtifactsDir(t)}
	if err := chromedp.Do(bctx, chromedp.EmulateViewport(int64(cfg.w), int64(cfg.h))); err != nil {
		t.Fatalf("webtest: start chromium: %v", err)
	}
	if err := chromedp.Listen(bctx, func(ev any) {
		switch ev.(type) {
		case *network.EventRequestWillBeSent, network.EventRequestWillBeSent:
			b.requests.Add(1)
		case *network.EventLoadingFailed, network.EventLoadingFailed:
			b.failed.Add(1)
		}
	}); err != nil {
		t.Fatalf("webtest: listen: %v", err)
	}
	return b
}

// Requests is the number of network requests the page has started so far
// (CDP Network.requestWillBeSent), whether or not a service worker answered
// them.
func (b *Browser) Requests() int64 { return b.requests.Load() }

// Do runs actions, failing the test on error.
func (b *Browser) Do(t testing.TB, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(b.Ctx, actions...); err != nil {
		t.Fatalf("webtest: %v", err)
	}
}

// Eval evaluates a JavaScript expression and decodes its value into T.
func Eval[T any](t testing.TB, b *Browser, expr string) T {
	t.Helper()
	v, err := chromedp.Run(b.Ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("webtest: evaluate %s: %v", expr, err)
	}
	return v
}

// WaitFor polls a JavaScript expression until it is truthy, and fails the
// test with what describe returns (evaluated then) if it is not within d.
func (b *Browser) WaitFor(t testing.TB, expr string, d time.Duration, describe string) {
	t.Helper()
	// A wait bounds a step, it never measures one: on a loaded 2-core
	// machine a wasm decode or a service-worker start can take seconds, and
	// a short bound only turns a slow run into a failure.
	if d < minWait {
		d = minWait
	}
	_, err := chromedp.Run(b.Ctx, chromedp.Poll[bool](expr,
		chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(d)))
	if err != nil {
		got := "?"
		if describe != "" {
			if s, err := chromedp.Run(b.Ctx, chromedp.Evaluate[string](describe)); err == nil {
				got = s
			}
		}
		b.Screenshot(t, "timeout")
		t.Fatalf("webtest: waited %s for %s: %v; page state: %s", d, expr, err, got)
	}
}

// Offline cuts the page's network (CDP Network.emulateNetworkConditionsByRule,
// the successor of emulateNetworkConditions, with every request matched),
// including its service worker's fetches, and sets navigator.onLine false.
func (b *Browser) Offline(t testing.TB) {
	t.Helper()
	yes := true
	if _, err := chromedp.Call(b.Ctx, network.EmulateNetworkConditionsByRule, network.EmulateNetworkConditionsByRuleParams{
		EmulateOfflineServiceWorker: &yes,
		MatchedNetworkConditions:    []*network.Conditions{{Offline: true, DownloadThroughput: -1, UploadThroughput: -1}},
	}); err != nil {
		t.Fatalf("webtest: emulate offline: %v", err)
	}
	if _, err := chromedp.Call(b.Ctx, network.OverrideNetworkState, network.OverrideNetworkStateParams{
		Offline: true, DownloadThroughput: -1, UploadThroughput: -1,
	}); err != nil {
		t.Fatalf("webtest: override network state: %v", err)
	}
}

// Screenshot saves the viewport as <artifacts>/<name>.png.
func (b *Browser) Screenshot(t testing.TB, name string) string {
	t.Helper()
	buf, err := chromedp.Run(b.Ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Errorf("webtest: screenshot %s: %v", name, err)
		return ""
	}
	p := filepath.Join(b.dir, name+".png")
	if err := os.WriteFile(p, buf, 0o644); err != nil {
		t.Errorf("webtest: save screenshot: %v", err)
		return ""
	}
	t.Logf("screenshot: %s", p)
	return p
}

// ArtifactsDir is where a test's screenshots go: $HEALTHCODE_ARTIFACTS/<test>
// or, without it, artifacts/<test> at the module root (gitignored).
func ArtifactsDir(t testing.TB) string {
	t.Helper()
	base := os.Getenv("HEALTHCODE_ARTIFACTS")
	if base == "" {
		base = filepath.Join(moduleRoot(t), "artifacts")
	}
	name := strings.NewReplacer("/", "_", " ", "_", ":", "_").Replace(t.Name())
	dir := filepath.Join(base, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("webtest: artifacts dir: %v", err)
	}
	return dir
}

func moduleRoot(t testing.TB) string {
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			return dir
		}
	}
}

// QRImage renders text as the QR image a wallet shows (go-qrcode, level M).
func QRImage(t testing.TB, text string, size int) image.Image {
	t.Helper()
	p, err := qr.PNG(text, size)
	if err != nil {
		t.Fatalf("webtest: qr: %v", err)
	}
	img, err := png.Decode(bytes.NewReader(p))
	if err != nil {
		t.Fatalf("webtest: qr png: %v", err)
	}
	return img
}

// CameraFile writes a Y4M file for Camera showing text as a QR code, centred
// in a 640×480 frame, and returns its path. A few identical frames at 10
// fps; Chromium loops the file.
func CameraFile(t testing.TB, text string) string {
	t.Helper()
	return CameraFileImage(t, QRImage(t, text, 400))
}

// CameraFileImage is CameraFile for any picture.
func CameraFileImage(t testing.TB, img image.Image) string {
	t.Helper()
	return CameraFileFrames(t, 10, img, img, img)
}

// CameraFileFrames writes a Y4M file playing imgs in order at fps, each
// centred in a 640×480 frame.
func CameraFileFrames(t testing.TB, fps int, imgs ...image.Image) string {
	t.Helper()
	frames := make([]image.Image, len(imgs))
	for i, img := range imgs {
		frames[i] = Frame(img, 640, 480)
	}
	p := filepath.Join(t.TempDir(), "camera.y4m")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := WriteY4M(f, fps, frames...); err != nil {
		t.Fatalf("webtest: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

// String describes the browser's counters, for failure messages.
func (b *Browser) String() string {
	return fmt.Sprintf("requests=%d failed=%d", b.requests.Load(), b.failed.Load())
}

// CameraFileFill writes a camera file (as CameraFile) whose QR code, quiet
// zone included, is frac of the 640-pixel frame's width: 0.25 is a 160-pixel
// code, what a phone held at arm's length in front of the camera gives.
func CameraFileFill(t testing.TB, text string, frac float64) string {
	t.Helper()
	return CameraFileFillSize(t, text, frac, 640, 480)
}

// CameraFileFillSize is CameraFileFill for a width×height camera (a phone's
// 1280×720, say).
func CameraFileFillSize(t testing.TB, text string, frac float64, width, height int) string {
	t.Helper()
	f := Frame(Shrink(QRImage(t, text, 1280), int(frac*float64(width))), width, height)
	p := filepath.Join(t.TempDir(), "camera.y4m")
	out, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if err := WriteY4M(out, 10, f, f, f); err != nil {
		t.Fatalf("webtest: %v", err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}
