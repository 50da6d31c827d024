package verifier

import (
	"crypto/ed25519"
	"testing"
	"time"

	"github.com/healthcode/healthcode/attestation"
	"github.com/healthcode/healthcode/policy"
	"github.com/healthcode/healthcode/token"
)

// FuzzVerify feeds Verify two things: raw, as scanned from a QR, and
// payload, which the fuzzer gets signed by a key the bundle holds, since
// signatures cannot be guessed and the claims parser would otherwise only
// see unauthenticated bytes. Verify must never panic, must give every
// refusal a known reason, and anything it accepts must lie inside its key's
// window and be accepted alike by golang-jwt's parser (referenceVerify).
func FuzzVerify(f *testing.F) {
	fx := newFixture(f, true)
	h := `{"alg":"EdDSA","kid":"` + fx.cur.KeyID() + `"}`
	for _, c := range policy.Colours {
		cl := validClaims(c)
		raw := sign(f, fx.cur, cl)
		f.Add(raw, []byte(`{"c":"`+c.Code()+`","exp":`+itoa(cl.Expires)+`,"n":"AAAAAAAA","nbf":`+itoa(cl.NotBefore)+`,"v":3}`), int64(0))
	}
	cl := validClaims(policy.Green)
	cl.Hint = "A&B1990"
	f.Add(sign(f, fx.short, cl), []byte(`{"c":"g","exp":`+itoa(cl.Expires)+`,"h":"A\u0026B","n":"x","nbf":`+itoa(cl.NotBefore)+`,"v":3}`), int64(7200))
	f.Add("eyJhbGciOiJub25lIn0.e30.", []byte(`{}`), int64(-400))
	f.Add("", []byte(`{"c":"g","c":"r"}`), int64(1<<40))
	// The caps, the withdrawn list, strict strings and lab attestations.
	nbf := itoa(cl.NotBefore)
	f.Add(sign(f, fx.revoked, validClaims(policy.Red)), []byte(`{"c":"g","exp":`+itoa(cl.NotBefore+30*24*3600)+`,"n":"x","nbf":`+nbf+`,"v":3}`), int64(0))
	f.Add(sign(f, fx.stranger, token.Claims{Colour: "g", NotBefore: cl.NotBefore - 48*3600, Expires: cl.Expires, Version: 3}),
		[]byte(`{"c":"r","exp":`+itoa(cl.Expires+1)+`,"n":"x","nbf":`+nbf+`,"v":3}`), int64(60))
	f.Add("eyJhbGciOiJFZERTQSJ9.eyJpc3MiOiJsYWItMSIsImtpbmQiOiJ0ZXN0LW5lZ2F0aXZlIn0.AAAA",
		[]byte(`{"c":"g","exp":`+itoa(cl.Expires)+`,"h":"A\ud800","n":"x","nbf":`+nbf+`,"v":3}`), int64(0))
	f.Add("", []byte(`{"c":"y","exp":`+itoa(cl.Expires)+`,"h":"\u001b[2KGREEN","n":"x","nbf":`+nbf+`,"v":3}`), int64(0))

	f.Fuzz(func(t *testing.T, raw string, payload []byte, offset int64) {
		now := t0.Add(time.Duration(offset%(40*24*3600)) * time.Second)
		check(t, fx, raw, now)
		if len(payload) <= token.MaxLen/2 {
			check(t, fx, signRaw(t, fx.curKey, h, string(payload)), now)
		}
	})
}

func check(t *testing.T, fx *fixture, raw string, now time.Time) {
	res, err := Verify(raw, fx.b, now)
	if err != nil {
		if Reason(err) == ReasonInvalid {
			t.Fatalf("error without a reason code: %v", err)
		}
		if res != (Result{}) {
			t.Fatalf("refusal with a result: %+v", res)
		}
		return
	}
	key, ok := fx.b.Find(res.KeyID)
	if !ok {
		t.Fatalf("accepted under kid %q, not in the bundle", res.KeyID)
	}
	if res.NotBefore.Unix() < key.NotBefore || res.Expires.Unix() > key.NotAfter {
		t.Fatalf("accepted %v..%v outside key window %d..%d", res.NotBefore, res.Expires, key.NotBefore, key.NotAfter)
	}
	if now.Before(res.NotBefore.Add(-fx.b.Skew())) || !now.Before(res.Expires.Add(fx.b.Skew())) {
		t.Fatalf("accepted at %v outside %v..%v", now, res.NotBefore, res.Expires)
	}
	if !res.Colour.Valid() {
		t.Fatalf("accepted with colour %v", res.Colour)
	}
	if fx.b.IsWithdrawn(res.KeyID) {
		t.Fatalf("accepted withdrawn key %q", res.KeyID)
	}
	if g := fx.b.Policy.GranularitySeconds; res.NotBefore.Unix()%g != 0 || res.Expires.Unix()%g != 0 {
		t.Fatalf("accepted %v..%v off the %ds grid", res.NotBefore, res.Expires, g)
	}
	if w := res.Expires.Sub(res.NotBefore); w > fx.b.Policy.Lifetime.Of(res.Colour.Code())+fx.b.Skew() {
		t.Fatalf("accepted a %v %v window", w, res.Colour)
	}
	if res.Hint != "" && attestation.CheckHint(res.Hint) != nil {
		t.Fatalf("accepted hint %q", res.Hint)
	}
	if !ed25519.Verify(ed25519.PublicKey(key.Public), []byte(raw[:lastDot(raw)]), mustSig(t, raw)) {
		t.Fatal("accepted a token whose signature does not verify")
	}
	ref, err := referenceVerify(raw, fx.b, now)
	if err != nil {
		t.Fatalf("accepted, but golang-jwt's parser refuses: %v", err)
	}
	if ref != res {
		t.Fatalf("accepted as %+v, golang-jwt's parser reads %+v", res, ref)
	}
}

func lastDot(s string) int {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '.' {
			return i
		}
	}
	return -1
}

func mustSig(t *testing.T, raw string) []byte {
	sig, err := enc.DecodeString(raw[lastDot(raw)+1:])
	if err != nil {
		t.Fatalf("accepted a token whose signature is not base64url: %v", err)
	}
	return sig
}
