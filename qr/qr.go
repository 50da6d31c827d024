// Package qr renders tokens and attestations as QR codes (go-qrcode, byte
// mode, level M) and reads them back from images (gozxing, a Go port of
// ZXing).
package qr

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	_ "image/jpeg" // scans may be photos
	_ "image/png"  // scans are usually PNG
	"io"

	"github.com/makiuchi-d/gozxing"
	zxqr "github.com/makiuchi-d/gozxing/qrcode"
	qrcode "github.com/skip2/go-qrcode"
)

// MaxImageBytes bounds an image given to Decode.
const MaxImageBytes = 8 << 20

// MaxPixels bounds a decoded image's area, so a tiny file cannot declare a
// huge canvas.
const MaxPixels = 4096 * 4096

// PNG renders text as a QR PNG of size×size pixels at level M.
func PNG(text string, size int) ([]byte, error) {
	q, err := qrcode.New(text, qrcode.Medium)
	if err != nil {
		return nil, fmt.Errorf("qr: %w", err)
	}
	return q.PNG(size)
}

// Version returns the QR version go-qrcode picks for text at level M.
func Version(text string) (int, error) {
	q, err := qrcode.New(text, qrcode.Medium)
	if err != nil {
		return 0, fmt.Errorf("qr: %w", err)
	}
	return q.VersionNumber, nil
}

// ErrNoCode is returned when an image holds no readable QR code.
var ErrNoCode = errors.New("qr: no QR code found in the image")

// Decode reads the first QR code in an image (PNG or JPEG).
func Decode(r io.Reader) (string, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxImageBytes+1))
	if err != nil {
		return "", fmt.Errorf("qr: read image: %w", err)
	}
	if len(data) > MaxImageBytes {
		return "", fmt.Errorf("qr: image is larger than %d bytes", MaxImageBytes)
	}
	cfg, _, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		return "", fmt.Errorf("qr: not a PNG or JPEG image: %w", err)
	}
	if cfg.Width*cfg.Height > MaxPixels {
		return "", fmt.Errorf("qr: image is %dx%d pixels, more than allowed", cfg.Width, cfg.Height)
	}
	img, _, err := image.Decode(bytes.NewReader(data))
	if err != nil {
		return "", fmt.Errorf("qr: decode image: %w", err)
	}
	return DecodeImage(img)
}

// DecodeImage reads the first QR code in img. gozxing's detector is
// occasionally fooled by data modules that look like a finder pattern
// (about 1 in 60 clean version-10 codes here); the same image turned a
// quarter is read, so it tries that, and the other binarizer, before
// giving up.
func DecodeImage(img image.Image) (string, error) {
	src := gozxing.NewLuminanceSourceFromImage(img)
	sources := []gozxing.LuminanceSource{src}
	if src.IsRotateSupported() {
		if r, err := src.RotateCounterClockwise(); err == nil {
			sources = append(sources, r)
		}
	}
	hints := map[gozxing.DecodeHintType]any{gozxing.DecodeHintType_TRY_HARDER: true}
	reader := zxqr.NewQRCodeReader()
	for _, binarizer := range []func(gozxing.LuminanceSource) gozxing.Binarizer{gozxing.NewHybridBinarizer, gozxing.NewGlobalHistgramBinarizer} {
		for _, s := range sources {
			bmp, err := gozxing.NewBinaryBitmap(binarizer(s))
			if err != nil {
				return "", fmt.Errorf("qr: %w", err)
			}
			if res, err := reader.Decode(bmp, hints); err == nil {
				return res.GetText(), nil
			}
		}
	}
	return "", ErrNoCode
}
