package web_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/healthcode/healthcode/web"
	"github.com/healthcode/healthcode/web/webtest"
)

// TestServiceWorkersRefuseRedirects: both apps' service workers (one
// shared core) keep their cached file when the server starts redirecting
// it; the redirect's target never becomes the app's file.
func TestServiceWorkersRefuseRedirects(t *testing.T) {
	requireBuilt(t)
	f := newFixture(t)
	jws := f.freshBundle(t, false, false)
	var redirect atomic.Bool
	var targetHits atomic.Int64
	mux := http.NewServeMux()
	for _, app := range []struct {
		prefix string
		fsys   http.Handler
	}{{"/verify", http.FileServerFS(web.Verify())}, {"/wallet", http.FileServerFS(web.Wallet())}} {
		h := http.StripPrefix(app.prefix, app.fsys)
		mux.Handle(app.prefix+"/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Cache-Control", "no-cache")
			if redirect.Load() && strings.HasSuffix(r.URL.Path, "/style.css") {
				http.Redirect(w, r, "/elsewhere.css", http.StatusFound)
				return
			}
			h.ServeHTTP(w, r)
		}))
	}
	mux.HandleFunc("/elsewhere.css", func(w http.ResponseWriter, r *http.Request) {
		targetHits.Add(1)
		w.Header().Set("Content-Type", "text/css")
		fmt.Fprint(w, "body { background: rgb(255, 0, 0) !important; }")
	})
	mux.HandleFunc(web.BundlePath, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, jws) })
	mux.HandleFunc(web.PinPath, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, f.pin) })
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	for _, app := range []string{"verify", "wallet"} {
		t.Run(app, func(t *testing.T) {
			redirect.Store(false)
			b := webtest.Start(t)
			b.Do(t, chromedp.Navigate(srv.URL+"/"+app+"/"))
			b.WaitFor(t, `navigator.serviceWorker.controller !== null`, 30*time.Second, `String(navigator.serviceWorker.controller)`)
			cached := func() string {
				return webtest.Eval[string](t, b, `caches.keys().then(async (names) => { for (const n of names) { const r = await (await caches.open(n)).match('/`+app+`/style.css'); if (r) return r.text(); } return ''; })`)
			}
			before := cached()
			if before == "" || strings.Contains(before, "255, 0, 0") {
				t.Fatalf("cached style.css before the redirect: %q", before)
			}
			redirect.Store(true)
			hits := targetHits.Load()
			// The worker serves its copy and refreshes it in the background;
			// the refresh follows the redirect.
			b.Do(t, chromedp.Reload())
			deadline := time.Now().Add(10 * time.Second)
			for targetHits.Load() == hits {
				if time.Now().After(deadline) {
					t.Fatal("the worker never refreshed style.css")
				}
				time.Sleep(20 * time.Millisecond) // polling the server's counter
			}
			b.Do(t, chromedp.Reload())
			b.WaitFor(t, `document.readyState === 'complete'`, 10*time.Second, "")
			if got := cached(); got != before {
				t.Fatalf("after a redirected refresh the cache holds %q", got)
			}
			if bg := webtest.Eval[string](t, b, `getComputedStyle(document.body).backgroundColor`); bg == "rgb(255, 0, 0)" {
				t.Fatal("the redirect's target styles the app")
			}
		})
	}
}
