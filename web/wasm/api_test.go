package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"image"
	"image/draw"
	"image/png"
	"strings"
	"testing"
	"time"

	"github.com/healthcode/healthcode/bundle"
	"github.com/healthcode/healthcode/policy"
	"github.com/healthcode/healthcode/qr"
	"github.com/healthcode/healthcode/token"
	"github.com/healthcode/healthcode/verifier"
)

var t0 = time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)

type fix struct {
	jws, pin string
	signer   *token.Signer
}

func newFix(t testing.TB, counting bool) fix {
	t.Helper()
	_, bk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tpub, tk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := token.NewSigner(token.KeyID(tpub), tk)
	if err != nil {
		t.Fatal(err)
	}
	b := &bundle.Bundle{Sequence: 3, IssuedAt: t0.Add(-time.Hour).Unix(), StaleAfter: t0.Add(time.Hour).Unix(), Expires: t0.Add(2 * time.Hour).Unix(),
		Keys: []bundle.Key{{ID: s.KeyID(), Public: tpub, NotBefore: t0.Add(-24 * time.Hour).Unix(), NotAfter: t0.Add(24 * time.Hour).Unix(), Status: bundle.StatusCurrent}},
		Policy: bundle.Display{Version: 4, SkewSeconds: 30, HolderHint: true, Counting: counting, Name: "test city",
			Lifetime: bundle.Lifetimes{Green: 24 * 3600, Yellow: 24 * 3600, Red: 24 * 3600}, GranularitySeconds: 60}}
	jws, err := bundle.Sign(b, bk)
	if err != nil {
		t.Fatal(err)
	}
	return fix{jws: jws, pin: bundle.Fingerprint(bk.Public().(ed25519.PublicKey)), signer: s}
}

