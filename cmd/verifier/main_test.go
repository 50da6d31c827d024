package main

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"image"
	"image/png"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/healthcode/healthcode/attestation"
	"github.com/healthcode/healthcode/bundle"
	"github.com/healthcode/healthcode/policy"
	"github.com/healthcode/healthcode/qr"
	"github.com/healthcode/healthcode/token"
)

// t0 is the clock of every test; nothing sleeps.
var t0 = time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)

// configHome is the configuration directory the commands of a test see in
// place of the user's: never the real one. freshConfig gives a test its own.
var configHome string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "verifier-config-")
	if err != nil {
		panic(err)
	}
	configHome = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// freshConfig starts the test on an empty configuration directory and
// returns where the configuration will be.
func freshConfig(t *testing.T) string {
	t.Helper()
	configHome = t.TempDir()
	return filepath.Join(configHome, filepath.FromSlash(defaultConfigName))
}

// testEnv is an env on the test's configuration directory.
func testEnv(stdin io.Reader, stdout, stderr io.Writer, now func() time.Time) env {
	return env{stdin: stdin, stdout: stdout, stderr: stderr, now: now,
		configDir: func() (string, error) { return configHome, nil }}
}

func seedKey(n byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{n}, ed25519.SeedSize))
}

// issuer is a real signed bundle served by a real HTTP server on 127.0.0.1.
type issuer struct {
	bundleKey ed25519.PrivateKey
	pin       string
	signer    *token.Signer
	tokenKey  ed25519.PrivateKey
	srv       *httptest.Server
	withdrawn []string // kids the next signBundle lists as withdrawn

	mu    sync.Mutex
	body  string   // what the bundle URL serves
	paths []string // request paths seen
}

func newIssuer(t *testing.T) *issuer {
	t.Helper()
	freshConfig(t)
	is := &issuer{bundleKey: seedKey(1), tokenKey: seedKey(2)}
	is.pin = bundle.Fingerprint(is.bundleKey.Public().(ed25519.PublicKey))
	var err error
	is.signer, err = token.NewSigner(token.KeyID(is.tokenKey.Public().(ed25519.PublicKey)), is.tokenKey)
	if err != nil {
		t.Fatal(err)
	}
	is.serve(is.signBundle(t, 5, t0.Add(-time.Hour), false))
	is.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		is.mu.Lock()
		is.paths = append(is.paths, r.URL.Path)
		body := is.body
		is.mu.Unlock()
		if r.URL.Path != bundlePath {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/jose")
		w.Write([]byte(body))
	}))
	t.Cleanup(is.srv.Close)
	return is
}

func (is *issuer) serve(body string) {
	is.mu.Lock()
	is.body = body
	is.mu.Unlock()
}

// signBundle makes a bundle issued at iat: stale after a day, expired after
// a week.
func (is *issuer) signBundle(t *testing.T, seq uint64, iat time.Time, hint bool) string {
	t.Helper()
	b := &bundle.Bundle{
		Sequence:   seq,
		IssuedAt:   iat.Unix(),
		StaleAfter: iat.Add(24 * time.Hour).Unix(),
		Expires:    iat.Add(7 * 24 * time.Hour).Unix(),
		Keys: []bundle.Key{{
			ID: is.signer.KeyID(), Public: is.tokenKey.Public().(ed25519.PublicKey),
			NotBefore: t0.Add(-30 * 24 * time.Hour).Unix(), NotAfter: t0.Add(30 * 24 * time.Hour).Unix(),
			Status: bundle.StatusCurrent,
		}},
		Policy: bundle.Display{Version: 3, SkewSeconds: 300, HolderHint: hint, GranularitySeconds: 3600,
			Lifetime: bundle.Lifetimes{Green: 15 * 24 * 3600, Yellow: 15 * 24 * 3600, Red: 15 * 24 * 3600}},
		Withdrawn: is.withdrawn,
	}
	raw, err := bundle.Sign(b, is.bundleKey)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func (is *issuer) token(t *testing.T, c policy.Colour, nbf, exp time.Time, hint string) string {
	t.Helper()
	raw, err := is.signer.Sign(token.Claims{Colour: c.Code(), NotBefore: nbf.Unix(), Expires: exp.Unix(), Hint: hint, Version: 3})
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

type result struct {
	code           int
	stdout, stderr string
}

// runAt runs the command line with the clock at now.
func runAt(now time.Time, stdin string, args ...string) result {
	var out, errb bytes.Buffer
	e := testEnv(strings.NewReader(stdin), &out, &errb, func() time.Time { return now })
	code := e.run(args)
	return result{code, out.String(), errb.String()}
}

func (r result) want(t *testing.T, code int) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", r.code, code, r.stdout, r.stderr)
	}
}

// synced returns an issuer and a bundle file synced from it at t0.
func synced(t *testing.T) (*issuer, string) {
	t.Helper()
	is := newIssuer(t)
	file := filepath.Join(t.TempDir(), "bundle.json")
	runAt(t0, "", "sync", is.srv.URL, "--pin", is.pin, "--bundle", file).want(t, exitValid)
	return is, file
}

