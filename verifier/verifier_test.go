package verifier

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/healthcode/healthcode/attestation"
	"github.com/healthcode/healthcode/policy"
	"github.com/healthcode/healthcode/token"
)

func TestValidColours(t *testing.T) {
	f := newFixture(t, false)
	for _, c := range policy.Colours {
		t.Run(c.String(), func(t *testing.T) {
			cl := validClaims(c)
			res, err := Verify(sign(t, f.cur, cl), f.b, t0)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			want := Result{
				Colour:        c,
				NotBefore:     time.Unix(cl.NotBefore, 0).UTC(),
				Expires:       time.Unix(cl.Expires, 0).UTC(),
				KeyID:         f.cur.KeyID(),
				PolicyVersion: 3,
			}
			if res != want {
				t.Fatalf("got %+v\nwant %+v", res, want)
			}
		})
	}
}

func TestHint(t *testing.T) {
	f := newFixture(t, true)
	for _, hint := range []string{"AB1990", "ZS 1990", "a-b", "0123456789abcdef"} {
		c := validClaims(policy.Yellow)
		c.Hint = hint
		res, err := Verify(sign(t, f.cur, c), f.b, t0)
		if err != nil {
			t.Fatalf("hint %q: %v", hint, err)
		}
		if res.Hint != hint || res.Colour != policy.Yellow {
			t.Fatalf("hint %q: got %+v", hint, res)
		}
	}
	// Hints on in the policy, none in the token: fine.
	res, err := Verify(sign(t, f.cur, validClaims(policy.Green)), f.b, t0)
	if err != nil || res.Hint != "" {
		t.Fatalf("no hint: %+v, %v", res, err)
	}
}

// A hint outside the documented set is refused even under a valid
// signature: printed at the door, it could pose as a verdict.
func TestHintOutsideTheSet(t *testing.T) {
	f := newFixture(t, true)
	for hint, want := range map[string]string{
		"\x1b[1A\r\x1b[2KGREEN": `token is malformed: claim "h": holder hint has a character at byte 0 outside A-Z a-z 0-9, space and -`,
		"A&B<1990>":             `token is malformed: claim "h": holder hint has a character at byte 1 outside A-Z a-z 0-9, space and -`,
		"Zoë 1990":              `token is malformed: claim "h": holder hint has a character at byte 2 outside A-Z a-z 0-9, space and -`,
		"AB\u202e0991":          `token is malformed: claim "h": holder hint has a character at byte 2 outside A-Z a-z 0-9, space and -`,
		"0123456789abcdefg":     `token is malformed: claim "h": holder hint is longer than 16 characters`,
	} {
		c := validClaims(policy.Green)
		c.Hint = hint
		_, err := Verify(sign(t, f.cur, c), f.b, t0)
		wantErr(t, err, ErrMalformed, "malformed")
		if err.Error() != want {
			t.Fatalf("hint %q: %q, want %q", hint, err, want)
		}
	}
}

func TestHintWithHintOff(t *testing.T) {
	f := newFixture(t, false)
	c := validClaims(policy.Green)
	c.Hint = "AB1990"
	_, err := Verify(sign(t, f.cur, c), f.b, t0)
	wantErr(t, err, ErrMalformed, "malformed")
	if strings.Contains(err.Error(), "AB1990") {
		t.Fatalf("error repeats the hint: %v", err)
	}
}

// wantErr asserts which error, and its reason code.
func wantErr(t *testing.T, err, target error, reason string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("got error %v, want %v", err, target)
	}
	if got := Reason(err); got != reason {
		t.Fatalf("Reason(%v) = %q, want %q", err, got, reason)
	}
}

