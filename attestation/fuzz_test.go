package attestation

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
)

var fuzzNow = time.Date(2026, 3, 10, 9, 0, 0, 0, time.UTC)

type fuzzKeys map[string]ed25519.PublicKey

func (k fuzzKeys) AttesterKey(id string) (ed25519.PublicKey, bool) { p, ok := k[id]; return p, ok }

var knownCodes = map[string]bool{
	CodeMalformed: true, CodeMissingClaim: true, CodeClaimNotAllowed: true, CodeBadKind: true,
	CodeUnknownAttester: true, CodeBadSignature: true, CodeExpired: true, CodeFuture: true, CodeTooLong: true,
}

// FuzzVerify feeds Verify two inputs: raw, as pasted or scanned by a
// resident, and payload, which the fuzzer gets signed by the registered
// attester (with header hdr), since a signature cannot be guessed and the
// claim checks would otherwise only ever see forged bytes. Verify must never
// panic, must refuse with a known code and a message that does not echo the
// input, and what it accepts must satisfy the allow-list and the time rules.
func FuzzVerify(f *testing.F) {
	key := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	keys := fuzzKeys{"lab-1": key.Public().(ed25519.PublicKey)}
	good := Claims{Attester: "lab-1", Kind: TestNegative, At: fuzzNow.Add(-time.Hour).Unix(), Expires: fuzzNow.Add(24 * time.Hour).Unix(), ID: "a1", Hint: "AB1990"}
	raw, err := Sign(key, good)
	if err != nil {
		f.Fatal(err)
	}
	p, _ := json.Marshal(good)
	const hdr = `{"alg":"EdDSA"}`
	f.Add(raw, hdr, p)
	f.Add("eyJhbGciOiJub25lIn0.eyJpc3MiOiJsYWItMSJ9.", `{"alg":"none"}`, []byte(`{"iss":"lab-1","kind":"test-negative","at":1,"exp":2,"jti":"x"}`))
	// HMAC keyed with the public key: the classic algorithm confusion.
	hs := jwt.NewWithClaims(jwt.SigningMethodHS256, good)
	hsRaw, _ := hs.SignedString([]byte(keys["lab-1"]))
	f.Add(hsRaw, `{"alg":"HS256"}`, []byte(`{"iss":"lab-1","name":"Alice"}`))
	f.Add("a.b.c", `{"alg":"EdDSA","alg":"none"}`, []byte(`{"iss":"lab-1","ISS":"lab-2","kind":"vaccination","at":1,"exp":99999999999,"jti":"y"}`))
	f.Add("", hdr, []byte(`{"iss":"lab-1","kind":"recovery","at":-5,"exp":1e3,"jti":"\u0000"}`))
	// The strict rules: duplicates, crit, bad UTF-8, hints outside the set.
	dup := strings.Replace(string(p), `"kind":"test-negative"`, `"kind":"test-positive","kind":"test-negative"`, 1)
	f.Add("", hdr, []byte(dup))
	f.Add("", `{"alg":"EdDSA","crit":["exp"]}`, p)
	f.Add("", `{"alg":"EdDSA","typ":"JWT","kid":"k1"}`, p)
	f.Add("", hdr, []byte(strings.Replace(string(p), `"a1"`, `"a\ud800"`, 1)))
	f.Add("", hdr, []byte(strings.Replace(string(p), `"a1"`, "\"a\xff\"", 1)))
	f.Add("", hdr, []byte(strings.Replace(string(p), `"AB1990"`, `"\u001b[1A\rGREEN"`, 1)))

	opts := Options{Now: fuzzNow, Skew: 5 * time.Minute, MaxLifetime: 72 * time.Hour}
	f.Fuzz(func(t *testing.T, raw, header string, payload []byte) {
		check(t, raw, keys, opts)
		if len(payload) <= MaxLen && len(header) <= 256 {
			signing := base64.RawURLEncoding.EncodeToString([]byte(header)) + "." + base64.RawURLEncoding.EncodeToString(payload)
			sig := ed25519.Sign(key, []byte(signing))
			check(t, signing+"."+base64.RawURLEncoding.EncodeToString(sig), keys, opts)
		}
	})
}