func TestSync(t *testing.T) {
	is := newIssuer(t)
	file := filepath.Join(t.TempDir(), "bundle.json")
	r := runAt(t0, "", "sync", is.srv.URL, "--pin", is.pin, "--bundle", file)
	r.want(t, exitValid)
	for _, s := range []string{"sequence 5", "1 keys", "stale after 2026-11-21T11:00:00Z", "expires 2026-11-27T11:00:00Z"} {
		if !strings.Contains(r.stdout, s) {
			t.Errorf("stdout lacks %q:\n%s", s, r.stdout)
		}
	}
	if is.paths[0] != bundlePath {
		t.Fatalf("fetched %q, want %q", is.paths[0], bundlePath)
	}
	st, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o644 {
		t.Fatalf("mode %v, want 0644", st.Mode().Perm())
	}
	// The bundle file holds the bundle as served, and no pin.
	if data, _ := os.ReadFile(file); string(data) != is.body+"\n" {
		t.Fatalf("file holds %q", data)
	}
	// The pin and the floor are in the configuration.
	cfgPath := filepath.Join(configHome, defaultConfigName)
	cf, err := loadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if cf != (config{Pin: is.pin, Floor: 5}) {
		t.Fatalf("configuration %+v", cf)
	}
	if !strings.Contains(r.stdout, "pin "+is.pin+" and rollback floor 5 kept in "+cfgPath) {
		t.Fatalf("stdout does not say where the pin is kept:\n%s", r.stdout)
	}
	// No temp files left behind.
	for _, dir := range []string{filepath.Dir(file), filepath.Dir(cfgPath)} {
		if ents, _ := os.ReadDir(dir); len(ents) != 1 {
			t.Fatalf("%s holds %d entries, want 1", dir, len(ents))
		}
	}

	// Later syncs need no pin.
	r = runAt(t0, "", "sync", is.srv.URL, "--bundle", file)
	r.want(t, exitValid)
}

func TestSyncURLForms(t *testing.T) {
	is := newIssuer(t)
	dir := t.TempDir()
	for i, u := range []string{is.srv.URL + "/", is.srv.URL + bundlePath} {
		file := filepath.Join(dir, "b"+string(rune('0'+i)))
		runAt(t0, "", "sync", "--pin", is.pin, "--bundle", file, u).want(t, exitValid)
	}
	for _, p := range is.paths {
		if p != bundlePath {
			t.Fatalf("fetched %q, want %q", p, bundlePath)
		}
	}
}

func TestSyncRefusesRollback(t *testing.T) {
	is, file := synced(t)
	before, _ := os.ReadFile(file)
	is.serve(is.signBundle(t, 4, t0.Add(-time.Hour), false))
	r := runAt(t0, "", "sync", is.srv.URL, "--pin", is.pin, "--bundle", file)
	r.want(t, exitInvalid)
	if !strings.Contains(r.stderr, "older than the one held") {
		t.Fatalf("stderr: %s", r.stderr)
	}
	if after, _ := os.ReadFile(file); !bytes.Equal(before, after) {
		t.Fatal("rollback changed the bundle file")
	}
	// A newer one is taken.
	is.serve(is.signBundle(t, 6, t0, false))
	r = runAt(t0, "", "sync", is.srv.URL, "--pin", is.pin, "--bundle", file)
	r.want(t, exitValid)
	if !strings.Contains(r.stdout, "sequence 6") {
		t.Fatalf("stdout: %s", r.stdout)
	}
}

func TestSyncRefusesWrongPin(t *testing.T) {
	is := newIssuer(t)
	file := filepath.Join(t.TempDir(), "bundle.json")
	other := bundle.Fingerprint(seedKey(9).Public().(ed25519.PublicKey))
	r := runAt(t0, "", "sync", is.srv.URL, "--pin", other, "--bundle", file)
	r.want(t, exitInvalid)
	if !strings.Contains(r.stderr, "not signed by the pinned key") {
		t.Fatalf("stderr: %s", r.stderr)
	}
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Fatalf("bundle file written despite the wrong pin: %v", err)
	}
}

func TestSyncRefusesExpiredBundle(t *testing.T) {
	is := newIssuer(t)
	is.serve(is.signBundle(t, 5, t0.Add(-8*24*time.Hour), false))
	file := filepath.Join(t.TempDir(), "bundle.json")
	r := runAt(t0, "", "sync", is.srv.URL, "--pin", is.pin, "--bundle", file)
	r.want(t, exitInvalid)
	if !strings.Contains(r.stderr, "bundle has expired") {
		t.Fatalf("stderr: %s", r.stderr)
	}
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Fatalf("bundle file written despite expiry: %v", err)
	}
}

func TestSyncFailures(t *testing.T) {
	file := filepath.Join(t.TempDir(), "bundle.json")
	pin := bundle.Fingerprint(seedKey(1).Public().(ed25519.PublicKey))

	big := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(bytes.Repeat([]byte("A"), bundle.MaxLen+1))
	}))
	defer big.Close()
	r := runAt(t0, "", "sync", big.URL, "--pin", pin, "--bundle", file)
	r.want(t, exitInvalid)
	if !strings.Contains(r.stderr, "larger than") {
		t.Fatalf("oversized: %s", r.stderr)
	}

	missing := httptest.NewServer(http.NotFoundHandler())
	defer missing.Close()
	r = runAt(t0, "", "sync", missing.URL, "--pin", pin, "--bundle", file)
	r.want(t, exitInvalid)
	if !strings.Contains(r.stderr, "404") {
		t.Fatalf("404: %s", r.stderr)
	}

	// A server that never answers: the timeout ends the wait.
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer slow.Close()
	defer close(release)
	r = runAt(t0, "", "sync", slow.URL, "--pin", pin, "--bundle", file, "--timeout", "200ms")
	r.want(t, exitInvalid)
	if !strings.Contains(r.stderr, "no answer within 200ms") {
		t.Fatalf("timeout: %s", r.stderr)
	}
}