func TestTampered(t *testing.T) {
	f := newFixture(t, false)
	raw := sign(t, f.cur, validClaims(policy.Red))
	parts := strings.Split(raw, ".")

	t.Run("payload", func(t *testing.T) {
		p, err := enc.DecodeString(parts[1])
		if err != nil {
			t.Fatal(err)
		}
		green := strings.Replace(string(p), `"c":"r"`, `"c":"g"`, 1)
		if green == string(p) {
			t.Fatalf("payload %s has no red colour", p)
		}
		_, err = Verify(parts[0]+"."+enc.EncodeToString([]byte(green))+"."+parts[2], f.b, t0)
		wantErr(t, err, ErrBadSignature, "bad_signature")
	})
	t.Run("signature", func(t *testing.T) {
		sig, err := enc.DecodeString(parts[2])
		if err != nil {
			t.Fatal(err)
		}
		sig[10] ^= 1
		_, err = Verify(parts[0]+"."+parts[1]+"."+enc.EncodeToString(sig), f.b, t0)
		wantErr(t, err, ErrBadSignature, "bad_signature")
	})
	t.Run("signature padding bits", func(t *testing.T) {
		// 64 bytes in 86 characters leave 4 unused bits in the last one;
		// strict decoding refuses a second spelling of the same signature.
		s := []byte(parts[2])
		last := strings.IndexByte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", s[len(s)-1])
		s[len(s)-1] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[last^1]
		_, err := Verify(parts[0]+"."+parts[1]+"."+string(s), f.b, t0)
		wantErr(t, err, ErrMalformed, "malformed")
	})
	t.Run("header kid swapped", func(t *testing.T) {
		// Same claims, header naming another key the bundle holds.
		h := enc.EncodeToString([]byte(`{"alg":"EdDSA","kid":"` + f.short.KeyID() + `"}`))
		_, err := Verify(h+"."+parts[1]+"."+parts[2], f.b, t0)
		wantErr(t, err, ErrBadSignature, "bad_signature")
	})
	t.Run("signature dropped", func(t *testing.T) {
		_, err := Verify(parts[0]+"."+parts[1]+".", f.b, t0)
		wantErr(t, err, ErrMalformed, "malformed")
	})
}

func TestAlgorithms(t *testing.T) {
	f := newFixture(t, false)
	mc := jwt.MapClaims{"c": "g", "exp": t0.Add(time.Hour).Unix(), "n": "AAAAAAAA", "nbf": t0.Add(-time.Hour).Unix(), "v": 3}

	t.Run("none", func(t *testing.T) {
		tok := jwt.NewWithClaims(jwt.SigningMethodNone, mc)
		tok.Header["kid"] = f.cur.KeyID()
		raw, err := tok.SignedString(jwt.UnsafeAllowNoneSignatureType)
		if err != nil {
			t.Fatal(err)
		}
		_, err = Verify(raw, f.b, t0)
		wantErr(t, err, ErrAlgorithm, "algorithm_not_allowed")
	})
	t.Run("HS256 keyed with the public key", func(t *testing.T) {
		tok := jwt.NewWithClaims(jwt.SigningMethodHS256, mc)
		tok.Header["kid"] = f.cur.KeyID()
		raw, err := tok.SignedString([]byte(f.curKey.Public().(ed25519.PublicKey)))
		if err != nil {
			t.Fatal(err)
		}
		_, err = Verify(raw, f.b, t0)
		wantErr(t, err, ErrAlgorithm, "algorithm_not_allowed")
	})
	payload := `{"c":"g","exp":` + itoa(t0.Add(time.Hour).Unix()) + `,"n":"AAAAAAAA","nbf":` + itoa(t0.Add(-time.Hour).Unix()) + `,"v":3}`
	for _, h := range []string{
		`{"alg":"eddsa","kid":"` + f.cur.KeyID() + `"}`,
		`{"alg":"Ed25519","kid":"` + f.cur.KeyID() + `"}`,
		`{"alg":"ES256","kid":"` + f.cur.KeyID() + `"}`,
		`{"kid":"` + f.cur.KeyID() + `"}`,
	} {
		t.Run(h, func(t *testing.T) {
			// Signed with the right key: only the alg is wrong.
			_, err := Verify(signRaw(t, f.curKey, h, payload), f.b, t0)
			wantErr(t, err, ErrAlgorithm, "algorithm_not_allowed")
		})
	}
	t.Run("typ tolerated", func(t *testing.T) {
		_, err := Verify(signRaw(t, f.curKey, `{"alg":"EdDSA","typ":"JWT","kid":"`+f.cur.KeyID()+`"}`, payload), f.b, t0)
		if err != nil {
			t.Fatal(err)
		}
	})
}

