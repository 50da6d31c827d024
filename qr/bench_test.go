package qr_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/healthcode/healthcode/qr"
	"github.com/healthcode/healthcode/token"
)

// QR rendering is the costliest step a token ever goes through, a hundred
// signatures' worth; the issuer never renders on the redemption path (the
// wallet draws its QR in the browser). These put a number on it beside
// ed25519.Sign of the same token.

// benchToken is a real colour token: green, a 24-hour window, no hint.
func benchToken(b *testing.B) (tok string, key ed25519.PrivateKey) {
	b.Helper()
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	s, err := token.NewSigner(token.KeyID(pub), key)
	if err != nil {
		b.Fatal(err)
	}
	nbf := time.Date(2026, 3, 10, 9, 0, 0, 0, time.UTC)
	tok, err = s.Sign(token.Claims{Colour: "g", NotBefore: nbf.Unix(), Expires: nbf.Add(24 * time.Hour).Unix(), Version: 1})
	if err != nil {
		b.Fatal(err)
	}
	return tok, key
}

// pngSize is what the attester CLI writes.
const pngSize = 512

func BenchmarkPNG(b *testing.B) {
	tok, _ := benchToken(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := qr.PNG(tok, pngSize); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecode(b *testing.B) {
	tok, _ := benchToken(b)
	png, err := qr.PNG(tok, pngSize)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		got, err := qr.Decode(bytes.NewReader(png))
		if err != nil || got != tok {
			b.Fatalf("decoded %q, %v", got, err)
		}
	}
}

func BenchmarkBareEd25519Sign(b *testing.B) {
	tok, key := benchToken(b)
	msg := []byte(tok[:strings.LastIndexByte(tok, '.')])
	for b.Loop() {
		ed25519.Sign(key, msg)
	}
}

// BenchmarkPNGRatio alternates rendering and one ed25519.Sign of the same
// token and compares the medians, so that other load on a shared machine
// hits both alike.
func BenchmarkPNGRatio(b *testing.B) {
	tok, key := benchToken(b)
	msg := []byte(tok[:strings.LastIndexByte(tok, '.')])
	var full, bare []time.Duration
	for b.Loop() {
		t1 := time.Now()
		if _, err := qr.PNG(tok, pngSize); err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		ed25519.Sign(key, msg)
		t3 := time.Now()
		full = append(full, t2.Sub(t1))
		bare = append(bare, t3.Sub(t2))
	}
	slices.Sort(full)
	slices.Sort(bare)
	b.ReportMetric(float64(full[len(full)/2])/float64(bare[len(bare)/2]), "png/sign")
}