func check(t *testing.T, raw string, keys Keys, o Options) {
	ev, err := Verify(raw, keys, o)
	if err != nil {
		e, ok := err.(*Error)
		if !ok || !knownCodes[e.Code] {
			t.Fatalf("refusal is not an *Error with a known code: %#v", err)
		}
		if len(e.Message) > 256 {
			t.Fatalf("message is %d bytes: %q", len(e.Message), e.Message)
		}
		if len(raw) > 48 && strings.Contains(e.Message, raw) {
			t.Fatalf("message echoes the attestation: %q", e.Message)
		}
		if ev != (Evidence{}) {
			t.Fatalf("refusal with evidence %+v", ev)
		}
		return
	}
	// Accepted: the header says EdDSA, the payload holds only allowed claims
	// under their exact names, and every value keeps the rules.
	parts := strings.Split(raw, ".")
	hb, _ := base64.RawURLEncoding.DecodeString(parts[0])
	var h map[string]any
	if json.Unmarshal(hb, &h) != nil || h["alg"] != "EdDSA" {
		t.Fatalf("accepted with header %s", hb)
	}
	for name := range h {
		if name != "alg" && name != "typ" && name != "kid" {
			t.Fatalf("accepted header member %q", name)
		}
	}
	pb, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(pb, &fields); err != nil {
		t.Fatalf("accepted a payload that is not an object: %q", pb)
	}
	if !utf8.Valid(pb) || !utf8.Valid(hb) {
		t.Fatalf("accepted invalid UTF-8")
	}
	if n := topLevelNames(pb); n != len(fields) {
		t.Fatalf("accepted %d claims under %d names: %q", n, len(fields), pb)
	}
	if n := topLevelNames(hb); n != len(h) {
		t.Fatalf("accepted %d header members under %d names: %q", n, len(h), hb)
	}
	if ev.Hint != "" && CheckHint(ev.Hint) != nil {
		t.Fatalf("accepted hint %q", ev.Hint)
	}
	for name := range fields {
		if !allowed(name) {
			t.Fatalf("accepted claim %q", name)
		}
	}
	if _, ok := keys.AttesterKey(ev.Attester); !ok {
		t.Fatalf("accepted unregistered attester %q", ev.Attester)
	}
	switch {
	case !ev.Kind.Valid():
		t.Fatalf("accepted kind %q", ev.Kind)
	case ev.ID == "" || len(ev.ID) > MaxIDLen || len(ev.Hint) > MaxHintLen:
		t.Fatalf("accepted id %q hint %q", ev.ID, ev.Hint)
	case !ev.Expires.After(ev.At):
		t.Fatalf("accepted exp %v not after at %v", ev.Expires, ev.At)
	case ev.At.After(o.Now.Add(o.Skew)):
		t.Fatalf("accepted event time %v in the future of %v", ev.At, o.Now)
	case !ev.Expires.Add(o.Skew).After(o.Now):
		t.Fatalf("accepted expired %v at %v", ev.Expires, o.Now)
	case ev.Expires.Sub(o.Now) > o.MaxLifetime+o.Skew:
		t.Fatalf("accepted exp %v, beyond max lifetime", ev.Expires)
	}
}

// topLevelNames counts the member names of a JSON object, duplicates
// included, without the code under test.
func topLevelNames(b []byte) int {
	dec := json.NewDecoder(strings.NewReader(string(b)))
	if _, err := dec.Token(); err != nil {
		return -1
	}
	n := 0
	for dec.More() {
		if _, err := dec.Token(); err != nil {
			return -1
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return -1
		}
		n++
	}
	return n
}