func itoa(n int64) string { b, _ := json.Marshal(n); return string(b) }

func TestUnknownKey(t *testing.T) {
	f := newFixture(t, false)
	_, err := Verify(sign(t, f.stranger, validClaims(policy.Green)), f.b, t0)
	wantErr(t, err, ErrUnknownKey, "unknown_key")
}

func TestTimeWindow(t *testing.T) {
	f := newFixture(t, false)
	c := validClaims(policy.Green) // nbf t0-1h, exp t0+2h
	raw := sign(t, f.cur, c)
	nbf, exp := time.Unix(c.NotBefore, 0), time.Unix(c.Expires, 0)
	cases := []struct {
		name   string
		now    time.Time
		target error
		reason string
	}{
		{"just expired, past the skew", exp.Add(skew), ErrExpired, "expired"},
		{"long expired", exp.Add(24 * time.Hour), ErrExpired, "expired"},
		{"expired but inside the skew", exp.Add(skew - time.Nanosecond), nil, ""},
		{"at exp, inside the skew", exp, nil, ""},
		{"not yet valid, past the skew", nbf.Add(-skew - time.Second), ErrNotYetValid, "not_yet_valid"},
		{"not yet valid, just past the skew", nbf.Add(-skew - time.Nanosecond), ErrNotYetValid, "not_yet_valid"},
		{"early but inside the skew", nbf.Add(-skew), nil, ""},
		{"at nbf", nbf, nil, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, err := Verify(raw, f.b, tc.now)
			if tc.target == nil {
				if err != nil || res.Colour != policy.Green {
					t.Fatalf("got %+v, %v; want green", res, err)
				}
				return
			}
			wantErr(t, err, tc.target, tc.reason)
		})
	}
}

func TestBundleExpiredAndStale(t *testing.T) {
	f := newFixture(t, false)
	// A token valid across the bundle's end, signed by a key that outlives it.
	c := validClaims(policy.Green)
	c.NotBefore, c.Expires = f.b.Expires-3600, f.b.Expires+3600
	raw := sign(t, f.cur, c)

	_, err := Verify(raw, f.b, time.Unix(f.b.Expires, 0))
	wantErr(t, err, ErrBundleExpired, "bundle_expired")
	// Refused before anything else: even garbage gets the bundle answer.
	_, err = Verify("garbage", f.b, time.Unix(f.b.Expires, 0))
	wantErr(t, err, ErrBundleExpired, "bundle_expired")
	if res, err := Verify(raw, f.b, time.Unix(f.b.Expires-1, 0)); err != nil || !res.BundleStale {
		t.Fatalf("a second before the bundle's end: %+v, %v; want valid and stale", res, err)
	}

	// One valid across the stale time.
	c.NotBefore, c.Expires = f.b.StaleAfter-3600, f.b.StaleAfter+3600
	raw = sign(t, f.cur, c)
	res, err := Verify(raw, f.b, time.Unix(f.b.StaleAfter, 0))
	if err != nil || !res.BundleStale {
		t.Fatalf("at stale time: %+v, %v; want valid and stale", res, err)
	}
	res, err = Verify(raw, f.b, time.Unix(f.b.StaleAfter-1, 0))
	if err != nil || res.BundleStale {
		t.Fatalf("before stale time: %+v, %v; want valid, not stale", res, err)
	}
}

func TestKeyWindow(t *testing.T) {
	f := newFixture(t, false)
	short, _ := f.b.Find(f.short.KeyID()) // valid t0-30d .. t0+1h

	c := validClaims(policy.Green) // exp t0+2h: outlives the key
	_, err := Verify(sign(t, f.short, c), f.b, t0)
	wantErr(t, err, ErrKeyWindow, "key_window")

	c.Expires = short.NotAfter // ends with the key: fine
	if _, err := Verify(sign(t, f.short, c), f.b, t0); err != nil {
		t.Fatalf("token ending with its key: %v", err)
	}

	c = validClaims(policy.Green)
	c.NotBefore = short.NotBefore - 3600 // starts before the key
	c.Expires = short.NotBefore + 3600
	_, err = Verify(sign(t, f.short, c), f.b, time.Unix(short.NotBefore, 0))
	wantErr(t, err, ErrKeyWindow, "key_window")
}

