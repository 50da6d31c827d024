package webtest

import (
	"bufio"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"io"
)

// WriteY4M writes frames as a YUV4MPEG2 stream (4:2:0, "C420"), the format
// Chromium's --use-file-for-fake-video-capture reads and loops. Every frame
// must have the same even width and height.
func WriteY4M(w io.Writer, fps int, frames ...image.Image) error {
	if len(frames) == 0 {
		return errors.New("y4m: no frames")
	}
	if fps <= 0 {
		return fmt.Errorf("y4m: fps %d must be positive", fps)
	}
	b := frames[0].Bounds()
	width, height := b.Dx(), b.Dy()
	if width <= 0 || height <= 0 || width%2 != 0 || height%2 != 0 {
		return fmt.Errorf("y4m: frame is %dx%d, want positive even sides", width, height)
	}
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "YUV4MPEG2 W%d H%d F%d:1 Ip A1:1 C420\n", width, height, fps)
	y := make([]byte, width*height)
	cb := make([]byte, width*height/4)
	cr := make([]byte, width*height/4)
	for i, f := range frames {
		if f.Bounds().Dx() != width || f.Bounds().Dy() != height {
			return fmt.Errorf("y4m: frame %d is %dx%d, want %dx%d", i, f.Bounds().Dx(), f.Bounds().Dy(), width, height)
		}
		toI420(f, y, cb, cr)
		bw.WriteString("FRAME\n")
		bw.Write(y)
		bw.Write(cb)
		bw.Write(cr)
	}
	return bw.Flush()
}

// toI420 converts img to planar Y'CbCr 4:2:0 (BT.601 full range, as JPEG),
// averaging chroma over each 2×2 block.
func toI420(img image.Image, y, cb, cr []byte) {
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	rgba := image.NewRGBA(image.Rect(0, 0, w, h))
	draw.Draw(rgba, rgba.Bounds(), img, b.Min, draw.Src)
	for py := 0; py < h; py++ {
		for px := 0; px < w; px++ {
			c := rgba.RGBAAt(px, py)
			yy, _, _ := color.RGBToYCbCr(c.R, c.G, c.B)
			y[py*w+px] = yy
		}
	}
	for py := 0; py < h; py += 2 {
		for px := 0; px < w; px += 2 {
			var sb, sr int
			for _, d := range [4][2]int{{0, 0}, {1, 0}, {0, 1}, {1, 1}} {
				c := rgba.RGBAAt(px+d[0], py+d[1])
				_, u, v := color.RGBToYCbCr(c.R, c.G, c.B)
				sb += int(u)
				sr += int(v)
			}
			i := (py/2)*(w/2) + px/2
			cb[i], cr[i] = byte(sb/4), byte(sr/4)
		}
	}
}

// Frame centres img on a white canvas of width×height, the picture a camera
// held in front of a phone screen sees, with a quiet zone all round.
func Frame(img image.Image, width, height int) *image.RGBA {
	out := image.NewRGBA(image.Rect(0, 0, width, height))
	draw.Draw(out, out.Bounds(), image.White, image.Point{}, draw.Src)
	b := img.Bounds()
	at := image.Pt((width-b.Dx())/2, (height-b.Dy())/2)
	draw.Draw(out, image.Rectangle{Min: at, Max: at.Add(b.Size())}, img, b.Min, draw.Src)
	return out
}

// Shrink scales img to a side×side square by averaging the source pixels
// each target pixel covers (a box filter), as a camera's sensor does with a
// code held far away: edges blur, nothing is snapped to whole modules.
func Shrink(img image.Image, side int) *image.RGBA {
	b := img.Bounds()
	src := image.NewRGBA(image.Rect(0, 0, b.Dx(), b.Dy()))
	draw.Draw(src, src.Bounds(), img, b.Min, draw.Src)
	out := image.NewRGBA(image.Rect(0, 0, side, side))
	sx := float64(b.Dx()) / float64(side)
	sy := float64(b.Dy()) / float64(side)
	for y := 0; y < side; y++ {
		y0, y1 := int(float64(y)*sy), max(int(float64(y+1)*sy), int(float64(y)*sy)+1)
		for x := 0; x < side; x++ {
			x0, x1 := int(float64(x)*sx), max(int(float64(x+1)*sx), int(float64(x)*sx)+1)
			var r, g, bl, n int
			for yy := y0; yy < y1 && yy < b.Dy(); yy++ {
				for xx := x0; xx < x1 && xx < b.Dx(); xx++ {
					c := src.RGBAAt(xx, yy)
					r, g, bl, n = r+int(c.R), g+int(c.G), bl+int(c.B), n+1
				}
			}
			out.SetRGBA(x, y, color.RGBA{uint8(r / n), uint8(g / n), uint8(bl / n), 255})
		}
	}
	return out
}