func TestSyncUsage(t *testing.T) {
	pin := bundle.Fingerprint(seedKey(1).Public().(ed25519.PublicKey))
	for name, args := range map[string][]string{
		"no URL":       {"sync", "--pin", pin, "--bundle", "f"},
		"two URLs":     {"sync", "http://a", "http://b", "--pin", pin, "--bundle", "f"},
		"bad pin":      {"sync", "http://127.0.0.1:1", "--pin", "sha256:abc", "--bundle", "f"},
		"no bundle":    {"sync", "http://127.0.0.1:1", "--pin", pin},
		"ftp":          {"sync", "ftp://127.0.0.1/", "--pin", pin, "--bundle", "f"},
		"query":        {"sync", "http://127.0.0.1:1/?x=1", "--pin", pin, "--bundle", "f"},
		"zero timeout": {"sync", "http://127.0.0.1:1", "--pin", pin, "--bundle", "f", "--timeout", "0s"},
		"unknown flag": {"sync", "http://127.0.0.1:1", "--pin", pin, "--bundle", "f", "--insecure"},
	} {
		t.Run(name, func(t *testing.T) {
			r := runAt(t0, "", args...)
			r.want(t, exitUsage)
			if !strings.Contains(r.stderr, "verifier sync --help") {
				t.Fatalf("stderr lacks the usage hint: %s", r.stderr)
			}
		})
	}
}

func TestCheck(t *testing.T) {
	is, file := synced(t)
	green := is.token(t, policy.Green, t0.Add(-time.Hour), t0.Add(72*time.Hour), "")

	r := runAt(t0, "", "check", "--bundle", file, green)
	r.want(t, exitValid)
	if r.stdout != "GREEN  valid until 2026-11-23T12:00:00Z\n" || r.stderr != "" {
		t.Fatalf("stdout %q stderr %q", r.stdout, r.stderr)
	}

	// From standard input, flags after the argument.
	r = runAt(t0, green+"\n", "check", "-", "--bundle", file)
	r.want(t, exitValid)
	if !strings.HasPrefix(r.stdout, "GREEN ") {
		t.Fatalf("stdin: %q", r.stdout)
	}

	// --at moves the clock.
	r = runAt(t0, "", "check", "--bundle", file, "--at", "2026-11-23T12:05:00Z", green)
	r.want(t, exitInvalid)
	if !strings.HasPrefix(r.stdout, "INVALID  expired: ") {
		t.Fatalf("--at: %q", r.stdout)
	}
}

func TestCheckJSON(t *testing.T) {
	is, file := synced(t)
	red := is.token(t, policy.Red, t0.Add(-time.Hour), t0.Add(time.Hour), "")
	r := runAt(t0, "", "check", "--json", "--bundle", file, red)
	r.want(t, exitValid)
	var got map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("%v: %s", err, r.stdout)
	}
	want := map[string]any{
		"valid": true, "colour": "red", "not_before": "2026-11-20T11:00:00Z", "expires": "2026-11-20T13:00:00Z",
		"key_id": is.signer.KeyID(), "policy_version": float64(3), "bundle_stale": false,
	}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: got %v, want %v", k, got[k], v)
		}
	}

	cases := []struct{ name, token, reason string }{
		{"expired", is.token(t, policy.Green, t0.Add(-3*time.Hour), t0.Add(-2*time.Hour), ""), "expired"},
		{"not yet valid", is.token(t, policy.Green, t0.Add(time.Hour), t0.Add(2*time.Hour), ""), "not_yet_valid"},
		{"hint with hint off", is.token(t, policy.Green, t0.Add(-time.Hour), t0.Add(time.Hour), "AB1990"), "malformed"},
		{"garbage", "hello", "malformed"},
		{"tampered", red[:len(red)-3] + "AAA", "bad_signature"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := runAt(t0, "", "check", "--json", "--bundle", file, tc.token)
			r.want(t, exitInvalid)
			var got invalidJSON
			dec := json.NewDecoder(strings.NewReader(r.stdout))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&got); err != nil {
				t.Fatalf("%v: %s", err, r.stdout)
			}
			if got.Valid || got.Reason != tc.reason || got.Message == "" {
				t.Fatalf("got %+v, want reason %s", got, tc.reason)
			}
			if strings.Contains(r.stdout+r.stderr, "AB1990") {
				t.Fatal("output repeats the refused token's hint")
			}
		})
	}
}

func TestCheckHint(t *testing.T) {
	is := newIssuer(t)
	is.serve(is.signBundle(t, 5, t0.Add(-time.Hour), true))
	file := filepath.Join(t.TempDir(), "bundle.json")
	runAt(t0, "", "sync", is.srv.URL, "--pin", is.pin, "--bundle", file).want(t, exitValid)
	tok := is.token(t, policy.Yellow, t0.Add(-time.Hour), t0.Add(time.Hour), "AB1990")
	r := runAt(t0, "", "check", "--bundle", file, tok)
	r.want(t, exitValid)
	if r.stdout != "YELLOW  valid until 2026-11-20T13:00:00Z\nhint: AB1990\n" {
		t.Fatalf("stdout %q", r.stdout)
	}
	r = runAt(t0, "", "check", "--json", "--bundle", file, tok)
	r.want(t, exitValid)
	if !strings.Contains(r.stdout, `"hint":"AB1990"`) {
		t.Fatalf("json %s", r.stdout)
	}
}

