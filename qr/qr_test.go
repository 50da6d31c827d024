package qr

import (
	"bytes"
	"errors"
	"image"
	"image/color"
	"image/png"
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
