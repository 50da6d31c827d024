package verifier

import (
	"crypto/ed25519"
	"strings"
	"testing"

	"github.com/healthcode/healthcode/policy"
)

// The budget: Verify at most 1.10× BenchmarkBareEd25519Verify on the same
// token. BenchmarkVerifyJWTParser shows what golang-jwt's parser would cost.

func benchToken(b *testing.B) (*fixture, string) {
	f := newFixture(b, true)
	c := validClaims(policy.Green)
	c.Hint = "AB1990"
	return f, sign(b, f.cur, c)
}

func BenchmarkVerify(b *testing.B) {
	f, raw := benchToken(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Verify(raw, f.b, t0); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkBareEd25519Verify(b *testing.B) {
	f, raw := benchToken(b)
	i := strings.LastIndexByte(raw, '.')
	msg := []byte(raw[:i])
	sig, err := enc.DecodeString(raw[i+1:])
	if err != nil {
		b.Fatal(err)
	}
	pub := f.curKey.Public().(ed25519.PublicKey)
	b.ReportAllocs()
	for b.Loop() {
		if !ed25519.Verify(pub, msg, sig) {
			b.Fatal("does not verify")
		}
	}
}

func BenchmarkVerifyJWTParser(b *testing.B) {
	f, raw := benchToken(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := referenceVerify(raw, f.b, t0); err != nil {
			b.Fatal(err)
		}
	}
}