func TestMalformedClaims(t *testing.T) {
	f := newFixture(t, true)
	h := `{"alg":"EdDSA","kid":"` + f.cur.KeyID() + `"}`
	nbf, exp := itoa(t0.Add(-time.Hour).Unix()), itoa(t0.Add(time.Hour).Unix())
	good := `{"c":"g","exp":` + exp + `,"n":"AAAAAAAA","nbf":` + nbf + `,"v":3}`
	if _, err := Verify(signRaw(t, f.curKey, h, good), f.b, t0); err != nil {
		t.Fatalf("baseline: %v", err)
	}
	cases := map[string]string{
		"extra claim":         `{"c":"g","exp":` + exp + `,"n":"AAAAAAAA","nbf":` + nbf + `,"v":3,"sub":"alice"}`,
		"case variant":        `{"C":"g","exp":` + exp + `,"n":"AAAAAAAA","nbf":` + nbf + `,"v":3}`,
		"escaped name":        `{"\u0063":"g","exp":` + exp + `,"n":"AAAAAAAA","nbf":` + nbf + `,"v":3}`,
		"duplicate colour":    `{"c":"r","c":"g","exp":` + exp + `,"n":"AAAAAAAA","nbf":` + nbf + `,"v":3}`,
		"missing nonce":       `{"c":"g","exp":` + exp + `,"nbf":` + nbf + `,"v":3}`,
		"missing exp":         `{"c":"g","n":"AAAAAAAA","nbf":` + nbf + `,"v":3}`,
		"missing nbf":         `{"c":"g","exp":` + exp + `,"n":"AAAAAAAA","v":3}`,
		"missing version":     `{"c":"g","exp":` + exp + `,"n":"AAAAAAAA","nbf":` + nbf + `}`,
		"unknown colour":      `{"c":"b","exp":` + exp + `,"n":"AAAAAAAA","nbf":` + nbf + `,"v":3}`,
		"colour name":         `{"c":"green","exp":` + exp + `,"n":"AAAAAAAA","nbf":` + nbf + `,"v":3}`,
		"float exp":           `{"c":"g","exp":` + exp + `.5,"n":"AAAAAAAA","nbf":` + nbf + `,"v":3}`,
		"string exp":          `{"c":"g","exp":"` + exp + `","n":"AAAAAAAA","nbf":` + nbf + `,"v":3}`,
		"numeric colour":      `{"c":1,"exp":` + exp + `,"n":"AAAAAAAA","nbf":` + nbf + `,"v":3}`,
		"null hint":           `{"c":"g","exp":` + exp + `,"h":null,"n":"AAAAAAAA","nbf":` + nbf + `,"v":3}`,
		"empty hint":          `{"c":"g","exp":` + exp + `,"h":"","n":"AAAAAAAA","nbf":` + nbf + `,"v":3}`,
		"empty nonce":         `{"c":"g","exp":` + exp + `,"n":"","nbf":` + nbf + `,"v":3}`,
		"negative version":    `{"c":"g","exp":` + exp + `,"n":"AAAAAAAA","nbf":` + nbf + `,"v":-1}`,
		"nbf after exp":       `{"c":"g","exp":` + nbf + `,"n":"AAAAAAAA","nbf":` + exp + `,"v":3}`,
		"huge exp":            `{"c":"g","exp":99999999999999999999,"n":"AAAAAAAA","nbf":` + nbf + `,"v":3}`,
		"leading zero":        `{"c":"g","exp":0` + exp + `,"n":"AAAAAAAA","nbf":` + nbf + `,"v":3}`,
		"trailing data":       good + `{}`,
		"array":               `["g"]`,
		"nested":              `{"c":{"x":"g"},"exp":` + exp + `,"n":"AAAAAAAA","nbf":` + nbf + `,"v":3}`,
		"trailing comma":      `{"c":"g","exp":` + exp + `,"n":"AAAAAAAA","nbf":` + nbf + `,"v":3,}`,
		"unterminated":        `{"c":"g","exp":` + exp,
		"invalid UTF-8 hint":  `{"c":"g","exp":` + exp + `,"h":"` + "\xff" + `","n":"AAAAAAAA","nbf":` + nbf + `,"v":3}`,
		"control char hint":   `{"c":"g","exp":` + exp + `,"h":"a` + "\n" + `","n":"AAAAAAAA","nbf":` + nbf + `,"v":3}`,
		"bad escape in hint":  `{"c":"g","exp":` + exp + `,"h":"a\x","n":"AAAAAAAA","nbf":` + nbf + `,"v":3}`,
		"lone surrogate hint": `{"c":"g","exp":` + exp + `,"h":"\ud800\u00zz","n":"AAAAAAAA","nbf":` + nbf + `,"v":3}`,
	}
	for name, payload := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Verify(signRaw(t, f.curKey, h, payload), f.b, t0)
			wantErr(t, err, ErrMalformed, "malformed")
		})
	}
	// White space is JSON too; the issuer writes none, but it is not an attack.
	spaced := " { \"c\" : \"g\" ,\n\"exp\":" + exp + ",\t\"n\":\"AAAAAAAA\",\"nbf\":" + nbf + ",\"v\":3 } "
	if _, err := Verify(signRaw(t, f.curKey, h, spaced), f.b, t0); err != nil {
		t.Fatalf("white space: %v", err)
	}
}