func TestCheckBundleTimes(t *testing.T) {
	is, file := synced(t) // bundle issued t0-1h: stale at t0+23h, expired at t0+167h
	tok := is.token(t, policy.Green, t0, t0.Add(10*24*time.Hour), "")

	r := runAt(t0.Add(23*time.Hour), "", "check", "--bundle", file, tok)
	r.want(t, exitValid)
	if !strings.Contains(r.stderr, "warning: the trust bundle is stale") {
		t.Fatalf("no stale warning: %q", r.stderr)
	}

	r = runAt(t0.Add(167*time.Hour), "", "check", "--json", "--bundle", file, tok)
	r.want(t, exitInvalid)
	if !strings.Contains(r.stdout, `"reason":"bundle_expired"`) {
		t.Fatalf("expired bundle: %s", r.stdout)
	}
}

// A bundle file is only as trusted as its signature under the configured
// pin: one an attacker wrote (their own bundle key, and a legacy file naming
// their pin), one edited, one corrupted or garbage is refused at check, and
// the configuration is untouched.
func TestCheckRefusesAttackerBundleFile(t *testing.T) {
	is, file := synced(t)
	tok := is.token(t, policy.Green, t0.Add(-time.Hour), t0.Add(time.Hour), "")
	genuine, _ := os.ReadFile(file)
	cfgPath := filepath.Join(configHome, defaultConfigName)
	cfgBefore, _ := os.ReadFile(cfgPath)

	// The attacker's own bundle key, vouching for the real token key and a
	// month-long window, and their token, green.
	evil := &issuer{bundleKey: seedKey(8), signer: is.signer, tokenKey: is.tokenKey}
	evilBundle := evil.signBundle(t, 99, t0, false)
	evilPin := bundle.Fingerprint(evil.bundleKey.Public().(ed25519.PublicKey))
	parts := strings.Split(strings.TrimSpace(string(genuine)), ".")
	for name, tc := range map[string]struct{ content, msg string }{
		"attacker's bundle": {evilBundle, "bundle is not signed by the pinned key: key " + evilPin + ", pinned " + is.pin},
		"attacker's legacy file with their pin": {mustJSON(t, legacyBundleFile{Pin: evilPin, Bundle: evilBundle}),
			"bundle is not signed by the pinned key: key " + evilPin + ", pinned " + is.pin},
		"edited payload": {parts[0] + "." + parts[1][:10] + "x" + parts[1][11:] + "." + parts[2], "bundle signature does not verify"},
		"truncated":      {string(genuine[:len(genuine)/2]), "bundle is malformed"},
		"empty":          {"", "bundle is malformed: not a compact JWS"},
		"not a bundle":   {"pin=x", "bundle is malformed: not a compact JWS"},
		"extra json":     {`{"pin":"` + is.pin + `","bundle":"","trust":"all"}`, `is not a bundle file written by 'verifier sync': json: unknown field "trust"`},
		"binary garbage": {"\x00\xff\x1b[2J", "bundle is malformed: not a compact JWS"},
	} {
		t.Run(name, func(t *testing.T) {
			if err := os.WriteFile(file, []byte(tc.content), 0o644); err != nil {
				t.Fatal(err)
			}
			r := runAt(t0, "", "check", "--json", "--bundle", file, tok)
			r.want(t, exitInvalid)
			var got invalidJSON
			if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
				t.Fatalf("%v: %s", err, r.stdout)
			}
			if got.Reason != "no_bundle" || !strings.Contains(got.Message, tc.msg) {
				t.Fatalf("got %+v, want no_bundle and %q", got, tc.msg)
			}
			if cfg, _ := os.ReadFile(cfgPath); !bytes.Equal(cfg, cfgBefore) {
				t.Fatal("a check changed the configuration")
			}
		})
	}

	// The legacy form is still read, its pin ignored.
	legacy := mustJSON(t, legacyBundleFile{Pin: evilPin, Bundle: strings.TrimSpace(string(genuine))})
	if err := os.WriteFile(file, []byte(legacy), 0o644); err != nil {
		t.Fatal(err)
	}
	runAt(t0, "", "check", "--bundle", file, tok).want(t, exitValid)

	r := runAt(t0, "", "check", "--bundle", filepath.Join(t.TempDir(), "none.json"), tok)
	r.want(t, exitInvalid)
	if !strings.Contains(r.stdout, "run 'verifier sync' first") {
		t.Fatalf("missing file: %s", r.stdout)
	}
}

// The attacker's bundle is also refused by scan and serve.
func TestScanAndServeRefuseAttackerBundleFile(t *testing.T) {
	is, file := synced(t)
	evil := &issuer{bundleKey: seedKey(8), signer: is.signer, tokenKey: is.tokenKey}
	if err := os.WriteFile(file, []byte(evil.signBundle(t, 99, t0, false)), 0o644); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(t.TempDir(), "code.png")
	pngData, err := qr.PNG(is.token(t, policy.Green, t0.Add(-time.Hour), t0.Add(time.Hour), ""), 512)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(img, pngData, 0o644); err != nil {
		t.Fatal(err)
	}
	r := runAt(t0, "", "scan", "--bundle", file, img)
	r.want(t, exitInvalid)
	if !strings.HasPrefix(r.stdout, "INVALID  no_bundle: ") || !strings.Contains(r.stdout, "not signed by the pinned key") {
		t.Fatalf("scan: %q", r.stdout)
	}
	r = runAt(t0, "", "serve", "--bundle", file, "--addr", "127.0.0.1:0")
	r.want(t, exitInvalid)
	if !strings.Contains(r.stderr, "not signed by the pinned key") {
		t.Fatalf("serve: %q", r.stderr)
	}
}

