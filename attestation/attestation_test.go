package attestation

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

var now = time.Date(2026, 3, 10, 9, 0, 0, 0, time.UTC)

var (
	labKey   = ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	otherKey = ed25519.NewKeyFromSeed([]byte(strings.Repeat("o", ed25519.SeedSize)))
	labKeys  = fuzzKeys{"lab-1": labKey.Public().(ed25519.PublicKey)}
	opts     = Options{Now: now, Skew: 5 * time.Minute, MaxLifetime: 72 * time.Hour}
)

func goodClaims() Claims {
	return Claims{Attester: "lab-1", Kind: TestNegative, At: now.Add(-time.Hour).Unix(),
		Expires: now.Add(24 * time.Hour).Unix(), ID: "a1", Hint: "AB1990"}
}

// signRaw signs header and payload as given, for attestations Sign would
// never make.
func signRaw(t *testing.T, key ed25519.PrivateKey, header, payload string) string {
	t.Helper()
	s := base64.RawURLEncoding.EncodeToString([]byte(header)) + "." + base64.RawURLEncoding.EncodeToString([]byte(payload))
	return s + "." + base64.RawURLEncoding.EncodeToString(ed25519.Sign(key, []byte(s)))
}

// payloadOf is c as JSON with edit applied to its text.
func payloadOf(t *testing.T, c Claims, old, new string) string {
	t.Helper()
	p, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	s := string(p)
	if old != "" {
		if !strings.Contains(s, old) {
			t.Fatalf("payload %s has no %s", s, old)
		}
		s = strings.Replace(s, old, new, 1)
	}
	return s
}

func wantError(t *testing.T, err error, code, msg string) {
	t.Helper()
	e, ok := err.(*Error)
	if !ok {
		t.Fatalf("got %v (%T), want *Error %s", err, err, code)
	}
	if e.Code != code || e.Message != msg {
		t.Fatalf("got %s %q\nwant %s %q", e.Code, e.Message, code, msg)
	}
}

func TestRoundTrip(t *testing.T) {
	c := goodClaims()
	raw, err := Sign(labKey, c)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := Verify(raw, labKeys, opts)
	if err != nil {
		t.Fatal(err)
	}
	want := Evidence{Attester: "lab-1", Kind: TestNegative, At: time.Unix(c.At, 0), Expires: time.Unix(c.Expires, 0), ID: "a1", Hint: "AB1990"}
	if ev != want {
		t.Fatalf("got %+v, want %+v", ev, want)
	}
	// No typ, no kid: the attester is named by iss.
	hb, _ := base64.RawURLEncoding.DecodeString(strings.Split(raw, ".")[0])
	if string(hb) != `{"alg":"EdDSA"}` {
		t.Fatalf("header %s", hb)
	}
	for _, k := range Kinds {
		c.Kind = k
		raw, err := Sign(labKey, c)
		if err != nil {
			t.Fatal(err)
		}
		if ev, err := Verify(raw, labKeys, opts); err != nil || ev.Kind != k {
			t.Fatalf("kind %s: %+v, %v", k, ev, err)
		}
	}
}