func TestMalformedHeaders(t *testing.T) {
	f := newFixture(t, false)
	payload := `{"c":"g","exp":` + itoa(t0.Add(time.Hour).Unix()) + `,"n":"AAAAAAAA","nbf":` + itoa(t0.Add(-time.Hour).Unix()) + `,"v":3}`
	for _, h := range []string{
		`{"alg":"EdDSA","kid":"` + f.cur.KeyID() + `","jku":"https://evil.example/keys"}`,
		`{"alg":"EdDSA","kid":"` + f.cur.KeyID() + `","crit":["exp"]}`,
		`{"alg":"EdDSA","alg":"EdDSA","kid":"` + f.cur.KeyID() + `"}`,
		`{"alg":"EdDSA","kid":""}`,
		`{"alg":"EdDSA"}`,
		`{"alg":"EdDSA","kid":7}`,
		`{"alg":"EdD\u0053A","kid":"` + f.cur.KeyID() + `"}`,
		`not json`,
		``,
	} {
		t.Run(h, func(t *testing.T) {
			_, err := Verify(signRaw(t, f.curKey, h, payload), f.b, t0)
			wantErr(t, err, ErrMalformed, "malformed")
		})
	}
}

func TestGarbage(t *testing.T) {
	f := newFixture(t, false)
	valid := sign(t, f.cur, validClaims(policy.Green))
	for _, raw := range []string{
		"", ".", "..", "...", "a", "a.b", "a.b.c", "a.b.c.d",
		"!!!.???.***",
		valid + ".",
		valid + " ",
		" " + valid,
		strings.Repeat("A", token.MaxLen+1),
		valid + strings.Repeat("A", token.MaxLen),
		"eyJhbGciOiJFZERTQSJ9.e30.",
		"\x00\xff\xfe",
	} {
		_, err := Verify(raw, f.b, t0)
		wantErr(t, err, ErrMalformed, "malformed")
	}
}

func TestReason(t *testing.T) {
	if Reason(nil) != "" {
		t.Fatal("Reason(nil) should be empty")
	}
	if got := Reason(errors.New("other")); got != ReasonInvalid {
		t.Fatalf("Reason(other) = %q", got)
	}
	for err, want := range map[error]string{
		ErrMalformed: "malformed", ErrBadSignature: "bad_signature", ErrUnknownKey: "unknown_key",
		ErrKeyWindow: "key_window", ErrExpired: "expired", ErrNotYetValid: "not_yet_valid",
		ErrAlgorithm: "algorithm_not_allowed", ErrBundleExpired: "bundle_expired",
		ErrKeyWithdrawn: "key_withdrawn", ErrWindowTooLong: "window_too_long", ErrOffGrid: "off_grid",
		ErrLabAttestation: "lab_attestation", ErrUnknownIssuer: "unknown_issuer",
	} {
		if got := Reason(err); got != want {
			t.Errorf("Reason(%v) = %q, want %q", err, got, want)
		}
	}
}

