package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/healthcode/healthcode/bundle"
	"github.com/healthcode/healthcode/internal/testcert"
	"github.com/healthcode/healthcode/token"
	"github.com/healthcode/healthcode/web"
	"github.com/healthcode/healthcode/web/webtest"
)

// kioskBundle writes a bundle file as sync would, valid around now, and
// returns its path, the signed bundle and the pin.
func kioskBundle(t *testing.T, dir string, seq uint64, now time.Time) (path, jws, pin string) {
	t.Helper()
	bk := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
	tpub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b := &bundle.Bundle{
		Sequence: seq, IssuedAt: now.Add(-time.Hour).Unix(), StaleAfter: now.Add(24 * time.Hour).Unix(),
		Expires: now.Add(7 * 24 * time.Hour).Unix(),
		Keys: []bundle.Key{{ID: token.KeyID(tpub), Public: tpub, NotBefore: now.Add(-24 * time.Hour).Unix(),
			NotAfter: now.Add(30 * 24 * time.Hour).Unix(), Status: bundle.StatusCurrent}},
		Policy: bundle.Display{Version: 1, SkewSeconds: 60, GranularitySeconds: 60,
			Lifetime: bundle.Lifetimes{Green: 24 * 3600, Yellow: 24 * 3600, Red: 24 * 3600}},
	}
	jws, err = bundle.Sign(b, bk)
	if err != nil {
		t.Fatal(err)
	}
	pin = bundle.Fingerprint(bk.Public().(ed25519.PublicKey))
	path = filepath.Join(dir, "bundle.json")
	if err := saveBundle(path, jws); err != nil {
		t.Fatal(err)
	}
	if err := saveConfig(filepath.Join(configHome, defaultConfigName), config{Pin: pin}); err != nil {
		t.Fatal(err)
	}
	return path, jws, pin
}

// startKiosk runs serveKiosk on 127.0.0.1:0 until the test ends.
func startKiosk(t *testing.T, file string, now time.Time) (base string, stderr *bytes.Buffer) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	stderr = &bytes.Buffer{}
	c := cmd{env: testEnv(nil, &out, stderr, func() time.Time { return now }), name: "serve", usage: serveUsage}
	none := ""
	srv, err := c.kiosk(file, trustFlags{config: &none, pin: &none})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.serveKiosk(ctx, ln, srv, "http") }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serveKiosk: %v", err)
		}
	})
	return "http://" + ln.Addr().String(), stderr
}

func get(t *testing.T, url string) (int, string, http.Header) {
	t.Helper()
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body), resp.Header
}

func TestServeKiosk(t *testing.T) {
	if err := web.VerifyBuilt(); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	dir := t.TempDir()
	file, jws, pin := kioskBundle(t, dir, 1, now)
	base, _ := startKiosk(t, file, now)

	if code, body, h := get(t, base+"/verify/"); code != 200 || !strings.Contains(body, `src="app.js"></script>`) ||
		!strings.Contains(h.Get("Content-Security-Policy"), "connect-src 'self'") {
		t.Fatalf("GET /verify/: %d %q csp=%q", code, body[:min(len(body), 80)], h.Get("Content-Security-Policy"))
	}
	if code, _, h := get(t, base+"/"); code != http.StatusFound || h.Get("Location") != "/verify/" {
		t.Fatalf("GET /: %d Location %q", code, h.Get("Location"))
	}
	if code, body, _ := get(t, base+web.BundlePath); code != 200 || body != jws {
		t.Fatalf("GET bundle: %d, body is the file's bundle: %v", code, body == jws)
	}
	if code, body, _ := get(t, base+web.PinPath); code != 200 || body != pin {
		t.Fatalf("GET pin: %d %q, want %q", code, body, pin)
	}
	if code, _, _ := get(t, base+"/verify/verifier.wasm"); code != 200 {
		t.Fatalf("GET wasm: %d", code)
	}

	// A later sync replaces the file; the next page load gets the new bundle.
	_, jws2, _ := kioskBundle(t, dir, 2, now)
	if _, body, _ := get(t, base+web.BundlePath); body != jws2 || jws2 == jws {
		t.Fatal("kiosk did not pick up the replaced bundle file")
	}
}

func TestServeKioskInBrowser(t *testing.T) {
	if err := web.VerifyBuilt(); err != nil {
		t.Fatal(err)
	}
	now := time.Now() // the browser's clock is the real one
	file, _, pin := kioskBundle(t, t.TempDir(), 1, now)
	base, _ := startKiosk(t, file, now)
	b := webtest.Start(t)
	b.Do(t, chromedp.Navigate(base+"/"))
	b.WaitFor(t, `document.body.dataset.engine === 'ready' && document.body.dataset.bundle === 'ok'`, 30*time.Second,
		`document.body.dataset.engine + ' ' + document.body.dataset.bundle`)
	if got := webtest.Eval[string](t, b, `location.pathname + ' ' + localStorage.getItem('healthcode.pin')`); got != "/verify/ "+pin {
		t.Fatalf("page at %q, want /verify/ pinned to %s", got, pin)
	}
	b.Screenshot(t, "kiosk")
}

