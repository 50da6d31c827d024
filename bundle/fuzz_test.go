package bundle

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

// FuzzOpen feeds Open and Accept a raw bundle as a verifier would download
// it, and a payload that the fuzzer gets signed by the pinned key (with
// header hdr), since a signature cannot be guessed and the payload checks
// would otherwise only see forged bytes. Open must never panic, must refuse
// with one of its sentinel errors, and anything it accepts must carry the
// pinned key, verify, and pass Check; Accept must keep the no-rollback and
// not-expired rules.
func FuzzOpen(f *testing.F) {
	key := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	pub := key.Public().(ed25519.PublicKey)
	pin := Fingerprint(pub)
	bk := base64.RawURLEncoding.EncodeToString(pub)
	hdr := `{"alg":"EdDSA","bk":"` + bk + `"}`

	good := testBundle(pub)
	raw, err := Sign(good, key)
	if err != nil {
		f.Fatal(err)
	}
	p, _ := json.Marshal(good)
	f.Add(raw, pin, hdr, p, uint64(3), int64(0))
	f.Add(raw, strings.ToUpper(pin), hdr, p, uint64(9), int64(1<<20))
	f.Add("a.b.c", "sha256:", `{"alg":"none","bk":"`+bk+`"}`, []byte(`{"seq":1,"iat":1,"stale":1,"exp":2,"keys":[]}`), uint64(0), int64(-1))
	f.Add("", pin, `{"alg":"EdDSA","bk":"`+bk+`","kid":"x"}`, []byte(`{"seq":1,"iat":1,"stale":2,"exp":2,"keys":[{"kid":"k","pub":"AAAA","nbf":0,"naf":1,"status":"next"}],"policy":{"skew":-1}}`), uint64(1), int64(5))
	f.Add(raw+"\n", pin, hdr, []byte(`{"seq":18446744073709551615,"iat":9223372036854775807,"stale":9223372036854775807,"exp":9223372036854775807,"keys":null}`), ^uint64(0), int64(1<<62))

	withdrawn := *good
	withdrawn.Withdrawn = []string{"k0"}
	pw, _ := json.Marshal(&withdrawn)
	f.Add("", pin, hdr, pw, uint64(7), int64(60))
	f.Add("", pin, hdr, []byte(strings.Replace(string(pw), `"k0"`, `"k1"`, 1)), uint64(7), int64(60))
	f.Add("", pin, hdr, []byte(strings.Replace(string(p), `"granularity":3600`, `"granularity":0`, 1)), uint64(7), int64(60))
	f.Fuzz(func(t *testing.T, raw, pin, header string, payload []byte, prevSeq uint64, offset int64) {
		now := time.Unix(good.IssuedAt, 0).Add(time.Duration(offset%(30*24*3600)) * time.Second)
		checkOpen(t, raw, pin, prevSeq, now)
		if len(payload) <= MaxLen/2 && len(header) <= 512 {
			signing := base64.RawURLEncoding.EncodeToString([]byte(header)) + "." + base64.RawURLEncoding.EncodeToString(payload)
			signed := signing + "." + base64.RawURLEncoding.EncodeToString(ed25519.Sign(key, []byte(signing)))
			checkOpen(t, signed, Fingerprint(pub), prevSeq, now)
		}
	})
}

var openErrors = []error{ErrMalformed, ErrPin, ErrSignature, ErrBadPinForm}

func checkOpen(t *testing.T, raw, pin string, prevSeq uint64, now time.Time) {
	b, err := Open(raw, pin)
	if err != nil {
		if b != nil {
			t.Fatalf("refusal with a bundle: %v", err)
		}
		if !isOneOf(err, openErrors...) {
			t.Fatalf("refusal without a sentinel: %v", err)
		}
		return
	}
	if err := b.Check(); err != nil {
		t.Fatalf("accepted a bundle that fails Check: %v", err)
	}
	if b.Policy.GranularitySeconds <= 0 || b.Policy.Lifetime.Max() <= 0 {
		t.Fatalf("accepted a bundle without caps: %+v", b.Policy)
	}
	for _, id := range b.Withdrawn {
		if _, ok := b.Find(id); ok {
			t.Fatalf("accepted withdrawn key %q still in keys", id)
		}
	}
	parts := strings.Split(strings.TrimSpace(raw), ".")
	hb, _ := base64.RawURLEncoding.DecodeString(parts[0])
	var h header
	if json.Unmarshal(hb, &h) != nil {
		t.Fatalf("accepted header %q", hb)
	}
	pub, _ := base64.RawURLEncoding.DecodeString(h.BundleKey)
	if !strings.EqualFold(Fingerprint(pub), pin) {
		t.Fatalf("accepted key %s under pin %s", Fingerprint(pub), pin)
	}
	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	if !ed25519.Verify(pub, []byte(parts[0]+"."+parts[1]), sig) {
		t.Fatal("accepted a signature that does not verify")
	}

	prev := &Bundle{Sequence: prevSeq}
	a, err := Accept(raw, pin, prev, now)
	switch {
	case b.Sequence < prevSeq:
		if !errors.Is(err, ErrRollback) || a != nil {
			t.Fatalf("sequence %d after %d: %v", b.Sequence, prevSeq, err)
		}
	case b.Expired(now):
		if !errors.Is(err, ErrExpired) || a != nil {
			t.Fatalf("expired at %v: %v", now, err)
		}
	case err != nil || a == nil:
		t.Fatalf("Accept refused what Open took: %v", err)
	}
}

func isOneOf(err error, targets ...error) bool {
	for _, e := range targets {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