// The verifier must not be able to reach the network or the disk, and must
// build for the browser.
func TestNoNetworkNoFiles(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to inspect the package graph: %v", err)
	}
	out, err := exec.Command(goBin, "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	deps := map[string]bool{}
	for _, p := range strings.Fields(string(out)) {
		deps[p] = true
	}
	if !deps["github.com/healthcode/healthcode/verifier"] {
		t.Fatalf("go list -deps did not list the package itself:\n%s", out)
	}
	// golang-jwt pulls in crypto/x509, and with it package net for address
	// types; nothing may pull in a client.
	for _, banned := range []string{"net/http", "net/rpc", "net/smtp", "crypto/tls", "os/exec"} {
		if deps[banned] {
			t.Errorf("verifier depends on %s", banned)
		}
	}
	// The package's own imports: no network, no files, no syscalls.
	out, err = exec.Command(goBin, "list", "-f", `{{join .Imports "\n"}}`, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list imports: %v\n%s", err, out)
	}
	for _, p := range strings.Fields(string(out)) {
		if p == "os" || p == "io/fs" || p == "syscall" || p == "net" || strings.HasPrefix(p, "net/") || strings.HasPrefix(p, "os/") {
			t.Errorf("verifier imports %s", p)
		}
	}

	cmd := exec.Command(goBin, "build", "-o", os.DevNull, ".")
	cmd.Env = append(os.Environ(), "GOOS=js", "GOARCH=wasm")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("GOOS=js GOARCH=wasm go build: %v\n%s", err, out)
	}
}

// A token of a key the bundle lists as withdrawn is refused as such, with a
// message that says so, whatever its claims; other keys stay good.
func TestWithdrawnKey(t *testing.T) {
	f := newFixture(t, false)
	_, err := Verify(sign(t, f.revoked, validClaims(policy.Green)), f.b, t0)
	wantErr(t, err, ErrKeyWithdrawn, "key_withdrawn")
	want := `token is signed by a key the issuer has withdrawn: kid "` + f.revoked.KeyID() + `" was revoked; its tokens are no longer honoured`
	if err.Error() != want {
		t.Fatalf("message %q, want %q", err, want)
	}
	if _, err := Verify(sign(t, f.cur, validClaims(policy.Green)), f.b, t0); err != nil {
		t.Fatalf("current key after a withdrawal: %v", err)
	}
}

