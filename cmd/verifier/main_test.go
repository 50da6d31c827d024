package main

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"image"
	"image/png"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/healthcode/healthcode/bundle"
	"github.com/healthcode/healthcode/policy"
	"github.com/healthcode/healthcode/qr"
	"github.com/healthcode/healthcode/token"
)

// t0 is the clock of every test; nothing sleeps.
var t0 = time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)

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

	mu    sync.Mutex
	body  string   // what the bundle URL serves
	paths []string // request paths seen
}

func newIssuer(t *testing.T) *issuer {
	t.Helper()
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
	e := env{stdin: strings.NewReader(stdin), stdout: &out, stderr: &errb, now: func() time.Time { return now }}
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
	var bf bundleFile
	data, _ := os.ReadFile(file)
	if err := json.Unmarshal(data, &bf); err != nil {
		t.Fatal(err)
	}
	if bf.Pin != is.pin || bf.Bundle != is.body {
		t.Fatalf("file holds %+v", bf)
	}
	// No temp files left behind.
	if ents, _ := os.ReadDir(filepath.Dir(file)); len(ents) != 1 {
		t.Fatalf("directory holds %d entries, want 1", len(ents))
	}
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
		"no pin":       {"sync", "http://127.0.0.1:1", "--bundle", "f"},
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
			if !strings.Contains(r.stderr, "verifier sync -h") {
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

func TestCheckRefusesEditedBundleFile(t *testing.T) {
	is, file := synced(t)
	tok := is.token(t, policy.Green, t0.Add(-time.Hour), t0.Add(time.Hour), "")
	data, _ := os.ReadFile(file)
	var bf bundleFile
	if err := json.Unmarshal(data, &bf); err != nil {
		t.Fatal(err)
	}

	// A bundle signed by another key, with the pin edited to match it.
	evil := &issuer{bundleKey: seedKey(8), signer: is.signer, tokenKey: is.tokenKey}
	forged := bundleFile{Pin: bf.Pin, Bundle: evil.signBundle(t, 99, t0, false)}
	// A payload byte changed under the original signature.
	parts := strings.Split(bf.Bundle, ".")
	edited := bundleFile{Pin: bf.Pin, Bundle: parts[0] + "." + parts[1][:10] + "x" + parts[1][11:] + "." + parts[2]}

	for name, content := range map[string]string{
		"other key": mustJSON(t, forged),
		"edited":    mustJSON(t, edited),
		"not json":  "pin=x",
		"extra":     `{"pin":"` + bf.Pin + `","bundle":"` + bf.Bundle + `","trust":"all"}`,
	} {
		t.Run(name, func(t *testing.T) {
			if err := os.WriteFile(file, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			r := runAt(t0, "", "check", "--json", "--bundle", file, tok)
			r.want(t, exitInvalid)
			if !strings.Contains(r.stdout, `"reason":"no_bundle"`) {
				t.Fatalf("stdout %s", r.stdout)
			}
		})
	}

	r := runAt(t0, "", "check", "--bundle", filepath.Join(t.TempDir(), "none.json"), tok)
	r.want(t, exitInvalid)
	if !strings.Contains(r.stdout, "run 'verifier sync' first") {
		t.Fatalf("missing file: %s", r.stdout)
	}
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
