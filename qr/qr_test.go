package qr

import (
	"bytes"
	"errors"
	"image"
	"image/color"
	"image/png"
	mrand "math/rand/v2"
	"os"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	text := strings.Repeat("eyJhbGciOiJFZERTQSJ9.", 10)
	b, err := PNG(text, 512)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if got != text {
		t.Fatalf("decoded %q, want %q", got, text)
	}
}

func TestVersionGrowsWithLength(t *testing.T) {
	// Byte mode at level M: version 10 holds 213 bytes, version 11 holds 251.
	for _, c := range []struct{ n, want int }{{213, 10}, {214, 11}, {251, 11}} {
		v, err := Version(strings.Repeat("a", c.n))
		if err != nil {
			t.Fatal(err)
		}
		if v != c.want {
			t.Errorf("%d bytes: version %d, want %d", c.n, v, c.want)
		}
	}
}

func TestDecodeRefusesNonImages(t *testing.T) {
	if _, err := Decode(strings.NewReader("not an image")); err == nil || !strings.Contains(err.Error(), "not a PNG or JPEG") {
		t.Fatalf("got %v", err)
	}
}

func TestDecodeBlankImage(t *testing.T) {
	img := image.NewGray(image.Rect(0, 0, 64, 64))
	for i := range img.Pix {
		img.Pix[i] = 255
	}
	img.Set(1, 1, color.Black)
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	if _, err := Decode(&buf); !errors.Is(err, ErrNoCode) {
		t.Fatalf("got %v, want ErrNoCode", err)
	}
}

func TestDecodeRefusesHugeCanvas(t *testing.T) {
	img := image.NewGray(image.Rect(0, 0, 5000, 5000))
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	if _, err := Decode(&buf); err == nil || !strings.Contains(err.Error(), "more than allowed") {
		t.Fatalf("got %v", err)
	}
}

// gozxing's detector alone misread about 1 in 60 token-sized codes that
// go-qrcode drew; these two were among them. DecodeImage must read them.
func TestDecodeCodesThatFoolTheDetector(t *testing.T) {
	for _, name := range []string{"testdata/detector-fooled.png", "testdata/detector-fooled-2.png"} {
		f, err := os.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Decode(f)
		f.Close()
		if err != nil || len(got) != 212 {
			t.Fatalf("%s: %q, %v", name, got, err)
		}
	}
}

// Every one of 300 random token-length codes must read back exactly.
func TestDecodeManyTokenSizedCodes(t *testing.T) {
	rng := mrand.New(mrand.NewPCG(1, 2))
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."
	for i := range 300 {
		b := make([]byte, 212)
		for j := range b {
			b[j] = alphabet[rng.IntN(len(alphabet))]
		}
		png, err := PNG(string(b), 360)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Decode(bytes.NewReader(png))
		if err != nil || got != string(b) {
			t.Fatalf("code %d (%s): read %q, %v", i, b, got, err)
		}
	}
}