// The bundle's caps bound what any key can mint: a month-long green code
// signed by the current key is refused, so is one a second off the grid;
// each colour has its own lifetime, and the skew is the only slack.
func TestCaps(t *testing.T) {
	f := newFixture(t, false) // green 24h, yellow 12h, red 6h, grid 1h, skew 5m
	hour := int64(3600)
	nbf := t0.Add(-time.Hour).Unix()
	for _, tc := range []struct {
		name     string
		colour   policy.Colour
		nbf, exp int64
		target   error
		msg      string
	}{
		{"green 24h", policy.Green, nbf, nbf + 24*hour, nil, ""},
		{"yellow 12h", policy.Yellow, nbf, nbf + 12*hour, nil, ""},
		{"red 6h", policy.Red, nbf, nbf + 6*hour, nil, ""},
		{"month-long green", policy.Green, nbf, nbf + 30*24*hour, ErrWindowTooLong,
			"token validity window is longer than the policy allows: 720h0m0s from nbf to exp, at most 24h0m0s for this colour (plus 5m0s skew)"},
		{"green 25h", policy.Green, nbf, nbf + 25*hour, ErrWindowTooLong, ""},
		{"yellow 13h", policy.Yellow, nbf, nbf + 13*hour, ErrWindowTooLong, ""},
		{"red 7h", policy.Red, nbf, nbf + 7*hour, ErrWindowTooLong, ""},
		{"nbf off the grid", policy.Green, nbf + 1, nbf + 2*hour, ErrOffGrid,
			"token times are off the policy's time grid: nbf 2026-11-20T11:00:01Z and exp 2026-11-20T13:00:00Z must be multiples of 1h0m0s"},
		{"exp off the grid", policy.Green, nbf, nbf + 2*hour - 60, ErrOffGrid, ""},
		// Inside the skew: off the grid all the same.
		{"red 6h and 5m", policy.Red, nbf, nbf + 6*hour + 300, ErrOffGrid, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validClaims(tc.colour)
			c.NotBefore, c.Expires = tc.nbf, tc.exp
			res, err := Verify(sign(t, f.cur, c), f.b, t0)
			if tc.target == nil {
				if err != nil || res.Colour != tc.colour {
					t.Fatalf("got %+v, %v", res, err)
				}
				return
			}
			wantErr(t, err, tc.target, Reason(tc.target))
			if tc.msg != "" && err.Error() != tc.msg {
				t.Fatalf("message %q, want %q", err, tc.msg)
			}
		})
	}

	// The skew is slack on the window, for a grid finer than the skew.
	fine := newFixture(t, false)
	fine.b.Policy.GranularitySeconds = 60
	c := validClaims(policy.Red)
	c.Expires = c.NotBefore + 6*hour + 300
	if _, err := Verify(sign(t, fine.cur, c), fine.b, t0); err != nil {
		t.Fatalf("red 6h5m on a 1m grid with 5m skew: %v", err)
	}
	c.Expires += 60
	_, err := Verify(sign(t, fine.cur, c), fine.b, t0)
	wantErr(t, err, ErrWindowTooLong, "window_too_long")

	// The widest window int64 allows does not wrap around the check.
	c = validClaims(policy.Green)
	c.NotBefore, c.Expires = -(1<<63)+(1<<63)%3600-3600*0, (1<<63-1)-(1<<63-1)%3600
	_, err = Verify(sign(t, fine.cur, c), f.b, t0)
	wantErr(t, err, ErrWindowTooLong, "window_too_long")
}