func (f fix) token(t testing.TB, c policy.Colour, hint string) string {
	t.Helper()
	s, err := f.signer.Sign(token.Claims{Colour: c.Code(), NotBefore: t0.Add(-time.Hour).Unix(), Expires: t0.Add(90 * time.Minute).Unix(), Version: 4, Hint: hint})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestVerifyValid(t *testing.T) {
	f := newFix(t, false)
	v := Verify(f.token(t, policy.Yellow, "AB90"), f.jws, f.pin, t0)
	want := Verdict{Valid: true, Colour: "yellow", Expires: t0.Add(90 * time.Minute).UnixMilli(), Hint: "AB90"}
	if v != want {
		t.Fatalf("got %+v, want %+v", v, want)
	}
	// Past stale, before expiry: still valid, flagged stale.
	if v := Verify(f.token(t, policy.Green, ""), f.jws, f.pin, t0.Add(70*time.Minute)); !v.Valid || !v.Stale {
		t.Fatalf("stale bundle: %+v", v)
	}
}

func TestVerifyReasons(t *testing.T) {
	f := newFix(t, false)
	other := newFix(t, false)
	tok := f.token(t, policy.Green, "")
	for _, c := range []struct {
		name, tok, jws, pin string
		at                  time.Time
		want                Verdict
	}{
		{"expired", tok, f.jws, f.pin, t0.Add(95 * time.Minute), Verdict{Reason: verifier.ReasonExpired, Stale: true}},
		{"not yet", tok, f.jws, f.pin, t0.Add(-2 * time.Hour), Verdict{Reason: verifier.ReasonNotYetValid}},
		{"unknown key", other.token(t, policy.Green, ""), f.jws, f.pin, t0, Verdict{Reason: verifier.ReasonUnknownKey}},
		{"garbage", "not a token", f.jws, f.pin, t0, Verdict{Reason: verifier.ReasonMalformed}},
		{"bundle expired", tok, f.jws, f.pin, t0.Add(2 * time.Hour), Verdict{Reason: verifier.ReasonBundleExpired, Stale: true, BundleExpired: true}},
		{"no bundle", tok, "", "", t0, Verdict{Reason: ReasonNoBundle}},
		{"wrong pin", tok, f.jws, other.pin, t0, Verdict{Reason: ReasonBundleBad}},
	} {
		if got := Verify(c.tok, c.jws, c.pin, c.at); got != c.want {
			t.Errorf("%s: got %+v, want %+v", c.name, got, c.want)
		}
	}
}

func TestBundleStatus(t *testing.T) {
	f := newFix(t, true)
	got := BundleStatus(f.jws, f.pin, t0)
	want := BundleInfo{OK: true, Sequence: 3, IssuedAt: t0.Add(-time.Hour).UnixMilli(), StaleAfter: t0.Add(time.Hour).UnixMilli(),
		Expires: t0.Add(2 * time.Hour).UnixMilli(), Counting: true, Hint: true, Name: "test city", Version: 4}
	if got != want {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	if got := BundleStatus(f.jws, f.pin, t0.Add(2*time.Hour)); !got.OK || !got.Expired || !got.Stale || got.Reason != verifier.ReasonBundleExpired {
		t.Fatalf("expired: %+v", got)
	}
	if got := BundleStatus(f.jws, newFix(t, false).pin, t0); got.OK || got.Reason != ReasonBundleBad || !strings.Contains(got.Error, "not signed by the pinned key") {
		t.Fatalf("wrong pin: %+v", got)
	}
	if got := BundleStatus("", "", t0); got.OK || got.Reason != ReasonNoBundle {
		t.Fatalf("none: %+v", got)
	}
}

// rgba renders text as a QR code inside a w×h RGBA frame, as a canvas's
// getImageData would hand it over.
func rgba(t testing.TB, text string, w, h int) []byte {
	t.Helper()
	p, err := qr.PNG(text, 300)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(p))
	if err != nil {
		t.Fatal(err)
	}
	out := image.NewRGBA(image.Rect(0, 0, w, h))
	draw.Draw(out, out.Bounds(), image.White, image.Point{}, draw.Src)
	at := image.Pt((w-300)/2, (h-300)/2)
	draw.Draw(out, image.Rectangle{Min: at, Max: at.Add(image.Pt(300, 300))}, img, image.Point{}, draw.Src)
	return out.Pix
}

func TestDecode(t *testing.T) {
	f := newFix(t, false)
	tok := f.token(t, policy.Green, "AB90")
	got, err := Decode(rgba(t, tok, 640, 480), 640, 480)
	if err != nil || got != tok {
		t.Fatalf("Decode = %q, %v; want the token", got, err)
	}
	blank := make([]byte, 4*64*48)
	if got, err := Decode(blank, 64, 48); got != "" || err != nil {
		t.Fatalf("blank frame: %q, %v; want no code and no error", got, err)
	}
	for _, c := range []struct {
		n, w, h int
		want    string
	}{
		{10, 2, 2, "frame has 10 bytes, want 16 for 2x2 RGBA"},
		{0, 0, 5, "frame is 0x5, want 1 to 4194304 pixels"},
		{4, 3000, 3000, "frame is 3000x3000"},
	} {
		if _, err := Decode(make([]byte, c.n), c.w, c.h); err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("Decode(%d bytes, %dx%d): %v, want %q", c.n, c.w, c.h, err, c.want)
		}
	}
}

// BenchmarkDecode is the host-side cost of one 640×480 frame; the browser
// test reports the WebAssembly cost.
func BenchmarkDecode(b *testing.B) {
	f := newFix(b, false)
	pix := rgba(b, f.token(b, policy.Green, ""), 640, 480)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if s, _ := Decode(pix, 640, 480); s == "" {
			b.Fatal("no code")
		}
	}
}

// The warm-up frame must hold a readable code, or the decoder's slow first
// run is left for the first real scan.
func TestWarmFrameDecodes(t *testing.T) {
	if got, err := Decode(warmFrame(), 640, 480); got != "healthcode" || err != nil {
		t.Fatalf("warm frame decodes to %q, %v", got, err)
	}
}