func TestServeKioskBadFile(t *testing.T) {
	var stderr bytes.Buffer
	code := testEnv(nil, io.Discard, &stderr, time.Now).serve([]string{"--bundle", filepath.Join(t.TempDir(), "missing.json"), "--addr", "127.0.0.1:0"})
	if code != exitInvalid || !strings.Contains(stderr.String(), "missing.json") {
		t.Fatalf("serve with a missing file: exit %d, stderr %q", code, stderr.String())
	}
}

func TestServeKioskWarnsStaleAndExpired(t *testing.T) {
	if err := web.VerifyBuilt(); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	file, _, _ := kioskBundle(t, t.TempDir(), 1, now)
	for _, c := range []struct {
		at   time.Time
		want string
	}{
		{now.Add(2 * 24 * time.Hour), "is stale: run 'verifier sync' soon"},
		{now.Add(8 * 24 * time.Hour), "has expired: the page will refuse every code"},
	} {
		_, stderr := startKiosk(t, file, c.at) // kiosk() warns before it returns
		if !strings.Contains(stderr.String(), c.want) {
			t.Errorf("at %s stderr %q, want %q", c.at, stderr.String(), c.want)
		}
	}
}

func TestServeUsage(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{}, "--bundle is required"},
		{[]string{"--bundle", "b.json", "extra"}, "want no arguments, got 1"},
		{[]string{"--bundle", "b.json", "--addr", "0.0.0.0:8088"}, `--addr: "0.0.0.0" is not a loopback address`},
		{[]string{"--bundle", "b.json", "--addr", "192.168.1.2:80"}, `--addr: "192.168.1.2" is not a loopback address`},
		{[]string{"--bundle", "b.json", "--addr", "8088"}, `--addr: "8088" is not host:port`},
	} {
		var stdout, stderr bytes.Buffer
		code := testEnv(nil, &stdout, &stderr, time.Now).serve(c.args)
		if code != exitUsage || !strings.Contains(stderr.String(), c.want) {
			t.Errorf("serve %q: exit %d, stderr %q; want %d and %q", c.args, code, stderr.String(), exitUsage, c.want)
		}
	}
}

// With --tls-cert and --tls-key the kiosk serves HTTPS (so tablets on the
// venue's network get the camera); it stops cleanly on SIGTERM.
func TestServeKioskTLS(t *testing.T) {
	if err := web.VerifyBuilt(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	file, _, _ := kioskBundle(t, dir, 1, time.Now())
	certFile, keyFile, pool := testcert.SelfSigned(t, dir)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	var stdout, stderr bytes.Buffer
	done := make(chan int, 1)
	go func() {
		done <- testEnv(nil, &stdout, &stderr, time.Now).serve([]string{"--bundle", file, "--addr", addr, "--tls-cert", certFile, "--tls-key", keyFile})
	}()
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	var status int
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		resp, err := client.Get("https://" + addr + "/verify/")
		if err == nil {
			status = resp.StatusCode
			resp.Body.Close()
			break
		}
		select {
		case code := <-done:
			t.Fatalf("serve exited %d: %s", code, stderr.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	if status != http.StatusOK {
		t.Fatalf("GET https://%s/verify/: status %d", addr, status)
	}
	if _, err := (&http.Client{Timeout: 2 * time.Second}).Get("https://" + addr + "/verify/"); err == nil {
		t.Fatal("a client that does not trust the certificate connected")
	}
	// serve waits for SIGTERM through signal.NotifyContext, which is
	// registered by now (it answered), so the signal does not kill the test.
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-done:
		if code != exitValid {
			t.Fatalf("serve exited %d: %s", code, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not stop on SIGTERM")
	}
	if !strings.Contains(stdout.String(), "https://"+addr+"/verify/") {
		t.Fatalf("stdout %q does not name the https address", stdout.String())
	}
}

func TestServeTLSFlagsGoTogether(t *testing.T) {
	var stderr bytes.Buffer
	code := testEnv(nil, io.Discard, &stderr, time.Now).serve([]string{"--bundle", "b.json", "--tls-cert", "c.pem"})
	if code != exitUsage || !strings.Contains(stderr.String(), "--tls-cert and --tls-key go together") {
		t.Fatalf("exit %d, stderr %q", code, stderr.String())
	}
}