// Every claim rule, through Verify on a well-signed attestation and, where
// Sign can be asked for it, through Sign too: the same code and message.
func TestClaimRules(t *testing.T) {
	long := strings.Repeat("x", 65)
	for _, tc := range []struct {
		name     string
		edit     func(*Claims)
		code     string
		msg      string
		signable bool // Sign refuses the same way
	}{
		{"no attester", func(c *Claims) { c.Attester = "" }, CodeMissingClaim, "attestation has no attester (iss)", true},
		{"long attester", func(c *Claims) { c.Attester = long }, CodeMalformed, "attester (iss) is longer than 64 characters", true},
		{"no kind", func(c *Claims) { c.Kind = "" }, CodeMissingClaim, "attestation has no kind", true},
		{"unknown kind", func(c *Claims) { c.Kind = "antibody" }, CodeBadKind,
			`kind "antibody" is not one of: test-negative, test-positive, vaccination, recovery, exposure-notice, isolation-order`, true},
		{"kind in another case", func(c *Claims) { c.Kind = "Test-Negative" }, CodeBadKind,
			`kind "Test-Negative" is not one of: test-negative, test-positive, vaccination, recovery, exposure-notice, isolation-order`, true},
		{"unknown kind echoed escaped and clipped", func(c *Claims) { c.Kind = "\x1b[2K" + Kind(long) }, CodeBadKind,
			`kind "\\x1b[2Kxxxxxxxxxxxxxxxxxxxxxxxxxxxx…" is not one of: test-negative, test-positive, vaccination, recovery, exposure-notice, isolation-order`, true},
		{"no event time", func(c *Claims) { c.At = 0 }, CodeMissingClaim, "attestation has no event time (at)", true},
		{"no expiry", func(c *Claims) { c.Expires = 0 }, CodeMissingClaim, "attestation has no expiry (exp)", true},
		{"expires at its event", func(c *Claims) { c.Expires = c.At }, CodeMalformed, "attestation expires (exp) before its event time (at)", true},
		{"expires before its event", func(c *Claims) { c.Expires = c.At - 1 }, CodeMalformed, "attestation expires (exp) before its event time (at)", true},
		{"no id", func(c *Claims) { c.ID = "" }, CodeMissingClaim, "attestation has no id (jti)", true},
		{"long id", func(c *Claims) { c.ID = long }, CodeMalformed, "attestation id (jti) is longer than 64 characters", true},
		{"long hint", func(c *Claims) { c.Hint = "ABCDEFGHIJ 123456" }, CodeMalformed, "holder hint is longer than 16 characters", true},
		{"hint with an escape sequence", func(c *Claims) { c.Hint = "\x1b[1A\r\x1b[2KGREEN" }, CodeMalformed,
			"holder hint has a character at byte 0 outside A-Z a-z 0-9, space and -", true},
		{"hint with a bidi override", func(c *Claims) { c.Hint = "AB\u202e0991" }, CodeMalformed,
			"holder hint has a character at byte 2 outside A-Z a-z 0-9, space and -", true},
		{"hint with a letter outside ASCII", func(c *Claims) { c.Hint = "Zoë" }, CodeMalformed,
			"holder hint has a character at byte 2 outside A-Z a-z 0-9, space and -", true},
		{"hint with punctuation", func(c *Claims) { c.Hint = "A.B" }, CodeMalformed,
			"holder hint has a character at byte 1 outside A-Z a-z 0-9, space and -", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := goodClaims()
			tc.edit(&c)
			_, err := Verify(signRaw(t, labKey, `{"alg":"EdDSA"}`, payloadOf(t, c, "", "")), labKeys, opts)
			wantError(t, err, tc.code, tc.msg)
			if tc.signable {
				_, err := Sign(labKey, c)
				wantError(t, err, tc.code, tc.msg)
			}
		})
	}
	// The edges that pass.
	for _, edit := range []func(*Claims){
		func(c *Claims) { c.Attester = strings.Repeat("l", 64); labKeys[c.Attester] = labKeys["lab-1"] },
		func(c *Claims) { c.ID = strings.Repeat("i", 64) },
		func(c *Claims) { c.Hint = "ab-CD 0123456789" },
		func(c *Claims) { c.Hint = "" },
		func(c *Claims) { c.At, c.Expires = now.Unix()-1, now.Unix()+1 },
	} {
		c := goodClaims()
		edit(&c)
		raw, err := Sign(labKey, c)
		if err != nil {
			t.Fatalf("%+v: Sign: %v", c, err)
		}
		if _, err := Verify(raw, labKeys, opts); err != nil {
			t.Fatalf("%+v: %v", c, err)
		}
	}
}

// The allow-list (invariant 1): any other claim is refused by name, the
// first in sort order when there are several; names match byte for byte.
func TestAllowList(t *testing.T) {
	for _, tc := range []struct{ name, old, new, msg string }{
		{"a name", `"jti":"a1"`, `"jti":"a1","name":"Alice"`, `claim "name" is not allowed; an attestation carries only iss, kind, at, exp, jti, hint`},
		{"a subject and a location", `"jti":"a1"`, `"jti":"a1","sub":"p-9","loc":"X"`, `claim "loc" is not allowed; an attestation carries only iss, kind, at, exp, jti, hint`},
		{"another case of a name", `"kind"`, `"KIND"`, `claim "KIND" is not allowed; an attestation carries only iss, kind, at, exp, jti, hint`},
		{"a long name", `"jti":"a1"`, `"jti":"a1","` + strings.Repeat("n", 40) + `":1`, `claim "` + strings.Repeat("n", 32) + `…" is not allowed; an attestation carries only iss, kind, at, exp, jti, hint`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Verify(signRaw(t, labKey, `{"alg":"EdDSA"}`, payloadOf(t, goodClaims(), tc.old, tc.new)), labKeys, opts)
			wantError(t, err, CodeClaimNotAllowed, tc.msg)
		})
	}
}

