// Package web holds the browser apps the issuer serves: the verifier web app
// for venue staff (/verify/) and the resident wallet (/wallet/), embedded so
// the issuer and the kiosk ship as single binaries.
//
// The verifier app runs the Go verifier package compiled to WebAssembly
// (web/wasm), so the browser and the CLI apply one implementation of the
// rules. The module and Go's wasm_exec.js are build artifacts (make wasm,
// see web.mk); without them Verify serves a page that says so instead of a
// broken app.
package web

import (
	"bytes"
	"embed"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"strings"
	"time"
)

//go:embed all:verify
var verifyFiles embed.FS

//go:embed wallet
var walletFiles embed.FS

// commonFiles are the modules both apps share (translations, clock, QR
// reading, service-worker core). Each app serves them as its own
// common/ directory, so either works alone under its own prefix.
//
//go:embed common
var commonFiles embed.FS

// Build artifacts the verifier app cannot run without.
const (
	WasmFile     = "verifier.wasm"
	WasmExecFile = "wasm_exec.js"
)

// Paths of the trust bundle and its pin, relative to the origin. The app
// fetches both on first load (trust on first use from the origin it came
// from) and the bundle again on later loads.
const (
	BundlePath = "/.well-known/healthcode/bundle"
	PinPath    = "/.well-known/healthcode/pin"
)

// Verify returns the verifier web app, rooted at its index.html. If the
// WebAssembly module was not built into this binary, every page of it is a
// notice saying so (see VerifyBuilt).
func Verify() fs.FS {
	sub, err := fs.Sub(verifyFiles, "verify")
	if err != nil {
		panic(err) // the directory is embedded at compile time
	}
	return withBuildCheck(withCommon(sub))
}

// Wallet returns the resident wallet app, rooted at its index.html.
func Wallet() fs.FS {
	sub, err := fs.Sub(walletFiles, "wallet")
	if err != nil {
		panic(err)
	}
	return withCommon(sub)
}

// withCommon adds the shared modules to app as common/.
func withCommon(app fs.FS) fs.FS {
	common, err := fs.Sub(commonFiles, "common")
	if err != nil {
		panic(err)
	}
	return commonFS{app: app, common: common}
}

type commonFS struct{ app, common fs.FS }

func (c commonFS) Open(name string) (fs.File, error) {
	if name == "common" {
		return c.common.Open(".")
	}
	if rest, ok := strings.CutPrefix(name, "common/"); ok {
		return c.common.Open(rest)
	}
	return c.app.Open(name)
}

// VerifyBuilt reports which build artifact, if any, is missing from the
// embedded verifier app, so a server can say so at start.
func VerifyBuilt() error {
	sub, err := fs.Sub(verifyFiles, "verify")
	if err != nil {
		return err
	}
	return missingArtifact(sub)
}

func missingArtifact(fsys fs.FS) error {
	for _, name := range []string{WasmFile, WasmExecFile} {
		st, err := fs.Stat(fsys, name)
		if err != nil || st.Size() == 0 {
			return fmt.Errorf("web: verifier app was built without %s: run `make wasm` before building the binary", name)
		}
	}
	return nil
}

// notBuiltPage replaces index.html when the module is missing. Static file
// servers cannot send a 503 from an fs.FS; a page that tells the operator
// what to do is the next best thing.
const notBuiltPage = `<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>Verifier not built</title></head>
<body style="font:1.4rem system-ui,sans-serif;margin:2rem;background:#fff;color:#000">
<h1>Verifier unavailable</h1>
<p>This server was built without the verifier's WebAssembly module.
The operator must run <code>make wasm</code> and rebuild.</p>
<p lang="zh-Hans">此服务器构建时缺少验证程序模块，请联系管理员。</p>
</body></html>
`

// withBuildCheck returns fsys unchanged when the artifacts are there, and
// otherwise an FS whose index.html is the notice and which has no service
// worker, so a browser does not cache the broken app.
func withBuildCheck(fsys fs.FS) fs.FS {
	if missingArtifact(fsys) == nil {
		return fsys
	}
	return notBuiltFS{fsys}
}

type notBuiltFS struct{ fs.FS }

func (n notBuiltFS) Open(name string) (fs.File, error) {
	switch name {
	case "index.html":
		return &memFile{name: "index.html", r: bytes.NewReader([]byte(notBuiltPage))}, nil
	case "sw.js":
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	return n.FS.Open(name)
}

// memFile is a read-only in-memory fs.File.
type memFile struct {
	name string
	r    *bytes.Reader
}

func (f *memFile) Stat() (fs.FileInfo, error) { return memInfo{f}, nil }
func (f *memFile) Read(p []byte) (int, error) { return f.r.Read(p) }
func (f *memFile) Seek(off int64, whence int) (int64, error) {
	return f.r.Seek(off, whence)
}
func (f *memFile) Close() error { return nil }

type memInfo struct{ f *memFile }

func (i memInfo) Name() string       { return i.f.name }
func (i memInfo) Size() int64        { return i.f.r.Size() }
func (i memInfo) Mode() fs.FileMode  { return 0o444 }
func (i memInfo) ModTime() time.Time { return time.Time{} }
func (i memInfo) IsDir() bool        { return false }
func (i memInfo) Sys() any           { return nil }

// BundleSource returns the signed trust bundle and the pin of the key that
// signs it. The kiosk reads them from a file on each request, so a
// `verifier sync` that replaces the file is picked up without a restart.
type BundleSource func() (jws, pin string, err error)

// Kiosk is the handler `verifier serve` runs on the venue's own machine: the
// verifier app at /verify/ and the bundle and pin at the same well-known
// paths the issuer uses, so the app is the same page in both places.
func Kiosk(src BundleSource) http.Handler {
	mux := http.NewServeMux()
	app := http.StripPrefix("/verify", http.FileServerFS(Verify()))
	mux.Handle("GET /verify/", noCache(app))
	mux.Handle("GET /{$}", http.RedirectHandler("/verify/", http.StatusFound))
	serve := func(pick func(jws, pin string) string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			jws, pin, err := src()
			if err != nil {
				// The operator sees the detail on the console; the page only
				// needs to know there is no bundle.
				http.Error(w, "trust bundle unavailable", http.StatusServiceUnavailable)
				return
			}
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Header().Set("Cache-Control", "no-store")
			io.WriteString(w, pick(jws, pin))
		}
	}
	mux.Handle("GET "+BundlePath, serve(func(jws, _ string) string { return jws }))
	mux.Handle("GET "+PinPath, serve(func(_, pin string) string { return pin }))
	return securityHeaders(mux)
}

// noCache makes the browser revalidate the app's files; the service worker
// keeps the offline copy.
func noCache(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		h.ServeHTTP(w, r)
	})
}

// CSP is the policy the app runs under: nothing but its own origin, and
// WebAssembly compilation. index.html carries the same policy in a meta tag
// so it holds under the issuer too.
const CSP = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; connect-src 'self'; " +
	"img-src 'self' data: blob:; media-src 'self' blob: mediastream:; style-src 'self'; " +
	"object-src 'none'; base-uri 'none'; frame-ancestors 'none'"

func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", CSP)
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("Permissions-Policy", "camera=(self), microphone=(), geolocation=()")
		h.ServeHTTP(w, r)
	})
}
