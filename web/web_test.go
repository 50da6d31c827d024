package web

import (
	"errors"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"testing/fstest"
)

func TestWithBuildCheckServesNoticeWithoutWasm(t *testing.T) {
	app := fstest.MapFS{
		"index.html": {Data: []byte("<!doctype html><title>app</title>")},
		"sw.js":      {Data: []byte("// sw")},
		"app.js":     {Data: []byte("// app")},
	}
	got := withBuildCheck(app)
	idx, err := fs.ReadFile(got, "index.html")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(idx), "built without the verifier's WebAssembly module") || !strings.Contains(string(idx), "make wasm") {
		t.Fatalf("index.html without wasm: %q", idx)
	}
	// No service worker, so a browser does not cache the broken app.
	if _, err := fs.ReadFile(got, "sw.js"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("sw.js without wasm: %v, want not found", err)
	}
	if err := missingArtifact(app); err == nil || !strings.Contains(err.Error(), "without verifier.wasm: run `make wasm`") {
		t.Fatalf("missingArtifact: %v", err)
	}
	// An empty wasm (a failed build) counts as missing.
	app["verifier.wasm"] = &fstest.MapFile{}
	app["wasm_exec.js"] = &fstest.MapFile{Data: []byte("x")}
	if err := missingArtifact(app); err == nil {
		t.Fatal("empty verifier.wasm accepted")
	}
	app["verifier.wasm"] = &fstest.MapFile{Data: []byte("\x00asm")}
	if withBuildCheck(app) == nil || missingArtifact(app) != nil {
		t.Fatal("complete app not accepted")
	}
	if idx, _ := fs.ReadFile(withBuildCheck(app), "index.html"); string(idx) != "<!doctype html><title>app</title>" {
		t.Fatalf("complete app's index replaced: %q", idx)
	}
}

func TestEmbeddedAppHasItsFiles(t *testing.T) {
	sub, err := fs.Sub(verifyFiles, "verify")
	if err != nil {
		t.Fatal(err)
	}
	// Everything the service worker precaches must be embedded, or its
	// install fails and the app never works offline.
	sw, err := fs.ReadFile(sub, "sw.js")
	if err != nil {
		t.Fatal(err)
	}
	sub = withCommon(sub)
	if _, err := fs.Stat(sub, "index.html"); err != nil {
		t.Errorf("index.html not embedded: %v", err)
	}
	for _, name := range []string{"./", "app.js", "i18n.js", "style.css", "manifest.webmanifest", "icons/icon.svg", "icons/icon-192.png", "icons/icon-512.png",
		"common/clock.js", "common/i18n.js", "common/qrread.js"} {
		if _, err := fs.Stat(sub, strings.TrimSuffix(name, "/")); err != nil && name != "./" {
			t.Errorf("%s not embedded: %v", name, err)
		}
		if !strings.Contains(string(sw), "'"+name+"'") {
			t.Errorf("sw.js does not precache %s", name)
		}
	}
	// Likewise the wallet's, and the sw core both import.
	wsw, err := fs.ReadFile(Wallet(), "sw.js")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"app.js", "texts.js", "ui.js", "store.js", "protocol.js", "renewal.js", "scan.js", "door.js", "home.js",
		"common/clock.js", "common/i18n.js", "common/qrread.js", "style.css", "manifest.json", "vendor/qrcode.js", "vendor/jsQR.js"} {
		if _, err := fs.Stat(Wallet(), name); err != nil {
			t.Errorf("wallet %s not embedded: %v", name, err)
		}
		if !strings.Contains(string(wsw), "'"+name+"'") {
			t.Errorf("wallet sw.js does not precache %s", name)
		}
	}
	for _, app := range []fs.FS{Wallet(), Verify()} {
		if _, err := fs.Stat(app, "common/sw-core.js"); err != nil {
			t.Errorf("common/sw-core.js not served: %v", err)
		}
	}
}

func TestKioskHandler(t *testing.T) {
	var failing atomic.Bool
	srv := httptest.NewServer(Kiosk(func() (string, string, error) {
		if failing.Load() {
			return "", "", errors.New("no file")
		}
		return "JWS", "sha256:pin", nil
	}))
	defer srv.Close()
	get := func(path string) (int, string, http.Header) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}
	if code, body, h := get(BundlePath); code != 200 || body != "JWS" || h.Get("Cache-Control") != "no-store" || !strings.HasPrefix(h.Get("Content-Type"), "text/plain") {
		t.Fatalf("bundle: %d %q %v", code, body, h)
	}
	if code, body, _ := get(PinPath); code != 200 || body != "sha256:pin" {
		t.Fatalf("pin: %d %q", code, body)
	}
	if code, _, h := get("/verify/manifest.webmanifest"); code != 200 || h.Get("Content-Security-Policy") != CSP {
		t.Fatalf("manifest: %d csp %q", code, h.Get("Content-Security-Policy"))
	}
	failing.Store(true)
	if code, body, _ := get(BundlePath); code != http.StatusServiceUnavailable || strings.Contains(body, "no file") {
		t.Fatalf("bundle with a failing source: %d %q (detail must not reach the page)", code, body)
	}
	resp, err := http.Post(srv.URL+BundlePath, "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST bundle: %d", resp.StatusCode)
	}
}

// The page's meta CSP and the kiosk header say the same, so the app runs
// under one policy whether the issuer or the kiosk serves it.
func TestMetaCSPMatchesHeader(t *testing.T) {
	idx, err := fs.ReadFile(verifyFiles, "verify/index.html")
	if err != nil {
		t.Fatal(err)
	}
	meta := CSP[:strings.Index(CSP, "; frame-ancestors")] // not allowed in a meta tag
	if !strings.Contains(string(idx), `content="`+meta+`"`) {
		t.Fatalf("index.html meta CSP differs from web.CSP (%q)", meta)
	}
}