// Strict parsing (issue 11 item 5): duplicate names, crit, other header
// members, invalid UTF-8 and wrong types are refused, each named.
func TestStrictParsing(t *testing.T) {
	const hdr = `{"alg":"EdDSA"}`
	for _, tc := range []struct{ name, header, old, new, code, msg string }{
		{"duplicate kind", hdr, `"kind":"test-negative"`, `"kind":"test-positive","kind":"test-negative"`, CodeMalformed,
			`claim "kind" appears twice in the attestation`},
		{"duplicate jti", hdr, `"jti":"a1"`, `"jti":"a1","jti":"a2"`, CodeMalformed, `claim "jti" appears twice in the attestation`},
		{"duplicate through an escape", hdr, `"jti":"a1"`, `"jti":"a1","j\u0074i":"a2"`, CodeMalformed, `claim "jti" appears twice in the attestation`},
		{"duplicate alg", `{"alg":"none","alg":"EdDSA"}`, "", "", CodeMalformed, `header member "alg" appears twice in the attestation`},
		{"crit", `{"alg":"EdDSA","crit":["exp"],"exp":1}`, "", "", CodeMalformed, "attestation header has crit; no header extension is understood here"},
		{"jku", `{"alg":"EdDSA","jku":"https://evil.example/k"}`, "", "", CodeMalformed,
			`attestation header member "jku" is not allowed; a header carries only alg, typ and kid`},
		{"raw invalid UTF-8 in jti", hdr, `"jti":"a1"`, "\"jti\":\"a\xff\"", CodeMalformed, "attestation payload holds a string that is not valid UTF-8"},
		{"lone surrogate in jti", hdr, `"jti":"a1"`, `"jti":"a\ud800"`, CodeMalformed, "attestation payload holds a string that is not valid UTF-8"},
		{"lone low surrogate in iss", hdr, `"iss":"lab-1"`, `"iss":"\udc00lab-1"`, CodeMalformed, "attestation payload holds a string that is not valid UTF-8"},
		{"high surrogate then a letter", hdr, `"jti":"a1"`, `"jti":"\ud800\u0041"`, CodeMalformed, "attestation payload holds a string that is not valid UTF-8"},
		{"invalid UTF-8 in the header", "{\"alg\":\"EdDSA\",\"kid\":\"\xc3\"}", "", "", CodeMalformed, "attestation header holds a string that is not valid UTF-8"},
		{"payload not an object", hdr, `{`, `[{`, CodeMalformed, "attestation payload is not a JSON object"},
		{"data after the payload", hdr, `"hint":"AB1990"}`, `"hint":"AB1990"}{}`, CodeMalformed, "attestation payload has data after the object"},
		{"header not an object", `"EdDSA"`, "", "", CodeMalformed, "attestation header is not a JSON object"},
		{"string event time", hdr, `"at":` + strconv.FormatInt(goodClaims().At, 10), `"at":"1"`, CodeMalformed, "attestation claims have the wrong types"},
		{"fractional expiry", hdr, `,"jti"`, `.5,"jti"`, CodeMalformed, "attestation claims have the wrong types"},
		{"alg none", `{"alg":"none"}`, "", "", CodeBadSignature, `attestation is not signed with EdDSA (alg "none")`},
		{"alg missing", `{"typ":"JWT"}`, "", "", CodeBadSignature, `attestation is not signed with EdDSA (alg "")`},
		{"alg not a string", `{"alg":1}`, "", "", CodeBadSignature, `attestation is not signed with EdDSA (alg "")`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Verify(signRaw(t, labKey, tc.header, payloadOf(t, goodClaims(), tc.old, tc.new)), labKeys, opts)
			wantError(t, err, tc.code, tc.msg)
		})
	}
	// typ and kid are tolerated: other JWT libraries write them. A
	// surrogate pair is a character, not an error.
	ok := strings.Replace(payloadOf(t, goodClaims(), "", ""), `"jti":"a1"`, `"jti":"a\ud83d\ude00"`, 1)
	if _, err := Verify(signRaw(t, labKey, `{"alg":"EdDSA","typ":"JWT","kid":"k1"}`, ok), labKeys, opts); err != nil {
		t.Fatalf("typ, kid and a surrogate pair: %v", err)
	}
}