// A lab's attestation, scanned or pasted at the door, is named for what it
// is, whether its header carries a kid or not.
func TestLabAttestation(t *testing.T) {
	f := newFixture(t, false)
	lab := seedKey(9)
	raw, err := attestation.Sign(lab, attestation.Claims{Attester: "lab-1", Kind: attestation.TestNegative,
		At: t0.Add(-time.Hour).Unix(), Expires: t0.Add(48 * time.Hour).Unix(), ID: "a1"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = Verify(raw, f.b, t0)
	wantErr(t, err, ErrLabAttestation, "lab_attestation")
	if want := "this is a lab's attestation, not a health code; the resident exchanges it for health codes in the wallet"; err.Error() != want {
		t.Fatalf("message %q, want %q", err, want)
	}
	withKid := signRaw(t, lab, `{"alg":"EdDSA","kid":"lab1"}`, `{"iss":"lab-1","kind":"vaccination","at":1,"exp":2,"jti":"x"}`)
	_, err = Verify(withKid, f.b, t0)
	wantErr(t, err, ErrLabAttestation, "lab_attestation")
}

// An unknown kid whose token began so long before the bundle was issued
// that a key of this issuer would be in it is another issuer's (or a
// forger's); one that may be newer than the bundle is only unknown.
func TestUnknownIssuer(t *testing.T) {
	f := newFixture(t, false) // issued t0-1h; longest lifetime 24h, grid 1h
	iat := f.b.IssuedAt
	for _, tc := range []struct {
		name     string
		nbf, exp int64
		target   error
	}{
		{"window began 26h before the bundle", iat - 26*3600, iat + 3600, ErrUnknownIssuer},
		{"window began 25h before the bundle", iat - 25*3600, iat + 3600, ErrUnknownKey},
		{"window began an hour before the bundle", iat - 3600, iat + 3600, ErrUnknownKey},
		{"window after the bundle", iat + 3600, iat + 7200, ErrUnknownKey},
		{"expired before the bundle", iat - 30*3600, iat, ErrUnknownKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validClaims(policy.Green)
			c.NotBefore, c.Expires = tc.nbf, tc.exp
			_, err := Verify(sign(t, f.stranger, c), f.b, t0)
			wantErr(t, err, tc.target, Reason(tc.target))
		})
	}
	c := validClaims(policy.Green)
	c.NotBefore, c.Expires = iat-48*3600, iat+3600
	_, err := Verify(sign(t, f.stranger, c), f.b, t0)
	want := `token is signed by a key this issuer never published: kid "` + f.stranger.KeyID() +
		`", and the token's window starts 2026-11-18T11:00:00Z, before the bundle (issued 2026-11-20T11:00:00Z) was made`
	if err.Error() != want {
		t.Fatalf("message %q, want %q", err, want)
	}
	_, err = Verify(sign(t, f.stranger, validClaims(policy.Green)), f.b, t0)
	if want := `token is signed by a key the bundle does not hold: kid "` + f.stranger.KeyID() + `"; if the issuer made a new key, a sync will fetch it`; err.Error() != want {
		t.Fatalf("message %q, want %q", err, want)
	}
}

// Strings that are not valid UTF-8, raw or as escapes of lone surrogates,
// are refused, in the header and the claims; so are a crit header and a
// duplicate member, each named.
func TestStrictJSON(t *testing.T) {
	f := newFixture(t, true)
	h := `{"alg":"EdDSA","kid":"` + f.cur.KeyID() + `"}`
	nbf, exp := itoa(t0.Add(-time.Hour).Unix()), itoa(t0.Add(time.Hour).Unix())
	claims := func(hint string) string {
		return `{"c":"g","exp":` + exp + `,"h":"` + hint + `","n":"AAAAAAAA","nbf":` + nbf + `,"v":3}`
	}
	for name, tc := range map[string]struct{ header, payload, want string }{
		"raw invalid UTF-8":      {h, claims("A\xc3"), `token is malformed: claims: string is not valid UTF-8`},
		"lone high surrogate":    {h, claims(`A\ud800B`), `token is malformed: claims: string is not valid UTF-8`},
		"lone low surrogate":     {h, claims(`A\udc00`), `token is malformed: claims: string is not valid UTF-8`},
		"high then non-low":      {h, claims(`\ud800\u0041`), `token is malformed: claims: string is not valid UTF-8`},
		"invalid UTF-8 kid":      {"{\"alg\":\"EdDSA\",\"kid\":\"k\xff\"}", claims("AB"), `token is malformed: header: string is not valid UTF-8`},
		"crit":                   {`{"alg":"EdDSA","kid":"` + f.cur.KeyID() + `","crit":["b64"]}`, claims("AB"), `token is malformed: header member "crit" is not allowed`},
		"duplicate kid":          {`{"alg":"EdDSA","kid":"` + f.cur.KeyID() + `","kid":"x"}`, claims("AB"), `token is malformed: header member "kid" appears twice`},
		"duplicate hint":         {h, `{"c":"g","exp":` + exp + `,"h":"AB","h":"CD","n":"AAAAAAAA","nbf":` + nbf + `,"v":3}`, `token is malformed: claim "h" appears twice`},
		"control in member name": {h, `{"c":"g","exp":` + exp + `,"n":"AAAAAAAA","nbf":` + nbf + `,"v":3,"x` + "\x7f\u202e" + `":1}`, `token is malformed: claim "x\\x7f\\u202e" is not allowed`},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Verify(signRaw(t, f.curKey, tc.header, tc.payload), f.b, t0)
			wantErr(t, err, ErrMalformed, "malformed")
			if err.Error() != tc.want {
				t.Fatalf("message %q, want %q", err, tc.want)
			}
		})
	}
	// A surrogate pair is fine UTF-16 for a character outside the BMP; the
	// hint rules refuse the character, not the escape.
	_, err := Verify(signRaw(t, f.curKey, h, claims(`\ud83d\ude00`)), f.b, t0)
	if err == nil || !strings.Contains(err.Error(), "holder hint has a character") {
		t.Fatalf("surrogate pair: %v", err)
	}
}
