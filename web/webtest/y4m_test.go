package webtest

import (
	"bytes"
	"image"
	"image/color"
	"strings"
	"testing"
)

func TestWriteY4M(t *testing.T) {
	img := image.NewRGBA(image.Rect(0, 0, 4, 2))
	for x := 0; x < 4; x++ {
		for y := 0; y < 2; y++ {
			c := color.RGBA{255, 255, 255, 255}
			if x < 2 {
				c = color.RGBA{0, 0, 0, 255}
			}
			img.SetRGBA(x, y, c)
		}
	}
	var buf bytes.Buffer
	if err := WriteY4M(&buf, 5, img, img); err != nil {
		t.Fatal(err)
	}
	const header = "YUV4MPEG2 W4 H2 F5:1 Ip A1:1 C420\n"
	out := buf.String()
	if !strings.HasPrefix(out, header) {
		t.Fatalf("header %q", out[:min(len(out), 40)])
	}
	frame := "FRAME\n" + string([]byte{0, 0, 255, 255, 0, 0, 255, 255}) + string([]byte{128, 128}) + string([]byte{128, 128})
	if out[len(header):] != frame+frame {
		t.Fatalf("frames % x", out[len(header):])
	}
}

func TestWriteY4MRejects(t *testing.T) {
	odd := image.NewRGBA(image.Rect(0, 0, 3, 2))
	even := image.NewRGBA(image.Rect(0, 0, 4, 2))
	other := image.NewRGBA(image.Rect(0, 0, 2, 2))
	for _, c := range []struct {
		fps    int
		frames []image.Image
		want   string
	}{
		{5, nil, "y4m: no frames"},
		{0, []image.Image{even}, "y4m: fps 0 must be positive"},
		{5, []image.Image{odd}, "y4m: frame is 3x2, want positive even sides"},
		{5, []image.Image{even, other}, "y4m: frame 1 is 2x2, want 4x2"},
	} {
		if err := WriteY4M(&bytes.Buffer{}, c.fps, c.frames...); err == nil || err.Error() != c.want {
			t.Errorf("got %v, want %q", err, c.want)
		}
	}
}

func TestShrinkAverages(t *testing.T) {
	src := image.NewRGBA(image.Rect(0, 0, 4, 4))
	for y := 0; y < 4; y++ {
		for x := 0; x < 4; x++ {
			if x < 2 {
				src.SetRGBA(x, y, color.RGBA{255, 255, 255, 255})
			} else {
				src.SetRGBA(x, y, color.RGBA{0, 0, 0, 255})
			}
		}
	}
	got := Shrink(src, 2)
	if got.Bounds().Dx() != 2 || got.RGBAAt(0, 0).R != 255 || got.RGBAAt(1, 1).R != 0 {
		t.Fatalf("shrink 4→2: %v %v", got.RGBAAt(0, 0), got.RGBAAt(1, 1))
	}
	if mid := Shrink(src, 1).RGBAAt(0, 0).R; mid != 127 {
		t.Fatalf("shrink 4→1 averages to %d, want 127", mid)
	}
}