// The JWS form, the attester and the signature.
func TestFormAndSignature(t *testing.T) {
	good, err := Sign(labKey, goodClaims())
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(good, ".")
	forged, err := Sign(otherKey, goodClaims())
	if err != nil {
		t.Fatal(err)
	}
	unknown := goodClaims()
	unknown.Attester = "lab-\x1b9"
	fromUnknown, _ := Sign(labKey, unknown)
	hs := jwt.NewWithClaims(jwt.SigningMethodHS256, goodClaims())
	hsRaw, _ := hs.SignedString([]byte(labKeys["lab-1"]))
	for _, tc := range []struct{ name, raw, code, msg string }{
		{"too long", strings.Repeat("a", MaxLen+1), CodeMalformed, "attestation is longer than 2048 bytes"},
		{"two parts", "a.b", CodeMalformed, "attestation is not a compact JWS (want three dot-separated parts)"},
		{"four parts", good + ".x", CodeMalformed, "attestation is not a compact JWS (want three dot-separated parts)"},
		{"header not base64url", "!!." + parts[1] + "." + parts[2], CodeMalformed, "attestation header is not base64url"},
		{"payload not base64url", parts[0] + ".!!." + parts[2], CodeMalformed, "attestation payload is not base64url"},
		{"unknown attester", fromUnknown, CodeUnknownAttester, `attester "lab-\\x1b9" is not registered`},
		{"another key", forged, CodeBadSignature, `attestation signature does not verify under the key of attester "lab-1"`},
		{"signature dropped", parts[0] + "." + parts[1] + ".", CodeBadSignature, `attestation signature does not verify under the key of attester "lab-1"`},
		{"HS256 keyed with the public key", hsRaw, CodeBadSignature, `attestation is not signed with EdDSA (alg "HS256")`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Verify(tc.raw, labKeys, opts)
			wantError(t, err, tc.code, tc.msg)
		})
	}
	if _, err := Sign(labKey[:10], goodClaims()); err == nil || err.Error() != "attestation: not an Ed25519 private key" {
		t.Fatalf("short key: %v", err)
	}
}

// The time rules, at their edges: expiry with the skew, event time in the
// future beyond the skew, lifetime beyond the policy's maximum plus skew.
func TestTimeRules(t *testing.T) {
	skew := opts.Skew
	for _, tc := range []struct {
		name    string
		at, exp time.Time
		o       Options
		code    string
		msg     string
	}{
		{"expired beyond the skew", now.Add(-48 * time.Hour), now.Add(-skew - time.Second), opts, CodeExpired, "attestation expired at 2026-03-10T08:54:59Z"},
		{"expired inside the skew", now.Add(-48 * time.Hour), now.Add(-skew + time.Second), opts, "", ""},
		{"event beyond the skew", now.Add(skew + time.Second), now.Add(24 * time.Hour), opts, CodeFuture, "attestation event time (at) 2026-03-10T09:05:01Z is in the future"},
		{"event inside the skew", now.Add(skew), now.Add(24 * time.Hour), opts, "", ""},
		{"lifetime beyond the maximum", now.Add(-time.Hour), now.Add(72*time.Hour + skew + time.Second), opts, CodeTooLong,
			"attestation expires more than 72h0m0s from now; the policy allows at most that"},
		{"lifetime at the maximum plus skew", now.Add(-time.Hour), now.Add(72*time.Hour + skew), opts, "", ""},
		{"no maximum", now.Add(-time.Hour), now.Add(365 * 24 * time.Hour), Options{Now: now, Skew: skew}, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := goodClaims()
			c.At, c.Expires = tc.at.Unix(), tc.exp.Unix()
			raw, err := Sign(labKey, c)
			if err != nil {
				t.Fatal(err)
			}
			ev, err := Verify(raw, labKeys, tc.o)
			if tc.code == "" {
				if err != nil || !ev.Expires.Equal(tc.exp) {
					t.Fatalf("got %+v, %v", ev, err)
				}
				return
			}
			wantError(t, err, tc.code, tc.msg)
		})
	}
}

func TestKinds(t *testing.T) {
	if len(Kinds) != 6 || !TestNegative.Valid() || !IsolationOrder.Valid() || Kind("negative").Valid() || Kind("").Valid() {
		t.Fatalf("kinds: %v", Kinds)
	}
	if got := KindNames(); got != "test-negative, test-positive, vaccination, recovery, exposure-notice, isolation-order" {
		t.Fatalf("KindNames() = %q", got)
	}
}

// The hint set, on its own: what passes, and the first offending byte.
func TestCheckHint(t *testing.T) {
	for _, ok := range []string{"", "A", "ZS 1990", "ab-12", "0123456789abcdef", "- -"} {
		if err := CheckHint(ok); err != nil {
			t.Errorf("CheckHint(%q) = %v", ok, err)
		}
	}
	for h, msg := range map[string]string{
		"0123456789abcdefg": "holder hint is longer than 16 characters",
		"AB_1":              "holder hint has a character at byte 2 outside A-Z a-z 0-9, space and -",
		"AB\t1":             "holder hint has a character at byte 2 outside A-Z a-z 0-9, space and -",
		"张三":                "holder hint has a character at byte 0 outside A-Z a-z 0-9, space and -",
		"ＡＢ":                "holder hint has a character at byte 0 outside A-Z a-z 0-9, space and -",
		"AB\x00":            "holder hint has a character at byte 2 outside A-Z a-z 0-9, space and -",
	} {
		if err := CheckHint(h); err == nil || err.Error() != msg {
			t.Errorf("CheckHint(%q) = %v, want %q", h, err, msg)
		}
	}
}