// The rollback floor lives with the pin: deleting or corrupting the bundle
// file does not let an older bundle in at the next sync, and an older
// bundle file put back in its place is refused at check.
func TestRollbackFloorSurvivesTheBundleFile(t *testing.T) {
	is, file := synced(t) // sequence 5
	old := is.body
	is.serve(is.signBundle(t, 6, t0, false))
	runAt(t0, "", "sync", is.srv.URL, "--bundle", file).want(t, exitValid)
	tok := is.token(t, policy.Green, t0.Add(-time.Hour), t0.Add(time.Hour), "")

	// The older, genuine bundle put back in the file.
	if err := os.WriteFile(file, []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	r := runAt(t0, "", "check", "--bundle", file, tok)
	r.want(t, exitInvalid)
	if want := "INVALID  no_bundle: " + file + ": bundle is older than the one held: sequence 5, and this verifier has accepted 6; run 'verifier sync'\n"; r.stdout != want {
		t.Fatalf("stdout %q, want %q", r.stdout, want)
	}

	for name, damage := range map[string]func(){
		"deleted":   func() { os.Remove(file) },
		"corrupted": func() { os.WriteFile(file, []byte("\x00garbage"), 0o644) },
	} {
		t.Run(name, func(t *testing.T) {
			damage()
			is.serve(old) // the issuer's URL now serves the older bundle
			r := runAt(t0, "", "sync", is.srv.URL, "--bundle", file)
			r.want(t, exitInvalid)
			if !strings.Contains(r.stderr, "bundle is older than the one held: sequence 5, held 6") {
				t.Fatalf("stderr %q", r.stderr)
			}
		})
	}
	// A newer one is taken and raises the floor.
	is.serve(is.signBundle(t, 7, t0, false))
	runAt(t0, "", "sync", is.srv.URL, "--bundle", file).want(t, exitValid)
	if cf, err := loadConfig(filepath.Join(configHome, defaultConfigName)); err != nil || cf.Floor != 7 {
		t.Fatalf("configuration %+v, %v", cf, err)
	}
}

// The configuration itself: missing (check says to sync first, or take
// --pin), corrupted (refused everywhere, sync included: its floor cannot be
// guessed), and --pin, which beats it.
func TestConfiguration(t *testing.T) {
	is, file := synced(t)
	tok := is.token(t, policy.Green, t0.Add(-time.Hour), t0.Add(time.Hour), "")
	cfgPath := filepath.Join(configHome, defaultConfigName)
	good, _ := os.ReadFile(cfgPath)

	// --pin on the command, and the configuration's own.
	runAt(t0, "", "check", "--pin", is.pin, "--bundle", file, tok).want(t, exitValid)
	other := bundle.Fingerprint(seedKey(9).Public().(ed25519.PublicKey))
	r := runAt(t0, "", "check", "--pin", other, "--bundle", file, tok)
	r.want(t, exitInvalid)
	if !strings.Contains(r.stdout, "not signed by the pinned key") {
		t.Fatalf("--pin of another key: %s", r.stdout)
	}
	r = runAt(t0, "", "check", "--pin", "sha256:abc", "--bundle", file, tok)
	r.want(t, exitInvalid)
	if !strings.Contains(r.stdout, "--pin: pin must be sha256: followed by 64 hex digits") {
		t.Fatalf("bad --pin: %s", r.stdout)
	}

	// --config elsewhere: none there yet.
	elsewhere := filepath.Join(t.TempDir(), "v.json")
	r = runAt(t0, "", "check", "--config", elsewhere, "--bundle", file, tok)
	r.want(t, exitInvalid)
	if want := "INVALID  no_bundle: no pin: no verifier configuration at " + elsewhere +
		"; run 'verifier sync URL --pin FINGERPRINT' first, or pass --pin\n"; r.stdout != want {
		t.Fatalf("stdout %q, want %q", r.stdout, want)
	}
	runAt(t0, "", "check", "--config", elsewhere, "--pin", is.pin, "--bundle", file, tok).want(t, exitValid)
	r = runAt(t0, "", "sync", is.srv.URL, "--config", elsewhere, "--bundle", file)
	r.want(t, exitUsage)
	if !strings.Contains(r.stderr, "--pin (or --pin-qr) is required: no pin is configured yet in "+elsewhere) {
		t.Fatalf("sync without a pin: %s", r.stderr)
	}

	for name, content := range map[string]string{
		"garbage":     "\x00\x01",
		"bad pin":     `{"pin":"sha256:00","floor":3}`,
		"extra field": `{"pin":"` + is.pin + `","floor":3,"trust":"all"}`,
	} {
		t.Run(name, func(t *testing.T) {
			if err := os.WriteFile(cfgPath, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			for _, args := range [][]string{
				{"check", "--bundle", file, tok},
				{"check", "--pin", is.pin, "--bundle", file, tok},
			} {
				r := runAt(t0, "", args...)
				r.want(t, exitInvalid)
				if !strings.Contains(r.stdout, cfgPath+" is not a verifier configuration") {
					t.Fatalf("%q: %s", args, r.stdout)
				}
			}
			r := runAt(t0, "", "sync", is.srv.URL, "--pin", is.pin, "--bundle", file)
			r.want(t, exitInvalid)
			if !strings.Contains(r.stderr, cfgPath+" is not a verifier configuration") ||
				!strings.Contains(r.stderr, "starts the rollback floor afresh") {
				t.Fatalf("sync: %s", r.stderr)
			}
		})
	}
	if err := os.WriteFile(cfgPath, good, 0o644); err != nil {
		t.Fatal(err)
	}

	// A new pin given to sync replaces the old one, floor and all, saying so.
	other2 := &issuer{bundleKey: seedKey(6), signer: is.signer, tokenKey: is.tokenKey}
	otherPin := bundle.Fingerprint(other2.bundleKey.Public().(ed25519.PublicKey))
	is.serve(other2.signBundle(t, 1, t0, false))
	r = runAt(t0, "", "sync", is.srv.URL, "--pin", otherPin, "--bundle", file)
	r.want(t, exitValid)
	if !strings.Contains(r.stderr, "replacing the configured pin "+is.pin+" with "+otherPin+"; the rollback floor (sequence 5) starts afresh") {
		t.Fatalf("stderr %q", r.stderr)
	}
	if cf, _ := loadConfig(cfgPath); cf != (config{Pin: otherPin, Floor: 1}) {
		t.Fatalf("configuration %+v", cf)
	}
}

// contract 5: the pin poster's QR holds exactly the fingerprint; sync takes
// it from --pin as text and from --pin-qr as an image.
func TestSyncPinFromPosterQR(t *testing.T) {
	is := newIssuer(t)
	dir := t.TempDir()
	poster := filepath.Join(dir, "poster.png")
	png, err := qr.PNG(is.pin, 512)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(poster, png, 0o644); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "bundle.jws")
	r := runAt(t0, "", "sync", is.srv.URL, "--pin-qr", poster, "--bundle", file)
	r.want(t, exitValid)
	if cf, _ := loadConfig(filepath.Join(configHome, defaultConfigName)); cf.Pin != is.pin {
		t.Fatalf("configured pin %q, want %q", cf.Pin, is.pin)
	}

	// The QR's text pasted as --pin, upper-case hex and all.
	freshConfig(t)
	runAt(t0, "", "sync", is.srv.URL, "--pin", " sha256:"+strings.ToUpper(is.pin[7:])+"\n", "--bundle", file).want(t, exitValid)

	// A QR that holds something else, and one and the other at once.
	notPin := filepath.Join(dir, "other.png")
	png, _ = qr.PNG("https://evil.example/\x1b[2J", 512)
	os.WriteFile(notPin, png, 0o644)
	r = runAt(t0, "", "sync", is.srv.URL, "--pin-qr", notPin, "--bundle", file)
	r.want(t, exitInvalid)
	if want := `verifier sync: --pin-qr: ` + notPin + ` holds "https://evil.example/\\x1b[2…", not a pin: pin must be sha256: followed by 64 hex digits` + "\n"; r.stderr != want {
		t.Fatalf("stderr %q, want %q", r.stderr, want)
	}
	r = runAt(t0, "", "sync", is.srv.URL, "--pin-qr", poster, "--pin", is.pin, "--bundle", file)
	r.want(t, exitUsage)
	if !strings.Contains(r.stderr, "--pin and --pin-qr both give the pin; use one") {
		t.Fatalf("stderr %q", r.stderr)
	}
	r = runAt(t0, "", "sync", is.srv.URL, "--pin-qr", filepath.Join(dir, "missing.png"), "--bundle", file)
	r.want(t, exitInvalid)
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestScan(t *testing.T) {
	is, file := synced(t)
	dir := t.TempDir()
	tok := is.token(t, policy.Green, t0.Add(-time.Hour), t0.Add(2*time.Hour), "")
	pngData, err := qr.PNG(tok, 512)
	if err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "code.png")
	if err := os.WriteFile(img, pngData, 0o644); err != nil {
		t.Fatal(err)
	}
	r := runAt(t0, "", "scan", "--bundle", file, img)
	r.want(t, exitValid)
	if r.stdout != "GREEN  valid until 2026-11-20T14:00:00Z\n" {
		t.Fatalf("stdout %q", r.stdout)
	}
	r = runAt(t0, "", "scan", "--json", "--bundle", file, img)
	r.want(t, exitValid)
	if !strings.Contains(r.stdout, `"colour":"green"`) {
		t.Fatalf("json %s", r.stdout)
	}

	// A white square: no code.
	blank := image.NewGray(image.Rect(0, 0, 64, 64))
	for i := range blank.Pix {
		blank.Pix[i] = 0xff
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, blank); err != nil {
		t.Fatal(err)
	}
	blankFile := filepath.Join(dir, "blank.png")
	if err := os.WriteFile(blankFile, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	r = runAt(t0, "", "scan", "--json", "--bundle", file, blankFile)
	r.want(t, exitInvalid)
	if !strings.Contains(r.stdout, `"reason":"no_code"`) {
		t.Fatalf("blank: %s", r.stdout)
	}

	r = runAt(t0, "", "scan", "--bundle", file, filepath.Join(dir, "missing.png"))
	r.want(t, exitInvalid)
}

func TestUsage(t *testing.T) {
	for name, tc := range map[string]struct {
		args []string
		code int
		out  string // expected in stdout (exit 0) or stderr
	}{
		"no command":      {nil, exitUsage, "Usage:"},
		"unknown command": {[]string{"serve2"}, exitUsage, `unknown command "serve2"`},
		"help":            {[]string{"help"}, exitValid, "verifier sync URL"},
		"help check":      {[]string{"help", "check"}, exitValid, "TOKEN|-"},
		"help unknown":    {[]string{"help", "x"}, exitUsage, "unknown command"},
		"check -h":        {[]string{"check", "-h"}, exitValid, "Usage: verifier check"},
		"scan --help":     {[]string{"scan", "--help"}, exitValid, "Usage: verifier scan"},
		"sync -h":         {[]string{"sync", "-h"}, exitValid, "Usage: verifier sync"},
		"check no token":  {[]string{"check", "--bundle", "f"}, exitUsage, "want one TOKEN"},
		"check two":       {[]string{"check", "--bundle", "f", "a", "b"}, exitUsage, "got 2 arguments"},
		"check no bundle": {[]string{"check", "tok"}, exitUsage, "--bundle is required"},
		"check bad --at":  {[]string{"check", "--bundle", "f", "--at", "tomorrow", "tok"}, exitUsage, "not an RFC 3339 time"},
		"scan no image":   {[]string{"scan", "--bundle", "f"}, exitUsage, "want one IMAGE"},
		"after --":        {[]string{"check", "--bundle", "f", "--", "-x", "y"}, exitUsage, "got 2 arguments"},
	} {
		t.Run(name, func(t *testing.T) {
			r := runAt(t0, "", tc.args...)
			r.want(t, tc.code)
			text := r.stderr
			if tc.code == exitValid {
				text = r.stdout
			}
			if !strings.Contains(text, tc.out) {
				t.Fatalf("output lacks %q:\nstdout: %s\nstderr: %s", tc.out, r.stdout, r.stderr)
			}
		})
	}
}

// The token passed on the command line is never echoed in a usage error.
func TestUsageDoesNotEchoTokens(t *testing.T) {
	is, _ := synced(t)
	tok := is.token(t, policy.Green, t0.Add(-time.Hour), t0.Add(time.Hour), "")
	r := runAt(t0, "", "check", tok, tok)
	r.want(t, exitUsage)
	if strings.Contains(r.stderr, tok[:30]) {
		t.Fatalf("stderr echoes the token: %s", r.stderr)
	}
}

// A lab's attestation checked or scanned at the door is named for what it
// is (issue 14): not "malformed", and not a colour.
func TestLabAttestationIsNotAHealthCode(t *testing.T) {
	_, file := synced(t)
	att, err := attestation.Sign(seedKey(3), attestation.Claims{Attester: "lab-1", Kind: attestation.TestNegative,
		At: t0.Add(-time.Hour).Unix(), Expires: t0.Add(48 * time.Hour).Unix(), ID: "a1"})
	if err != nil {
		t.Fatal(err)
	}
	const want = "NOT A HEALTH CODE  lab_attestation: this is a lab's attestation, not a health code; the resident exchanges it for health codes in the wallet\n"
	r := runAt(t0, "", "check", "--bundle", file, att)
	r.want(t, exitInvalid)
	if r.stdout != want {
		t.Fatalf("check: %q, want %q", r.stdout, want)
	}
	img := filepath.Join(t.TempDir(), "att.png")
	pngData, err := qr.PNG(att, 512)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(img, pngData, 0o644); err != nil {
		t.Fatal(err)
	}
	r = runAt(t0, "", "scan", "--bundle", file, img)
	r.want(t, exitInvalid)
	if r.stdout != want {
		t.Fatalf("scan: %q, want %q", r.stdout, want)
	}
	r = runAt(t0, "", "scan", "--json", "--bundle", file, img)
	r.want(t, exitInvalid)
	if !strings.Contains(r.stdout, `"reason":"lab_attestation"`) {
		t.Fatalf("scan --json: %s", r.stdout)
	}
}

// Nothing a token says reaches the terminal raw (issue 11): a hint made to
// redraw the verdict line is refused, and the output holds no control
// character; so is an echoed command name.
func TestOutputIsEscaped(t *testing.T) {
	is := newIssuer(t)
	is.serve(is.signBundle(t, 5, t0.Add(-time.Hour), true))
	file := filepath.Join(t.TempDir(), "bundle.jws")
	runAt(t0, "", "sync", is.srv.URL, "--pin", is.pin, "--bundle", file).want(t, exitValid)
	tok := is.token(t, policy.Red, t0.Add(-time.Hour), t0.Add(time.Hour), "\x1b[1A\r\x1b[2KGREEN")
	for _, args := range [][]string{{"check", "--bundle", file, tok}, {"check", "--json", "--bundle", file, tok}} {
		r := runAt(t0, "", args...)
		r.want(t, exitInvalid)
		if strings.ContainsAny(r.stdout+r.stderr, "\x1b\r") || strings.Contains(r.stdout, "GREEN") {
			t.Fatalf("%q: output %q", args, r.stdout+r.stderr)
		}
		if !strings.Contains(r.stdout, "holder hint has a character at byte 0 outside") {
			t.Fatalf("%q: %q", args, r.stdout)
		}
	}
	r := runAt(t0, "", "\x1b[2Jsync")
	r.want(t, exitUsage)
	if strings.Contains(r.stderr, "\x1b") || !strings.Contains(r.stderr, `unknown command "\\x1b[2Jsync"`) {
		t.Fatalf("stderr %q", r.stderr)
	}
}

// 'verifier help COMMAND' and 'verifier COMMAND --help' print the same
// help, on stdout, in --flag style; unknown commands are named as unknown.
func TestHelpPerCommand(t *testing.T) {
	for name, usage := range usages {
		h := runAt(t0, "", "help", name)
		h.want(t, exitValid)
		for _, flagForm := range []string{"--help", "-h", "-help"} {
			r := runAt(t0, "", name, flagForm)
			r.want(t, exitValid)
			if r.stdout != h.stdout || r.stdout != usage {
				t.Fatalf("%s %s printed %q, want the command's help", name, flagForm, r.stdout)
			}
		}
		if !strings.HasPrefix(usage, "Usage: verifier "+name+" ") {
			t.Fatalf("%s help starts %q", name, usage[:40])
		}
		for _, line := range strings.Split(usage, "\n") {
			if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], "-") && !strings.HasPrefix(f[0], "--") {
				t.Fatalf("%s help lists a single-dash flag: %q", name, line)
			}
		}
		if !strings.Contains(usage, "--config FILE") || !strings.Contains(usage, "--bundle FILE") {
			t.Fatalf("%s help lacks --config or --bundle", name)
		}
	}
	for args, want := range map[string]string{
		"frobnicate":      `verifier: unknown command "frobnicate" (commands: sync, check, scan, serve, help)` + "\nrun 'verifier help' for usage\n",
		"help frobnicate": `verifier help: unknown command "frobnicate" (commands: sync, check, scan, serve)` + "\n",
	} {
		r := runAt(t0, "", strings.Fields(args)...)
		r.want(t, exitUsage)
		if r.stderr != want {
			t.Fatalf("%s: stderr %q, want %q", args, r.stderr, want)
		}
	}
	r := runAt(t0, "", "check", "--frobnicate")
	r.want(t, exitUsage)
	if want := "verifier check: unknown flag --frobnicate\nrun 'verifier check --help' for usage\n"; r.stderr != want {
		t.Fatalf("unknown flag: %q", r.stderr)
	}
	r = runAt(t0, "", "check", "--bundle")
	r.want(t, exitUsage)
	if !strings.HasPrefix(r.stderr, "verifier check: --bundle needs a value\n") {
		t.Fatalf("flag without value: %q", r.stderr)
	}
	r = runAt(t0, "", "sync", "http://x", "--timeout", "soon")
	r.want(t, exitUsage)
	if !strings.HasPrefix(r.stderr, `verifier sync: invalid value "soon" for --timeout: parse error`) {
		t.Fatalf("bad value: %q", r.stderr)
	}
}

// What an issuer's server says is escaped too: a status line made to clear
// the screen reaches stderr as text.
func TestSyncEscapesTheServer(t *testing.T) {
	freshConfig(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 4096)
		c.Read(buf)
		c.Write([]byte("HTTP/1.1 503 Busy\x1b[2J\x1b[HGREEN\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"))
	}()
	pin := bundle.Fingerprint(seedKey(1).Public().(ed25519.PublicKey))
	r := runAt(t0, "", "sync", "http://"+ln.Addr().String(), "--pin", pin, "--bundle", filepath.Join(t.TempDir(), "b.jws"))
	r.want(t, exitInvalid)
	if strings.Contains(r.stderr, "\x1b") || !strings.Contains(r.stderr, `503 Busy\x1b[2J\x1b[HGREEN`) {
		t.Fatalf("stderr %q", r.stderr)
	}
}

// After the issuer revokes a key, a verifier that syncs refuses the key's
// tokens, saying the key was withdrawn, and keeps the new key's; the
// bundle's caps refuse a month-long code even from a key it holds.
func TestCheckAfterRevocation(t *testing.T) {
	is, file := synced(t)
	old := is.token(t, policy.Green, t0.Add(-time.Hour), t0.Add(time.Hour), "")
	runAt(t0, "", "check", "--bundle", file, old).want(t, exitValid)

	oldKid := is.signer.KeyID()
	is.tokenKey = seedKey(3)
	var err error
	if is.signer, err = token.NewSigner(token.KeyID(is.tokenKey.Public().(ed25519.PublicKey)), is.tokenKey); err != nil {
		t.Fatal(err)
	}
	is.withdrawn = []string{oldKid}
	is.serve(is.signBundle(t, 6, t0, false))
	runAt(t0, "", "sync", is.srv.URL, "--bundle", file).want(t, exitValid)

	r := runAt(t0, "", "check", "--bundle", file, old)
	r.want(t, exitInvalid)
	if want := "INVALID  key_withdrawn: token is signed by a key the issuer has withdrawn: kid \"" + oldKid +
		"\" was revoked; its tokens are no longer honoured\n"; r.stdout != want {
		t.Fatalf("stdout %q, want %q", r.stdout, want)
	}
	runAt(t0, "", "check", "--bundle", file, is.token(t, policy.Green, t0.Add(-time.Hour), t0.Add(time.Hour), "")).want(t, exitValid)

	month := is.token(t, policy.Green, t0.Add(-time.Hour), t0.Add(30*24*time.Hour), "")
	r = runAt(t0, "", "check", "--json", "--bundle", file, month)
	r.want(t, exitInvalid)
	if !strings.Contains(r.stdout, `"reason":"window_too_long"`) {
		t.Fatalf("month-long token: %s", r.stdout)
	}
	r = runAt(t0, "", "check", "--json", "--bundle", file, is.token(t, policy.Green, t0.Add(-time.Minute), t0.Add(time.Hour), ""))
	r.want(t, exitInvalid)
	if !strings.Contains(r.stdout, `"reason":"off_grid"`) {
		t.Fatalf("off-grid token: %s", r.stdout)
	}
}
